//! orbit — a daemonless, rkt-style container runtime with pluggable isolation stages.
//!
//! This crate is stage0: the image store, trust, and (later) pods. The `orbit` binary in
//! `src/main.rs` is a thin CLI over it.

pub mod api;
pub mod clock;
pub mod config;
pub mod cri;
pub mod events;
pub mod grpc;
pub mod image;
pub mod net;
pub mod pod;
pub mod systemd;
pub mod trust;
