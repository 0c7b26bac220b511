//! `GET /metrics` read by Prometheus's official Python client parser
//! (prometheus_client, which scripts/test.sh installs into
//! target/tools/prometheus), against the engine's own `/stats`.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::Engine;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message};

/// The families prometheus_client parsed from `text`, by name.
fn parse(text: &str) -> HashMap<String, Value> {
    let python = common::test_python();
    let mut child = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/metrics/parse.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'prometheus_client'"),
        "{python} lacks prometheus_client: run scripts/test.sh (it installs it into \
         target/tools/prometheus) or set PROMETHEUS_PYTHON"
    );
    assert!(
        out.status.success(),
        "the parser refused /metrics: {stderr}"
    );
    let families: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    families
        .into_iter()
        .map(|f| (f["name"].as_str().unwrap().to_string(), f))
        .collect()
}

/// The value of the one sample of `family` named `sample` with `labels`.
fn value(families: &HashMap<String, Value>, family: &str, labels: &[(&str, &str)]) -> f64 {
    let f = families
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    let matching: Vec<&Value> = f["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            let have = s["labels"].as_object().unwrap();
            have.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| have.get(*k) == Some(&Value::from(*v)))
        })
        .collect();
    assert_eq!(matching.len(), 1, "{family}{labels:?}: {f}");
    matching[0]["value"].as_f64().unwrap()
}

fn echo_some(engine: &Engine, messages: usize) {
    let stream = TcpStream::connect(engine.addr).unwrap();
    let (mut ws, _) = tungstenite::client(engine.url("/ws"), stream).unwrap();
    for i in 0..messages {
        ws.send(Message::text(format!("message {i}"))).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(format!("message {i}")));
    }
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
}

fn metrics_agree_with_stats(backend: &str) {
    let engine = Engine::start(backend, &["--threads", "2"]);
    echo_some(&engine, 7);
    let stats = engine.wait_for_no_connections();
    let (status, text) = engine.get("/metrics");
    assert_eq!(status, 200);
    let families = parse(&text);

    // Every family has a type and a help text.
    for (name, f) in &families {
        assert!(
            matches!(f["type"].as_str(), Some("counter" | "gauge")),
            "{name}: {f}"
        );
        assert!(
            !f["help"].as_str().unwrap().is_empty(),
            "{name} has no help"
        );
    }
    // The totals: prometheus_client names a counter family without `_total`.
    let totals = &stats["totals"];
    for (field, family) in [
        ("messages_in", "ringecho_received_messages"),
        ("messages_out", "ringecho_sent_messages"),
        ("upgraded", "ringecho_upgraded_connections"),
        ("bytes_in", "ringecho_received_payload_bytes"),
    ] {
        assert_eq!(families[family]["type"], "counter", "{family}");
        let total = value(&families, family, &[]);
        assert_eq!(
            total,
            totals[field].as_f64().unwrap(),
            "{backend}: {family}"
        );
        // The workers' series add up to the total.
        let worker_family = family.replacen("ringecho_", "ringecho_worker_", 1);
        let sum: f64 = families[&worker_family]["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["value"].as_f64().unwrap())
            .sum();
        assert_eq!(sum, total, "{backend}: {worker_family}");
        assert_eq!(
            families[&worker_family]["samples"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
    assert_eq!(totals["messages_in"], 7);
    assert_eq!(families["ringecho_open_websockets"]["type"], "gauge");
    assert_eq!(value(&families, "ringecho_open_websockets", &[]), 0.0);
    assert_eq!(
        value(&families, "ringecho_closes", &[("code", "1005")]),
        1.0
    );
    assert_eq!(
        value(
            &families,
            "ringecho_info",
            &[
                ("version", stats["version"].as_str().unwrap()),
                ("commit", stats["commit"].as_str().unwrap()),
                ("backend", backend)
            ]
        ),
        1.0
    );

    // The process: read after /stats, so at least as much CPU.
    let process = &stats["process"];
    let cpu = value(&families, "process_cpu_seconds", &[]);
    let stats_cpu =
        process["cpu_user_secs"].as_f64().unwrap() + process["cpu_system_secs"].as_f64().unwrap();
    assert!(cpu >= stats_cpu && cpu > 0.0, "{cpu} < {stats_cpu}");
    assert_eq!(
        value(&families, "process_start_time_seconds", &[]),
        process["start_time_unix_secs"].as_f64().unwrap()
    );
    assert!(value(&families, "process_resident_memory_bytes", &[]) > 1e6);
    assert_eq!(process["pid"], engine.pid());
}

#[test]
fn metrics_parse_as_prometheus_text_and_agree_with_stats() {
    for backend in ["io-uring", "epoll"] {
        metrics_agree_with_stats(backend);
    }
}
