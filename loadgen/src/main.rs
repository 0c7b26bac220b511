use std::process::ExitCode;

use loadgen::options::{Cli, Command};
use loadgen::report::{self, Style};
use loadgen::result::RunResult;

fn main() -> ExitCode {
    let cli: Cli = match loadgen::options::parse_or_exit("loadgen") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match execute(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => {
            if let Err(why) = args.load.validate() {
                eprintln!("loadgen: {why}");
                return Ok(ExitCode::from(2));
            }
            let result = loadgen::run::run(&args)?;
            print!("{}", report::summary(&result));
            loadgen::save_outputs(&args, &result)?;
            if let Some(path) = &args.out {
                println!("result written to {}", path.display());
            }
            // A run that saw a broken echo is not a measurement.
            Ok(if result.summary.errors.total() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Compare { files } => {
            let results = load_all(&files)?;
            print!("{}", report::compare(&results, Style::Terminal));
            Ok(ExitCode::SUCCESS)
        }
        Command::Plot { files, output } => {
            let results = load_all(&files)?;
            loadgen::plot::plot(&results, &output)?;
            println!("plot written to {}", output.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Soak(args) => {
            let report = loadgen::soak::soak(&args)?;
            print!("{}", loadgen::soak::describe(&report));
            if let Some(path) = &args.out {
                std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
            }
            let clean = report.errors == 0
                && report.connect_failures == 0
                && report.server_open_after.is_none_or(|n| n == 0);
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Merge {
            files,
            output,
            window_tolerance,
        } => {
            let merged = RunResult::merge(&load_all(&files)?, window_tolerance)?;
            merged.save(&output)?;
            print!("{}", report::summary(&merged));
            println!("merged result written to {}", output.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_all(files: &[std::path::PathBuf]) -> anyhow::Result<Vec<RunResult>> {
    files.iter().map(|f| RunResult::load(f)).collect()
}
