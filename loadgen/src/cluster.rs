//! `loadgen cluster`: one load spread over several hosts. Each host runs
//! `loadgen run --shard K/N --start-at T --out -` through a launcher (ssh by
//! default); the shards start their warm-up together at T, each writes its
//! result to its standard output, and the results are merged exactly
//! ([`RunResult::merge`]). A shard that fails or reports late is named, and
//! nothing is merged without it.

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::options::{ClusterArgs, Shard};
use crate::result::RunResult;

/// What became of one shard.
#[derive(Debug)]
pub enum Outcome {
    Done(Box<RunResult>),
    /// It exited without a result, or with one that is not its own.
    Failed(String),
    /// Still running at the deadline: stopped, no result.
    Late,
}

#[derive(Debug)]
pub struct ShardReport {
    pub host: String,
    pub shard: Shard,
    pub outcome: Outcome,
}

/// The whole cluster run: every shard's outcome, and the merge when every
/// shard delivered.
#[derive(Debug)]
pub struct ClusterReport {
    pub shards: Vec<ShardReport>,
    pub merged: Option<RunResult>,
}

/// The command run on host `index` (launcher included), as words.
pub fn command_for(
    args: &ClusterArgs,
    index: usize,
    start_at: SystemTime,
) -> Result<Vec<String>, String> {
    let mut load = args.load.clone();
    load.shard = Some(Shard {
        index: index as u32,
        count: args.hosts.len() as u32,
    });
    let loadgen = match &args.loadgen {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this loadgen's path ({e}): give --loadgen"))?
            .to_string_lossy()
            .into_owned(),
    };
    let mut command = vec![loadgen, "run".into()];
    command.extend(load.to_args());
    command.extend([
        "--start-at".into(),
        humantime::format_rfc3339_millis(start_at).to_string(),
        "--quiet".into(),
        "--out".into(),
        "-".into(),
    ]);
    launcher_words(&args.launcher, &args.hosts[index], &command)
}

/// The launcher template filled in for `host` and `command`.
fn launcher_words(template: &str, host: &str, command: &[String]) -> Result<Vec<String>, String> {
    let words = shlex::split(template)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| {
            format!("--launcher {template:?} is not a command line (unbalanced quotes?)")
        })?;
    let quoted = shlex::try_join(command.iter().map(String::as_str))
        .map_err(|e| format!("cannot quote the loadgen command: {e}"))?;
    let mut out: Vec<String> = Vec::new();
    let mut placed = false;
    for word in words {
        if word.contains("{command}") {
            placed = true;
        }
        out.push(word.replace("{host}", host).replace("{command}", &quoted));
    }
    if !placed {
        out.extend(command.iter().cloned());
    }
    Ok(out)
}

/// Starts every shard, waits for them, collects and merges.
pub fn cluster(args: &ClusterArgs) -> anyhow::Result<ClusterReport> {
    let count = args.hosts.len();
    let start_at = SystemTime::now() + Duration::from_secs_f64(args.start_in);
    let commands = (0..count)
        .map(|k| command_for(args, k, start_at))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let deadline = Instant::now()
        + Duration::from_secs_f64(
            args.start_in + args.load.warmup + args.load.duration + args.grace,
        );

    let mut running = Vec::new();
    for (k, words) in commands.iter().enumerate() {
        let host = args.hosts[k].clone();
        let child = Command::new(&words[0])
            .args(&words[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        running.push(match child {
            Ok(child) => Some(Running::watch(child, host)),
            Err(e) => {
                eprintln!(
                    "loadgen cluster: cannot start {:?} for {host}: {e}",
                    words[0]
                );
                None
            }
        });
    }
    eprintln!(
        "loadgen cluster: {count} shards started; the warm-up begins at {}, then {} s measured",
        humantime::format_rfc3339_millis(start_at),
        args.load.duration
    );
    let progress = countdown(args.start_in + args.load.warmup + args.load.duration);

    let mut shards = Vec::new();
    for (k, run) in running.into_iter().enumerate() {
        let shard = Shard {
            index: k as u32,
            count: count as u32,
        };
        let host = args.hosts[k].clone();
        let outcome = match run {
            None => Outcome::Failed("the launcher could not be started".into()),
            Some(run) => run.finish(deadline, &progress, shard, &host),
        };
        // The host as the user named it; its own name (which namespaces or
        // containers may share) stays beside it.
        let outcome = match outcome {
            Outcome::Done(mut result) => {
                if result.machine.host != host {
                    result.machine.host = format!("{host} ({})", result.machine.host);
                }
                Outcome::Done(result)
            }
            other => other,
        };
        shards.push(ShardReport {
            host,
            shard,
            outcome,
        });
    }
    progress.finish_and_clear();

    if let Some(dir) = &args.parts {
        for s in &shards {
            if let Outcome::Done(result) = &s.outcome {
                result.save(&part_path(dir, s.shard))?;
            }
        }
    }
    let results: Vec<RunResult> = shards
        .iter()
        .filter_map(|s| match &s.outcome {
            Outcome::Done(result) => Some((**result).clone()),
            _ => None,
        })
        .collect();
    let merged = if results.len() == count {
        let mut merged = RunResult::merge(&results, args.window_tolerance)?;
        merged.label = args.label.clone().unwrap_or_else(|| {
            format!(
                "{} · {} over {count} hosts",
                server_name(&merged),
                merged.load.default_label()
            )
        });
        merged.limits = crate::limits::judge(&merged, &args.limits);
        if let Some(path) = &args.out {
            merged.save(path)?;
        }
        Some(merged)
    } else {
        None
    };
    Ok(ClusterReport { shards, merged })
}

/// "ringecho io-uring", or the URL's host for a server we know nothing of.
fn server_name(result: &RunResult) -> String {
    match result.server["backend"].as_str() {
        Some(backend) if result.server["known"] == true => format!("ringecho {backend}"),
        _ => url::Url::parse(&result.load.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| result.load.url.clone()),
    }
}

pub fn part_path(dir: &Path, shard: Shard) -> PathBuf {
    dir.join(format!("shard-{}-of-{}.json", shard.index, shard.count))
}

/// One shard's launcher process, its result read from its standard output
/// and the last of its messages kept.
struct Running {
    child: Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<String>,
}

impl Running {
    fn watch(mut child: Child, host: String) -> Running {
        let mut out = child.stdout.take().expect("stdout is piped");
        let err = child.stderr.take().expect("stderr is piped");
        let stdout = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = out.read_to_end(&mut bytes);
            bytes
        });
        // Kept, not shown: a shard that delivers has its say in its
        // result; one that fails is quoted.
        let stderr = std::thread::spawn(move || {
            let lines: Vec<String> = BufReader::new(err).lines().map_while(Result::ok).collect();
            let tail = lines.len().saturating_sub(3);
            lines[tail..]
                .iter()
                .map(|line| format!("[{host}] {line}"))
                .collect::<Vec<_>>()
                .join("\n")
        });
        Running {
            child,
            stdout,
            stderr,
        }
    }

    fn finish(
        mut self,
        deadline: Instant,
        progress: &indicatif::ProgressBar,
        shard: Shard,
        host: &str,
    ) -> Outcome {
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => break None,
                Ok(None) => {
                    progress.tick();
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Outcome::Failed(format!("cannot wait for it: {e}")),
            }
        };
        let Some(status) = status else {
            // Our own child, by its PID: the launcher (and with it, as a
            // rule, what it started).
            let _ = self.child.kill();
            let _ = self.child.wait();
            return Outcome::Late;
        };
        let stdout = self.stdout.join().unwrap_or_default();
        let last_words = self.stderr.join().unwrap_or_default();
        judge(status, &stdout, &last_words, shard, host)
    }
}

/// A shard's outcome from its exit status and what it wrote.
fn judge(status: ExitStatus, stdout: &[u8], last_words: &str, shard: Shard, host: &str) -> Outcome {
    let result: Option<RunResult> = serde_json::from_slice(stdout).ok();
    match result {
        Some(result) if result.load.shard == Some(shard) => {
            // Exit status 1 with a result: the run saw errors, which the
            // result counts; the merge keeps them.
            if status.success() || status.code() == Some(1) {
                Outcome::Done(Box::new(result))
            } else {
                Outcome::Failed(format!("{status}"))
            }
        }
        Some(result) => Outcome::Failed(format!(
            "{host} answered with the result of {}, not of shard {shard}",
            result
                .load
                .shard
                .map_or("a whole load".to_string(), |s| format!("shard {s}"))
        )),
        None => Outcome::Failed(if last_words.is_empty() {
            format!("{status}, no result")
        } else {
            format!("{status}, no result; its last words:\n{last_words}")
        }),
    }
}

fn countdown(seconds: f64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(seconds.ceil() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:20}] shards running")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// What became of the shards that did not make it into a merge, for
/// people; with no merge, of every shard.
pub fn describe_failures(report: &ClusterReport) -> String {
    let mut out = String::new();
    for s in &report.shards {
        match &s.outcome {
            // A merged result lists its shards itself.
            Outcome::Done(_) if report.merged.is_some() => {}
            Outcome::Done(result) => out.push_str(&format!(
                "shard {} on {}: delivered: {:.0} msgs/s, p99 {} µs, {} errors\n",
                s.shard,
                s.host,
                result.summary.msgs_per_sec,
                result.summary.latency_us.p99,
                result.summary.errors.total()
            )),
            Outcome::Failed(why) => {
                out.push_str(&format!("shard {} on {}: FAILED: {why}\n", s.shard, s.host))
            }
            Outcome::Late => out.push_str(&format!(
                "shard {} on {}: LATE: no result within the grace period; stopped\n",
                s.shard, s.host
            )),
        }
    }
    if report.merged.is_none() {
        out.push_str("nothing merged: a merge needs every shard\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::DEFAULT_LAUNCHER;

    #[test]
    fn the_launcher_gets_the_host_and_the_command_in_its_place() {
        let command: Vec<String> = ["loadgen", "run", "--url", "ws://h:1/a?b&c"]
            .map(String::from)
            .into();
        assert_eq!(
            launcher_words("ip netns exec {host}", "ns1", &command).unwrap(),
            [
                "ip",
                "netns",
                "exec",
                "ns1",
                "loadgen",
                "run",
                "--url",
                "ws://h:1/a?b&c"
            ]
        );
        // ssh hands its command to a shell: one quoted string.
        assert_eq!(
            launcher_words(DEFAULT_LAUNCHER, "a.example", &command).unwrap(),
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "a.example",
                "loadgen run --url 'ws://h:1/a?b&c'"
            ]
        );
        assert_eq!(
            shlex::split("loadgen run --url 'ws://h:1/a?b&c'").unwrap(),
            command
        );
        assert!(launcher_words("ssh '{host}", "a", &command).is_err());
    }

    #[test]
    fn each_host_runs_its_own_shard_of_the_same_load() {
        let mut args = ClusterArgs {
            load: crate::test_load(),
            hosts: vec!["a".into(), "b".into(), "c".into()],
            launcher: "ip netns exec {host}".into(),
            loadgen: Some("/opt/loadgen".into()),
            start_in: 5.0,
            grace: 15.0,
            out: None,
            parts: None,
            label: None,
            window_tolerance: 1.0,
            limits: Default::default(),
            dry_run: false,
        };
        args.load.rate = Some(3000.0);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let words = command_for(&args, 2, at).unwrap();
        assert_eq!(words[..5], ["ip", "netns", "exec", "c", "/opt/loadgen"]);
        let line = words[4..].join(" ");
        assert!(line.contains("--shard 2/3"), "{line}");
        assert!(line.contains("--rate 3000"), "{line}");
        assert!(
            line.contains("--start-at 2027-01-15T08:00:00.000Z"),
            "{line}"
        );
        assert!(line.ends_with("--quiet --out -"), "{line}");
        assert_eq!(args.validate(), Ok(()));
        args.load.shard = Some(Shard { index: 0, count: 3 });
        assert!(args.validate().unwrap_err().contains("leave out --shard"));
        args.load.shard = None;
        args.load.connections = 2;
        assert!(args
            .validate()
            .unwrap_err()
            .contains("at least one per shard"));
    }

    #[test]
    fn a_shard_without_its_own_result_is_a_failure() {
        use std::os::unix::process::ExitStatusExt;
        let shard = Shard { index: 1, count: 2 };
        let mut result = crate::test_result(&[100, 200], 2);
        result.load.shard = Some(shard);
        let json = serde_json::to_vec(&result).unwrap();
        let ok = ExitStatus::from_raw(0);
        assert!(matches!(judge(ok, &json, "", shard, "h"), Outcome::Done(_)));
        // Killed by SIGKILL: no output, the last words kept.
        match judge(ExitStatus::from_raw(9), b"", "connecting", shard, "h") {
            Outcome::Failed(why) => assert!(
                why.contains("SIGKILL") && why.contains("connecting"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        let other = Shard { index: 0, count: 2 };
        match judge(ok, &json, "", other, "h") {
            Outcome::Failed(why) => assert!(why.contains("not of shard 0/2"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
