//! `orbit api-service`: the read-only gRPC API (`proto/orbit/api/v1/api.proto`) over TCP
//! and/or a Unix socket, or over sockets systemd passes (socket activation), with gRPC
//! reflection. See [`service`] for what each call reads.

pub mod convert;
mod logs;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::ConfigDirs;

/// The generated messages, client and server.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("orbit.api.v1");

    /// The encoded descriptors of the API, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("orbit_api_descriptor");
}

/// The default Unix socket (TCP, e.g. rkt's 127.0.0.1:15441, only when asked for).
pub const DEFAULT_SOCKET: &str = "/run/orbit/api.sock";

/// What `orbit api-service` serves and where.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// TCP addresses.
    pub listen: Vec<SocketAddr>,
    /// Unix socket paths.
    pub sockets: Vec<PathBuf>,
    /// The store.
    pub root: PathBuf,
    /// Configuration directories (stage1 images).
    pub config: ConfigDirs,
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Listening or serving failed.
    #[error(transparent)]
    Serve(#[from] crate::grpc::ServeError),
    /// The store cannot be watched for events.
    #[error("cannot watch the store {path} for events: {error}")]
    Watch {
        /// The store.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
}

/// Serves until SIGTERM or SIGINT.
pub fn serve(opts: ServeOptions) -> Result<(), ApiError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            ApiError::Serve(crate::grpc::ServeError::Serve(format!(
                "cannot start the async runtime: {e}"
            )))
        })?;
    rt.block_on(serve_async(opts))
}

async fn serve_async(opts: ServeOptions) -> Result<(), ApiError> {
    let listeners = crate::grpc::bind(&opts.listen, &opts.sockets).await?;
    let hub = crate::events::EventHub::start(&opts.root).map_err(|error| ApiError::Watch {
        path: opts.root.clone(),
        error,
    })?;
    let service = service::ApiService::new(opts.root.clone(), opts.config.clone(), hub);
    service.warm_up();
    let api = proto::public_api_server::PublicApiServer::new(service);
    // Reflection in both versions clients speak (grpcurl and Python's grpcio-reflection
    // still ask v1alpha), describing the API's own proto only.
    let reflection_err = |e: tonic_reflection::server::Error| {
        ApiError::Serve(crate::grpc::ServeError::Serve(format!("reflection: {e}")))
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(reflection_err)?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(reflection_err)?;
    let router = tonic::transport::Server::builder()
        .add_service(api)
        .add_service(reflection)
        .add_service(reflection_alpha);
    Ok(crate::grpc::serve("orbit api-service", listeners, router).await?)
}
