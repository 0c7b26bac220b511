//! loadgen against WebSocket servers nobody here wrote: Python's
//! `websockets` (tests/loadgen/echo_server.py), plain and over TLS with a
//! certificate made by `openssl` for the test; and a MessagePack SignalR hub
//! made of Node's ws and the official MessagePackHubProtocol
//! (tests/signalr/msgpack-echo-server.js). No test here asserts a speed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use loadgen::options::{HubEncoding, Io, LoadConfig, MessageType, Protocol, RunArgs};

/// Runs one at a time: each loads both cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The Python server, stopped (by its PID) when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// tests/loadgen/echo_server.py with `args`.
    fn start(args: &[&str]) -> Server {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/loadgen/echo_server.py");
        let mut python = Command::new(common::test_python());
        python.arg(script).args(args);
        Server::spawn(python)
    }

    /// Starts `command`, a server that prints {"port": N} and serves until
    /// its standard input closes.
    fn spawn(mut command: Command) -> Server {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the server's interpreter (scripts/test.sh installs Python and Node.js)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let said: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("echo_server.py did not start: {line:?}"));
        Server {
            port: said["port"].as_u64().unwrap() as u16,
            child,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA's certificate, and a server certificate it signed for
/// 127.0.0.1 and localhost with its key: (ca, cert, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let file = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let openssl = |args: &[&str]| {
        let done = Command::new("openssl")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .expect("openssl (scripts/test.sh installs it)");
        assert!(done.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "1", "-subj", "/CN=ringecho test CA"],
            &["-keyout", &file("ca.key"), "-out", &file("ca.pem")],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &["-subj", "/CN=localhost"],
            &["-keyout", &file("key.pem"), "-out", &file("server.csr")],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &file("server.csr"),
        "-CA",
        &file("ca.pem"),
        "-CAkey",
        &file("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &file("san.ext"),
        "-out",
        &file("cert.pem"),
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

fn run_args(url: &str) -> RunArgs {
    let mut load = LoadConfig::with_defaults(url);
    load.connections = 4;
    load.size = 100;
    load.duration = 1.0;
    load.warmup = 0.2;
    load.no_pin = true;
    RunArgs {
        load,
        out: None,
        hgrm: None,
        hlog: None,
        quiet: true,
        label: None,
        server_pid: None,
        start_at: None,
        limits: Default::default(),
    }
}

/// wss:// to a TLS server with a test CA's certificate, a required
/// Authorization header and a chosen subprotocol: trusted through --ca or
/// --insecure, refused (as a TLS failure that says what to do) without;
/// a missing header is the server's 401.
#[test]
fn wss_reaches_a_tls_server_with_its_certificate_headers_and_subprotocol() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-tls-{}", std::process::id()));
    let (ca, cert, key) = certificates(&dir);
    let server = Server::start(&[
        "--tls",
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        "--require-header",
        "Authorization: Bearer sesame",
        "--subprotocol",
        "chat",
    ]);
    let mut run = run_args(&format!("wss://127.0.0.1:{}/echo", server.port));
    run.load.headers = vec!["Authorization: Bearer sesame".into()];
    run.load.subprotocols = vec!["chat".into()];

    // Trusted through --ca, closed loop and at a constant rate.
    run.load.ca = Some(ca.clone());
    for rate in [None, Some(400.0)] {
        run.load.rate = rate;
        let result = loadgen::run::run(&run).expect("a trusted certificate connects");
        let s = &result.summary;
        assert_eq!(result.load.io, Io::Epoll, "auto picks the TLS client");
        assert_eq!(s.connections, 4);
        assert_eq!(s.errors.total(), 0, "{:?}", s.errors);
        assert!(s.messages > 0);
        if rate.is_some() {
            // 400/s for 1 s, give or take the window's edges.
            assert!((300..=440).contains(&s.messages), "{}", s.messages);
        }
    }
    run.load.rate = None;

    // --insecure takes the certificate unchecked.
    run.load.ca = None;
    run.load.insecure = true;
    let result = loadgen::run::run(&run).expect("--insecure connects");
    assert_eq!(result.summary.errors.total(), 0);
    assert!(result.summary.messages > 0);

    // Neither: the certificate is not trusted, and the error says what to do.
    run.load.insecure = false;
    let refused = loadgen::run::run(&run).unwrap_err().to_string();
    assert!(
        refused.contains("4 TLS") && refused.contains("--ca"),
        "{refused}"
    );

    // Trusted, but without the header the server wants.
    run.load.ca = Some(ca);
    run.load.headers.clear();
    let refused = loadgen::run::run(&run).unwrap_err().to_string();
    assert!(refused.contains("4 HTTP 401"), "{refused}");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// `--payload utf8` and `--payload-file` through a server that decodes
/// every text message as UTF-8 (and closes with 1007 on one that is not):
/// every echo comes back exact, on both clients.
#[test]
fn utf8_text_and_payload_files_echo_exactly_through_a_validating_server() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-payloads-{}", std::process::id()));
    let server = Server::start(&[]);
    let url = format!("ws://127.0.0.1:{}/echo", server.port);
    common::check_payload_loads(&url, &dir, |load| RunArgs {
        load,
        ..run_args(&url)
    });
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// --connection-stages against a server that holds each echo 10 ms, so
/// that each connection echoes at most 100 a second: a second with 8
/// connections sending carries about 8 times what a second with 1 does,
/// on both clients.
#[test]
fn connection_stages_set_how_many_connections_send() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&["--delay-ms", "10"]);
    let url = format!("ws://127.0.0.1:{}/echo", server.port);
    for io in [Io::Auto, Io::Epoll] {
        let mut run = run_args(&url);
        run.load.io = io;
        run.load.warmup = 0.0;
        run.load.connection_stages = ["0s:1", "2s:1", "0s:8", "2s:8"]
            .map(|s| loadgen::options::ConnectionStage::parse(s).unwrap())
            .to_vec();
        let result = loadgen::run::run(&run).expect("the staged run completes");
        let s = &result.summary;
        assert_eq!(s.errors.total(), 0, "{io:?}: {:?}", s.errors);
        assert_eq!(result.load.connections, 8, "the peak opens");
        assert_eq!(result.load.duration, 4.0, "the stages are the window");
        assert_eq!(s.connections, 8);
        let per_second: Vec<u64> = result.intervals.iter().map(|i| i.messages).collect();
        assert!(per_second.len() >= 4, "{io:?}: {per_second:?}");
        let (one, eight) = (per_second[1], per_second[3]);
        assert!(
            (50..=101).contains(&one),
            "{io:?}: 1 connection: {per_second:?}"
        );
        assert!(
            (400..=808).contains(&eight) && eight > 5 * one,
            "{io:?}: 8 connections: {per_second:?}"
        );
    }
}

/// --hub-encoding messagepack against a hub whose every read and answer is
/// the official MessagePackHubProtocol's: loadgen's invocations parse, and
/// its checks accept the official encoder's completions, on both clients,
/// payloads as bytes and as strings, across the sizes where MessagePack's
/// headers grow.
#[test]
fn messagepack_invocations_are_answered_by_the_official_protocol() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/signalr");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/@microsoft/signalr-protocol-msgpack")
            .exists(),
        "run scripts/test.sh: it installs the official MessagePack protocol into tests/signalr"
    );
    let mut node = Command::new("node");
    node.arg(format!("{dir}/msgpack-echo-server.js"));
    let server = Server::spawn(node);
    let url = format!("ws://127.0.0.1:{}/", server.port);
    for (io, message_type, size) in [
        (Io::Auto, MessageType::Binary, 20),
        (Io::Epoll, MessageType::Binary, 300),
        (Io::Auto, MessageType::Text, 31),
        (Io::Epoll, MessageType::Text, 1000),
        (Io::Auto, MessageType::Binary, 70_000),
    ] {
        let mut run = run_args(&url);
        run.load.protocol = Protocol::Hub;
        // A hub with no negotiation endpoint: straight to its URL.
        run.load.skip_negotiation = true;
        run.load.hub_encoding = HubEncoding::Messagepack;
        run.load.io = io;
        run.load.message_type = message_type;
        run.load.size = size;
        let result = loadgen::run::run(&run).unwrap_or_else(|e| panic!("{io:?} {size}: {e:#}"));
        let s = &result.summary;
        assert_eq!(
            s.errors.total(),
            0,
            "{io:?} {message_type:?} {size}: {:?}",
            s.errors
        );
        assert!(s.messages > 0, "{io:?} {message_type:?} {size}");
        assert_eq!(result.load.hub_encoding, HubEncoding::Messagepack);
    }
}

/// --scenario broadcast against Python's websockets broadcasting every
/// message to every connection: all deliveries counted and checked; then
/// with deliveries dropped and duplicated by the server, loadgen counts
/// exactly those.
#[test]
fn broadcast_deliveries_are_counted_missing_and_duplicated_ones_too() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = |server: &Server| {
        let mut run = run_args(&format!("ws://127.0.0.1:{}/", server.port));
        run.load.scenario = loadgen::options::Scenario::Broadcast;
        run.load.connections = 10;
        run.load.senders = 2;
        run.load.rate = Some(100.0);
        run.load.size = 64;
        loadgen::run::run(&run).expect("the broadcast runs")
    };
    let clean = Server::start(&["--broadcast"]);
    let result = run(&clean);
    let s = &result.summary;
    assert_eq!(s.errors.total(), 0, "{:?}", s.errors);
    let sent = s.broadcasts_sent.unwrap();
    // 100 a second for 1.2 s, give or take the last one.
    assert!((110..=121).contains(&sent), "{sent}");
    assert!(s.messages > 0 && s.messages <= sent * 10, "{}", s.messages);
    let faulty = Server::start(&[
        "--broadcast",
        "--drop-every",
        "7",
        "--duplicate-every",
        "11",
    ]);
    let result = run(&faulty);
    let (e, sent) = (
        &result.summary.errors,
        result.summary.broadcasts_sent.unwrap(),
    );
    let deliveries = sent * 10;
    // Over the deliveries the server attempted: every 7th dropped; every
    // 11th sent twice, unless it was dropped first (every 77th).
    assert_eq!(e.missing, deliveries / 7, "{e:?}");
    assert_eq!(e.duplicated, deliveries / 11 - deliveries / 77, "{e:?}");
    assert_eq!((e.mismatches, e.unexpected_frames), (0, 0), "{e:?}");
}
