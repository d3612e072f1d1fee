//! `orbit image verify`: re-hash every blob of an image and compare every unpacked layer
//! with the record made when it was unpacked, reporting each corruption precisely.

use std::fs::File;
use std::io::BufReader;

use serde::Serialize;

use super::catalog::{self, StoredImage};
use super::digest::{Digest, HashingReader};
use super::error::{ImageError, Result};
use super::store::Store;
use super::unpack::{self, LayerManifest};

/// One problem found by verification.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What is corrupt (a blob, a layer, a path in a layer).
    pub object: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Verifies one image; an empty list means it is intact.
pub fn verify(store: &Store, image: &StoredImage) -> Result<Vec<Problem>> {
    // Shared: a concurrent gc must not remove what is being checked.
    let _lock = store.lock_shared()?;
    if let Some(p) = blob_problem(store, &image.digest, "manifest") {
        return Ok(vec![p]);
    }
    let (manifest, config) = catalog::load(store, image)?;
    let mut blobs = vec![(
        manifest.config().digest().to_string().parse::<Digest>()?,
        "config",
    )];
    for l in manifest.layers() {
        blobs.push((l.digest().to_string().parse()?, "layer blob"));
    }
    let mut problems: Vec<Problem> = blobs
        .iter()
        .filter_map(|(d, what)| blob_problem(store, d, what))
        .collect();
    for diff_id in config.diff_ids()? {
        problems.extend(layer_problems(store, &diff_id)?);
    }
    Ok(problems)
}

/// What is wrong with the stored blob `d` (missing, unreadable, or hashing to another
/// digest), if anything.
pub(super) fn blob_problem(store: &Store, d: &Digest, what: &str) -> Option<Problem> {
    let path = store.blob_path(d);
    let object = format!("{what} {d}");
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            return Some(Problem {
                object,
                problem: format!("cannot open {}: {e}", path.display()),
            })
        }
    };
    let mut r = HashingReader::new(BufReader::with_capacity(1 << 20, f));
    if let Err(e) = r.drain() {
        return Some(Problem {
            object,
            problem: format!("cannot read {}: {e}", path.display()),
        });
    }
    let actual = r.finish().0;
    (&actual != d).then(|| Problem {
        object,
        problem: format!("content hashes to {actual}"),
    })
}

fn layer_problems(store: &Store, diff_id: &Digest) -> Result<Vec<Problem>> {
    let dir = store.layer_dir(diff_id);
    let object = format!("layer {diff_id}");
    if !dir.is_dir() {
        return Ok(vec![Problem {
            object,
            problem: format!("not unpacked ({} is missing)", dir.display()),
        }]);
    }
    let mtree_path = dir.join("mtree.json");
    let manifest: LayerManifest = match std::fs::read(&mtree_path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| ImageError::malformed(mtree_path.display().to_string(), e))?,
        Err(e) => {
            return Ok(vec![Problem {
                object,
                problem: format!("cannot read {}: {e}", mtree_path.display()),
            }])
        }
    };
    let found = unpack::verify_tree(&dir.join("rootfs"), &manifest).map_err(|error| {
        ImageError::Unpack {
            layer: format!("layer {diff_id}"),
            error,
        }
    })?;
    Ok(found
        .into_iter()
        .map(|d| Problem {
            object: format!("{object}: {}", d.path),
            problem: d.problem,
        })
        .collect())
}
