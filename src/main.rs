use std::process::ExitCode;

use ringecho::options::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before anything is allocated here: a huge page faulted in now would
    // stay (the engine's --transparent-huge-pages allows them again).
    ringecho::memory::transparent_huge_pages(false);
    let cli: Cli = match loadgen::options::parse_or_exit("ringecho") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let outcome = match cli.command {
        None => ringecho::runtime::run(cli.engine).map(|()| ExitCode::SUCCESS),
        Some(Command::Bench(options)) => {
            // bench is a load generator (its engine is a process of its
            // own): the kernel's huge pages as for any other program.
            ringecho::memory::transparent_huge_pages(true);
            ringecho::bench::run(&options)
        }
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringecho: {e:#}");
            ExitCode::from(1)
        }
    }
}
