//! `ringecho bench`, the main job: start the engine on a free port (once per
//! engine configuration swept), run the standard cases against it with
//! loadgen, engine and load generator on separate cores, then print the
//! comparison and write result files, tables and plots under `results/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use loadgen::options::{LoadConfig, MessageType, Protocol, RunArgs};
use loadgen::report::{self, Style};
use loadgen::RunResult;

use crate::options::{BackendChoice, BenchOptions, Case};

/// One engine configuration of the sweep.
#[derive(Debug, Clone)]
struct EngineConfig {
    backend: BackendChoice,
    receive_buffer_size: usize,
    threads: u16,
}

/// A run's place in the tables: which case, under which configuration.
struct Measured {
    case: String,
    result: RunResult,
}

pub fn run(options: &BenchOptions) -> anyhow::Result<ExitCode> {
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let n_cores = cores.len().max(1);
    let default_threads = [(n_cores / 2).max(1) as u16];
    let threads: &[u16] = if options.threads.is_empty() {
        &default_threads
    } else {
        &options.threads
    };
    let configs: Vec<EngineConfig> = options
        .backend
        .iter()
        .flat_map(|&backend| {
            options
                .receive_buffer_size
                .iter()
                .flat_map(move |&receive_buffer_size| {
                    threads.iter().map(move |&threads| EngineConfig {
                        backend,
                        receive_buffer_size,
                        threads,
                    })
                })
        })
        .collect();
    let out_dir = options.out.clone().unwrap_or_else(|| {
        let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        PathBuf::from("results/bench").join(date.replace(':', "-"))
    });
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;

    let per_config = options.cases.len() + usize::from(options.rate_duration > 0.0);
    let total = configs.len() * per_config;
    let seconds_each = options.warmup + options.duration;
    let estimate = configs.len() as f64
        * (options.cases.len() as f64 * (seconds_each + 1.0)
            + if options.rate_duration > 0.0 {
                options.warmup + options.rate_duration + 3.0
            } else {
                0.0
            });
    println!(
        "ringecho bench: {} engine configuration(s) × {per_config} runs, about {:.0} s; results in {}",
        configs.len(),
        estimate,
        out_dir.display()
    );

    let mut measured = Vec::new();
    let mut index = 0;
    for config in &configs {
        let engine = EngineProcess::start(config)?;
        let name = format!(
            "{}, {} B buffers, {} thread{}",
            engine.backend,
            config.receive_buffer_size,
            config.threads,
            if config.threads == 1 { "" } else { "s" }
        );
        println!("\nengine: {}", engine.startup_line.trim());
        // The engine pins its threads to the first cores; loadgen takes the rest.
        let spare: Vec<usize> = cores
            .iter()
            .skip(config.threads as usize)
            .copied()
            .collect();
        let mut closed_loop: Vec<(Case, f64)> = Vec::new();
        for &case in &options.cases {
            index += 1;
            let (connections, size) = case.shape();
            println!(
                "[{index}/{total}] {name} · {}: {connections} connections × {size} B, closed loop, {} s",
                case.name(),
                options.duration
            );
            let result = measure(
                &engine,
                options,
                &out_dir,
                &name,
                case.name(),
                &spare,
                connections,
                size,
                None,
            )?;
            closed_loop.push((case, result.summary.msgs_per_sec));
            measured.push(Measured {
                case: case.name().to_string(),
                result,
            });
        }
        if options.rate_duration > 0.0 {
            if let Some(&(case, max)) = closed_loop.first() {
                index += 1;
                let rate = (max / 2.0).round().max(1.0);
                let (connections, size) = case.shape();
                println!(
                    "[{index}/{total}] {name} · {}-rate: {connections} connections × {size} B at {rate:.0} msg/s (half the closed-loop maximum), {} s",
                    case.name(),
                    options.rate_duration
                );
                let label = format!("{}-rate", case.name());
                let mut bench = options.clone();
                bench.duration = options.rate_duration;
                let result = measure(
                    &engine,
                    &bench,
                    &out_dir,
                    &name,
                    &label,
                    &spare,
                    connections,
                    size,
                    Some(rate),
                )?;
                measured.push(Measured {
                    case: label,
                    result,
                });
            }
        }
        engine.stop()?;
    }

    let summary = write_summary(options, &configs, &measured, &out_dir)?;
    println!("\n{summary}");
    println!(
        "results, tables (summary.md) and plots written to {}",
        out_dir.display()
    );
    let failed = measured.iter().any(|m| m.result.summary.errors.total() > 0);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[allow(clippy::too_many_arguments)]
fn measure(
    engine: &EngineProcess,
    options: &BenchOptions,
    out_dir: &Path,
    config_name: &str,
    case: &str,
    spare_cores: &[usize],
    connections: u32,
    size: usize,
    rate: Option<f64>,
) -> anyhow::Result<RunResult> {
    let file = format!("{}-{case}", engine.file_stem);
    let args = RunArgs {
        load: LoadConfig {
            url: format!("ws://{}/ws", engine.addr),
            connections,
            size,
            message_type: MessageType::Binary,
            text: false,
            binary: false,
            duration: options.duration,
            warmup: options.warmup,
            threads: spare_cores.len().max(1) as u16,
            no_pin: spare_cores.is_empty(),
            cores: spare_cores.to_vec(),
            source_addr: Vec::new(),
            protocol: Protocol::Raw,
            in_flight: 1,
            rate,
        },
        out: Some(out_dir.join(format!("{file}.json"))),
        hgrm: Some(out_dir.join(format!("{file}.hgrm"))),
        quiet: options.quiet,
        label: Some(config_name.to_string()),
    };
    let result = loadgen::run::run(&args)?;
    loadgen::save_outputs(&args, &result)?;
    let s = &result.summary;
    println!(
        "    {:.0} msgs/s, p50 {} µs, p99 {} µs, p99.9 {} µs, {} errors",
        s.msgs_per_sec,
        s.latency_us.p50,
        s.latency_us.p99,
        s.latency_us.p999,
        s.errors.total()
    );
    Ok(result)
}

/// Tables per case (configurations side by side), plots, and summary.md.
fn write_summary(
    options: &BenchOptions,
    configs: &[EngineConfig],
    measured: &[Measured],
    out_dir: &Path,
) -> anyhow::Result<String> {
    let mut cases: Vec<&str> = measured.iter().map(|m| m.case.as_str()).collect();
    cases.dedup();
    cases.sort_by_key(|c| measured.iter().position(|m| m.case == *c));
    cases.dedup();
    let first = &measured.first().context("no run was made")?.result;
    let mut terminal = String::new();
    let mut markdown = format!(
        "# ringecho bench, {}\n\n\
         - machine: {} ({} cores), kernel {}\n\
         - commit: {}\n\
         - engine configurations: {}\n\
         - cases: {}; closed loop {} s after {} s warm-up; constant rate {} s\n\
         - engine pinned to the first cores, loadgen to the others\n\
         - command: `{}`\n",
        first.date,
        first.machine.cpu_model,
        first.machine.cores,
        first.machine.kernel,
        first.tool.commit,
        configs.len(),
        cases.join(", "),
        options.duration,
        options.warmup,
        options.rate_duration,
        std::iter::once("ringecho bench".to_string())
            .chain(std::env::args().skip(2))
            .collect::<Vec<_>>()
            .join(" "),
    );
    for case in cases {
        let results: Vec<RunResult> = measured
            .iter()
            .filter(|m| m.case == case)
            .map(|m| m.result.clone())
            .collect();
        let load = &results[0].load;
        let title = format!(
            "{case}: {} connections × {} B, {}",
            load.connections,
            load.size,
            load.mode()
        );
        terminal.push_str(&format!(
            "{title}\n{}\n",
            report::compare_table(&results, Style::Terminal)
        ));
        let svg = format!("{case}.svg");
        loadgen::plot::plot(&results, &out_dir.join(&svg))?;
        markdown.push_str(&format!(
            "\n## {title}\n\n{}\n![{case}]({svg})\n",
            report::compare_table(&results, Style::Markdown)
        ));
    }
    let all: Vec<RunResult> = measured.iter().map(|m| m.result.clone()).collect();
    markdown.push_str(&format!(
        "\n## Settings shared by every run\n{}",
        report::common_settings(&all)
    ));
    std::fs::write(out_dir.join("summary.md"), markdown)?;
    Ok(terminal)
}

/// The engine under test, started from this very binary.
struct EngineProcess {
    child: Child,
    addr: String,
    backend: String,
    /// Names this configuration's result files: BACKEND-bufSIZE-tTHREADS.
    file_stem: String,
    startup_line: String,
    _stdout: BufReader<ChildStdout>,
}

impl EngineProcess {
    fn start(config: &EngineConfig) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the ringecho binary")?;
        let mut child = Command::new(exe)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--backend",
                config.backend.name(),
            ])
            .args([
                "--receive-buffer-size",
                &config.receive_buffer_size.to_string(),
            ])
            .args(["--threads", &config.threads.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the engine")?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next());
        let Some(addr) = addr else {
            let _ = child.kill();
            bail!("the engine did not start (it printed {line:?})");
        };
        let backend = line
            .split("backend ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or("?")
            .to_string();
        Ok(EngineProcess {
            file_stem: format!(
                "{backend}-buf{}-t{}",
                config.receive_buffer_size, config.threads
            ),
            addr: addr.to_string(),
            backend,
            startup_line: line.clone(),
            child,
            _stdout: stdout,
        })
    }

    /// SIGTERM, then the exit status within the engine's shutdown timeout.
    fn stop(mut self) -> anyhow::Result<()> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(status.success(), "the engine exited with {status}");
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the engine did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
