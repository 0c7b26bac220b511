//! The sample page and the live view in a real browser (Debian's Chromium,
//! driven by playwright-core from tests/browser), as a person would use them:
//! Connect, Send, see the echo, switch to the hub (on each of its
//! transports), watch the connection count rise on the live view, Close
//! Socket and read code 1000 in the log.
//! Screenshots of each page land in target/screenshots/, not in the
//! committed results/screenshots/, so that running the tests changes no
//! tracked file; RINGECHO_SCREENSHOTS=results/screenshots refreshes those.

mod common;

use common::{Engine, BACKENDS};

#[test]
fn a_person_can_echo_watch_and_close_from_the_browser() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    assert!(
        std::path::Path::new(dir).join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/test.sh (it installs Chromium and playwright-core)"
    );
    let shots = std::env::var_os("RINGECHO_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/target/screenshots").into());
    std::fs::create_dir_all(&shots).unwrap();
    for backend in BACKENDS {
        // Chromium offers permessage-deflate on every WebSocket: each way of
        // answering it is used by one backend.
        let deflate = match backend {
            "io-uring" => "dedicated",
            "tokio-uring" => "shared",
            _ => "off",
        };
        let engine = Engine::start(backend, &["--deflate", deflate]);
        // Screenshots of one backend are enough; the other writes to a scratch folder.
        let scratch = std::env::temp_dir().join(format!("ringecho-shots-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        let out = if backend == BACKENDS[0] {
            shots.clone()
        } else {
            scratch.clone()
        };
        let r = common::node_json(
            &format!("{dir}/pages.js"),
            [format!("http://{}", engine.addr), out.display().to_string()],
        );
        assert_eq!(
            r["prefilledUrl"],
            format!("ws://{}/ws", engine.addr),
            "the page's own address"
        );
        assert_eq!(r["hubUrl"], format!("ws://{}/hub", engine.addr));
        assert_eq!(r["initialState"], "Ready to connect...");
        assert_eq!(r["stateAfterConnect"], "Open");
        assert_eq!(r["websocketsWithOneClient"], 1);
        assert_eq!(r["websocketsWithTwoClients"], 2);
        assert_eq!(r["websocketsAfterClose"], 1);
        assert_eq!(
            r["coresShown"],
            engine.stats()["workers"].as_array().unwrap().len()
        );
        assert!(
            r["stateAfterClose"]
                .as_str()
                .unwrap()
                .starts_with("Closed. Code: 1000"),
            "{}",
            r["stateAfterClose"]
        );
        for transport in ["sse", "longpolling"] {
            let f = &r["fallback"][transport];
            assert_eq!(
                f["url"],
                format!("http://{}/hub", engine.addr),
                "{transport}"
            );
            assert_eq!(f["stateWhenOpen"], "Open", "{backend} {transport}");
            assert!(
                f["stateAfterClose"]
                    .as_str()
                    .unwrap()
                    .starts_with("Closed. Code: 1000"),
                "{backend} {transport}: {f}"
            );
        }
        let log = r["echoLog"].as_array().unwrap();
        let has = |from: &str, data: &str| log.iter().any(|row| row[0] == from && row[2] == data);
        assert!(has("Client", "Connection opened"));
        assert!(has("Server", "Hello from Chromium"));
        assert!(log
            .iter()
            .any(|row| row[2].as_str().unwrap().contains("Code: 1000")));
        for page in [
            "echo-page.png",
            "hub-page.png",
            "hub-long-polling.png",
            "dashboard.png",
        ] {
            assert!(
                out.join(page).metadata().unwrap().len() > 10_000,
                "{page} written"
            );
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }
}

/// The official SignalR client's browser bundles in Chromium, JSON and
/// MessagePack, over WebSockets, Server-Sent Events (JSON only: events are
/// text) and long polling, on every backend: Echo of text with non-ASCII
/// characters and of an object (and of bytes, in MessagePack), a broadcast
/// heard by a listener on the same transport and one on WebSockets in
/// MessagePack, and a clean stop.
#[test]
fn the_official_client_works_in_chromium_in_both_encodings_and_every_transport() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
    for needed in [
        "browser/node_modules/playwright-core",
        "signalr/node_modules/@microsoft/signalr-protocol-msgpack",
    ] {
        assert!(
            std::path::Path::new(dir).join(needed).exists(),
            "{needed} is missing: run scripts/test.sh (it installs the test packages)"
        );
    }
    for backend in BACKENDS {
        let engine = Engine::start(backend, &["--threads", "2"]);
        let r = common::node_json(
            &format!("{dir}/browser/official-client.js"),
            [format!("http://{}", engine.addr)],
        );
        let cases = [
            ("json", "WebSockets"),
            ("messagepack", "WebSockets"),
            ("json", "ServerSentEvents"),
            ("json", "LongPolling"),
            ("messagepack", "LongPolling"),
        ];
        for (encoding, transport) in cases {
            let e = &r[format!("{encoding} {transport}")];
            assert_eq!(e["string"], "héllo 😀", "{backend} {encoding}: {r}");
            let class = transport.replace("WebSockets", "WebSocket") + "Transport";
            assert_eq!(e["transport"], class, "{backend}: {r}");
            assert_eq!(
                e["object"],
                serde_json::json!({"a": [1, "x", null], "b": {"c": true}})
            );
            assert_eq!(
                e["received"],
                serde_json::json!([{"from": encoding}, {"from": encoding}]),
                "{backend} {encoding}: both listeners heard it"
            );
            assert_eq!(e["stopClean"], true, "{backend} {encoding}");
        }
        assert_eq!(
            r["messagepack WebSockets"]["bytesEchoed"], true,
            "{backend}"
        );
        assert_eq!(
            r["messagepack LongPolling"]["bytesEchoed"], true,
            "{backend}"
        );
        let stats = engine.wait_for_no_connections();
        assert_eq!(stats["totals"]["closes"]["1006"], 0, "{backend}: {stats}");
    }
}
