//! The places one requested name is pulled from — registries.conf's mirrors, then the
//! registry's (possibly remapped) location — and trying them in order. The requested name
//! stays the image's name whatever place serves it; each place gets its own credentials and
//! `certs.d` (they are looked up by the place's host) and its own `insecure` setting.

use oci_client::Reference;

use super::{parse, RegistryOptions};
use crate::image::error::{ImageError, Result};
use crate::image::registries_conf::{Plan, RegistriesConf};

/// One place to pull a requested name from.
#[derive(Debug, Clone)]
pub struct Place {
    /// The name there.
    pub reference: Reference,
    /// registries.conf's `insecure` for it.
    pub insecure: bool,
    /// A mirror (else the registry's own location).
    pub mirror: bool,
}

impl Place {
    /// `mirror 10.0.0.1:5000/busybox:1` or `127.0.0.1:5000/busybox:1`.
    pub fn describe(&self) -> String {
        let kind = if self.mirror { "mirror " } else { "" };
        format!("{kind}{}", self.reference.whole())
    }
}

/// Where to pull `requested` from under `conf` (without one: the name itself).
pub fn places(conf: Option<&RegistriesConf>, requested: &Reference) -> Result<Vec<Place>> {
    let itself = || Place {
        reference: requested.clone(),
        insecure: false,
        mirror: false,
    };
    let Some(conf) = conf else {
        return Ok(vec![itself()]);
    };
    match conf.plan(&requested.whole()) {
        Plan::Blocked { prefix, file } => Err(ImageError::Blocked {
            name: requested.whole(),
            prefix,
            file,
        }),
        Plan::Pull(endpoints) => endpoints
            .into_iter()
            .map(|e| {
                Ok(Place {
                    reference: parse(&e.reference)?,
                    insecure: e.insecure,
                    mirror: e.mirror,
                })
            })
            .collect(),
    }
}

/// Runs `f` for each place in turn until one succeeds; its result and the place. One place's
/// error is returned as it is; when several failed, an error names each place and why. With
/// `--debug`, each attempt is reported on stderr (`NAME: pulling from mirror M`): `what`
/// says what is done there.
pub fn first_success<T>(
    requested: &Reference,
    places: &[Place],
    opts: &RegistryOptions,
    what: &str,
    mut f: impl FnMut(usize, &Place, &RegistryOptions) -> Result<T>,
) -> Result<(T, Place)> {
    let mut attempts = Vec::new();
    let mut last = None;
    for (i, place) in places.iter().enumerate() {
        if opts.debug && (place.mirror || places.len() > 1) {
            eprintln!(
                "orbit: {}: {what} from {}",
                requested.whole(),
                place.describe()
            );
        }
        let place_opts = if place.insecure {
            opts.insecure_for(place.reference.registry())
        } else {
            opts.clone()
        };
        match f(i, place, &place_opts) {
            Ok(v) => return Ok((v, place.clone())),
            Err(e) => {
                if opts.debug && places.len() > 1 {
                    eprintln!(
                        "orbit: {}: {} failed: {e}",
                        requested.whole(),
                        place.describe()
                    );
                }
                attempts.push(format!("{}: {e}", place.describe()));
                last = Some(e);
            }
        }
    }
    match (last, attempts.len()) {
        (Some(e), 1) => Err(e),
        _ => Err(ImageError::AllLocationsFailed {
            name: requested.whole(),
            attempts,
        }),
    }
}
