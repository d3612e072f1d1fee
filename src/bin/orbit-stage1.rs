//! `orbit-stage1`: the built-in stage1 flavors (`ns`, `fly`, `kvm`), a binary of their own
//! installed next to `orbit`. stage0 runs it as `orbit-stage1 <flavor> <entrypoint> ARGS…`,
//! the same process boundary and arguments an external stage1 gets. It links only the
//! stage1 crates (no async runtime, gRPC, CLI parser or D-Bus client), so a pod's supervisor
//! and init start quickly and map few pages.
//!
//! It is a binary of the `orbit` package (not of `orbit-stage1-linux`) so that every build
//! of orbit — `cargo test`, `cargo install --path .` — builds it too, never leaving a stale
//! stage1 beside a fresh stage0.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(flavor), Some(entrypoint)) = (
        args.first()
            .and_then(|f| orbit_stage1_linux::Flavor::parse(f)),
        args.get(1),
    ) else {
        eprintln!(
            "usage: orbit-stage1 ns|fly|kvm ENTRYPOINT --uuid=UUID … (run by orbit itself, not by hand)"
        );
        return std::process::ExitCode::from(2);
    };
    let code = orbit_stage1_linux::main(flavor, entrypoint, &args[2..]);
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}
