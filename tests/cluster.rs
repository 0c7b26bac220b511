//! `loadgen cluster` across real separate hosts on one machine: the engine
//! in one network namespace, three load "hosts" in three others, joined by
//! a bridge in a fifth; the launcher is `ip netns exec {host}`. Where
//! namespaces cannot be made (no root), the same shards run as local
//! processes against an engine on loopback, and the test says so.
//! No test here asserts a speed: the offered rate is checked, not latency.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Engine;
use loadgen::result::ProcessSource;
use loadgen::RunResult;

const SHARDS: usize = 3;

/// Each test runs a paced load on both cores; one at a time, so that
/// neither starves the other's schedule.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
const RATE: f64 = 1500.0;

/// The load hosts and the engine: namespaces, torn down when dropped.
struct Hosts {
    /// What `--hosts` gets.
    names: Vec<String>,
    /// Prepended to a command to run it on a load host: `{host}` filled in.
    launcher: String,
    /// The engine's namespace prefix and listening address.
    engine_prefix: Vec<String>,
    engine_listen: String,
    namespaces: Vec<String>,
}

impl Hosts {
    fn make() -> Hosts {
        match Hosts::namespaces() {
            Ok(hosts) => hosts,
            Err(why) => {
                eprintln!(
                    "cluster test: network namespaces cannot be made here ({why}); \
                     running the shards as local processes against an engine on loopback instead"
                );
                Hosts {
                    names: (0..SHARDS).map(|k| format!("local-{k}")).collect(),
                    launcher: "env RINGECHO_TEST_HOST={host}".into(),
                    engine_prefix: Vec::new(),
                    engine_listen: "127.0.0.1:0".into(),
                    namespaces: Vec::new(),
                }
            }
        }
    }

    fn namespaces() -> Result<Hosts, String> {
        // To try the fallback where namespaces do work.
        if std::env::var_os("RINGECHO_TEST_NO_NETNS").is_some() {
            return Err("RINGECHO_TEST_NO_NETNS is set".into());
        }
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        // Unique per test process; interface names stay within 15 bytes.
        let tag = format!("rc{}", std::process::id() % 100_000);
        let switch = format!("{tag}sw");
        let mut hosts = Hosts {
            names: (0..SHARDS).map(|k| format!("{tag}l{k}")).collect(),
            launcher: "ip netns exec {host}".into(),
            engine_prefix: vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                format!("{tag}srv"),
            ],
            engine_listen: "10.213.0.1:0".into(),
            namespaces: Vec::new(),
        };
        ip(&["netns", "add", &switch])?;
        hosts.namespaces.push(switch.clone());
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        let members: Vec<String> = std::iter::once(format!("{tag}srv"))
            .chain(hosts.names.iter().cloned())
            .collect();
        for (i, ns) in members.iter().enumerate() {
            ip(&["netns", "add", ns])?;
            hosts.namespaces.push(ns.clone());
            let (inside, outside) = (format!("{tag}e{i}"), format!("{tag}b{i}"));
            ip(&[
                "link", "add", &inside, "netns", ns, "type", "veth", "peer", "name", &outside,
                "netns", &switch,
            ])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.213.0.{}/24", i + 1),
                "dev",
                &inside,
            ])?;
            ip(&["-n", ns, "link", "set", &inside, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &switch, "link", "set", &outside, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &outside, "up"])?;
        }
        Ok(hosts)
    }

    fn start_engine(&self) -> Engine {
        let prefix: Vec<&str> = self.engine_prefix.iter().map(String::as_str).collect();
        Engine::start_in(
            &prefix,
            &self.engine_listen,
            "io-uring",
            &["--threads", "1"],
        )
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The loadgen binary beside the engine's. `cargo test --workspace` builds
/// it; when it is missing or older than loadgen's sources (this test run
/// alone after an edit), it is built here. A build here resolves features
/// apart from the test build's and may take a while: callers take their
/// start times after it.
fn loadgen_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let engine = Path::new(env!("CARGO_BIN_EXE_ringecho"));
            let binary = engine.with_file_name("loadgen");
            let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let newest_source = ["loadgen/src", "uring-loop/src", "permessage-deflate/src"]
                .iter()
                .flat_map(|dir| std::fs::read_dir(root.join(dir)).into_iter().flatten())
                .flatten()
                .filter_map(|entry| modified(&entry.path()))
                .max();
            if modified(&binary).is_some_and(|built| Some(built) >= newest_source) {
                return binary;
            }
            let release = engine.parent().is_some_and(|d| d.ends_with("release"));
            let mut build = Command::new(option_env!("CARGO").unwrap_or("cargo"));
            build.args(["build", "--quiet", "-p", "loadgen", "--bin", "loadgen"]);
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build for loadgen");
            assert!(status.success(), "building loadgen failed");
            binary
        })
        .clone()
}

fn cluster(engine: &Engine, hosts: &Hosts, launcher: &str, dir: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(loadgen_binary());
    command
        .args(["cluster", "--url", &engine.url("/ws")])
        .args(["--hosts", &hosts.names.join(",")])
        .args(["--launcher", launcher])
        .args(["--connections", "30", "--size", "64"])
        .args(["--rate", &RATE.to_string()])
        .args([
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--start-in",
            "4",
            "--no-pin",
        ])
        .arg("--parts")
        .arg(dir.join("parts"))
        .arg("--out")
        .arg(dir.join("merged.json"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn three_hosts_make_one_exact_result_and_a_lost_one_is_named() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let hosts = Hosts::make();
    let engine = hosts.start_engine();
    let dir = std::env::temp_dir().join(format!("ringecho-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    // Every shard delivers: one merged result, exactly the sum of its parts.
    let out = cluster(&engine, &hosts, &hosts.launcher, &dir, &[])
        .output()
        .unwrap();
    let said = text(&out);
    println!("{said}");
    assert!(out.status.success(), "cluster failed:\n{said}");
    let merged = RunResult::load(&dir.join("merged.json")).unwrap();
    let parts: Vec<RunResult> = (0..SHARDS)
        .map(|k| {
            RunResult::load(&dir.join(format!("parts/shard-{k}-of-{SHARDS}.json")))
                .unwrap_or_else(|e| panic!("shard {k}'s own result: {e}\n{said}"))
        })
        .collect();
    assert_eq!(merged.parts.len(), SHARDS, "{said}");
    let sum: u64 = parts.iter().map(|p| p.summary.messages).sum();
    assert_eq!(merged.summary.messages, sum);
    assert_eq!(
        merged.latency().unwrap().len(),
        sum,
        "histograms add up exactly"
    );
    // Second by second too: every host's n-th second in the n-th.
    let per_second = |r: &RunResult| r.intervals.iter().map(|i| i.messages).sum::<u64>();
    assert!(!merged.intervals.is_empty());
    assert_eq!(
        per_second(&merged),
        parts.iter().map(per_second).sum::<u64>()
    );
    assert_eq!(
        merged.summary.connections, 30,
        "each shard opened its share of the global connections"
    );
    for (k, part) in parts.iter().enumerate() {
        let shard = part.load.shard.expect("a shard's result says so");
        assert_eq!((shard.index, shard.count), (k as u32, SHARDS as u32));
        assert_eq!(part.summary.connections, 10);
        assert!(
            part.machine.host.starts_with(&hosts.names[k]),
            "{}",
            part.machine.host
        );
        assert_eq!(part.summary.errors.total(), 0, "{said}");
    }
    // The offered rate is the global rate, not N times it: every send was
    // on schedule, so the echoes came at the rate asked for.
    assert_eq!(merged.load.rate, Some(RATE));
    let per_sec = merged.summary.msgs_per_sec;
    assert!(
        (per_sec - RATE).abs() < RATE * 0.1,
        "{per_sec:.0} msgs/s merged against {RATE} offered\n{said}"
    );
    // The server's CPU, read by the shards from its /stats, not from /proc.
    let server = merged
        .summary
        .server_process
        .as_ref()
        .unwrap_or_else(|| panic!("no server CPU in the merged result\n{said}"));
    assert_eq!(server.source, ProcessSource::Stats);
    assert_eq!(server.pid, engine.pid() as u32);
    assert!(said.contains("from its /stats"), "{said}");
    for k in 0..SHARDS {
        assert!(said.contains(&format!("shard {k}/{SHARDS}")), "{said}");
    }

    // A shard killed mid-run is named, and nothing is merged without it.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pids = dir.join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    // `exec` keeps the PID: the one written is loadgen's own.
    let launcher = format!(
        "sh -c 'echo $$ > {}/{{host}}.pid; exec {} \"$0\" \"$@\"'",
        pids.display(),
        hosts.launcher
    );
    let child = cluster(&engine, &hosts, &launcher, &dir, &[])
        .spawn()
        .unwrap();
    let victim = pids.join(format!("{}.pid", hosts.names[1]));
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&victim)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "shard 1 never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Into its measured window (4 s to the start, then 0.5 s of warm-up).
    std::thread::sleep(Duration::from_secs(5));
    // A process this test started (through the launcher), by its PID.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("shard 1/{SHARDS} on {}: FAILED", hosts.names[1])),
        "{said}"
    );
    assert!(said.contains("nothing merged"), "{said}");
    assert!(!dir.join("merged.json").exists());
    assert!(dir.join(format!("parts/shard-0-of-{SHARDS}.json")).exists());

    // A shard that never reports is stopped at the deadline and named late.
    let launcher = format!(
        "sh -c 'if [ {{host}} = {} ]; then exec sleep 60; fi; exec {} \"$0\" \"$@\"'",
        hosts.names[2], hosts.launcher
    );
    let started = Instant::now();
    let out = cluster(&engine, &hosts, &launcher, &dir, &["--grace", "1"])
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("shard 2/{SHARDS} on {}: LATE", hosts.names[2])),
        "{said}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Kubernetes Job read as Kubernetes would (PyYAML), its pods' command
/// run as local processes with the index each pod gets, their logs (both
/// streams, as `kubectl logs` gives them) merged as the manifest says.
#[test]
fn the_kubernetes_job_runs_its_shards_as_its_pods_would() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/loadgen-job.yaml"
    );
    let job = common::python_json([
        "-c",
        "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        manifest,
    ]);
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let pods = spec["completions"].as_u64().unwrap();
    assert_eq!(
        spec["parallelism"], spec["completions"],
        "every shard at once"
    );
    let container = &spec["template"]["spec"]["containers"][0];
    let mut env: std::collections::BTreeMap<String, String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        env["SHARDS"],
        pods.to_string(),
        "SHARDS matches completions"
    );
    assert_eq!(env["START_AT"], "${START_AT}", "filled in by envsubst");

    let engine = Engine::start("io-uring", &["--threads", "1"]);
    let loadgen = loadgen_binary();
    let start_at = std::time::SystemTime::now() + Duration::from_secs(4);
    // What a user edits, made small; what envsubst fills in.
    for (name, value) in [
        (
            "START_AT",
            humantime::format_rfc3339_seconds(start_at).to_string(),
        ),
        ("URL", engine.url("/ws")),
        ("CONNECTIONS", "30".into()),
        ("RATE", RATE.to_string()),
        ("WARMUP", "0.5".into()),
        ("DURATION", "2".into()),
    ] {
        assert!(env.contains_key(name), "the manifest sets {name}");
        env.insert(name.into(), value);
    }
    let path = format!(
        "{}:{}",
        loadgen.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dir = std::env::temp_dir().join(format!("ringecho-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let command: Vec<String> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .chain(container["args"].as_array().unwrap())
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    let logs: Vec<PathBuf> = (0..pods)
        .map(|k| dir.join(format!("shard-{k}.json")))
        .collect();
    let running: Vec<_> = logs
        .iter()
        .enumerate()
        .map(|(k, log)| {
            let file = std::fs::File::create(log).unwrap();
            Command::new(&command[0])
                .args(&command[1..])
                .envs(&env)
                .env("JOB_COMPLETION_INDEX", k.to_string())
                .env("PATH", &path)
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap()
        })
        .collect();
    for (k, mut pod) in running.into_iter().enumerate() {
        let status = pod.wait().unwrap();
        let log = std::fs::read_to_string(&logs[k]).unwrap();
        assert!(status.success(), "pod {k}: {status}\n{log}");
    }
    let merged_path = dir.join("merged.json");
    let out = Command::new(&loadgen)
        .arg("merge")
        .args(&logs)
        .arg("-o")
        .arg(&merged_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let merged = RunResult::load(&merged_path).unwrap();
    assert_eq!(merged.parts.len() as u64, pods);
    assert_eq!(merged.summary.connections, 30);
    assert_eq!(merged.summary.errors.total(), 0);
    let per_sec = merged.summary.msgs_per_sec;
    assert!(
        (per_sec - RATE).abs() < RATE * 0.1,
        "{per_sec:.0} msgs/s merged against {RATE} offered"
    );
    assert_eq!(
        merged.summary.server_process.as_ref().map(|p| p.source),
        Some(ProcessSource::Stats)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
