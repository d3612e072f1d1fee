//! The `orbit` binary: stage0's command line. The built-in stage1 flavors are a binary of
//! their own, `orbit-stage1` (src/bin/orbit-stage1.rs), which stage0 runs from beside this
//! one as `orbit-stage1 <flavor> <entrypoint> ARGS…` — the same process boundary and
//! arguments an external stage1 gets.

mod cli;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(orbit::systemd::REGISTER_MACHINE) {
        return std::process::ExitCode::from(
            orbit::systemd::register_machine_helper(&args[2..]) as u8
        );
    }
    if args.get(1).map(String::as_str) == Some(orbit::net::TEARDOWN) {
        return std::process::ExitCode::from(orbit::net::teardown_helper() as u8);
    }
    cli::main()
}
