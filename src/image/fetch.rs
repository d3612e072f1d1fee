//! Importing an image into the store: verify the signature over the manifest digest first,
//! then stream every layer once — hashing the compressed bytes, copying them into a temp
//! blob and unpacking them into a temp layer directory in the same pass — and move blobs,
//! layers and the name into place only when everything checked out. An error at any point
//! leaves the store as it was.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use oci_spec::image::ImageManifest;
use tempfile::{TempDir, TempPath};

use super::config::ImageConfig;
use super::digest::{Digest, HashingReader};
use super::error::{ImageError, Result};
use super::media::{self, Compression};
use super::reference;
use super::signatures;
use super::source::{SourceImage, SourceRef};
use super::store::{self, Store};
use super::unpack::{self, UnpackOptions, WhiteoutMode};
use crate::trust::{self, Signature, TrustStore};

/// What the user asked of a fetch.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Name to store the image under, overriding the source's.
    pub name: Option<String>,
    /// Skip signature verification (`--insecure-options=image`).
    pub insecure_skip_verify: bool,
    /// Show progress bars.
    pub progress: bool,
    /// Layers unpacked in parallel (0: one per CPU).
    pub jobs: usize,
    /// How to reach registries (`docker://` sources).
    pub registry: super::registry::RegistryOptions,
    /// When to go to the registry.
    pub pull_policy: PullPolicy,
}

/// When a `docker://` image is fetched (rkt's `--pull-policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only the store: an image not in it is an error.
    Never,
    /// Fetch only when the store does not have the name.
    New,
    /// Ask the registry whether the name points at another manifest now, and fetch if so.
    #[default]
    Update,
}

/// Fetches a registry image: its manifests, config and signature into a temporary layout
/// in the store's directory, then the ordinary import — signature verified before any layer
/// is read — with the layers streamed from the registry as they are unpacked. The pull
/// policy may keep the registry out of it.
///
/// registries.conf decides what the reference means and where it comes from: a short name
/// is resolved (alias, then search registries); each candidate name is pulled from its
/// mirrors, then its registry. The image is named, and its signature verified, for the
/// requested (resolved) name, whatever place served it.
fn fetch_from_registry(
    store: &Store,
    trust_store: &TrustStore,
    reference: &str,
    opts: &FetchOptions,
) -> Result<FetchOutcome> {
    use super::registries_conf::shortnames;
    let conf = match &opts.registry.registries_conf {
        Some(sources) => sources.load()?,
        None => None,
    };
    let typed = reference
        .strip_prefix(super::registry::PREFIX)
        .unwrap_or(reference);
    let resolution = shortnames::resolve(conf.as_ref(), typed)?;
    let mut opts = opts.clone();
    opts.registry.debug |= opts.progress;
    if let (Some(how), true) = (&resolution.how, opts.registry.debug) {
        eprintln!("orbit: {how}");
    }
    let [only] = resolution.candidates.as_slice() else {
        let mut attempts = Vec::new();
        for c in &resolution.candidates {
            match fetch_name(store, trust_store, c, conf.as_ref(), &opts) {
                Err(
                    e @ (ImageError::Registry { .. }
                    | ImageError::AllLocationsFailed { .. }
                    | ImageError::Blocked { .. }),
                ) => attempts.push(format!("{c}: {e}")),
                done => return done,
            }
        }
        return Err(ImageError::AllLocationsFailed {
            name: typed.to_string(),
            attempts,
        });
    };
    fetch_name(store, trust_store, only, conf.as_ref(), &opts)
}

/// [`fetch_from_registry`] for one fully resolved name.
fn fetch_name(
    store: &Store,
    trust_store: &TrustStore,
    reference: &str,
    conf: Option<&super::registries_conf::RegistriesConf>,
    opts: &FetchOptions,
) -> Result<FetchOutcome> {
    use super::registry::{self, places};
    let r = registry::parse(reference)?;
    let name = match &opts.name {
        Some(n) => reference::normalize_name(n)?,
        None => registry::store_name(&r),
    };
    let sources = places::places(conf, &r)?;
    let platform = opts
        .registry
        .platform
        .clone()
        .unwrap_or_else(registry::host_platform);
    let stored = super::catalog::resolve(store, &name).ok();
    let reuse = |img: super::catalog::StoredImage| FetchOutcome {
        name: name.clone(),
        digest: img.digest,
        verification: Verification::Stored,
        layers_unpacked: 0,
        layers_reused: 0,
    };
    match (opts.pull_policy, stored) {
        (PullPolicy::Never, Some(img)) | (PullPolicy::New, Some(img)) => return Ok(reuse(img)),
        (PullPolicy::Never, None) => {
            return Err(ImageError::UnknownImage(format!(
                "{name} (--pull-policy=never: the registry is not asked)"
            )))
        }
        (PullPolicy::Update, Some(img)) => {
            let (now, _) = places::first_success(
                &r,
                &sources,
                &opts.registry,
                "checking for a newer manifest",
                |_, p, o| registry::current_digest(&p.reference, o),
            )?;
            // The same manifest, or the same index resolved for the same platform.
            let unchanged = img.entries.iter().any(|e| {
                e.name.as_deref() == Some(name.as_str())
                    && e.annotation(store::REGISTRY_DIGEST_ANNOTATION)
                        .unwrap_or(&img.digest.to_string())
                        == now
                    && e.annotation(store::PLATFORM_ANNOTATION)
                        .is_none_or(|p| p == platform)
            });
            if unchanged {
                return Ok(reuse(img));
            }
        }
        _ => {}
    }
    store.init()?;
    // Held while downloading: `orbit image gc` (exclusive) then leaves this pull's partial
    // downloads and temporary layout alone.
    let _downloading = store.lock_shared()?;
    let work = tempfile::Builder::new()
        .prefix(".pull-")
        .tempdir_in(store.root())
        .map_err(|e| ImageError::Io {
            context: format!(
                "cannot create a temporary directory in {}",
                store.root().display()
            ),
            error: e,
        })?;
    let downloads = store.root().join("downloads");
    // A fresh layout for each place: what a failed one left is not mixed in.
    let ((pulled, layout, place_opts), place) =
        places::first_success(&r, &sources, &opts.registry, "pulling", |i, p, o| {
            let layout = work.path().join(format!("layout-{i}"));
            registry::pull(&p.reference, o, &layout, &downloads)
                .map(|pulled| (pulled, layout, o.clone()))
        })?;
    let display = if place.reference.whole() == r.whole() {
        format!("{}{}", registry::PREFIX, r.whole())
    } else {
        format!(
            "{}{} (for {})",
            registry::PREFIX,
            place.reference.whole(),
            r.whole()
        )
    };
    let image = super::source::open_layout(
        Box::new(pulled.fs),
        &display,
        Some(&pulled.name),
        &layout,
        place_opts.platform.as_deref(),
    )?;
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let inner = FetchOptions {
        name: Some(name),
        // Downloads wait on the network, not the CPU: more of them than CPUs.
        jobs: opts.jobs.max(opts.registry.jobs).max(cpus),
        ..opts.clone()
    };
    let extra = BTreeMap::from([
        (
            store::REGISTRY_DIGEST_ANNOTATION.to_string(),
            pulled.top_digest,
        ),
        (store::PLATFORM_ANNOTATION.to_string(), platform),
    ]);
    import(store, trust_store, image, &inner, extra)
}

/// How an image was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// By a signature from a trusted key.
    Key { fingerprint: String },
    /// Not at all: `--insecure-options=image`.
    Insecure,
    /// Not now: the store has it already (verified when it was fetched), and the pull
    /// policy kept the registry out of it.
    Stored,
}

impl Verification {
    /// The annotation value recorded in the store.
    pub fn annotation(&self) -> String {
        match self {
            Verification::Key { fingerprint } => format!("key {fingerprint}"),
            Verification::Insecure => "insecure".into(),
            Verification::Stored => "stored".into(),
        }
    }
}

/// What a fetch did.
#[derive(Debug, Clone)]
pub struct FetchOutcome {
    /// The name the image is stored under.
    pub name: String,
    /// Its manifest digest.
    pub digest: Digest,
    /// How it was verified.
    pub verification: Verification,
    /// Layers that were unpacked now.
    pub layers_unpacked: usize,
    /// Layers already present in the store.
    pub layers_reused: usize,
}

/// Imports the image at `source` into `store`.
pub fn fetch(
    store: &Store,
    trust_store: &TrustStore,
    source: &SourceRef,
    opts: &FetchOptions,
) -> Result<FetchOutcome> {
    if let SourceRef::Registry { reference } = source {
        return fetch_from_registry(store, trust_store, reference, opts);
    }
    import(store, trust_store, source.open()?, opts, BTreeMap::new())
}

/// Verifies `image` and moves it into the store, with `extra` annotations on its name.
fn import(
    store: &Store,
    trust_store: &TrustStore,
    image: SourceImage,
    opts: &FetchOptions,
    extra: BTreeMap<String, String>,
) -> Result<FetchOutcome> {
    let name = match (&opts.name, &image.name) {
        (Some(n), _) | (None, Some(n)) => reference::normalize_name(n)?,
        (None, None) => {
            let mut signed_as: Vec<String> = image
                .signatures
                .iter()
                .filter_map(|s| trust::SimpleSigningPayload::parse(&s.payload).ok())
                .map(|p| p.reference().to_string())
                .collect();
            signed_as.sort();
            signed_as.dedup();
            return Err(ImageError::Unnamed {
                source_name: image.display.clone(),
                signed_as,
            });
        }
    };
    let verification = verify(trust_store, &image, &name, opts.insecure_skip_verify)?;
    let kept = if opts.insecure_skip_verify {
        Vec::new()
    } else {
        valid_signatures(trust_store, &image, &name)
    };

    let what = format!("manifest of {}", image.display);
    let manifest: ImageManifest =
        serde_json::from_slice(&image.manifest).map_err(|e| ImageError::malformed(&what, e))?;
    let layers = plan_layers(&manifest, &image.display)?;
    store.init()?;
    let _lock = store.lock_shared()?;
    let config_digest: Digest = manifest.config().digest().to_string().parse()?;
    let config_bytes = image.read_blob(&config_digest, "config")?;
    let config = ImageConfig::parse(&config_bytes, &format!("config of {}", image.display))?;
    let diff_ids = config.diff_ids()?;
    if diff_ids.len() != layers.len() {
        return Err(ImageError::malformed(
            &image.display,
            format!(
                "the manifest has {} layers but the config lists {} diff_ids",
                layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let jobs: Vec<LayerJob> = layers
        .into_iter()
        .zip(diff_ids)
        .map(|(l, diff_id)| LayerJob { diff_id, ..l })
        .collect();
    let staged = stage_layers(store, &image, &jobs, opts)?;
    let (unpacked, reused) = (
        staged.iter().filter(|s| s.layer.is_some()).count(),
        staged.iter().filter(|s| s.is_empty()).count(),
    );
    for (job, s) in jobs.iter().zip(staged) {
        s.commit(store, job)?;
    }
    store.put_blob(&config_bytes)?;
    store.put_blob(&image.manifest)?;
    let mut ann = extra;
    for (digest, sigs) in &kept {
        signatures::store_signatures(store, digest, sigs)?;
        if digest != &image.manifest_digest {
            // The signature names the index the source pointed at: keep the index too, so
            // that `orbit image export` can hand on the signed image as it was signed.
            if let Some(index) = image.index.as_ref().filter(|i| &Digest::of(i) == digest) {
                store.put_blob(index)?;
                ann.insert(store::INDEX_ANNOTATION.to_string(), digest.to_string());
            }
        }
    }
    ann.insert(store::SOURCE_ANNOTATION.to_string(), image.display.clone());
    ann.insert(store::FETCHED_ANNOTATION.to_string(), now_rfc3339());
    ann.insert(
        store::VERIFIED_ANNOTATION.to_string(),
        verification.annotation(),
    );
    store.set_ref(
        &name,
        media::manifest_media_type(&image.manifest),
        &image.manifest_digest,
        image.manifest.len() as u64,
        ann,
    )?;
    Ok(FetchOutcome {
        name,
        digest: image.manifest_digest,
        verification,
        layers_unpacked: unpacked,
        layers_reused: reused,
    })
}

/// Checks the image's signatures against the trusted keys for `name`.
pub fn verify(
    trust_store: &TrustStore,
    image: &SourceImage,
    name: &str,
    insecure: bool,
) -> Result<Verification> {
    if insecure {
        return Ok(Verification::Insecure);
    }
    let mut first_error = None;
    for d in &image.signable_digests {
        match trust::verify_image(trust_store, name, d.as_str(), &image.signatures) {
            Ok(v) => {
                return Ok(Verification::Key {
                    fingerprint: v.key.fingerprint.clone(),
                })
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error
        .expect("an image has at least one signable digest")
        .into())
}

/// The signatures of `image` that verify for `name` with a trusted key, grouped by the
/// digest they sign (the manifest's, or the index's the source pointed at). Only these are
/// kept in the store: a signature that did not verify is never handed on.
pub fn valid_signatures(
    trust_store: &TrustStore,
    image: &SourceImage,
    name: &str,
) -> Vec<(Digest, Vec<Signature>)> {
    image
        .signable_digests
        .iter()
        .filter_map(|d| {
            let valid: Vec<Signature> = image
                .signatures
                .iter()
                .filter(|s| {
                    trust::verify_image(trust_store, name, d.as_str(), std::slice::from_ref(s))
                        .is_ok()
                })
                .cloned()
                .collect();
            (!valid.is_empty()).then(|| (d.clone(), valid))
        })
        .collect()
}

/// The current time, RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

struct LayerJob {
    blob: Digest,
    size: u64,
    compression: Compression,
    diff_id: Digest,
}

fn plan_layers(manifest: &ImageManifest, display: &str) -> Result<Vec<LayerJob>> {
    manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let media_type = l.media_type().to_string();
            let compression =
                media::layer_compression(&media_type).map_err(|error| ImageError::MediaType {
                    what: format!("layer {} of {display}", i + 1),
                    error,
                })?;
            Ok(LayerJob {
                blob: l.digest().to_string().parse()?,
                size: l.size(),
                compression,
                diff_id: Digest::of(b""),
            })
        })
        .collect()
}

/// A layer's work in progress: a temp blob and/or temp layer dir, removed on drop — or a
/// verified registry download, given back to `downloads/` on drop (the next fetch then
/// finds it whole).
#[derive(Default)]
struct Staged {
    blob: Option<TempPath>,
    download: Option<PathBuf>,
    layer: Option<TempDir>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(d) = self.download.take() {
            super::registry::give_back(&d);
        }
    }
}

impl Staged {
    fn is_empty(&self) -> bool {
        self.blob.is_none() && self.download.is_none() && self.layer.is_none()
    }

    /// Moves the staged blob and layer into place. A layer that appeared meanwhile (a
    /// concurrent fetch of an image sharing it) wins; ours is discarded.
    fn commit(mut self, store: &Store, job: &LayerJob) -> Result<()> {
        let path = store.blob_path(&job.blob);
        if let Some(tmp) = self.blob.take() {
            tmp.persist(&path)
                .map_err(|e| ImageError::io("cannot move blob into place", &path, e.error))?;
        }
        if let Some(d) = self.download.take() {
            if let Err(e) = fs::rename(&d, &path) {
                super::registry::give_back(&d);
                return Err(ImageError::io("cannot move blob into place", &path, e));
            }
        }
        if let Some(tmp) = self.layer.take() {
            let path = store.layer_dir(&job.diff_id);
            if !path.exists() {
                let staged = tmp.keep();
                if let Err(e) = fs::rename(&staged, &path) {
                    let _ = fs::remove_dir_all(&staged);
                    if !path.exists() {
                        return Err(ImageError::io("cannot move layer into place", &path, e));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Stages every layer not yet in the store, in parallel. A layer is unpacked with the
/// layers below it that are already in the store as its lowers (for hard links into them);
/// one whose hard link needs a lower staged by this same fetch fails the first time and is
/// staged again, in order, once every layer below it is staged.
fn stage_layers(
    store: &Store,
    image: &SourceImage,
    jobs: &[LayerJob],
    opts: &FetchOptions,
) -> Result<Vec<Staged>> {
    let workers = match opts.jobs {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    }
    .min(jobs.len().max(1));
    let progress = opts.progress.then(indicatif::MultiProgress::new);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Staged>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= jobs.len() {
                    break;
                }
                // The same blob twice in one image (an empty layer, say) is staged once.
                if jobs[..i].iter().any(|j| j.blob == jobs[i].blob) {
                    results.lock().expect("no worker panics holding the lock")[i] =
                        Some(Ok(Staged::default()));
                    continue;
                }
                let bar = progress.as_ref().map(|mp| layer_bar(mp, &jobs[i]));
                let lowers = stored_lowers(store, &jobs[..i]);
                let r = stage_layer(store, image, &jobs[i], bar.as_ref(), lowers);
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                let failed = r.as_ref().is_err_and(|e| !needs_lowers(e));
                results.lock().expect("no worker panics holding the lock")[i] = Some(r);
                if failed {
                    next.store(jobs.len(), Ordering::SeqCst);
                }
            });
        }
    });
    let results = results.into_inner().expect("no worker panicked");
    let mut results = results;
    if let Some(i) = results
        .iter()
        .position(|r| matches!(r, Some(Err(e)) if !needs_lowers(e)))
    {
        if let Some(Err(e)) = results.swap_remove(i) {
            return Err(e);
        }
    }
    let mut staged: Vec<Staged> = Vec::with_capacity(jobs.len());
    for (i, r) in results.into_iter().enumerate() {
        let s = match r.expect("every layer was staged") {
            Ok(s) => s,
            Err(_) => {
                let lowers = (0..i)
                    .rev()
                    .map(|j| match &staged[j].layer {
                        Some(tmp) => tmp.path().join("rootfs"),
                        None => store.layer_rootfs(&jobs[j].diff_id),
                    })
                    .collect();
                stage_layer(store, image, &jobs[i], None, lowers)?
            }
        };
        staged.push(s);
    }
    Ok(staged)
}

/// The lowers of a layer above `below` (base first) that are in the store, nearest first,
/// stopping at the first one that is not (what lies below a missing layer may be hidden by it).
fn stored_lowers(store: &Store, below: &[LayerJob]) -> Vec<PathBuf> {
    below
        .iter()
        .rev()
        .map(|j| store.layer_rootfs(&j.diff_id))
        .take_while(|p| p.is_dir())
        .collect()
}

/// Whether a layer failed only because a hard link needs a lower layer it was not given.
fn needs_lowers(e: &ImageError) -> bool {
    matches!(
        e,
        ImageError::Unpack {
            error: unpack::UnpackError::HardlinkTargetMissing { .. },
            ..
        }
    )
}

fn layer_bar(mp: &indicatif::MultiProgress, job: &LayerJob) -> indicatif::ProgressBar {
    let bar = mp.add(indicatif::ProgressBar::new(job.size));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(job.blob.short().to_string());
    bar
}

fn stage_layer(
    store: &Store,
    image: &SourceImage,
    job: &LayerJob,
    bar: Option<&indicatif::ProgressBar>,
    lowers: Vec<PathBuf>,
) -> Result<Staged> {
    let have_blob = store.blob_path(&job.blob).is_file();
    let have_layer = store.layer_dir(&job.diff_id).is_dir();
    if have_blob && have_layer {
        return Ok(Staged::default());
    }
    let what = format!("layer {} of {}", job.blob, image.display);
    let (source, size): (Box<dyn Read + Send + '_>, u64) = if have_blob {
        let path = store.blob_path(&job.blob);
        let f = fs::File::open(&path).map_err(ImageError::io_at("cannot open blob", &path))?;
        (Box::new(f), job.size)
    } else {
        image.open_blob(&job.blob)?
    };
    if size != job.size {
        return Err(ImageError::SizeMismatch {
            what,
            expected: job.size,
            actual: size,
        });
    }
    let source: Box<dyn Read + Send + '_> = match bar {
        Some(b) => Box::new(b.wrap_read(source)),
        None => source,
    };
    let tmp_dir = store.tmp_dir();
    let mut staged = Staged::default();
    // A registry keeps what it streams in a download file: that file becomes the blob.
    let downloaded = !have_blob && image.keeps_downloads();
    let tee: Box<dyn Write> = if have_blob || downloaded {
        Box::new(io::sink())
    } else {
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp_dir)
            .map_err(ImageError::io_at("cannot create temp blob", &tmp_dir))?;
        let file = tmp
            .reopen()
            .map_err(ImageError::io_at("cannot open temp blob", tmp.path()))?;
        staged.blob = Some(tmp.into_temp_path());
        Box::new(BufWriter::with_capacity(1 << 20, file))
    };
    let mut compressed = HashingReader::with_tee(source, tee);
    let unpacked = if have_layer {
        Ok(None)
    } else {
        unpack_staged(store, job, &mut compressed, &what, lowers).map(Some)
    };
    // Hash the rest of the blob even when unpacking failed: a corrupt or tampered blob is
    // reported as a digest mismatch, the real cause, rather than as whatever the
    // decompressor or tar reader tripped over.
    let drained = compressed.drain();
    let actual_size = compressed.len();
    let (digest, mut tee) = compressed.finish();
    if drained.is_ok() && digest != job.blob {
        // A bad download is not kept for resuming.
        if let Some(d) = downloaded.then(|| image.take_download(&job.blob)).flatten() {
            let _ = fs::remove_file(d);
        }
        return Err(ImageError::DigestMismatch {
            what,
            expected: job.blob.to_string(),
            actual: digest.to_string(),
        });
    }
    staged.layer = unpacked?;
    drained.map_err(|e| ImageError::Io {
        context: format!("cannot read {what}"),
        error: e,
    })?;
    tee.flush()
        .map_err(|e| ImageError::io("cannot write blob", &tmp_dir, e))?;
    if actual_size != job.size {
        return Err(ImageError::SizeMismatch {
            what,
            expected: job.size,
            actual: actual_size,
        });
    }
    if downloaded {
        // Taken only now that everything checked out: until then the source keeps it (and a
        // layer staged again reads it from there).
        staged.download = Some(
            image
                .take_download(&job.blob)
                .ok_or_else(|| ImageError::Io {
                    context: format!("the download of {what} was read but not kept"),
                    error: io::Error::from(io::ErrorKind::NotFound),
                })?,
        );
    }
    Ok(staged)
}

/// Unpacks a layer stream into a new temp directory (`rootfs/` plus `mtree.json`) and checks
/// its diff-ID.
fn unpack_staged(
    store: &Store,
    job: &LayerJob,
    compressed: &mut dyn Read,
    what: &str,
    lowers: Vec<PathBuf>,
) -> Result<TempDir> {
    let tmp_dir = store.tmp_dir();
    let tmp_dir = tmp_dir.as_path();
    let tmp = tempfile::Builder::new()
        .prefix("layer-")
        .tempdir_in(tmp_dir)
        .map_err(ImageError::io_at("cannot create temp layer", tmp_dir))?;
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs).map_err(ImageError::io_at("cannot create", &rootfs))?;
    let decompressed =
        media::decompress(job.compression, compressed).map_err(|e| decompress_error(what, e))?;
    let mut diff = HashingReader::new(decompressed);
    let opts = UnpackOptions {
        whiteouts: WhiteoutMode::Overlay,
        record_manifest: true,
        lowers,
        ..UnpackOptions::default()
    };
    let report = unpack::unpack_layer(&mut diff, &rootfs, &opts)
        .map_err(|e| unpack_error(what, store, e))?;
    diff.drain().map_err(|e| decompress_error(what, e))?;
    let (diff_id, _) = diff.finish();
    if diff_id != job.diff_id {
        return Err(ImageError::DigestMismatch {
            what: format!("uncompressed {what} (diff-ID)"),
            expected: job.diff_id.to_string(),
            actual: diff_id.to_string(),
        });
    }
    let mtree = serde_json::to_vec(&report.manifest)
        .map_err(|e| ImageError::malformed("layer manifest", e))?;
    let mtree_path = tmp.path().join("mtree.json");
    fs::write(&mtree_path, mtree).map_err(ImageError::io_at("cannot write", &mtree_path))?;
    Ok(tmp)
}

/// A failed unpack. A full disk or read-only store is reported against the store (not the
/// temp directory, which is gone by the time the user reads the message).
fn unpack_error(what: &str, store: &Store, e: unpack::UnpackError) -> ImageError {
    if let Some(io) = e.io_error() {
        if let Some(code) = io.raw_os_error() {
            if code == rustix::io::Errno::NOSPC.raw_os_error()
                || code == rustix::io::Errno::ROFS.raw_os_error()
            {
                return ImageError::io(what, store.root(), io::Error::from_raw_os_error(code));
            }
        }
    }
    ImageError::Unpack {
        layer: what.to_string(),
        error: e,
    }
}

fn decompress_error(what: &str, e: io::Error) -> ImageError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ImageError::Truncated {
            what: what.to_string(),
        },
        _ => ImageError::Io {
            context: format!("cannot decompress {what}"),
            error: e,
        },
    }
}
