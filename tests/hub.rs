//! The hub endpoint against the official SignalR client (@microsoft/signalr,
//! installed under tests/signalr by scripts/test.sh), on every backend, and
//! the negotiation token rules over plain HTTP.

mod common;

use common::{http_request, Engine, BACKENDS};

/// Runs tests/signalr/hub-client.js with the invoking connections in
/// `protocol` (json or messagepack) on `transport` (websockets, sse or
/// longpolling); the broadcast's listeners use both encodings, and half of
/// them WebSockets.
fn official_client(engine: &Engine, protocol: &str, transport: &str) -> serde_json::Value {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/signalr");
    assert!(
        std::path::Path::new(dir).join("node_modules/@microsoft/signalr").exists(),
        "the official SignalR client is not installed: run scripts/test.sh (it runs npm install in tests/signalr)"
    );
    common::node_json(
        &format!("{dir}/hub-client.js"),
        [
            format!("http://{}/hub", engine.addr),
            protocol.to_string(),
            transport.to_string(),
        ],
    )
}

/// What hub-client.js reports, checked for one backend, encoding and
/// transport.
fn check_official_client(engine: &Engine, backend: &str, protocol: &str, transport: &str) {
    let r = official_client(engine, protocol, transport);
    let case = format!("{backend} {protocol} {transport}");
    let class = match transport {
        "websockets" => "WebSocketTransport",
        "sse" => "ServerSentEventsTransport",
        _ => "LongPollingTransport",
    };
    assert_eq!(
        r["transport"], class,
        "{case}: the client used the transport"
    );
    assert_eq!(r["string"], "hello", "{case}");
    if protocol == "messagepack" {
        assert_eq!(r["binaryEchoed"], true, "{case}: bytes as MessagePack bin");
    }
    // Events carry text only: their listeners speak JSON.
    let sse = transport == "sse";
    let expected: Vec<&str> = (0..8)
        .map(|i| match (i / 2) % 2 == 0 || (sse && i % 2 == 0) {
            true => "json",
            false => "messagepack",
        })
        .collect();
    assert_eq!(
        r["listenerProtocols"],
        serde_json::json!(expected),
        "{case}"
    );
    let transports: Vec<&str> = (0..8)
        .map(|i| match transport != "websockets" && i % 2 == 0 {
            true => class,
            false => "WebSocketTransport",
        })
        .collect();
    assert_eq!(
        r["listenerTransports"],
        serde_json::json!(transports),
        "{case}"
    );
    assert_eq!(r["number"], 42.5);
    assert_eq!(
        r["object"],
        serde_json::json!({"a": [1, "x", null], "b": {"c": true}})
    );
    assert_eq!(r["bigEchoed"], true, "{case}: a 64 KiB string");
    assert!(r["unknownMethod"]
        .as_str()
        .unwrap()
        .contains("Unknown hub method 'NoSuchMethod'"));
    assert!(
        r["streamError"]
            .as_str()
            .unwrap()
            .contains("streaming is not supported"),
        "{case}: {}",
        r["streamError"]
    );
    assert_eq!(r["afterStream"], "still here");
    assert_eq!(r["skipNegotiation"], "direct");
    assert!(r["negotiatedId"].is_string());
    // Every listener heard the broadcast, sent from a connection on the
    // transport under test.
    let per_worker: Vec<u64> = r["websocketsPerWorker"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    if transport == "websockets" {
        assert!(per_worker.iter().all(|&n| n > 0), "{case}: {per_worker:?}");
    } else {
        // Four WebSocket listeners (on whichever workers SO_REUSEPORT put
        // them); the broadcast crossed from the transports thread to them.
        assert_eq!(per_worker.iter().sum::<u64>(), 4, "{case}: {per_worker:?}");
    }
    // The invoking connections and four listeners, on the transports thread.
    let fallback = if transport == "websockets" { 0 } else { 6 };
    assert_eq!(r["fallbackConnections"], fallback, "{case}");
    let received = r["received"].as_array().unwrap();
    assert_eq!(received.len(), 8);
    assert!(received
        .iter()
        .all(|m| m == &serde_json::json!({"news": "for everyone"})));
    assert_eq!(r["stopClean"], true, "{case}");
    assert_eq!(r["stateAfterStop"], "Disconnected");
    let stats = engine.wait_for_no_connections();
    assert_eq!(
        stats["totals"]["closes"]["1006"], 0,
        "{case}: every hub connection closed cleanly"
    );
    assert_eq!(stats["totals"]["open_fallback_connections"], 0, "{case}");
}

#[test]
fn the_official_client_invokes_echo_receives_broadcasts_and_stops_cleanly() {
    for backend in BACKENDS {
        let engine = Engine::start(backend, &["--threads", "2"]);
        for protocol in ["json", "messagepack"] {
            check_official_client(&engine, backend, protocol, "websockets");
        }
    }
}

/// The fallback transports: the official client forced onto Server-Sent
/// Events (JSON: events are text) and long polling (both encodings), with
/// broadcasts between them and WebSockets on both workers.
#[test]
fn the_official_client_works_over_server_sent_events_and_long_polling() {
    for backend in BACKENDS {
        let engine = Engine::start(backend, &["--threads", "2"]);
        for (protocol, transport) in [
            ("json", "sse"),
            ("json", "longpolling"),
            ("messagepack", "longpolling"),
        ] {
            check_official_client(&engine, backend, protocol, transport);
        }
    }
}

#[test]
fn negotiated_tokens_work_once_and_unknown_ones_get_404() {
    let engine = Engine::start("epoll", &[]);
    let (status, body) = http_request(
        engine.addr,
        "POST /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let negotiated: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(negotiated["negotiateVersion"], 1);
    let transports = &negotiated["availableTransports"];
    let names: Vec<&str> = (transports.as_array().unwrap().iter())
        .map(|t| t["transport"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["WebSockets", "ServerSentEvents", "LongPolling"]);
    let token = negotiated["connectionToken"].as_str().unwrap();
    // A 101 (or a kept-alive 404) leaves the connection open: read only
    // the status line.
    let status_of = |query: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(engine.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(
            format!(
                "GET /hub{query} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut line = [0u8; 12];
        s.read_exact(&mut line).unwrap();
        String::from_utf8_lossy(&line[9..12]).to_string()
    };
    assert_eq!(status_of(&format!("?id={token}")), "101");
    assert_eq!(status_of(&format!("?id={token}")), "404", "a reused token");
    assert_eq!(status_of("?id=made-up"), "404");
    assert_eq!(
        status_of(""),
        "101",
        "skipNegotiation clients come without a token"
    );
    assert_eq!(engine.get("/hub").0, 400);
    assert_eq!(engine.get("/hub/negotiate").0, 405);
}

async fn next_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test]
async fn the_server_pings_hub_connections_every_keep_alive_interval() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    for backend in BACKENDS {
        let engine = Engine::start(backend, &["--hub-keep-alive", "1"]);
        let (mut ws, _) = tokio_tungstenite::connect_async(engine.url("/hub"))
            .await
            .unwrap();
        ws.send(Message::text("{\"protocol\":\"json\",\"version\":1}\u{1e}"))
            .await
            .unwrap();
        assert_eq!(next_text(&mut ws).await, "{}\u{1e}");
        let started = std::time::Instant::now();
        assert_eq!(next_text(&mut ws).await, "{\"type\":6}\u{1e}", "{backend}");
        assert!(started.elapsed() >= std::time::Duration::from_millis(500));
    }
}
