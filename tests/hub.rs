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

/// The next text message, past any WebSocket pings.
async fn next_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            // WebSocket keep-alives (tungstenite answers them itself).
            Ok(Some(Ok(Message::Ping(_)))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
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

/// A hub connection that has not sent its handshake yet hears none of the
/// broadcasts sent meanwhile (and no hub Ping): its first message is the
/// handshake's answer, as the official client requires, and broadcasts
/// reach it from then on. Before this held, a connection that arrived while
/// a SendToAll was being delivered got the broadcast first, and the
/// official client's start failed ("Expected a handshake response from the
/// server").
#[tokio::test]
async fn broadcasts_wait_for_a_connections_handshake() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    const HANDSHAKE: &str = "{\"protocol\":\"json\",\"version\":1}\u{1e}";
    let send = |id: u32| {
        format!("{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"SendToAll\",\"arguments\":[{id}]}}\x1e")
    };
    let receive =
        |id: u32| format!("{{\"type\":1,\"target\":\"Receive\",\"arguments\":[{id}]}}\x1e");
    for backend in BACKENDS {
        // One worker: the sender's broadcast is delivered on the late
        // connection's own core while it waits.
        let engine = Engine::start(backend, &["--threads", "1", "--hub-keep-alive", "1"]);
        let (mut sender, _) = tokio_tungstenite::connect_async(engine.url("/hub"))
            .await
            .unwrap();
        sender.send(Message::text(HANDSHAKE)).await.unwrap();
        assert_eq!(next_text(&mut sender).await, "{}\u{1e}");
        let (mut late, _) = tokio_tungstenite::connect_async(engine.url("/hub"))
            .await
            .unwrap();
        sender.send(Message::text(send(1))).await.unwrap();
        assert_eq!(
            next_text(&mut sender).await,
            "{\"type\":3,\"invocationId\":\"1\"}\u{1e}"
        );
        assert_eq!(next_text(&mut sender).await, receive(1), "{backend}");
        // Past a keep-alive interval, so a hub Ping would have been due.
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        late.send(Message::text(HANDSHAKE)).await.unwrap();
        assert_eq!(
            next_text(&mut late).await,
            "{}\u{1e}",
            "{backend}: the answer first"
        );
        sender.send(Message::text(send(2))).await.unwrap();
        assert_eq!(
            next_text(&mut late).await,
            receive(2),
            "{backend}: joined once answered"
        );
        sender.close(None).await.unwrap();
        late.close(None).await.unwrap();
        engine.wait_for_no_connections();
    }
}

/// One request on a connection of its own: status and body.
fn transport_request(engine: &Engine, method: &str, token: &str, body: &[u8]) -> (u16, String) {
    let mut request = format!(
        "{method} /hub?id={token} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    // http_request takes text; a hub body here is text (JSON records).
    http_request(engine.addr, std::str::from_utf8(&request).unwrap())
}

fn negotiate(engine: &Engine) -> String {
    let (status, body) = http_request(
        engine.addr,
        "POST /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    let negotiated: serde_json::Value = serde_json::from_str(&body).unwrap();
    negotiated["connectionToken"].as_str().unwrap().to_string()
}

const HANDSHAKE: &[u8] = b"{\"protocol\":\"json\",\"version\":1}\x1e";

/// The limits of the fallback transports, over plain HTTP: a held poll is
/// answered empty after --poll-timeout; a long-polling connection whose
/// client stops polling is closed after --disconnect-timeout; output piling
/// up past --max-pending-bytes closes the connection; unknown connections
/// get 404, DELETE 202; MessagePack on events gets 400.
#[test]
fn fallback_transports_time_out_idle_polls_and_bound_what_waits() {
    use std::time::{Duration, Instant};
    for backend in BACKENDS {
        let engine = Engine::start(
            backend,
            &[
                "--threads",
                "2",
                "--poll-timeout",
                "1",
                "--disconnect-timeout",
                "2",
                "--max-pending-bytes",
                "65536",
            ],
        );
        let token = negotiate(&engine);
        // The first poll opens the connection and answers at once.
        assert_eq!(
            transport_request(&engine, "GET", &token, b""),
            (200, String::new())
        );
        assert_eq!(transport_request(&engine, "POST", &token, HANDSHAKE).0, 200);
        let echo =
            b"{\"type\":1,\"invocationId\":\"7\",\"target\":\"Echo\",\"arguments\":[\"hi\"]}\x1e";
        assert_eq!(transport_request(&engine, "POST", &token, echo).0, 200);
        let (status, body) = transport_request(&engine, "GET", &token, b"");
        assert_eq!(status, 200, "{backend}");
        assert_eq!(
            body, "{}\x1e{\"type\":3,\"invocationId\":\"7\",\"result\":\"hi\"}\x1e",
            "{backend}: the handshake's answer and the completion, in one poll"
        );
        // Nothing to say: the poll is held for --poll-timeout, then empty.
        let held = Instant::now();
        assert_eq!(
            transport_request(&engine, "GET", &token, b""),
            (200, String::new())
        );
        let waited = held.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "{backend}: held {waited:?}"
        );
        // No poll for --disconnect-timeout: the connection is gone.
        std::thread::sleep(Duration::from_millis(3500));
        assert_eq!(
            transport_request(&engine, "POST", &token, echo).0,
            404,
            "{backend}"
        );
        let stats = engine.stats();
        assert_eq!(stats["totals"]["open_fallback_connections"], 0, "{backend}");
        assert_eq!(stats["transports"]["closes"]["1006"], 1, "{backend}");

        // Broadcasts pile up for a client that does not poll: past
        // --max-pending-bytes (64 KiB) its connection is closed.
        let idle = negotiate(&engine);
        assert_eq!(transport_request(&engine, "GET", &idle, b"").0, 200);
        assert_eq!(transport_request(&engine, "POST", &idle, HANDSHAKE).0, 200);
        let sender = negotiate(&engine);
        assert_eq!(transport_request(&engine, "GET", &sender, b"").0, 200);
        assert_eq!(
            transport_request(&engine, "POST", &sender, HANDSHAKE).0,
            200
        );
        let big = format!(
            "{{\"type\":1,\"target\":\"SendToAll\",\"arguments\":[\"{}\"]}}\x1e",
            "x".repeat(40_000)
        );
        for _ in 0..2 {
            assert_eq!(
                transport_request(&engine, "POST", &sender, big.as_bytes()).0,
                200
            );
        }
        assert_eq!(
            transport_request(&engine, "GET", &idle, b"").0,
            404,
            "{backend}"
        );
        assert!(engine.stats()["transports"]["overflows"].as_u64().unwrap() >= 1);

        // DELETE ends a connection; unknown ones get 404.
        let deleted = negotiate(&engine);
        assert_eq!(transport_request(&engine, "GET", &deleted, b"").0, 200);
        assert_eq!(transport_request(&engine, "DELETE", &deleted, b"").0, 202);
        assert_eq!(transport_request(&engine, "GET", &deleted, b"").0, 404);
        assert_eq!(transport_request(&engine, "POST", &deleted, b"").0, 404);
        assert_eq!(transport_request(&engine, "DELETE", "made-up", b"").0, 404);
        assert_eq!(transport_request(&engine, "GET", "made-up", b"").0, 404);

        // Events are text: a MessagePack handshake on them is refused.
        let events = negotiate(&engine);
        let mut stream = std::net::TcpStream::connect(engine.addr).unwrap();
        use std::io::{Read, Write};
        write!(
            stream,
            "GET /hub?id={events} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        let packed = b"{\"protocol\":\"messagepack\",\"version\":1}\x1e";
        assert_eq!(
            transport_request(&engine, "POST", &events, packed).0,
            400,
            "{backend}"
        );
        drop(stream);
        let stats = engine.wait_for_no_connections();
        assert_eq!(stats["totals"]["open_fallback_connections"], 0, "{backend}");
    }
}

/// --transports restricts what negotiation offers, and what is served.
#[test]
fn transports_can_be_restricted() {
    let engine = Engine::start("io-uring", &["--transports", "long-polling"]);
    let (status, body) = http_request(
        engine.addr,
        "POST /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let negotiated: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        negotiated["availableTransports"],
        serde_json::json!([{"transport": "LongPolling", "transferFormats": ["Text", "Binary"]}])
    );
    let token = negotiated["connectionToken"].as_str().unwrap();
    let events = format!(
        "GET /hub?id={token} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(http_request(engine.addr, &events).0, 404);
    let upgrade = "GET /hub HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: close\r\n\r\n";
    assert_eq!(http_request(engine.addr, upgrade).0, 404);
    assert_eq!(transport_request(&engine, "GET", token, b"").0, 200);
}

/// The raw broadcast endpoint, with tokio-tungstenite: a message sent there
/// reaches every connection there, on both workers, with its type, and the
/// sender too; hub connections and the echo endpoint hear none of it.
#[tokio::test]
async fn the_raw_broadcast_endpoint_reaches_every_connection_on_every_core() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    for backend in BACKENDS {
        let engine = Engine::start(backend, &["--threads", "2"]);
        let mut listeners = Vec::new();
        for _ in 0..8 {
            let (ws, _) = tokio_tungstenite::connect_async(engine.url("/broadcast"))
                .await
                .unwrap();
            listeners.push(ws);
        }
        let (mut hub, _) = tokio_tungstenite::connect_async(engine.url("/hub"))
            .await
            .unwrap();
        hub.send(Message::text("{\"protocol\":\"json\",\"version\":1}\u{1e}"))
            .await
            .unwrap();
        assert_eq!(next_text(&mut hub).await, "{}\u{1e}");
        let per_worker: Vec<u64> = (engine.stats()["workers"].as_array().unwrap().iter())
            .map(|w| w["open_websockets"].as_u64().unwrap())
            .collect();
        assert_eq!(per_worker.iter().sum::<u64>(), 9, "{backend}");
        listeners[0]
            .send(Message::text("to everyone"))
            .await
            .unwrap();
        listeners[3]
            .send(Message::binary(vec![1u8, 2, 3]))
            .await
            .unwrap();
        for (i, ws) in listeners.iter_mut().enumerate() {
            let mut heard = Vec::new();
            while heard.len() < 2 {
                match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await {
                    Ok(Some(Ok(Message::Ping(_)))) => continue,
                    Ok(Some(Ok(message))) => heard.push(message),
                    other => panic!("{backend}: listener {i}: {other:?}"),
                }
            }
            // Each sender's messages in order; the two senders' may interleave.
            assert!(
                heard.contains(&Message::text("to everyone"))
                    && heard.contains(&Message::binary(vec![1u8, 2, 3])),
                "{backend}: listener {i}: {heard:?}"
            );
        }
        // The hub connection heard nothing of it: its next message is the
        // answer to its own Echo.
        let echo =
            "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[1]}\u{1e}";
        hub.send(Message::text(echo)).await.unwrap();
        assert_eq!(
            next_text(&mut hub).await,
            "{\"type\":3,\"invocationId\":\"1\",\"result\":1}\u{1e}",
            "{backend}"
        );
        for mut ws in listeners {
            ws.close(None).await.unwrap();
        }
        hub.close(None).await.unwrap();
        let stats = engine.wait_for_no_connections();
        assert_eq!(stats["totals"]["closes"]["1006"], 0, "{backend}");
    }
}
