//! `orbit fetch` and `orbit image …`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::Subcommand;

use orbit::image::fetch::{self, FetchOptions, Verification};
use orbit::image::source::SourceRef;
use orbit::image::{catalog, export, extract, gc, signatures, verify};
use orbit::trust::{self, KeyAlgorithm, PrivateKey, SimpleSigningPayload, TrustStore};

use super::output::{self, human_size, Format};
use super::{Context, FetchArgs, FormatArgs, ListFlags};

/// Where `orbit image export` puts signatures (`--signatures`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportSignatures {
    /// In FILE.sig beside the archive, which `orbit fetch oci-archive:FILE` reads; the
    /// archive holds one image, so `podman load` and skopeo read it too.
    Detached,
    /// Inside the archive as cosign signature manifests (orbit and `cosign verify
    /// --local-image` read them; podman and skopeo see a second image and refuse).
    Embedded,
    /// No signatures.
    None,
}

impl From<ExportSignatures> for export::SignatureMode {
    fn from(s: ExportSignatures) -> Self {
        match s {
            ExportSignatures::Detached => export::SignatureMode::Detached,
            ExportSignatures::Embedded => export::SignatureMode::Embedded,
            ExportSignatures::None => export::SignatureMode::None,
        }
    }
}

/// `orbit image` subcommands.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List the images in the store.
    #[command(alias = "ls")]
    List(ListFlags),
    /// Print an image's manifest.
    CatManifest {
        /// Image: NAME[:TAG], digest, digest prefix or source.
        image: String,
    },
    /// Show an image's config, layers, size and signature status.
    Inspect {
        /// Image: NAME[:TAG], digest, digest prefix or source.
        image: String,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Remove images (a name removes that name; a digest removes every name of the image).
    Rm {
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Write an image, with its name and signatures, to an oci-archive.
    Export {
        /// Image.
        image: String,
        /// Archive to write.
        file: PathBuf,
        /// Replace FILE (and FILE.sig) if it exists.
        #[arg(long)]
        overwrite: bool,
        /// Where the image's signatures go.
        #[arg(long, value_enum, default_value_t = ExportSignatures::Detached)]
        signatures: ExportSignatures,
    },
    /// Write an image's flattened root filesystem into a new or empty directory.
    Extract {
        /// Image.
        image: String,
        /// Target directory.
        #[arg(value_name = "DIR")]
        target_dir: PathBuf,
    },
    /// Write an image as a stage1 sees it: DIR/rootfs, DIR/manifest.json, DIR/config.json.
    Render {
        /// Image.
        image: String,
        /// Target directory.
        #[arg(value_name = "DIR")]
        target_dir: PathBuf,
    },
    /// Re-hash every blob and check every unpacked layer of images (default: all).
    Verify {
        /// Images.
        images: Vec<String>,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Remove blobs and layers no image uses, and leftovers of interrupted work.
    Gc,
    /// Generate a signing key pair: PREFIX.key (private, mode 0600) and PREFIX.pub.
    Keygen {
        /// Output path prefix.
        prefix: PathBuf,
        /// Key algorithm.
        #[arg(long, value_enum, default_value_t = Algorithm::EcdsaP256)]
        algorithm: Algorithm,
    },
    /// Sign an image in the store or a local source (oci:, oci-archive:, docker-archive:).
    Sign {
        /// Image or source.
        image: String,
        /// Private key (PKCS#8 or SEC1 PEM).
        #[arg(long)]
        key: PathBuf,
        /// The name to sign for (default: the image's name).
        #[arg(long)]
        identity: Option<String>,
        /// For a source: write the signature to this file instead of SOURCE.sig / into the layout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// Key algorithms for `orbit image keygen`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Algorithm {
    /// ECDSA over P-256 with SHA-256 (cosign's default).
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

fn trust_store(ctx: &Context) -> TrustStore {
    TrustStore::new(ctx.config.clone())
}

/// `orbit fetch`.
pub fn fetch(ctx: &Context, args: FetchArgs) -> anyhow::Result<()> {
    if args.name.is_some() && args.sources.len() > 1 {
        bail!("--name applies to one image; fetch the sources one at a time");
    }
    if ctx.insecure_image {
        eprintln!("orbit: WARNING: --insecure-options=image: signature verification is OFF; the image is not authenticated");
    } else {
        for b in trust_store(ctx).broken()? {
            eprintln!("orbit: warning: a trusted key is skipped: {}", b.reason);
        }
    }
    let host = orbit::image::registry::host_platform();
    if let Some(p) = ctx.registry.platform.as_deref().filter(|p| *p != host) {
        eprintln!("orbit: warning: --platform={p}: such images cannot run on this host ({host})");
    }
    for s in &args.sources {
        let source = match SourceRef::parse(s) {
            Some(r) => r?,
            None => bail!("'{s}' is not a source: use oci:DIR[:REF], oci-archive:FILE[:REF] or docker-archive:FILE[:REF]"),
        };
        let opts = FetchOptions {
            name: args.name.clone(),
            insecure_skip_verify: ctx.insecure_image,
            progress: !args.no_progress && !args.quiet && std::io::stderr().is_terminal(),
            jobs: args.jobs,
            registry: ctx.registry.clone(),
            pull_policy: ctx
                .pull_policy
                .unwrap_or(orbit::image::fetch::PullPolicy::Update),
        };
        let started = Instant::now();
        let out = fetch::fetch(&ctx.store, &trust_store(ctx), &source, &opts)
            .with_context(|| format!("cannot fetch {s}"))?;
        if ctx.debug {
            eprintln!(
                "orbit: fetched {s} in {:.3}s",
                started.elapsed().as_secs_f64()
            );
        }
        if args.quiet {
            println!("{}", out.digest);
            continue;
        }
        let how = match &out.verification {
            Verification::Key { fingerprint } => {
                format!("signature verified with key {fingerprint}")
            }
            Verification::Insecure => "NOT verified".into(),
            Verification::Stored => "already in the store; the registry has nothing newer".into(),
        };
        eprintln!(
            "{} ({how}; {} layer(s) unpacked, {} already present)",
            out.name, out.layers_unpacked, out.layers_reused
        );
        println!("{}", out.digest);
    }
    Ok(())
}

/// `orbit image …`.
pub fn run(ctx: &Context, cmd: ImageCommand) -> anyhow::Result<()> {
    let store = &ctx.store;
    match cmd {
        ImageCommand::List(a) => list(ctx, a),
        ImageCommand::CatManifest { image } => {
            let img = catalog::resolve(store, &image)?;
            let (bytes, _) = store.manifest(&img.digest)?;
            let v: serde_json::Value = serde_json::from_slice(&bytes)?;
            output::json(&v)
        }
        ImageCommand::Inspect { image, format } => inspect(ctx, &image, format.format),
        ImageCommand::Rm { images } => {
            output::for_each_target(&images, ("remove", "image", "removed"), |i| {
                let (names, report) = gc::remove(store, &catalog::resolve(store, i)?)?;
                names.iter().for_each(|n| println!("removed {n}"));
                warn(&report.warnings);
                Ok(())
            })
        }
        ImageCommand::Export {
            image,
            file,
            overwrite,
            signatures,
        } => {
            let sig_file = export::signature_file(&file);
            for f in [&file, &sig_file] {
                if f.exists() && !overwrite {
                    bail!("{} exists; pass --overwrite to replace it", f.display());
                }
            }
            let img = catalog::resolve(store, &image)?;
            let done = export::export(store, &img, &file, signatures.into())
                .with_context(|| format!("cannot export {image}"))?;
            match (&done.signature_file, signatures) {
                (Some(sig), _) => eprintln!(
                    "exported {image} to {}, its {} signature(s) to {}",
                    file.display(),
                    done.signatures,
                    sig.display()
                ),
                (None, ExportSignatures::Embedded) if done.signatures > 0 => eprintln!(
                    "exported {image} with {} signature(s) inside to {}",
                    done.signatures,
                    file.display()
                ),
                (None, ExportSignatures::None) => {
                    eprintln!(
                        "exported {image} to {} (without signatures)",
                        file.display()
                    )
                }
                (None, _) => eprintln!(
                    "exported {image} to {} (it has no signature in the store)",
                    file.display()
                ),
            }
            Ok(())
        }
        ImageCommand::Extract { image, target_dir } => {
            let img = catalog::resolve(store, &image)?;
            extract::extract(store, &img, &target_dir)
                .with_context(|| format!("cannot extract {image}"))
        }
        ImageCommand::Render { image, target_dir } => {
            let img = catalog::resolve(store, &image)?;
            extract::render(store, &img, &target_dir)
                .with_context(|| format!("cannot render {image}"))
        }
        ImageCommand::Verify { images, format } => verify_images(ctx, images, format.format),
        ImageCommand::Gc => {
            let r = gc::gc(store)?;
            warn(&r.warnings);
            println!(
                "removed {} blob(s) ({}), {} layer(s), {} leftover temp item(s)",
                r.blobs,
                human_size(r.bytes),
                r.layers,
                r.temp
            );
            Ok(())
        }
        ImageCommand::Keygen { prefix, algorithm } => keygen(&prefix, algorithm),
        ImageCommand::Sign {
            image,
            key,
            identity,
            output,
        } => sign(ctx, &image, &key, identity, output),
    }
}

fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("orbit: warning: {w}");
    }
}

fn list(ctx: &Context, a: ListFlags) -> anyhow::Result<()> {
    let images = catalog::list(&ctx.store)?;
    if a.format.format == Format::Json {
        return output::json(&images);
    }
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            let id = if a.full {
                i.digest.clone()
            } else {
                i.digest
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect()
            };
            vec![
                i.name.clone(),
                id,
                human_size(i.size),
                i.fetched.clone(),
                i.verified.clone(),
            ]
        })
        .collect();
    output::table(
        &["NAME", "ID", "SIZE", "FETCHED", "VERIFIED"],
        &rows,
        !a.no_legend,
    );
    Ok(())
}

fn inspect(ctx: &Context, image: &str, format: Format) -> anyhow::Result<()> {
    let img = catalog::resolve(&ctx.store, image)?;
    let d = catalog::inspect(&ctx.store, &img)?;
    if format == Format::Json {
        return output::json(&d);
    }
    println!("Names:      {}", d.names.join(", "));
    println!("Digest:     {}", d.digest);
    println!("Size:       {}", human_size(d.size));
    println!("Platform:   {}/{}", d.config.os, d.config.architecture);
    println!("Source:     {}", d.source);
    println!("Fetched:    {}", d.fetched);
    println!(
        "Verified:   {} ({} signature(s) stored)",
        d.verified, d.signatures
    );
    if let Some(c) = &d.config.config {
        if let Some(e) = &c.entrypoint {
            println!("Entrypoint: {}", e.join(" "));
        }
        if let Some(cmd) = &c.cmd {
            println!("Cmd:        {}", cmd.join(" "));
        }
        if let Some(env) = &c.env {
            println!("Env:        {}", env.join(" "));
        }
        if let Some(w) = &c.working_dir {
            println!("WorkingDir: {w}");
        }
        if let Some(u) = &c.user {
            println!("User:       {u}");
        }
    }
    println!("Layers:");
    for l in &d.layers {
        let state = if l.unpacked {
            "unpacked"
        } else {
            "NOT unpacked"
        };
        println!(
            "  {}  {:>10}  {}  {state}",
            l.digest,
            human_size(l.size),
            l.media_type
        );
    }
    Ok(())
}

fn verify_images(ctx: &Context, images: Vec<String>, format: Format) -> anyhow::Result<()> {
    let targets = if images.is_empty() {
        let mut seen = Vec::new();
        for s in catalog::list(&ctx.store)? {
            if !seen.contains(&s.digest) {
                seen.push(s.digest.clone());
            }
        }
        seen
    } else {
        images
    };
    let mut report = Vec::new();
    for t in &targets {
        let img = catalog::resolve(&ctx.store, t)?;
        let problems = verify::verify(&ctx.store, &img)?;
        report.push(serde_json::json!({"image": img.names.first().cloned().unwrap_or_else(|| img.digest.to_string()), "digest": img.digest.as_str(), "problems": problems}));
        if format == Format::Table {
            let label = img
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| img.digest.to_string());
            if problems.is_empty() {
                println!("{label}: ok");
            } else {
                for p in &problems {
                    println!("{label}: CORRUPT {}: {}", p.object, p.problem);
                }
            }
        }
    }
    if format == Format::Json {
        output::json(&report)?;
    }
    let bad: usize = report
        .iter()
        .filter(|r| r["problems"].as_array().is_some_and(|p| !p.is_empty()))
        .count();
    if bad > 0 {
        bail!("{bad} image(s) are corrupt; remove and fetch them again (`orbit image rm`, `orbit fetch`)");
    }
    Ok(())
}

fn keygen(prefix: &std::path::Path, algorithm: Algorithm) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let alg = match algorithm {
        Algorithm::EcdsaP256 => KeyAlgorithm::EcdsaP256,
        Algorithm::Ed25519 => KeyAlgorithm::Ed25519,
    };
    let key = PrivateKey::generate(alg)?;
    let key_path = PathBuf::from(format!("{}.key", prefix.display()));
    let pub_path = PathBuf::from(format!("{}.pub", prefix.display()));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            bail!("{} exists; refusing to overwrite a key", p.display());
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| format!("cannot create {}", key_path.display()))?;
    f.write_all(key.to_pem().as_bytes())?;
    std::fs::write(&pub_path, key.public_key().to_pem())
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    println!("private key: {} (keep it secret)", key_path.display());
    println!(
        "public key:  {} ({})",
        pub_path.display(),
        key.public_key().fingerprint()
    );
    Ok(())
}

fn sign(
    ctx: &Context,
    image: &str,
    key: &std::path::Path,
    identity: Option<String>,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(key)
        .with_context(|| format!("cannot read key {}", key.display()))?;
    let key =
        PrivateKey::from_pem(&pem).with_context(|| format!("cannot load key {}", key.display()))?;
    if let Some(source) = SourceRef::parse(image) {
        let source = source?;
        let img = source.open()?;
        let name = identity
            .or(img.name.clone())
            .with_context(|| format!("{image} does not name its image; pass --identity NAME"))?;
        let name = orbit::image::reference::normalize_name(&name)?;
        let payload =
            SimpleSigningPayload::new(trust::repository_of(&name), img.manifest_digest.as_str());
        let sig = trust::Signature::sign(&key, &payload);
        match (&source, output) {
            (SourceRef::Oci { dir, .. }, None) => {
                signatures::add_to_layout(dir, &img.manifest_digest, &[sig])?;
                println!(
                    "signed {name} ({}) inside {}",
                    img.manifest_digest,
                    dir.display()
                );
            }
            (_, out) => {
                let path = out.unwrap_or_else(|| source.detached_signature_path());
                let mut all = if path.exists() {
                    trust::read_sig_file(&path)?
                } else {
                    Vec::new()
                };
                trust::merge(&mut all, sig);
                trust::write_sig_file(&path, &all)?;
                println!(
                    "signed {name} ({}) into {}",
                    img.manifest_digest,
                    path.display()
                );
            }
        }
        return Ok(());
    }
    let img = catalog::resolve(&ctx.store, image)?;
    let name = identity
        .or(img.by_name.clone())
        .or(img.names.first().cloned())
        .context("the image has no name; pass --identity NAME")?;
    let payload = SimpleSigningPayload::new(trust::repository_of(&name), img.digest.as_str());
    let sig = trust::Signature::sign(&key, &payload);
    ctx.store.init()?;
    let _lock = ctx.store.lock_shared()?;
    signatures::store_signatures(&ctx.store, &img.digest, &[sig])?;
    println!(
        "signed {name} ({}) in the store; `orbit image export` carries the signature",
        img.digest
    );
    Ok(())
}
