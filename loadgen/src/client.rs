//! A lean WebSocket client: the opening handshake over a TCP socket (TLS
//! for `wss://`), masked frames out, server frames in. Generic over
//! servers: fragmented echoes are reassembled, server pings answered,
//! anything else counted.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::Range;

use base64::Engine as _;
use fastwebsockets::{Frame, OpCode, Payload};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::tls::{Stream, Tls};

/// Where to connect, parsed once from the URL, and what the opening
/// handshake says besides the essentials.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
    pub handshake: Handshake,
    /// `wss://`: how to speak TLS to it.
    pub tls: Option<Tls>,
}

/// The opening handshake's optional parts (`--origin`, `--header`,
/// `--subprotocol`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Handshake {
    pub origin: Option<String>,
    /// "Name: value", each sent as given.
    pub headers: Vec<String>,
    /// Offered in order; the server must choose one of them.
    pub subprotocols: Vec<String>,
}

impl Handshake {
    pub fn of(load: &crate::options::LoadConfig) -> Handshake {
        Handshake {
            origin: load.origin.clone(),
            headers: load.headers.clone(),
            subprotocols: load.subprotocols.clone(),
        }
    }
}

impl Target {
    /// The load's URL with its handshake options and, for `wss://`, its
    /// TLS options (`--insecure`, `--ca`).
    pub fn of(load: &crate::options::LoadConfig) -> anyhow::Result<Self> {
        let mut target = Target::parse(&load.url)?;
        target.handshake = Handshake::of(load);
        if target.tls.is_some() {
            let host = url::Url::parse(&load.url)?
                .host_str()
                .unwrap_or_default()
                .to_string();
            target.tls = Some(Tls::new(&host, load.insecure, load.ca.as_deref())?);
        }
        Ok(target)
    }

    /// `ws://` or `wss://` (checked against the built-in roots).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("bad --url {url:?}: {e}"))?;
        let secure = match parsed.scheme() {
            "ws" => false,
            "wss" => true,
            _ => anyhow::bail!("--url must be ws://… or wss://… (got {url:?})"),
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("--url has no host"))?;
        let port = parsed.port().unwrap_or(if secure { 443 } else { 80 });
        let addr = (host, port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))?;
        let mut path = parsed.path().to_string();
        if let Some(query) = parsed.query() {
            path.push('?');
            path.push_str(query);
        }
        let tls = secure.then(|| Tls::new(host, false, None)).transpose()?;
        Ok(Target {
            addr,
            host: format!("{host}:{port}"),
            path,
            handshake: Handshake::default(),
            tls,
        })
    }
}

/// Opens a TCP connection (from `source` if given), TLS over it for
/// `wss://`, and performs the WebSocket handshake. Returns the stream and
/// any bytes read past the server's 101 response.
pub async fn connect(
    target: &Target,
    source: Option<IpAddr>,
    token: Option<&str>,
) -> anyhow::Result<(Stream, Vec<u8>)> {
    let mut stream = open(target, source).await?;
    let (request, key) = upgrade_request(target, token, false);
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut response = Vec::with_capacity(512);
    let end = loop {
        if let Some(end) = upgrade_response(target, &response, &key)? {
            break end;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "server closed during the handshake");
        response.extend_from_slice(&chunk[..n]);
    };
    Ok((stream, response[end..].to_vec()))
}

/// Opens a TCP connection (from `source` if given), with TLS over it for
/// `wss://`: the stream before any handshake.
pub async fn open(target: &Target, source: Option<IpAddr>) -> anyhow::Result<Stream> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let tcp = socket.connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    Ok(match &target.tls {
        Some(tls) => tls.connect(tcp).await.map_err(|e| {
            let why = e.to_string();
            // A self-signed certificate given to --ca is a CA
            // certificate serving as its own end entity, which WebPKI
            // refuses; say what to do instead.
            let hint = if why.contains("CaUsedAsEndEntity") {
                " (a self-signed certificate cannot be its own --ca: use --insecure, \
                     or give --ca the CA that signed the server's certificate)"
            } else {
                ""
            };
            anyhow::anyhow!("TLS: {why}{hint}")
        })?,
        None => Stream::Plain(tcp),
    })
}

/// What kind of connect failure `why` (an error's text) was: "refused",
/// "timeout", "reset", "HTTP 503" for a handshake answered with a status,
/// "TLS" for a TLS handshake that failed (an untrusted certificate),
/// "negotiation" for a hub's negotiation that gave no connection for the
/// transport, or "other".
pub fn failure_kind(why: &str) -> String {
    let lower = why.to_ascii_lowercase();
    if let Some(status) = why.strip_prefix("handshake refused: ") {
        // "HTTP/1.1 503 Service Unavailable"
        return match status.split_whitespace().nth(1) {
            Some(code) => format!("HTTP {code}"),
            None => "HTTP ?".into(),
        };
    }
    let kind = if why.starts_with("TLS: ") {
        "TLS"
    } else if why.starts_with("negotiation: ") {
        "negotiation"
    } else if lower.contains("refused") {
        "refused"
    } else if lower.contains("timed out") || lower.contains("no answer within") {
        "timeout"
    } else if lower.contains("reset") || lower.contains("closed during the handshake") {
        "reset"
    } else {
        "other"
    };
    kind.into()
}

/// The offer `--deflate` makes: what browsers offer.
pub const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The opening handshake's request for `target`, and its key; `token`, a
/// negotiated hub connection's, goes on the query as `id`; `deflate`
/// offers permessage-deflate.
pub fn upgrade_request(target: &Target, token: Option<&str>, deflate: bool) -> (String, String) {
    let key = base64::engine::general_purpose::STANDARD.encode(random_bytes::<16>());
    let extensions = if deflate {
        format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n")
    } else {
        String::new()
    };
    let mut path = target.path.clone();
    if let Some(token) = token {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str("id=");
        path.extend(url::form_urlencoded::byte_serialize(token.as_bytes()));
    }
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extensions}",
        target.host
    );
    let h = &target.handshake;
    if let Some(origin) = &h.origin {
        request.push_str(&format!("Origin: {origin}\r\n"));
    }
    if !h.subprotocols.is_empty() {
        request.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            h.subprotocols.join(", ")
        ));
    }
    for header in &h.headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    (request, key)
}

/// The permessage-deflate parameters the server agreed to in the head of
/// its 101, if it did.
pub fn agreed_deflate(head: &[u8]) -> Option<permessage_deflate::Params> {
    let head = std::str::from_utf8(head).ok()?;
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-extensions"))
        .flat_map(|(_, value)| value.split(','))
        .find_map(permessage_deflate::parse)
}

/// Checks the server's answer to [`upgrade_request`] as far as it has
/// arrived: `Ok(None)` while its head is incomplete, `Ok(Some(end))` once it
/// is a valid 101 for `key` (`end`: where the WebSocket's bytes begin).
pub fn upgrade_response(
    target: &Target,
    response: &[u8],
    key: &str,
) -> anyhow::Result<Option<usize>> {
    let Some(at) = find(response, b"\r\n\r\n") else {
        anyhow::ensure!(response.len() < 16 * 1024, "handshake response too long");
        return Ok(None);
    };
    let end = at + 4;
    let head = String::from_utf8_lossy(&response[..end]);
    let status = head.lines().next().unwrap_or_default();
    anyhow::ensure!(
        status.split_whitespace().nth(1) == Some("101"),
        "handshake refused: {status}"
    );
    let expected = accept_key(key);
    let accepted = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == expected
        })
    });
    anyhow::ensure!(
        accepted,
        "handshake answer has no valid Sec-WebSocket-Accept"
    );
    let chosen = head.lines().find_map(|line| {
        line.split_once(':')
            .filter(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-protocol"))
            .map(|(_, value)| value.trim().to_string())
    });
    let offered = &target.handshake.subprotocols;
    match chosen {
        // RFC 6455 §4.1: a subprotocol the client did not offer fails it.
        Some(chosen) => anyhow::ensure!(
            offered.contains(&chosen),
            "the server chose subprotocol {chosen:?}, which was not offered{}",
            if offered.is_empty() {
                String::new()
            } else {
                format!(" (offered: {})", offered.join(", "))
            }
        ),
        // Allowed by the RFC, but a load that asked for a subprotocol
        // would measure something else without it.
        None => anyhow::ensure!(
            offered.is_empty(),
            "the server accepted none of the offered subprotocols ({})",
            offered.join(", ")
        ),
    }
    Ok(Some(end))
}

/// The hub handshake over an open WebSocket: JSON protocol version 1,
/// answered by `{}`. Returns bytes read past the answer.
pub async fn hub_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    leftover: Vec<u8>,
    hub: crate::hub::Hub,
) -> anyhow::Result<Vec<u8>> {
    let mut frame = Vec::new();
    Encoder::default().encode(OpCode::Text, hub.handshake(), &mut frame);
    stream.write_all(&frame).await?;
    stream.flush().await?;
    let mut decoder = Decoder::new(&mut *stream, &leftover, 1 << 20);
    let answer = loop {
        match decoder.next().await? {
            Incoming::Text(text) => break text.to_vec(),
            Incoming::Ping(_) | Incoming::Pong => continue,
            other => anyhow::bail!("hub handshake answered with {other:?}"),
        }
    };
    let record = answer
        .split(|&b| b == crate::hub::RECORD_SEPARATOR)
        .next()
        .unwrap_or_default();
    anyhow::ensure!(
        record == b"{}",
        "hub handshake refused: {}",
        String::from_utf8_lossy(record)
    );
    Ok(decoder.buffered().to_vec())
}

/// The head of the frame at the front of `buf`, once all of it has arrived
/// (`Ok(None)` until then); an unknown opcode, or a payload longer than
/// `max_message`, is an error. Shared by both clients' decoders.
pub(crate) fn frame_head(buf: &[u8], max_message: usize) -> io::Result<Option<Head>> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    let opcode = OpCode::try_from(b0 & 0x0F)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "unknown opcode from server"))?;
    let (extra, payload_len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (2, u16::from_be_bytes([b[0], b[1]]) as usize),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (8, u64::from_be_bytes(b.try_into().unwrap()) as usize),
            None => return Ok(None),
        },
        n => (0, n as usize),
    };
    if payload_len > max_message {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame larger than expected",
        ));
    }
    let masked = b1 & 0x80 != 0;
    let len = 2 + extra + if masked { 4 } else { 0 };
    if buf.len() < len {
        return Ok(None);
    }
    let mask = masked.then(|| buf[len - 4..len].try_into().unwrap());
    Ok(Some(Head {
        fin: b0 & 0x80 != 0,
        opcode,
        mask,
        len,
        payload_len,
    }))
}

fn accept_key(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Bytes from the OS random source (keys and the mask generator's seed).
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut out))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        for (i, b) in out.iter_mut().enumerate() {
            *b = (t >> ((i % 8) * 8)) as u8 ^ i as u8;
        }
    }
    out
}

/// Encodes masked client frames; masks come from a per-connection xorshift
/// generator seeded from the OS (RFC 6455 wants them unpredictable to
/// intermediaries, not cryptographically strong).
pub struct Encoder {
    state: u64,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            state: u64::from_le_bytes(random_bytes::<8>()) | 1,
        }
    }
}

impl Encoder {
    /// A fresh mask key.
    pub fn next_mask(&mut self) -> [u8; 4] {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state as u32).to_le_bytes()
    }

    /// Appends a final, masked frame with `payload` to `out`.
    pub fn encode(&mut self, opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
        let mask = self.next_mask();
        let mut head = [0u8; 14];
        let head_len =
            Frame::new(true, opcode, Some(mask), Payload::Borrowed(payload)).fmt_head(&mut head);
        out.extend_from_slice(&head[..head_len]);
        let start = out.len();
        out.extend_from_slice(payload);
        fastwebsockets::unmask(&mut out[start..], mask);
    }
}

/// A complete message or control frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    Text(&'a [u8]),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    Close(Option<u16>),
}

/// Reads server frames from a buffered stream. Cancel-safe: state changes
/// only after a read completes.
pub struct Decoder<R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A fragmented message being reassembled: (opcode, payload so far).
    message: Option<(OpCode, Vec<u8>)>,
    /// The last complete reassembled message, lent out by `next`.
    assembled: Vec<u8>,
    max_message: usize,
}

/// Where a complete message or control frame lies, before it is lent out.
enum Found {
    InBuffer(OpCode, Range<usize>),
    Assembled(OpCode),
    Pong,
    Close(Option<u16>),
}

/// A frame's head, as [`frame_head`] reads it.
pub(crate) struct Head {
    pub(crate) fin: bool,
    pub(crate) opcode: OpCode,
    pub(crate) mask: Option<[u8; 4]>,
    /// Bytes of the head itself.
    pub(crate) len: usize,
    pub(crate) payload_len: usize,
}

impl<R: AsyncRead + Unpin> Decoder<R> {
    pub fn new(reader: R, initial: &[u8], max_message: usize) -> Self {
        let mut buf = vec![0u8; (64 * 1024).max(initial.len())];
        buf[..initial.len()].copy_from_slice(initial);
        Decoder {
            reader,
            buf,
            start: 0,
            end: initial.len(),
            message: None,
            assembled: Vec::new(),
            max_message,
        }
    }

    /// The next message or control frame. Errors are protocol violations by
    /// the server or I/O errors; `UnexpectedEof` when it closed the TCP connection.
    pub async fn next(&mut self) -> io::Result<Incoming<'_>> {
        let found = loop {
            if let Some(head) = self.parse_head()? {
                let frame_end = self.start + head.len + head.payload_len;
                if frame_end <= self.end {
                    let payload = self.start + head.len..frame_end;
                    self.start = frame_end;
                    if let Some(mask) = head.mask {
                        fastwebsockets::unmask(&mut self.buf[payload.clone()], mask);
                    }
                    match self.complete(head.fin, head.opcode, payload)? {
                        Some(found) => break found,
                        None => continue, // a fragment, kept for later
                    }
                }
                self.make_room(head.len + head.payload_len);
            } else {
                self.make_room(14);
            }
            let n = self.reader.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.end += n;
        };
        Ok(match found {
            Found::InBuffer(OpCode::Text, r) => Incoming::Text(&self.buf[r]),
            Found::InBuffer(OpCode::Ping, r) => Incoming::Ping(&self.buf[r]),
            Found::InBuffer(_, r) => Incoming::Binary(&self.buf[r]),
            Found::Assembled(OpCode::Text) => Incoming::Text(&self.assembled),
            Found::Assembled(_) => Incoming::Binary(&self.assembled),
            Found::Pong => Incoming::Pong,
            Found::Close(code) => Incoming::Close(code),
        })
    }

    /// Handles one complete frame; `None` when it was a non-final fragment.
    fn complete(
        &mut self,
        fin: bool,
        opcode: OpCode,
        payload: Range<usize>,
    ) -> io::Result<Option<Found>> {
        let violation = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
        match opcode {
            OpCode::Ping | OpCode::Text | OpCode::Binary if fin && self.message.is_none() => {
                Ok(Some(Found::InBuffer(opcode, payload)))
            }
            OpCode::Ping => Ok(Some(Found::InBuffer(opcode, payload))),
            OpCode::Pong => Ok(Some(Found::Pong)),
            OpCode::Close => {
                let code = self.buf[payload]
                    .get(..2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]));
                Ok(Some(Found::Close(code)))
            }
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(violation("new message inside a fragmented one"));
                }
                self.message = Some((opcode, self.buf[payload].to_vec()));
                Ok(None)
            }
            OpCode::Continuation => {
                let Some((first, mut data)) = self.message.take() else {
                    return Err(violation("continuation without a message"));
                };
                data.extend_from_slice(&self.buf[payload]);
                if data.len() > self.max_message {
                    return Err(violation("message larger than expected"));
                }
                if !fin {
                    self.message = Some((first, data));
                    return Ok(None);
                }
                self.assembled = data;
                Ok(Some(Found::Assembled(first)))
            }
        }
    }

    fn parse_head(&self) -> io::Result<Option<Head>> {
        frame_head(&self.buf[self.start..self.end], self.max_message)
    }

    /// Bytes read from the stream and not decoded yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Ensures `need` bytes fit from `start`: moves the partial frame to the
    /// front, growing the buffer for frames larger than it.
    fn make_room(&mut self, need: usize) {
        if self.start > 0 && self.start + need > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if need > self.buf.len() {
            self.buf.resize(need, 0);
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_are_told_apart_by_kind() {
        let kinds = [
            "Connection refused (os error 111)",
            "handshake refused: HTTP/1.1 503 Service Unavailable",
            "no answer within 10 s",
            "Connection reset by peer (os error 104)",
            "server closed during the handshake",
            "the server accepted none of the offered subprotocols (chat)",
            "TLS: invalid peer certificate: UnknownIssuer",
            "negotiation: the server does not offer WebSockets (it offered [])",
        ]
        .map(failure_kind);
        assert_eq!(
            kinds,
            [
                "refused",
                "HTTP 503",
                "timeout",
                "reset",
                "reset",
                "other",
                "TLS",
                "negotiation"
            ]
        );
    }

    #[test]
    fn a_negotiated_token_goes_on_the_upgrades_query() {
        let first_line = |url: &str, token| {
            let (request, _) = upgrade_request(&Target::parse(url).unwrap(), token, false);
            request.lines().next().unwrap().to_string()
        };
        assert_eq!(
            first_line("ws://127.0.0.1:1/hub", None),
            "GET /hub HTTP/1.1"
        );
        assert_eq!(
            first_line("ws://127.0.0.1:1/hub", Some("a-b_c")),
            "GET /hub?id=a-b_c HTTP/1.1"
        );
        // Added to a query the URL has, and escaped as a query value.
        assert_eq!(
            first_line("ws://127.0.0.1:1/hub?room=1", Some("x+y/z=")),
            "GET /hub?room=1&id=x%2By%2Fz%3D HTTP/1.1"
        );
    }

    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(fin as u8) << 7 | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(n as u8),
            n @ 126..=65535 => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    #[tokio::test]
    async fn decodes_fragmented_echoes_and_control_frames_read_in_pieces() {
        let mut wire = server_frame(false, 2, &[1; 5000]);
        wire.extend(server_frame(true, 9, b"ping"));
        wire.extend(server_frame(true, 0, &[2; 70000]));
        wire.extend(server_frame(true, 1, b"text"));
        wire.extend(server_frame(true, 8, &1000u16.to_be_bytes()));
        // Delivered 7 bytes at a time, as a slow network would.
        let (mut tx, rx) = tokio::io::duplex(7);
        tokio::spawn(async move { tx.write_all(&wire).await.unwrap() });
        let mut decoder = Decoder::new(rx, &[], 1 << 20);
        assert_eq!(decoder.next().await.unwrap(), Incoming::Ping(b"ping"));
        let mut expected = vec![1u8; 5000];
        expected.extend(vec![2u8; 70000]);
        assert_eq!(decoder.next().await.unwrap(), Incoming::Binary(&expected));
        assert_eq!(decoder.next().await.unwrap(), Incoming::Text(b"text"));
        assert_eq!(decoder.next().await.unwrap(), Incoming::Close(Some(1000)));
        assert_eq!(
            decoder.next().await.unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn encoded_frames_are_masked_and_decode_back() {
        let mut encoder = Encoder::default();
        let mut out = Vec::new();
        encoder.encode(OpCode::Binary, b"hello", &mut out);
        assert_eq!(out[0], 0x82);
        assert_eq!(out[1], 0x80 | 5);
        let mask: [u8; 4] = out[2..6].try_into().unwrap();
        let mut payload = out[6..].to_vec();
        fastwebsockets::unmask(&mut payload, mask);
        assert_eq!(payload, b"hello");
    }
}
