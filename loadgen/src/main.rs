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
            let to_stdout = args.out.as_deref() == Some(std::path::Path::new("-"));
            if to_stdout {
                // Quiet: standard error stays clear too, so that a log that
                // mixes both streams (kubectl logs) holds just the result.
                if !args.quiet {
                    eprint!("{}", report::summary(&result));
                }
                println!("{}", serde_json::to_string(&result)?);
            } else {
                print!("{}", report::summary(&result));
            }
            loadgen::save_outputs(&args, &result)?;
            if let Some(path) = args.out.as_ref().filter(|_| !to_stdout) {
                println!("result written to {}", path.display());
            }
            Ok(verdict(&result, &args.limits))
        }
        Command::Compare {
            files,
            max_regression,
            regression_in,
        } => {
            if let Err(why) = loadgen::limits::check_figures(&regression_in) {
                eprintln!("loadgen: {why}");
                return Ok(ExitCode::from(2));
            }
            let results = load_all(&files)?;
            print!("{}", report::compare(&results, Style::Terminal));
            let Some(share) = max_regression else {
                return Ok(ExitCode::SUCCESS);
            };
            let found = loadgen::limits::regressions(&results, share, &regression_in);
            for (label, figure, base, value, worse) in &found {
                println!(
                    "REGRESSION: {label}: {figure} {value:.0} against {base:.0} in the baseline, {:.1} % worse (more than {:.1} %)",
                    worse * 100.0,
                    share * 100.0
                );
            }
            Ok(if found.is_empty() {
                println!(
                    "no regression over {:.1} % in {} against {}",
                    share * 100.0,
                    regression_in.join(", "),
                    results[0].label
                );
                ExitCode::SUCCESS
            } else {
                ExitCode::from(loadgen::options::EXIT_LIMIT_BROKEN)
            })
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
        Command::Cluster(args) => {
            if let Err(why) = args.validate() {
                eprintln!("loadgen: {why}");
                return Ok(ExitCode::from(2));
            }
            if args.dry_run {
                let at = std::time::SystemTime::now()
                    + std::time::Duration::from_secs_f64(args.start_in);
                for k in 0..args.hosts.len() {
                    let words =
                        loadgen::cluster::command_for(&args, k, at).map_err(anyhow::Error::msg)?;
                    println!("{}", shlex::try_join(words.iter().map(String::as_str))?);
                }
                return Ok(ExitCode::SUCCESS);
            }
            let outcome = loadgen::cluster::cluster(&args)?;
            if let Some(merged) = &outcome.merged {
                print!("{}", report::summary(merged));
            }
            print!("{}", loadgen::cluster::describe_failures(&outcome));
            if let (Some(path), Some(_)) = (&args.out, &outcome.merged) {
                println!("merged result written to {}", path.display());
            }
            if let Some(dir) = &args.parts {
                println!("each shard's result written under {}", dir.display());
            }
            Ok(match &outcome.merged {
                Some(merged) => verdict(merged, &args.limits),
                None => ExitCode::from(1),
            })
        }
        Command::Knee(args) => {
            if let Err(why) = args.validate() {
                eprintln!("loadgen: {why}");
                return Ok(ExitCode::from(2));
            }
            let mut n = 0;
            let knee = loadgen::knee::search(&args, |step| {
                n += 1;
                let s = &step.result.summary;
                println!(
                    "step {n}: {:.0} msgs/s offered, {:.0} echoed, p50 {} µs, p99 {} µs, p99.9 {} µs: {}",
                    step.offered,
                    s.msgs_per_sec,
                    s.latency_us.p50,
                    s.latency_us.p99,
                    s.latency_us.p999,
                    if step.held { "held" } else { "BROKE" }
                );
            })?;
            print!("{}", loadgen::knee::describe(&knee));
            if let Some(path) = &args.out {
                std::fs::write(path, serde_json::to_string_pretty(&knee)? + "\n")?;
                println!("steps written to {}", path.display());
            }
            if let Some(path) = &args.plot {
                loadgen::plot::plot_knee(&knee, &args.limits, path)?;
                println!("latency–throughput curve drawn in {}", path.display());
            }
            Ok(if knee.knee_rate.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(loadgen::options::EXIT_LIMIT_BROKEN)
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

/// A run's exit status: 1 when it saw errors it was not told to tolerate
/// (it measured nothing), 3 when it broke a limit, else 0.
fn verdict(result: &RunResult, limits: &loadgen::options::Limits) -> ExitCode {
    if result.summary.errors.total() > 0 && !limits.tolerate_errors() {
        ExitCode::from(1)
    } else if result.limits.iter().any(|v| !v.held) {
        ExitCode::from(loadgen::options::EXIT_LIMIT_BROKEN)
    } else {
        ExitCode::SUCCESS
    }
}

fn load_all(files: &[std::path::PathBuf]) -> anyhow::Result<Vec<RunResult>> {
    files.iter().map(|f| RunResult::load(f)).collect()
}
