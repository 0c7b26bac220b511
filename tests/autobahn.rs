//! RFC 6455 conformance: Autobahn|Testsuite's cases 1.* to 10.*, run by
//! kosoku (a Python 3 runner of Autobahn's own cases), against every backend.
//! `scripts/test.sh` installs kosoku when it is missing; the runner is taken
//! from $KOSOKU, else from PATH. The digest of each run is written to
//! target/autobahn/BACKEND.json, so that running the tests changes no
//! tracked file; RINGECHO_AUTOBAHN=results/autobahn refreshes the committed
//! digests.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::Engine;

/// Autobahn has no section 8; 11–13 are compression (not offered).
const SECTIONS: [&str; 9] = [
    "1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*",
];
/// What kosoku runs of those sections; a different count means the runner
/// changed, and the digest must be looked at again.
const EXPECTED_CASES: usize = 301;
/// NON-STRICT is refused too: a text frame sent in chops fails at the bad chop.
const BEHAVIORS_ACCEPTED: [&str; 2] = ["OK", "INFORMATIONAL"];
const CLOSE_BEHAVIORS_ACCEPTED: [&str; 2] = ["OK", "INFORMATIONAL"];

/// Timing-sensitive cases should not share two cores with another run.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn kosoku() -> String {
    std::env::var("KOSOKU").unwrap_or_else(|_| "kosoku".to_string())
}

fn conformance(backend: &str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runner = kosoku();
    let installed = Command::new(&runner)
        .arg("--help")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed,
        "the Autobahn runner `{runner}` is missing: run scripts/test.sh (it installs kosoku with pip) \
         or set KOSOKU to its path"
    );

    let engine = Engine::start(backend, &[]);
    let outdir = std::env::temp_dir().join(format!(
        "ringecho-autobahn-{backend}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&outdir);
    let mut command = Command::new(&runner);
    for section in SECTIONS {
        command.args(["-i", section]);
    }
    let mut child = command
        .arg("-o")
        .arg(&outdir)
        .arg(engine.url("/ws"))
        .stdout(Stdio::null())
        .spawn()
        .expect("start kosoku");
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kosoku ran for more than 300 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(outdir.join("index.json")).expect("kosoku wrote index.json"),
    )
    .expect("index.json is JSON");
    let cases = index
        .as_object()
        .and_then(|agents| agents.values().next())
        .and_then(|cases| cases.as_object())
        .expect("one agent with its cases");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut not_ok: BTreeMap<String, String> = BTreeMap::new();
    let mut failed = Vec::new();
    for (case, result) in cases {
        let behavior = result["behavior"].as_str().unwrap_or("?");
        let close = result["behaviorClose"].as_str().unwrap_or("?");
        *counts.entry(behavior.to_string()).or_default() += 1;
        if behavior != "OK" || close != "OK" {
            not_ok.insert(case.clone(), format!("{behavior} / close {close}"));
        }
        if !BEHAVIORS_ACCEPTED.contains(&behavior) || !CLOSE_BEHAVIORS_ACCEPTED.contains(&close) {
            failed.push(format!("{case}: {behavior} / close {close}"));
        }
    }
    let digest = serde_json::json!({
        "runner": "kosoku (Autobahn|Testsuite cases, fuzzingclient mode)",
        "cases": SECTIONS.join(" "),
        "backend": backend,
        "engine_options": "defaults (receive buffer 4096 B, max message 64 MiB)",
        "total": cases.len(),
        "behaviors": counts,
        "not_ok": not_ok,
    });
    let results = std::env::var_os("RINGECHO_AUTOBAHN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/autobahn"));
    std::fs::create_dir_all(&results).unwrap();
    std::fs::write(
        results.join(format!("{backend}.json")),
        serde_json::to_string_pretty(&digest).unwrap() + "\n",
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&outdir);

    assert!(
        failed.is_empty(),
        "Autobahn cases failed on {backend}: {failed:#?}"
    );
    assert_eq!(
        cases.len(),
        EXPECTED_CASES,
        "kosoku ran an unexpected number of cases"
    );
    engine.wait_for_no_connections();
}

#[test]
fn autobahn_cases_1_to_10_on_io_uring() {
    conformance("io-uring");
}

#[test]
fn autobahn_cases_1_to_10_on_tokio_uring() {
    conformance("tokio-uring");
}

#[test]
fn autobahn_cases_1_to_10_on_epoll() {
    conformance("epoll");
}
