//! The CRI `ImageService` over orbit's image store: images are identified by their manifest
//! digest; `PullImage` is an orbit registry fetch (signature verification by the server's
//! policy, credentials from the request or the usual files).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::proto::{self, image_service_server::ImageService};
use super::{blocking, now, CriContext};
use crate::image::catalog::{self, StoredImage};
use crate::image::error::ImageError;
use crate::image::fetch::{self, FetchOptions, PullPolicy};
use crate::image::source::SourceRef;

/// The image service.
#[derive(Clone)]
pub struct Images {
    pub(super) ctx: Arc<CriContext>,
}

fn image_status_of(e: ImageError) -> Status {
    match e {
        ImageError::UnknownImage(i) => Status::not_found(format!("no image {i}")),
        e @ ImageError::Ambiguous { .. } => Status::invalid_argument(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

/// A registry reference as orbit names it in the store (`docker.io/library/busybox:1`).
fn store_name(image: &str) -> String {
    let r = image
        .strip_prefix(crate::image::registry::PREFIX)
        .unwrap_or(image);
    match crate::image::registry::parse(r) {
        Ok(r) => crate::image::registry::store_name(&r),
        Err(_) => r.to_string(),
    }
}

/// Finds an image by every reference the kubelet may hold: its ID (or a digest prefix), a
/// name (`REPO:TAG`, a bare `REPO` meaning `:latest`), the registry reference it was pulled
/// by (docker.io's `library/` normalisation applied), or one of its repo digests
/// (`REPO@sha256:…`, as ImageStatus reports them).
pub(super) fn find(ctx: &CriContext, image: &str) -> Result<StoredImage, ImageError> {
    let store = ctx.store();
    if let Some((repo, digest)) = image.split_once('@') {
        return find_repo_digest(&store, image, repo, digest);
    }
    catalog::resolve(&store, image).or_else(|e| {
        match catalog::resolve(&store, &store_name(image)) {
            Ok(i) => Ok(i),
            Err(_) => Err(e),
        }
    })
}

/// The image with manifest digest `digest` that is named in repository `repo` (as given or
/// registry-normalised).
fn find_repo_digest(
    store: &crate::image::store::Store,
    image: &str,
    repo: &str,
    digest: &str,
) -> Result<StoredImage, ImageError> {
    let unknown = || ImageError::UnknownImage(image.to_string());
    let digest: crate::image::digest::Digest = digest.parse().map_err(|_| unknown())?;
    // The repository as given, and as the store names it (`busybox`: docker.io/library/…).
    let stored = store_name(repo);
    let normalised = repo_of(&stored);
    let img = match catalog::resolve(store, digest.as_str()) {
        Ok(img) if img.digest == digest => img,
        Ok(_) | Err(ImageError::UnknownImage(_)) | Err(ImageError::Ambiguous { .. }) => {
            return Err(unknown())
        }
        Err(e) => return Err(e),
    };
    if img
        .names
        .iter()
        .any(|n| repo_of(n) == repo || repo_of(n) == normalised)
    {
        Ok(img)
    } else {
        Err(unknown())
    }
}

/// The repository part of a store name (`REPO:TAG`).
fn repo_of(name: &str) -> &str {
    match name.rsplit_once(':') {
        // A colon in the last path segment separates the tag (not a registry's port).
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    }
}

fn describe(ctx: &CriContext, img: &StoredImage) -> Result<proto::Image, ImageError> {
    let store = ctx.store();
    let d = catalog::inspect(&store, img)?;
    let user = d
        .config
        .config
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default();
    let user = user.split(':').next().unwrap_or_default().to_string();
    let (uid, username) = match user.parse::<i64>() {
        Ok(u) => (Some(proto::Int64Value { value: u }), String::new()),
        Err(_) if user.is_empty() => (Some(proto::Int64Value { value: 0 }), String::new()),
        Err(_) => (None, user),
    };
    Ok(proto::Image {
        id: d.digest.clone(),
        repo_tags: d.names.clone(),
        repo_digests: d
            .names
            .iter()
            .map(|n| format!("{}@{}", repo_of(n), d.digest))
            .collect(),
        size: d.size,
        uid,
        username,
        spec: Some(proto::ImageSpec {
            image: d.digest.clone(),
            ..Default::default()
        }),
        pinned: false,
    })
}

impl Images {
    fn pull(&self, req: proto::PullImageRequest) -> Result<String, Status> {
        let ctx = &self.ctx;
        let image = req
            .image
            .map(|i| i.image)
            .filter(|i| !i.is_empty())
            .ok_or_else(|| Status::invalid_argument("PullImage needs an image"))?;
        let reference = image
            .strip_prefix(crate::image::registry::PREFIX)
            .unwrap_or(&image);
        let mut registry = ctx.registry.clone();
        // Credentials from the request go first, through a private credentials file.
        let _auth_dir;
        if let Some(a) = req
            .auth
            .filter(|a| !a.username.is_empty() || !a.auth.is_empty())
        {
            use base64::Engine as _;
            let r = crate::image::registry::parse(reference)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let token = if a.auth.is_empty() {
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", a.username, a.password))
            } else {
                a.auth.clone()
            };
            let dir = tempfile::tempdir()
                .map_err(|e| Status::internal(format!("cannot keep the credentials: {e}")))?;
            let file = dir.path().join("auth.json");
            std::fs::write(
                &file,
                serde_json::to_vec(&serde_json::json!({"auths": {r.registry(): {"auth": token}}}))
                    .expect("json"),
            )
            .map_err(|e| Status::internal(format!("cannot keep the credentials: {e}")))?;
            registry.auth_files.insert(0, file);
            _auth_dir = dir;
        }
        let opts = FetchOptions {
            insecure_skip_verify: ctx.insecure_image,
            registry,
            pull_policy: PullPolicy::Update,
            ..Default::default()
        };
        let source = SourceRef::Registry {
            reference: reference.to_string(),
        };
        let out = fetch::fetch(
            &ctx.store(),
            &crate::trust::TrustStore::new(ctx.config.clone()),
            &source,
            &opts,
        )
        .map_err(|e| Status::unknown(format!("cannot pull {image}: {e}")))?;
        Ok(out.digest.to_string())
    }
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        req: Request<proto::ListImagesRequest>,
    ) -> Result<Response<proto::ListImagesResponse>, Status> {
        let want = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|i| !i.is_empty());
        let ctx = self.ctx.clone();
        blocking(move || {
            let store = ctx.store();
            let mut seen = std::collections::HashSet::new();
            let mut images = Vec::new();
            for e in store.images().map_err(image_status_of)? {
                if !seen.insert(e.digest.clone()) {
                    continue;
                }
                let Ok(img) = catalog::resolve(&store, &e.digest.to_string()) else {
                    continue;
                };
                if let Some(w) = &want {
                    match find(&ctx, w) {
                        Ok(found) if found.digest == img.digest => {}
                        _ => continue,
                    }
                }
                if let Ok(i) = describe(&ctx, &img) {
                    images.push(i);
                }
            }
            Ok(Response::new(proto::ListImagesResponse { images }))
        })
        .await
    }

    async fn image_status(
        &self,
        req: Request<proto::ImageStatusRequest>,
    ) -> Result<Response<proto::ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let image = req.image.map(|i| i.image).unwrap_or_default();
        let ctx = self.ctx.clone();
        blocking(move || {
            // An image that is not there is not an error: the answer has no image.
            let image = match find(&ctx, &image) {
                Ok(img) => Some(describe(&ctx, &img).map_err(image_status_of)?),
                Err(ImageError::UnknownImage(_)) => None,
                Err(e) => return Err(image_status_of(e)),
            };
            let mut info = std::collections::HashMap::new();
            if let (true, Some(i)) = (req.verbose, &image) {
                if let Ok(img) = find(&ctx, &i.id) {
                    if let Ok(d) = catalog::inspect(&ctx.store(), &img) {
                        info.insert(
                            "info".to_string(),
                            serde_json::to_string(&d).unwrap_or_default(),
                        );
                    }
                }
            }
            Ok(Response::new(proto::ImageStatusResponse { image, info }))
        })
        .await
    }

    async fn pull_image(
        &self,
        req: Request<proto::PullImageRequest>,
    ) -> Result<Response<proto::PullImageResponse>, Status> {
        let deadline = crate::grpc::deadline_of(req.metadata());
        let req = req.into_inner();
        let what = format!(
            "the pull of {}",
            req.image.as_ref().map_or("", |i| i.image.as_str())
        );
        let this = self.clone();
        let image_ref =
            crate::grpc::within_deadline(deadline, &what, blocking(move || this.pull(req))).await?;
        Ok(Response::new(proto::PullImageResponse { image_ref }))
    }

    async fn remove_image(
        &self,
        req: Request<proto::RemoveImageRequest>,
    ) -> Result<Response<proto::RemoveImageResponse>, Status> {
        let image = req.into_inner().image.map(|i| i.image).unwrap_or_default();
        let ctx = self.ctx.clone();
        blocking(move || {
            let img = match find(&ctx, &image) {
                Ok(i) => i,
                // Removing what is not there succeeds.
                Err(ImageError::UnknownImage(_)) => {
                    return Ok(Response::new(proto::RemoveImageResponse {}))
                }
                Err(e) => return Err(image_status_of(e)),
            };
            // CRI removes the image, whichever of its names it is given.
            let all = StoredImage {
                by_name: None,
                ..img
            };
            crate::image::gc::remove(&ctx.store(), &all).map_err(image_status_of)?;
            Ok(Response::new(proto::RemoveImageResponse {}))
        })
        .await
    }

    async fn image_fs_info(
        &self,
        _: Request<proto::ImageFsInfoRequest>,
    ) -> Result<Response<proto::ImageFsInfoResponse>, Status> {
        let ctx = self.ctx.clone();
        blocking(move || {
            let store = ctx.store();
            let usage = |dir: std::path::PathBuf| {
                let (bytes, inodes) = super::du(&dir);
                proto::FilesystemUsage {
                    timestamp: now(),
                    fs_id: Some(proto::FilesystemIdentifier {
                        mountpoint: dir.display().to_string(),
                    }),
                    used_bytes: Some(proto::UInt64Value { value: bytes }),
                    inodes_used: Some(proto::UInt64Value { value: inodes }),
                }
            };
            Ok(Response::new(proto::ImageFsInfoResponse {
                image_filesystems: vec![usage(store.root().to_path_buf())],
                container_filesystems: vec![usage(store.root().join("pods"))],
            }))
        })
        .await
    }
}
