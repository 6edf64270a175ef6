//! The `tidemark` binary: the server and the client and admin commands.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
