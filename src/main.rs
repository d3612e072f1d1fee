//! The `orbit` binary: stage0's command line, and the built-in stage1 flavors, which stage0
//! runs by re-executing this binary as `orbit stage1 <flavor> <entrypoint> ARGS…` — the
//! same process boundary and arguments an external stage1 gets.

mod cli;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("stage1") {
        return stage1(&args[2..]);
    }
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

/// `orbit stage1 <flavor> <entrypoint> ARGS…`, dispatched before clap so a stage1 start
/// costs nothing extra and its arguments are exactly the interface's.
fn stage1(args: &[String]) -> std::process::ExitCode {
    let (Some(flavor), Some(entrypoint)) = (
        args.first()
            .and_then(|f| orbit_stage1_linux::Flavor::parse(f)),
        args.get(1),
    ) else {
        eprintln!("usage: orbit stage1 ns|fly ENTRYPOINT --uuid=UUID … (run by orbit itself, not by hand)");
        return std::process::ExitCode::from(2);
    };
    let code = orbit_stage1_linux::main(flavor, entrypoint, &args[2..]);
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}
