//! Fetching from registries (`docker://[REGISTRY/]REPO[:TAG|@DIGEST]`, Docker Registry HTTP
//! API v2 / OCI distribution) with `oci-client`: the manifest (an index resolves to this
//! platform or `--platform`), the config and the layers are downloaded — in parallel,
//! bounded, hashed while streaming, resumed with HTTP ranges after an interruption, layers
//! the store already has taken from it — into a temporary OCI layout together with the
//! image's cosign signature (the `sha256-<hex>.sig` tag), which the ordinary import then
//! verifies and unpacks. Nothing reaches the store unless that import succeeds.

mod download;
pub mod places;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::TryStreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciErrorCode;
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::digest::Digest;
use super::error::{ImageError, Result};
use download::Remote;
pub use download::{give_back, RegistryFs};

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `--insecure-options=tls`: accept any certificate.
    pub insecure_tls: bool,
    /// `--insecure-options=http`: plain HTTP.
    pub insecure_http: bool,
    /// `--ca-cert` files (PEM), trusted besides the system's.
    pub ca_certs: Vec<PathBuf>,
    /// `certs.d` directories: `<dir>/<registry>/*.crt` are trusted for that registry.
    pub certs_dirs: Vec<PathBuf>,
    /// Credential files in docker's format, searched in order.
    pub auth_files: Vec<PathBuf>,
    /// `--platform` (`os/arch[/variant]`), default this host's.
    pub platform: Option<String>,
    /// Parallel layer downloads.
    pub jobs: usize,
    /// The registries.conf files (mirrors, remapping, blocking, short names); `None`: none
    /// are read.
    pub registries_conf: Option<crate::image::registries_conf::Sources>,
    /// `--debug`: report each place a pull tries, and why one failed.
    pub debug: bool,
}

impl RegistryOptions {
    /// These options for a place registries.conf marks `insecure`: its certificate is not
    /// checked, and when it does not speak TLS at all it is reached over plain HTTP.
    pub fn insecure_for(&self, host: &str) -> RegistryOptions {
        let mut o = self.clone();
        o.insecure_tls = true;
        if !o.insecure_http && !speaks_tls(host) {
            o.insecure_http = true;
        }
        o
    }
}

/// Whether `host` answers HTTPS (any certificate) at `/v2/`: how an `insecure` registry is
/// told from a plain-HTTP one.
fn speaks_tls(host: &str) -> bool {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return true;
    };
    rt.block_on(async {
        let Ok(client) = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
        else {
            return true;
        };
        client
            .get(format!("https://{host}/v2/"))
            .send()
            .await
            .is_ok()
    })
}

/// The transport prefix.
pub const PREFIX: &str = "docker://";

/// Parses the part after `docker://` into a reference (Docker Hub defaults applied).
pub fn parse(s: &str) -> Result<Reference> {
    let r = s.strip_prefix(PREFIX).unwrap_or(s);
    r.parse::<Reference>()
        .map_err(|e| ImageError::BadSource(format!("{PREFIX}{r}: {e}")))
}

/// The name the image gets in the store: `REGISTRY/REPO:TAG` (or `@DIGEST`).
pub fn store_name(r: &Reference) -> String {
    match (r.tag(), r.digest()) {
        (Some(t), _) => format!("{}/{}:{t}", r.registry(), r.repository()),
        // By digest: the digest as the tag (a store name always has one).
        (None, Some(d)) => format!(
            "{}/{}:{}",
            r.registry(),
            r.repository(),
            d.replace(':', "-")
        ),
        (None, None) => format!("{}/{}:latest", r.registry(), r.repository()),
    }
}

fn fail(r: &Reference, detail: impl std::fmt::Display) -> ImageError {
    ImageError::Registry {
        registry: r.registry().to_string(),
        detail: detail.to_string(),
    }
}

/// A user-facing explanation of a client error.
fn explain(r: &Reference, e: oci_client::errors::OciDistributionError) -> ImageError {
    use oci_client::errors::OciDistributionError as E;
    // The whole chain: reqwest's own message hides the cause (TLS, DNS, refused…).
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    let detail = match &e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => format!(
            "authentication failed ({text}); check the credentials (`orbit login {}`)",
            r.registry()
        ),
        E::ImageManifestNotFoundError(_) => {
            format!("{}: no such image or tag ({text})", r.whole())
        }
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) =>
        {
            format!("{}: no such image or tag ({text})", r.whole())
        }
        E::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Denied)) =>
        {
            format!("access denied ({text}); check the credentials (`orbit login {}`)", r.registry())
        }
        E::ServerError { code: 404, .. } => {
            format!("{}: no such image or tag ({text})", r.whole())
        }
        E::ServerError { code: 403, .. } => format!(
            "access denied (HTTP 403: {text}); check the credentials (`orbit login {}`)",
            r.registry()
        ),
        E::ServerError { code: 429, .. } => format!(
            "the registry is throttling requests (HTTP 429 Too Many Requests, still after retries): try again later ({text})"
        ),
        E::ServerError { code, .. } if *code >= 500 => format!(
            "the registry failed (HTTP {code}, still after retries): {text}"
        ),
        _ if text.contains("dns error") || text.contains("failed to lookup") => {
            format!("unknown host ({text})")
        }
        _ if text.contains("Connection refused") => format!("connection refused ({text})"),
        _ if text.contains("certificate") || text.contains("Certificate") => format!(
            "TLS certificate not trusted ({text}); pass --ca-cert, put it in certs.d/{}/, or --insecure-options=tls",
            r.registry()
        ),
        _ => text,
    };
    fail(r, detail)
}

/// True for errors a retry may cure: throttling, server errors, dropped connections.
fn retryable(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::ServerError { code, .. } => *code == 429 || *code >= 500,
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Toomanyrequests)),
        E::RequestError(r) => {
            r.is_connect() || r.is_timeout() || r.is_body() || r.is_request() || r.is_decode()
        }
        E::IoError(_) => true,
        _ => false,
    }
}

/// Credentials for `registry` from docker-style files (`{"auths": {REG: {"auth": b64}}}`).
pub fn credentials(files: &[PathBuf], registry: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    for f in files {
        let Ok(text) = std::fs::read(f) else { continue };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
            continue;
        };
        let auths = &v["auths"];
        for key in [
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ] {
            let Some(a) = auths[&key]["auth"].as_str() else {
                continue;
            };
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(a) else {
                continue;
            };
            let raw = String::from_utf8_lossy(&raw).into_owned();
            if let Some((u, p)) = raw.split_once(':') {
                return Some((u.to_string(), p.to_string()));
            }
        }
    }
    None
}

fn client(r: &Reference, opts: &RegistryOptions) -> Result<Client> {
    let mut certs = Vec::new();
    let mut files: Vec<PathBuf> = opts.ca_certs.clone();
    for d in &opts.certs_dirs {
        for e in std::fs::read_dir(d.join(r.registry()))
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path();
            if matches!(p.extension().and_then(|e| e.to_str()), Some("crt" | "pem")) {
                files.push(p);
            }
        }
    }
    for f in files {
        let data = std::fs::read(&f).map_err(|e| {
            fail(
                r,
                format!("cannot read CA certificate {}: {e}", f.display()),
            )
        })?;
        certs.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    let platform = opts.platform.clone();
    let config = ClientConfig {
        protocol: if opts.insecure_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: opts.insecure_tls,
        extra_root_certificates: certs,
        platform_resolver: Some(Box::new(move |entries| {
            resolve_platform(entries, platform.as_deref())
        })),
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        ..ClientConfig::default()
    };
    Ok(Client::new(config))
}

/// This host's platform, `linux/<arch>` in OCI's spelling.
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    format!("linux/{arch}")
}

/// The index entry for `want` (`os/arch[/variant]`), default this host's.
fn resolve_platform(
    entries: &[oci_client::manifest::ImageIndexEntry],
    want: Option<&str>,
) -> Option<String> {
    let want = want.map(str::to_string).unwrap_or_else(host_platform);
    let mut parts = want.split('/');
    let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
    entries
        .iter()
        .find(|e| {
            e.platform.as_ref().is_some_and(|p| {
                Some(p.os.to_string().as_str()) == os
                    && Some(p.architecture.to_string().as_str()) == arch
                    && (variant.is_none() || p.variant.as_deref() == variant)
            })
        })
        .map(|e| e.digest.clone())
}

fn auth_for(r: &Reference, opts: &RegistryOptions) -> RegistryAuth {
    match credentials(&opts.auth_files, r.registry()) {
        Some((u, p)) => RegistryAuth::Basic(u, p),
        None => RegistryAuth::Anonymous,
    }
}

const MANIFEST_TYPES: [&str; 4] = [
    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
    oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

fn blob_file(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The largest config or signature blob read into memory.
const MAX_SMALL_BLOB: i64 = 16 << 20;

/// Retries `f` with back-off where a retry can help.
async fn with_retries<T, F, Fut>(r: &Reference, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<
        Output = std::result::Result<T, oci_client::errors::OciDistributionError>,
    >,
{
    let mut delay = Duration::from_millis(300);
    for attempt in 1.. {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 4 && retryable(&e) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                let err = explain(r, e);
                return Err(match err {
                    ImageError::Registry { registry, detail } => ImageError::Registry {
                        registry,
                        detail: format!("{what}: {detail}"),
                    },
                    other => other,
                });
            }
        }
    }
    unreachable!("the loop returns")
}

/// Downloads a small blob (a config, a signature's parts) into memory, checked against its
/// digest and its declared size.
async fn small_blob(client: &Client, r: &Reference, desc: &OciDescriptor) -> Result<Vec<u8>> {
    // The manifest naming this digest is not verified yet: the digest becomes a file name
    // only once it is a well-formed sha256 digest (no `/`, no `..`).
    let digest: Digest = desc.digest.parse().map_err(|_| {
        fail(
            r,
            format!(
                "the manifest names a malformed blob digest {:?}",
                desc.digest
            ),
        )
    })?;
    if !(0..=MAX_SMALL_BLOB).contains(&desc.size) {
        return Err(fail(
            r,
            format!(
                "blob {} declares {} bytes: too large for a config or signature",
                desc.digest, desc.size
            ),
        ));
    }
    let bytes = with_retries(r, &format!("blob {}", desc.digest), || async {
        let mut s = client.pull_blob_stream(r, desc).await?;
        let mut buf = Vec::with_capacity(desc.size as usize);
        while let Some(chunk) = s.stream.try_next().await? {
            buf.extend_from_slice(&chunk);
            if buf.len() as i64 > desc.size {
                break;
            }
        }
        Ok(buf)
    })
    .await?;
    let actual = Digest::of(&bytes);
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            what: format!("blob {} from {}", desc.digest, r.whole()),
            expected: desc.digest.clone(),
            actual: actual.to_string(),
        });
    }
    Ok(bytes)
}

/// The digest the registry's manifest for `r` has now (for `--pull-policy=update`).
pub fn current_digest(r: &Reference, opts: &RegistryOptions) -> Result<String> {
    runtime(r)?.block_on(async {
        let client = client(r, opts)?;
        let auth = auth_for(r, opts);
        let (bytes, _) = with_retries(r, "manifest", || {
            client.pull_manifest_raw(r, &auth, &MANIFEST_TYPES)
        })
        .await?;
        Ok(Digest::of(&bytes).to_string())
    })
}

/// Checks credentials with `registry` the way `docker login` does, with the real client: the
/// token endpoint of a bearer challenge, or a request carrying basic credentials. A refusal
/// is an error naming the registry; a registry without authentication accepts anything.
pub fn check_login(
    registry: &str,
    user: &str,
    password: &str,
    opts: &RegistryOptions,
) -> Result<()> {
    use oci_client::errors::OciDistributionError as E;
    let r = Reference::with_tag(
        registry.to_string(),
        "orbit-login-check".into(),
        "latest".into(),
    );
    let client = client(&r, opts)?;
    let auth = RegistryAuth::Basic(user.to_string(), password.to_string());
    runtime(&r)?.block_on(async {
        let checked = async {
            client
                .auth(&r, &auth, oci_client::RegistryOperation::Pull)
                .await?;
            client.pull_manifest_raw(&r, &auth, &MANIFEST_TYPES).await
        }
        .await;
        match checked {
            Ok(_) => Ok(()),
            Err(e @ (E::AuthenticationFailure(_) | E::UnauthorizedError { .. })) => Err(fail(
                &r,
                format!("the registry refused the credentials of {user}: {e}"),
            )),
            // The credentials were accepted; the repository does not exist.
            Err(E::ImageManifestNotFoundError(_)) => Ok(()),
            Err(E::ServerError { code: 404, .. }) => Ok(()),
            Err(E::RegistryError { envelope, .. })
                if !envelope.errors.iter().any(|e| {
                    matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(explain(&r, e)),
        }
    })
}

/// What a pull left in the temporary layout.
pub struct Pulled {
    /// The name for the store.
    pub name: String,
    /// The digest of the manifest the registry served for the reference (an index's, for a
    /// multi-platform image): what `--pull-policy=update` compares.
    pub top_digest: String,
    /// The layout, whose layers are streamed from the registry as they are read.
    pub fs: RegistryFs,
}

/// Pulls the manifests, config and signature (if the registry has one) of `r` into the OCI
/// layout `layout` (created); its layers are left in the registry, to be streamed — and kept
/// resumable in `downloads` — as the import reads them.
pub fn pull(
    r: &Reference,
    opts: &RegistryOptions,
    layout: &Path,
    downloads: &Path,
) -> Result<Pulled> {
    let rt = runtime(r)?;
    let client = client(r, opts)?;
    let (top_digest, layers) = rt.block_on(pull_async(&client, r, opts, layout))?;
    std::fs::create_dir_all(downloads).map_err(|e| ImageError::Io {
        context: format!("cannot create {}", downloads.display()),
        error: e,
    })?;
    let remote = Remote {
        rt,
        client,
        reference: r.clone(),
        downloads: downloads.to_path_buf(),
    };
    Ok(Pulled {
        name: store_name(r),
        top_digest,
        fs: RegistryFs::new(layout, remote, layers),
    })
}

/// The async runtime a registry call runs on (the rest of orbit is synchronous).
fn runtime(r: &Reference) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(r, format!("cannot start the HTTP runtime: {e}")))
}

/// The metadata part of [`pull`]: returns the top manifest's digest and the layers.
async fn pull_async(
    client: &Client,
    r: &Reference,
    opts: &RegistryOptions,
    layout: &Path,
) -> Result<(String, Vec<OciDescriptor>)> {
    let auth = auth_for(r, opts);
    std::fs::create_dir_all(layout.join("blobs/sha256")).map_err(|e| ImageError::Io {
        context: format!("cannot create {}", layout.display()),
        error: e,
    })?;
    let write = |digest: &str, bytes: &[u8]| -> Result<()> {
        std::fs::write(blob_file(layout, digest), bytes).map_err(|e| ImageError::Io {
            context: format!("cannot write blob {digest}"),
            error: e,
        })
    };
    // The top manifest (possibly an index), exactly as the registry serves it: its digest
    // is what signatures name.
    let (top, top_digest) = with_retries(r, "manifest", || {
        client.pull_manifest_raw(r, &auth, &MANIFEST_TYPES)
    })
    .await?;
    // What the registry says the digest is does not matter: the bytes decide.
    let _ = top_digest;
    let top_digest = Digest::of(&top).to_string();
    if let Some(want) = r.digest() {
        if top_digest != want {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {}", r.whole()),
                expected: want.to_string(),
                actual: top_digest,
            });
        }
    }
    write(&top_digest, &top)?;
    let parsed: OciManifest = serde_json::from_slice(&top)
        .map_err(|e| ImageError::malformed(format!("manifest of {}", r.whole()), e))?;
    let (top_media, image_manifest, platform_digest) = match parsed {
        OciManifest::Image(m) => (
            m.media_type
                .clone()
                .unwrap_or_else(|| oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.into()),
            m,
            None,
        ),
        OciManifest::ImageIndex(idx) => {
            let media = idx
                .media_type
                .clone()
                .unwrap_or_else(|| oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE.into());
            let digest =
                resolve_platform(&idx.manifests, opts.platform.as_deref()).ok_or_else(|| {
                    fail(
                        r,
                        format!(
                            "{} has no image for {}",
                            r.whole(),
                            opts.platform.as_deref().unwrap_or("this platform")
                        ),
                    )
                })?;
            let child = Reference::with_digest(
                r.registry().to_string(),
                r.repository().to_string(),
                digest.clone(),
            );
            let (bytes, _) = with_retries(r, "platform manifest", || {
                client.pull_manifest_raw(&child, &auth, &MANIFEST_TYPES)
            })
            .await?;
            let actual = Digest::of(&bytes).to_string();
            if actual != digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("platform manifest of {}", r.whole()),
                    expected: digest,
                    actual,
                });
            }
            write(&digest, &bytes)?;
            let _: &OciImageIndex = &idx;
            match serde_json::from_slice(&bytes)
                .map_err(|e| ImageError::malformed("platform manifest", e))?
            {
                OciManifest::Image(m) => (media, m, Some(digest)),
                OciManifest::ImageIndex(_) => {
                    return Err(fail(r, "nested image indexes are not supported"))
                }
            }
        }
    };
    // The config now; the layers are streamed by the import.
    let config = small_blob(client, r, &image_manifest.config).await?;
    write(&image_manifest.config.digest, &config)?;
    // Signatures, if the registry has them (`sha256-<hex>.sig`): of the top manifest, and
    // for an index also of the platform manifest (what `orbit image sign` signs).
    let mut index_entries = vec![serde_json::json!({
        "mediaType": top_media,
        "digest": top_digest,
        "size": top.len(),
        "annotations": {"org.opencontainers.image.ref.name": store_name(r)},
    })];
    for signed in std::iter::once(&top_digest).chain(platform_digest.iter()) {
        let sig_tag = format!("sha256-{}.sig", signed.trim_start_matches("sha256:"));
        let sig_ref = Reference::with_tag(
            r.registry().to_string(),
            r.repository().to_string(),
            sig_tag.clone(),
        );
        // Absent (404) means unsigned; throttling or a server error is retried, then an
        // error — not a misleading "no signature".
        let sig = with_retries(&sig_ref, "signature", || {
            client.pull_manifest_raw(&sig_ref, &auth, &MANIFEST_TYPES)
        })
        .await;
        let sig = match sig {
            Ok((sig, _)) => sig,
            Err(ImageError::Registry { detail, .. }) if detail.contains("no such image or tag") => {
                continue
            }
            Err(e) => return Err(e),
        };
        let sig_digest = Digest::of(&sig).to_string();
        write(&sig_digest, &sig)?;
        if let Ok(OciManifest::Image(m)) = serde_json::from_slice::<OciManifest>(&sig) {
            for d in std::iter::once(&m.config).chain(&m.layers) {
                let bytes = small_blob(client, &sig_ref, d).await?;
                write(&d.digest, &bytes)?;
            }
        }
        index_entries.push(serde_json::json!({
            "mediaType": oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
            "digest": sig_digest,
            "size": sig.len(),
            "annotations": {"org.opencontainers.image.ref.name": sig_tag},
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": index_entries});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .map_err(|e| ImageError::Io {
        context: "cannot write the pulled layout's index".into(),
        error: e,
    })?;
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .map_err(|e| ImageError::Io {
        context: "cannot write the pulled layout".into(),
        error: e,
    })?;
    Ok((top_digest, image_manifest.layers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_blob_digests_never_become_paths() {
        for d in [
            "sha256:/etc/shadow",
            "sha256:../../x",
            "sha512:abcd",
            "sha256:ABC",
        ] {
            assert!(d.parse::<super::super::digest::Digest>().is_err(), "{d}");
        }
        let ok = format!("sha256:{}", "a".repeat(64));
        assert!(ok.parse::<super::super::digest::Digest>().is_ok());
    }

    #[test]
    fn names_for_the_store() {
        let r = parse("docker://127.0.0.1:5000/busybox").unwrap();
        assert_eq!(store_name(&r), "127.0.0.1:5000/busybox:latest");
        let r = parse(&format!(
            "docker://reg.example/a/b@sha256:{}",
            "b".repeat(64)
        ))
        .unwrap();
        assert_eq!(
            store_name(&r),
            format!("reg.example/a/b:sha256-{}", "b".repeat(64))
        );
        let r = parse("docker://busybox:1.36").unwrap();
        assert_eq!(store_name(&r), "docker.io/library/busybox:1.36");
    }

    #[test]
    fn credentials_come_from_docker_style_files() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("config.json");
        std::fs::write(&f, r#"{"auths":{"https://reg.example":{"auth":"dTpw"}}}"#).unwrap();
        assert_eq!(
            credentials(&[t.path().join("missing.json"), f], "reg.example"),
            Some(("u".into(), "p".into()))
        );
    }
}
