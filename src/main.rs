//! The `orbit` binary: stage0's command line.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
