//! CRI image volumes (KEP-4639): a `Mount` whose `image` is set shows that image — pulled
//! already by the kubelet — read-only at its container path. Each is a pod volume of kind
//! `image` naming the image's unpacked layers, which the stage1 mounts as an overlay without
//! an upper directory; the store keeps those layers while the volume is in a pod's manifest,
//! as it keeps an app's root (see `image::gc`).

use tonic::Status;

use orbit_stage1::{Propagation, Volume, VolumeImage, VolumeKind};

use super::{proto, CriContext};
use crate::pod::stage1::Stage1;
use crate::pod::store::PodRef;

/// The stage1s that mount image volumes: the built-in ones that share their code.
const STAGE1S: [&str; 2] = ["ns", "fly"];

/// Checks an image mount `m` (whose `image` is `image`): no host path besides it, no
/// propagation (a read-only image neither receives nor sends mounts); its propagation.
pub fn check(m: &proto::Mount, image: &proto::ImageSpec) -> Result<Propagation, Status> {
    let at = &m.container_path;
    if image.image.is_empty() {
        return Err(Status::invalid_argument(format!(
            "mount {at}: the image is empty; name the image (its ID or reference) to mount"
        )));
    }
    if !m.host_path.is_empty() {
        return Err(Status::invalid_argument(format!(
            "mount {at}: host_path {} and image {} are mutually exclusive; set one",
            m.host_path, image.image
        )));
    }
    if m.propagation != proto::MountPropagation::PropagationPrivate as i32 {
        return Err(Status::invalid_argument(format!(
            "mount {at}: image {} is mounted read-only and private; it takes no mount \
             propagation",
            image.image
        )));
    }
    Ok(Propagation::Private)
}

/// Refuses image mounts in `config` unless the stage1 of `pod` mounts image volumes.
pub fn check_stage1(pod: &PodRef, config: &proto::ContainerConfig) -> Result<(), Status> {
    let Some(m) = config.mounts.iter().find(|m| m.image.is_some()) else {
        return Ok(());
    };
    let stage1 = Stage1::load(&pod.path).map_err(|e| Status::internal(e.to_string()))?;
    if stage1.dir.is_none() && STAGE1S.contains(&stage1.name()) {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "mount {}: the sandbox's stage1 {} does not mount image volumes (the built-in {} \
         do): run the pod with one of them",
        m.container_path,
        stage1.name(),
        STAGE1S.join(" and ")
    )))
}

/// The volume `name` showing `image` (read-only, whatever the mount says): the image must
/// be in the store (NOT_FOUND naming it otherwise).
pub fn volume(ctx: &CriContext, image: &proto::ImageSpec, name: String) -> Result<Volume, Status> {
    let wanted = &image.image;
    let found = super::images::find(ctx, wanted).map_err(|e| {
        Status::not_found(format!(
            "image volume {name}: image {wanted} is not in the store (PullImage first): {e}"
        ))
    })?;
    let store = ctx.store();
    let internal = |e: crate::pod::PodError| Status::internal(format!("image {wanted}: {e}"));
    let (_, config) = crate::image::catalog::load(&store, &found)
        .map_err(|e| internal(crate::pod::PodError::from(e)))?;
    let lowers = crate::pod::prepare::image_lowers(&store, &config, wanted).map_err(internal)?;
    // The stage1 adds one more lower, an empty directory.
    if lowers.len() >= orbit_stage1::MAX_OVERLAY_LAYERS {
        return Err(Status::failed_precondition(format!(
            "image {wanted} has {} layers; an image volume shows at most {}",
            lowers.len(),
            orbit_stage1::MAX_OVERLAY_LAYERS - 1
        )));
    }
    Ok(Volume {
        name,
        kind: VolumeKind::Image,
        source: None,
        read_only: true,
        idmap: false,
        // An overlay without an upper directory: nothing below it to make read-only.
        recursive_read_only: false,
        image: Some(VolumeImage {
            name: wanted.clone(),
            digest: found.digest.to_string(),
            lowers,
        }),
    })
}
