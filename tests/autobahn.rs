//! RFC 6455 and RFC 7692 conformance: Autobahn|Testsuite's cases 1.* to
//! 10.*, and the compression cases 12.* and 13.*, run by kosoku (a Python 3
//! runner of Autobahn's own cases), against every backend with
//! permessage-deflate on.
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

/// Autobahn has no section 8; 11 does not exist either.
const SECTIONS: [&str; 9] = [
    "1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*",
];
/// permessage-deflate: 12.* (the default offer) and 13.* (each negotiation
/// parameter), run two at a time.
const COMPRESSION: [&str; 2] = ["12.*", "13.*"];
/// The compression cases with 64 KiB and 128 KiB messages: four fifths of
/// their time. Every backend runs the rest; the io-uring backend (its own
/// driver) runs them all, and so does every backend with
/// RINGECHO_AUTOBAHN_FULL=1, which made the committed digests. The epoll and
/// tokio-uring backends share one driver, so the large cases add nothing
/// there but time: compressed messages are assembled and inflated whole by
/// the one session code whatever their size.
const LARGE: [u8; 7] = [9, 10, 14, 15, 16, 17, 18];
/// What kosoku runs of those sections; a different count means the runner
/// changed, and the digest must be looked at again.
const EXPECTED_CASES: usize = 301;
const EXPECTED_COMPRESSION_CASES: usize = 216;
/// NON-STRICT is refused too: a text frame sent in chops fails at the bad chop.
const BEHAVIORS_ACCEPTED: [&str; 2] = ["OK", "INFORMATIONAL"];
const CLOSE_BEHAVIORS_ACCEPTED: [&str; 2] = ["OK", "INFORMATIONAL"];

/// Timing-sensitive cases should not share two cores with another run.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn kosoku() -> String {
    std::env::var("KOSOKU").unwrap_or_else(|_| "kosoku".to_string())
}

/// Runs kosoku over `include` minus `exclude` and returns each case's result.
fn run_cases(
    engine: &Engine,
    include: &[String],
    exclude: &[String],
    parallelism: u8,
) -> serde_json::Map<String, serde_json::Value> {
    let runner = kosoku();
    let outdir = std::env::temp_dir().join(format!(
        "ringecho-autobahn-{}-{}",
        engine.addr.port(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&outdir);
    let mut command = Command::new(&runner);
    for case in include {
        command.args(["-i", case]);
    }
    for case in exclude {
        command.args(["-x", case]);
    }
    let mut child = command
        .args(["-p", &parallelism.to_string()])
        .arg("-o")
        .arg(&outdir)
        .arg(engine.url("/ws"))
        .stdout(Stdio::null())
        .spawn()
        .expect("start kosoku");
    let deadline = Instant::now() + Duration::from_secs(900);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kosoku ran for more than 900 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(outdir.join("index.json")).expect("kosoku wrote index.json"),
    )
    .expect("index.json is JSON");
    let _ = std::fs::remove_dir_all(&outdir);
    index
        .as_object()
        .and_then(|agents| agents.values().next())
        .and_then(|cases| cases.as_object())
        .cloned()
        .expect("one agent with its cases")
}

fn conformance(backend: &str, deflate: &str) {
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

    let engine = Engine::start(backend, &["--deflate", deflate]);
    let full = backend == "io-uring" || std::env::var_os("RINGECHO_AUTOBAHN_FULL").is_some();
    let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut cases = run_cases(&engine, &strings(&SECTIONS), &[], 1);
    assert_eq!(
        cases.len(),
        EXPECTED_CASES,
        "kosoku ran an unexpected number of cases"
    );
    let skipped: Vec<String> = if full {
        Vec::new()
    } else {
        LARGE
            .iter()
            .flat_map(|n| [format!("12.*.{n}"), format!("13.*.{n}")])
            .collect()
    };
    let compression = run_cases(&engine, &strings(&COMPRESSION), &skipped, 2);
    let expected = if full {
        EXPECTED_COMPRESSION_CASES
    } else {
        EXPECTED_COMPRESSION_CASES * (18 - LARGE.len()) / 18
    };
    assert_eq!(
        compression.len(),
        expected,
        "kosoku ran an unexpected number of compression cases"
    );
    cases.extend(compression);

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut not_ok: BTreeMap<String, String> = BTreeMap::new();
    let mut failed = Vec::new();
    for (case, result) in &cases {
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
        "cases": SECTIONS.iter().chain(&COMPRESSION).copied().collect::<Vec<_>>().join(" "),
        "cases_left_out": skipped.join(" "),
        "backend": backend,
        "engine_options": format!("--deflate {deflate}; otherwise defaults (receive buffer 4096 B, max message 64 MiB)"),
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

    assert!(
        failed.is_empty(),
        "Autobahn cases failed on {backend}: {failed:#?}"
    );
    engine.wait_for_no_connections();
}

#[test]
fn autobahn_cases_1_to_13_on_io_uring() {
    conformance("io-uring", "dedicated");
}

/// The shared compressor: every offer answered without context takeover.
#[test]
fn autobahn_cases_1_to_13_on_tokio_uring() {
    conformance("tokio-uring", "shared");
}

#[test]
fn autobahn_cases_1_to_13_on_epoll() {
    conformance("epoll", "dedicated");
}
