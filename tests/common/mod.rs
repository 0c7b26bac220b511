//! Starts the real engine binary for integration tests and talks to it with
//! clients nobody here wrote (tokio-tungstenite) plus plain HTTP requests.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BACKENDS: [&str; 3] = ["io-uring", "tokio-uring", "epoll"];

/// A running engine, stopped (SIGKILL) when dropped if not terminated before.
pub struct Engine {
    child: Child,
    pub addr: SocketAddr,
    /// Kept open so that the engine never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
    pub startup_line: String,
}

impl Engine {
    pub fn start(backend: &str, args: &[&str]) -> Engine {
        Engine::start_in(&[], "127.0.0.1:0", backend, args)
    }

    /// The engine started through `prefix` (such as `ip netns exec NS`,
    /// which executes it in place: the PID stays the engine's), listening
    /// on `listen`.
    pub fn start_in(prefix: &[&str], listen: &str, backend: &str, args: &[&str]) -> Engine {
        // RINGECHO_BIN runs the tests against another build (an older
        // commit's, to see that a test catches what it is meant to).
        let binary = std::env::var_os("RINGECHO_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_ringecho").into());
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["--listen", listen, "--backend", backend])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ringecho");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the start-up line");
        let addr = startup_address(&line);
        Engine {
            child,
            addr,
            _stdout: stdout,
            startup_line: line,
        }
    }

    /// A WebSocket at /ws opened by hand (see [`raw_websocket_at`]).
    pub fn raw_websocket(&self) -> TcpStream {
        raw_websocket_at(self.addr, UPGRADE)
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// GET `path`; returns the status code and the body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_request(
            self.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
    }

    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = self.get("/stats");
        assert_eq!(status, 200, "/stats answered {status}: {body}");
        serde_json::from_str(&body).expect("/stats is JSON")
    }

    /// Waits until `/stats` shows no open connection (the test's own
    /// request to /stats is the one that remains open while it is served).
    pub fn wait_for_no_connections(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = self.stats();
            let open = stats["totals"]["open_connections"].as_u64().unwrap();
            let websockets = stats["totals"]["open_websockets"].as_u64().unwrap();
            let fallback = stats["totals"]["open_fallback_connections"]
                .as_u64()
                .unwrap();
            if open <= 1 && websockets == 0 && fallback == 0 {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "connections still open: {open} TCP, {websockets} WebSocket, {fallback} hub on a fallback transport"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        self.wait(within).expect("engine exited after SIGTERM")
    }

    pub fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The opening handshake of a plain WebSocket at /ws, as raw bytes.
pub const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                           Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A WebSocket opened by hand at `addr`: `request` sent, the answer's head
/// read byte by byte and checked to be a 101, nothing read past it. No
/// delay, and reads time out after 10 s.
pub fn raw_websocket_at(addr: SocketAddr, request: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Sends a raw HTTP request and reads the whole answer (the server closes).
pub fn http_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The address in an engine's start-up line (read by the engine's own parser).
pub fn startup_address(line: &str) -> SocketAddr {
    ringecho::startup::Startup::parse(line)
        .unwrap_or_else(|e| panic!("the engine did not start: {e}"))
        .listen
}

/// The Python with the packages tests use (prometheus_client, PyYAML,
/// hdrhistogram, websockets): $RINGECHO_TEST_PYTHON, else the one scripts/test.sh installs,
/// else python3 from PATH.
pub fn test_python() -> String {
    if let Ok(python) = std::env::var("RINGECHO_TEST_PYTHON") {
        return python;
    }
    let installed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/tools/python/bin/python3"
    );
    if std::path::Path::new(installed).exists() {
        installed.to_string()
    } else {
        "python3".to_string()
    }
}

/// Runs the test Python with `args` and reads what it prints as JSON.
pub fn python_json<I, A>(args: I) -> serde_json::Value
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    let python = test_python();
    let out = Command::new(&python)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "{python}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

/// Runs a Node.js script that prints one JSON line (the browser and SignalR
/// drivers under tests/) with `args`, and reads that line; a failure shows
/// what the script printed.
pub fn node_json<I, A>(script: &str, args: I) -> serde_json::Value
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    let output = Command::new("node")
        .arg(script)
        .args(args)
        .output()
        .expect("node runs (Node.js 18 or newer; scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

/// Runs every load of [`payload_loads`] against `url` as `run_of` makes it
/// a run, and checks each echo came back exact over all four connections.
pub fn check_payload_loads(
    url: &str,
    dir: &std::path::Path,
    run_of: impl Fn(loadgen::LoadConfig) -> loadgen::RunArgs,
) {
    for (name, load) in payload_loads(url, dir) {
        let result = loadgen::run::run(&run_of(load)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let s = &result.summary;
        assert_eq!(s.errors.total(), 0, "{name}: {:?}", s.errors);
        assert_eq!(s.connections, 4, "{name}");
        assert!(s.messages > 0, "{name}: no message measured");
    }
}

/// Loads that send what `--payload utf8` and `--payload-file` make, each
/// named, for `url` (raw WebSocket): UTF-8 text at sizes that end on each
/// byte of a 4-byte group, on both clients; a text file whole and in
/// slices that keep its characters whole; a binary file whole and cycled
/// in slices. The files are written into `dir`.
pub fn payload_loads(url: &str, dir: &std::path::Path) -> Vec<(String, loadgen::LoadConfig)> {
    use loadgen::options::{Io, MessageType, PayloadKind};
    std::fs::create_dir_all(dir).unwrap();
    // 29 bytes of characters 1 to 4 bytes wide.
    let text = dir.join("greeting.txt");
    std::fs::write(&text, "Grüße, 世界! 😀 échos ").unwrap();
    let binary = dir.join("noise.bin");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let noise: Vec<u8> = (0..3000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&binary, noise).unwrap();

    let base = {
        let mut load = loadgen::LoadConfig::with_defaults(url);
        load.connections = 4;
        load.duration = 1.0;
        load.warmup = 0.2;
        load.no_pin = true;
        load
    };
    let mut loads = Vec::new();
    for io in [Io::Auto, Io::Epoll] {
        for size in [3, 37, 1001, 1002, 4096] {
            let mut load = base.clone();
            load.io = io;
            load.message_type = MessageType::Text;
            load.payload = PayloadKind::Utf8;
            load.size = size;
            loads.push((format!("utf8 {size} B, {io:?}"), load));
        }
    }
    for (file, message_type, sizes) in [
        (&text, MessageType::Text, [29, 58]),
        (&binary, MessageType::Binary, [3000, 100]),
    ] {
        for size in sizes {
            let mut load = base.clone();
            load.payload_file = Some(file.clone());
            load.message_type = message_type;
            load.size = size;
            loads.push((format!("{} in {size} B", file.display()), load));
        }
    }
    loads
}
