//! loadgen's connections on the completion-driven io_uring loop
//! (`uring-loop`), as the engine's io-uring backend runs its own: one ring
//! per load thread, one `io_uring_enter` per wake-up, every connection a
//! state machine called from its completions. No tokio, future or waker on
//! the message path.
//!
//! Per connection: one multishot receive into the thread's provided buffers
//! (the bytes are copied out at once into the connection's own buffer, where
//! frames are parsed and echoes compared byte for byte with what was sent),
//! and at most one send in flight; frames queued meanwhile go out together
//! with the next send. The constant-rate schedule is the thread's timer: one
//! timeout operation in the ring (uring_loop's alarm) wakes the loop at the
//! next due send, microsecond precise, or up to `--send-slack-us` later when
//! a reply on its way will wake it anyway; nothing spins, and how late each
//! send left is recorded (send lag).
//!
//! Connections are opened through the ring too, a few hundred at a time:
//! the TCP connect, the upgrade request, the 101 checked (`client`'s
//! `upgrade_request` and `upgrade_response`, shared with the tokio client).
//! With `--protocol hub` the connection then sends the hub handshake and
//! waits for its `{}` before it counts as open; messages are `Echo`
//! invocations and their completions are checked as the tokio client does.
//!
//! With `--deflate` each connection offers permessage-deflate, compresses
//! every message it sends with a context of its own, and inflates every
//! echo before checking it: loadgen then spends on compression what the
//! server does.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fastwebsockets::OpCode;
use hdrhistogram::Histogram;
use io_uring::{opcode, types::Fd};
use uring_loop::{Alarm, BufRing, Cqe, InFlight, Ring, UserData};

use crate::client::{self, Encoder, Target};
use crate::hub::{self, Hub, Said};
use crate::load_thread::{Counts, Report, CLOSE_WAIT, DRAIN, STAGE_TICK};
use crate::options::Protocol;
use crate::options::{LoadConfig, MessageType};
use crate::payload::Pattern;
use crate::result::{self, Errors};
use crate::schedule::{Profile, Schedule};
use permessage_deflate::{self as pmd, Compressor, Decompressor};

const OP_RECV: u8 = 1;
const OP_SEND: u8 = 2;
const OP_CANCEL: u8 = 3;
const OP_CONNECT: u8 = 4;
/// The thread's alarm (and, as `OP_ALARM + 1`, its updates).
const OP_ALARM: u8 = 5;
/// Connections opening at once per thread: enough to open thousands in a
/// second, few enough not to overflow a listen backlog.
const OPENING_AT_ONCE: usize = 256;
/// A connection not open and upgraded by then has failed.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
const BUF_GROUP: u16 = 0;
/// Receive buffers: each holds a whole echo (its frame head and, for the
/// hub, the completion's JSON around the payload; up to 64 KiB), so that
/// echoes are checked where the kernel put them. The ring hands buffers out
/// in turn, so receives go round the whole pool and every buffer of it is
/// in the working set: the pool is as small as the thread's connections
/// allow (two buffers each, at least 64; a power of two, as the ring needs)
/// and at most 8 MiB. 256 buffers of 32 KiB for 10 connections of 16 KiB
/// messages made every receive copy land in memory no cache held.
fn pool_shape(size: usize, connections: usize) -> (u16, usize) {
    let buffer = (size + 128).next_multiple_of(64).clamp(4096, 64 * 1024);
    let fit = (8 << 20) / buffer;
    let most = 1usize << (usize::BITS - 1 - fit.leading_zeros());
    let count = (2 * connections)
        .next_power_of_two()
        .clamp(64, most.max(64));
    (count as u16, buffer)
}

/// Whether this kernel lets loadgen run its connections on io_uring (the
/// same ring setup the load threads use).
pub fn available() -> bool {
    Ring::new(8).is_ok()
}

/// Where the run stands, for every connection of the thread.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// Sending on schedule (or on every echo, closed loop).
    Running,
    /// The window is over: no new sends, outstanding echoes awaited.
    Draining,
    /// Our closes are sent; the server's are awaited.
    Closing,
}

struct Conn {
    fd: RawFd,
    ops: InFlight,
    recv_armed: bool,
    /// While the connection opens: its address (the kernel reads it during
    /// the connect), the handshake's key and when the attempt began.
    opening: Option<Box<Opening>>,
    /// Bytes received and not yet parsed into frames.
    rx: Vec<u8>,
    /// Hub records split across text frames.
    records: hub::Records,
    /// A fragmented echo being put together: (opcode, compressed, payload
    /// so far).
    fragments: Option<(OpCode, bool, Vec<u8>)>,
    /// permessage-deflate, once the server agreed to it.
    deflate: Option<Box<Deflating>>,
    /// The bytes of the send in flight (never touched while it is).
    sending: Vec<u8>,
    sent: usize,
    /// Frames queued while a send is in flight.
    queued: Vec<u8>,
    /// In `to_send` already.
    listed: bool,
    /// Sent and not yet echoed: (sequence number, time latency counts from).
    in_flight: VecDeque<(u64, Instant)>,
    seq: u64,
    encoder: Encoder,
    /// We sent our close.
    closing: bool,
    /// Nothing more will come: the server closed, reset or broke protocol.
    done: bool,
    /// --connection-stages: open, and waiting for the count to include it.
    parked: bool,
}

/// permessage-deflate on one connection.
struct Deflating {
    compress: Compressor,
    inflate: Decompressor,
    /// client_no_context_takeover: each message is compressed on its own.
    reset_compress: bool,
    /// server_no_context_takeover: each echo is inflated on its own.
    reset_inflate: bool,
}

impl Deflating {
    fn new(agreed: pmd::Params) -> Box<Deflating> {
        // Level 1, as the engine compresses; the server may ask for a
        // smaller window than the largest.
        let bits = agreed.client_max_window_bits.flatten().unwrap_or(15).max(9);
        Box::new(Deflating {
            compress: pmd::compressor(1, bits),
            inflate: pmd::decompressor(15),
            reset_compress: agreed.client_no_context_takeover,
            reset_inflate: agreed.server_no_context_takeover,
        })
    }
}

/// Echoes inflate to at most this many bytes: a message of `--size` with
/// room for the hub's JSON around it.
fn inflate_limit(size: usize) -> usize {
    size + 4096
}

struct Opening {
    /// The 101 arrived (hub: the hub handshake's answer is awaited).
    upgraded: bool,
    addr: libc::sockaddr_storage,
    addr_len: libc::socklen_t,
    key: String,
    began: Instant,
    /// The negotiated hub connection's token, for the upgrade's `?id=`.
    token: Option<String>,
}

/// Writes messages as frames straight into a send buffer: the frame head
/// (templates made once, by the number of digits of the hub invocation id),
/// then the payload copied from the pattern's block, which every connection
/// of the thread shares and so stays in cache, then masked in place with a
/// fresh key per frame, as RFC 6455 asks of clients. (Per-connection
/// premasked copies of the block were tried: for hundreds of connections
/// they live in no cache, and copying a 16 KiB body out of one cost more
/// than copying from the shared block and masking.)
struct Frames {
    /// Head templates, their mask key left to fill in: by the number of
    /// digits of the invocation id less one (hub), or the one head (raw).
    heads: Vec<([u8; 14], usize)>,
    hub: Option<Hub>,
}

impl Frames {
    fn new(pattern: &Pattern, opcode: OpCode, hub: Option<Hub>) -> Frames {
        let heads = (1..=if hub.is_some() { 20 } else { 1 })
            .map(|digits| {
                let len = match hub {
                    Some(hub) => hub.invocation_len(digits, pattern.size()),
                    None => pattern.size(),
                };
                let payload = vec![0u8; len];
                let mut head = [0u8; 14];
                let mut frame = fastwebsockets::Frame::new(
                    true,
                    opcode,
                    Some([0; 4]),
                    fastwebsockets::Payload::Borrowed(&payload),
                );
                let head_len = frame.fmt_head(&mut head);
                (head, head_len)
            })
            .collect();
        Frames { heads, hub }
    }

    /// Appends message `seq`, masked with `key`, to `out`.
    fn write(&self, pattern: &Pattern, seq: u64, key: [u8; 4], out: &mut Vec<u8>) {
        // By the invocation id's digits, for the hub only: raw frames have
        // one head.
        let digits = match self.hub {
            Some(_) => hub::decimal(seq, &mut [0u8; 20]).len(),
            None => 1,
        };
        let (head, head_len) = self.heads[digits - 1];
        // The key is the head's last four bytes.
        out.extend_from_slice(&head[..head_len - 4]);
        out.extend_from_slice(&key);
        let start = out.len();
        self.payload(pattern, seq, out);
        fastwebsockets::unmask(&mut out[start..], key);
    }

    /// Appends message `seq`'s payload, unmasked, to `out`: the pattern's
    /// bytes, in a hub invocation for the hub.
    fn payload(&self, pattern: &Pattern, seq: u64, out: &mut Vec<u8>) {
        match self.hub {
            Some(hub) => {
                hub.write_invocation(seq, pattern.size(), out, |out| pattern.append(seq, out))
            }
            None => pattern.append(seq, out),
        }
    }

    /// Compresses message `seq`'s payload into `scratch.1` (`scratch.0`
    /// holds it plain meanwhile).
    fn compress(
        &self,
        pattern: &Pattern,
        seq: u64,
        scratch: &mut (Vec<u8>, Vec<u8>),
        deflate: &mut Deflating,
    ) {
        let (plain, packed) = scratch;
        plain.clear();
        packed.clear();
        self.payload(pattern, seq, plain);
        pmd::deflate(&mut deflate.compress, plain, packed);
        if deflate.reset_compress {
            deflate.compress.reset();
        }
    }
}

struct Thread<'a> {
    target: &'a Target,
    ring: Ring,
    pool: BufRing,
    conns: Vec<Conn>,
    /// Connections with frames queued and no send in flight.
    to_send: Vec<usize>,
    /// The buffers of the completion being handled (kept: no allocation).
    pieces: Vec<(u16, usize)>,
    pattern: Pattern,
    opcode: OpCode,
    frames: Frames,
    /// Send buffers not in use, the last one freed on top: reused while
    /// still in cache.
    spare: Vec<Vec<u8>>,
    /// The hub protocol, or None for raw WebSocket messages.
    hub: Option<Hub>,
    load: &'a LoadConfig,
    /// --deflate: a message's payload and its compressed form, and an echo
    /// inflated (kept: no allocation per message).
    scratch: (Vec<u8>, Vec<u8>),
    inflated: Vec<u8>,
    stage: Stage,
    measure_from: Instant,
    end: Instant,
    latency: Histogram<u64>,
    send_lag: Histogram<u64>,
    second: Histogram<u64>,
    errors: Errors,
    /// Connections whose opening just ended: (key, how long, or why not).
    opened: Vec<(usize, Result<Duration, String>)>,
    /// Messages sent (or queued) and not yet answered: whether a completion
    /// is still to come. A connection that fails keeps its unanswered ones
    /// counted; its errors are reported, and the thread's later sends may
    /// then leave up to the slack late, which their send lag shows.
    awaited: usize,
    /// The connections' global ids, ascending, by key.
    ids: Vec<u32>,
    /// --connection-stages: connections with ids below this send (closed
    /// loop); the others wait, parked. u32::MAX without stages.
    sending_below: u32,
}

/// One load thread on the ring: opens its share of the connections (`ids`,
/// dealt out by `run`) through the ring, reports them, waits for the common
/// start, runs the load and reports as the tokio threads do.
pub(crate) fn load_thread(
    ids: Vec<u32>,
    load: &LoadConfig,
    target: &Target,
    pattern: Pattern,
    start: mpsc::Receiver<std::time::Instant>,
    to_main: mpsc::Sender<Report>,
) -> anyhow::Result<()> {
    let (count, buffer) = pool_shape(load.size, ids.len());
    let set_up = Ring::new(1024).and_then(|ring| {
        let pool = BufRing::new(&ring, BUF_GROUP, count, buffer)?;
        Ok((ring, pool))
    });
    let (ring, pool) = match set_up {
        Ok(both) => both,
        Err(e) => {
            // The main thread waits for every thread's connections: these
            // all failed.
            let mut failures = Errors::default();
            for _ in &ids {
                failures.connect_failed(&e.to_string());
            }
            let _ = to_main.send(Report::Connected {
                histogram: result::new_histogram(),
                failures,
            });
            return Err(e.into());
        }
    };
    let hub = (load.protocol == Protocol::Hub).then_some(Hub {
        encoding: load.hub_encoding,
        message_type: load.message_type,
    });
    // Hub messages travel in the encoding's frames, whatever the payload.
    let opcode = match (hub, load.message_type) {
        (Some(hub), _) => hub.opcode(),
        (None, MessageType::Binary) => OpCode::Binary,
        (None, MessageType::Text) => OpCode::Text,
    };
    let frames = Frames::new(&pattern, opcode, hub);
    let conns = ids
        .iter()
        .map(|_| {
            let encoder = Encoder::default();
            Conn {
                fd: -1,
                ops: InFlight::default(),
                recv_armed: false,
                opening: None,
                rx: Vec::with_capacity(512),
                records: hub.map(Hub::records).unwrap_or_default(),
                fragments: None,
                deflate: None,
                sending: Vec::with_capacity(load.size + 64),
                sent: 0,
                queued: Vec::with_capacity(load.size + 64),
                listed: false,
                in_flight: VecDeque::with_capacity(load.in_flight.max(16) as usize),
                seq: 0,
                encoder,
                closing: false,
                done: false,
                parked: false,
            }
        })
        .collect();
    let mut thread = Thread {
        target,
        pool,
        conns,
        to_send: Vec::new(),
        pieces: Vec::with_capacity(count as usize),
        pattern,
        opcode,
        frames,
        // Each connection holds at most two buffers (queued, sending): the
        // stack never outgrows this.
        spare: Vec::with_capacity(2 * ids.len()),
        hub,
        load,
        scratch: (Vec::new(), Vec::new()),
        inflated: Vec::new(),
        stage: Stage::Running,
        measure_from: Instant::now(),
        end: Instant::now(),
        latency: result::new_histogram(),
        send_lag: result::new_histogram(),
        second: result::new_histogram(),
        errors: Errors::default(),
        opened: Vec::new(),
        awaited: 0,
        ids: ids.clone(),
        sending_below: u32::MAX,
        ring,
    };
    let (histogram, failures) = thread.open_all(&ids);
    let _ = to_main.send(Report::Connected {
        histogram,
        failures,
    });
    let Ok(start) = start.recv() else {
        thread.close_all();
        return Ok(());
    };
    // The main thread's clock is this thread's: std Instants throughout.
    thread.measure_from = start + Duration::from_secs_f64(load.warmup);
    thread.end = start + Duration::from_secs_f64(load.warmup + load.duration);
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    thread.run(start, &ids, &to_main);

    let unanswered = thread.conns.iter().map(|c| c.in_flight.len() as u64).sum();
    thread.close_all();
    let counts = Counts {
        errors: thread.errors.clone(),
        unanswered,
        ..Counts::default()
    };
    let _ = to_main.send(Report::Done {
        histogram: thread.latency,
        send_lag: thread.send_lag,
        counts,
    });
    Ok(())
}

impl Thread<'_> {
    fn run(&mut self, start: Instant, ids: &[u32], to_main: &mpsc::Sender<Report>) {
        let load = self.load;
        // Constant rate: the next due send of every connection, earliest first.
        let tokio_start = tokio::time::Instant::from_std(start);
        let profile = std::rc::Rc::new(crate::schedule::Profile::of(load));
        let schedules: Vec<Schedule> = ids
            .iter()
            .map(|&id| Schedule::new(tokio_start, profile.clone(), load.connections, id))
            .collect();
        let mut due: uring_loop::Timers<(u64, usize)> = uring_loop::Timers::default();
        let mut connection_stages = None;
        if load.rate.is_some() {
            for (key, schedule) in schedules.iter().enumerate() {
                due.add(schedule.due(0).into_std(), (0, key));
            }
        } else {
            let sending = Profile::connections_of(load);
            if let Some(profile) = &sending {
                self.sending_below = profile.sending_at(0.0);
            }
            for (key, &id) in ids.iter().enumerate() {
                if id >= self.sending_below {
                    self.conns[key].parked = true;
                    continue;
                }
                for _ in 0..load.in_flight {
                    self.queue_message(key, start, start);
                }
            }
            connection_stages = sending;
        }
        let mut next_second = start + Duration::from_secs(1);
        let mut second_index = 0;
        let mut closing_deadline = None;
        let mut batch = [Cqe::default(); 256];
        let mut alarm = Alarm::new(UserData::new(0, OP_ALARM).encode());
        let slack = Duration::from_micros(load.send_slack_us.into());
        let mut sending_now = Vec::with_capacity(self.conns.len());
        self.to_send.reserve(self.conns.len());
        loop {
            let now = Instant::now();
            if let (Some(profile), Stage::Running) = (&connection_stages, self.stage) {
                let below = profile.sending_at(now.saturating_duration_since(start).as_secs_f64());
                self.send_below(below, now);
            }
            // Sends that are due, each timed from its due time.
            if self.stage == Stage::Running {
                while let Some((at, (k, key))) = due.pop_due(now) {
                    if at >= self.end {
                        break;
                    }
                    self.queue_message(key, at, now);
                    due.add(schedules[key].due(k + 1).into_std(), (k + 1, key));
                }
            }
            if now >= next_second {
                let histogram = std::mem::replace(&mut self.second, result::new_histogram());
                let messages = histogram.len();
                let _ = to_main.send(Report::Second {
                    index: second_index,
                    histogram,
                    messages,
                });
                second_index += 1;
                next_second += Duration::from_secs(1);
            }
            if self.stage == Stage::Running && now >= self.end {
                self.stage = Stage::Draining;
            }
            if self.stage == Stage::Draining {
                let outstanding = self
                    .conns
                    .iter()
                    .any(|c| !c.done && !c.in_flight.is_empty());
                if !outstanding || now >= self.end + DRAIN {
                    self.stage = Stage::Closing;
                    closing_deadline = Some(now + CLOSE_WAIT);
                    for key in 0..self.conns.len() {
                        self.queue_close(key);
                    }
                }
            }
            if let Some(deadline) = closing_deadline {
                if now >= deadline || self.conns.iter().all(|c| c.done) {
                    return;
                }
            }
            // Swapped with a kept list, not taken: a fresh list every turn
            // would allocate as it grows.
            std::mem::swap(&mut self.to_send, &mut sending_now);
            for &key in &sending_now {
                self.start_send(key);
            }
            sending_now.clear();

            let mut wake = next_second;
            if self.stage == Stage::Running {
                wake = wake.min(self.end);
                if connection_stages.is_some() {
                    wake = wake.min(now + STAGE_TICK);
                }
                // With a reply on its way, its wake-up can carry the send
                // (up to `slack` late) and no timer of ours is needed.
                if let Some(t) = due.timeout(now) {
                    let slack = if self.awaited > 0 {
                        slack
                    } else {
                        Duration::ZERO
                    };
                    wake = wake.min(now + t + slack);
                }
            }
            if self.stage == Stage::Draining {
                wake = wake.min(self.end + DRAIN);
            }
            if let Some(deadline) = closing_deadline {
                wake = wake.min(deadline);
            }
            // The deadline is a timeout operation in the ring, not the
            // wait's own: the wait then arms no timer (see uring_loop::alarm).
            if alarm.set(&mut self.ring, wake, Instant::now()).is_err()
                || self.ring.wait(None).is_err()
            {
                return;
            }
            let n = self.ring.reap(&mut batch);
            let now = Instant::now();
            for cqe in &batch[..n] {
                if !alarm.completed(cqe) {
                    self.complete(*cqe, now);
                }
            }
        }
    }

    fn complete(&mut self, cqe: Cqe, now: Instant) {
        let ud = UserData::decode(cqe.user_data);
        let key = ud.key as usize;
        match ud.op {
            OP_RECV => self.on_recv(key, cqe, now),
            OP_SEND => self.on_send(key, cqe),
            OP_CONNECT => self.on_connect(key, cqe),
            _ => {}
        }
    }

    /// Opens every connection of the thread through the ring, a few hundred
    /// at a time: connect, send the upgrade request, check the 101. Returns
    /// the open-and-upgrade times and the number that failed.
    fn open_all(&mut self, ids: &[u32]) -> (Histogram<u64>, Errors) {
        let mut times = result::new_histogram();
        let mut failures = Errors::default();
        let mut fail = |why: &str, key: usize| {
            if failures.connect_failures == 0 {
                eprintln!("loadgen: connection {} failed: {why}", ids[key]);
            }
            failures.connect_failed(why);
        };
        let mut negotiator = (self.hub.is_some() && !self.load.skip_negotiation).then(|| {
            let source = self.load.source_addr.first().copied();
            crate::transport::BlockingNegotiator::new(self.target, source)
                .map_err(|e| format!("no runtime to negotiate on: {e}"))
        });
        let (mut next, mut active) = (0, 0);
        let mut batch = [Cqe::default(); 256];
        let mut next_check = Instant::now();
        // At --connect-rate, connection id is due at id / rate from here,
        // its place in one schedule over all threads and shards.
        let t0 = Instant::now();
        let due = |next: usize| {
            self.load
                .connect_rate
                .map(|rate| t0 + Duration::from_secs_f64(ids[next] as f64 / rate))
        };
        while next < self.conns.len() || active > 0 {
            while active < OPENING_AT_ONCE
                && next < self.conns.len()
                && due(next).is_none_or(|at| Instant::now() >= at)
            {
                let source = (!self.load.source_addr.is_empty()).then(|| {
                    self.load.source_addr[ids[next] as usize % self.load.source_addr.len()]
                });
                // A hub connection negotiates first, as the official client
                // does: part of its opening, and of its connect time.
                let began = Instant::now();
                let token = match &mut negotiator {
                    None => Ok(None),
                    Some(Ok(negotiator)) => {
                        negotiator.token().map(Some).map_err(|e| format!("{e:#}"))
                    }
                    Some(Err(e)) => Err(e.clone()),
                };
                match token.and_then(|token| {
                    self.start_connect(next, source, token, began)
                        .map_err(|e| e.to_string())
                }) {
                    Ok(()) => active += 1,
                    Err(e) => {
                        self.conns[next].done = true;
                        fail(&e, next);
                    }
                }
                next += 1;
            }
            let now = Instant::now();
            if now >= next_check {
                next_check = now + Duration::from_millis(100);
                for key in 0..next {
                    let late = self.conns[key]
                        .opening
                        .as_ref()
                        .is_some_and(|o| now >= o.began + OPEN_TIMEOUT);
                    if late {
                        self.finish_open(key, Err("no answer within 10 s".into()));
                    }
                }
            }
            for key in std::mem::take(&mut self.to_send) {
                self.start_send(key);
            }
            // Until the next connection is due, if sooner than 10 ms.
            let wait = match (next < self.conns.len()).then(|| due(next)).flatten() {
                Some(at) => at
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(10)),
                None => Duration::from_millis(10),
            };
            if self.ring.wait(Some(wait)).is_err() {
                break;
            }
            let n = self.ring.reap(&mut batch);
            let now = Instant::now();
            for cqe in &batch[..n] {
                self.complete(*cqe, now);
            }
            for (key, outcome) in std::mem::take(&mut self.opened) {
                active -= 1;
                match outcome {
                    Ok(took) => {
                        let _ = times.record(took.as_micros().max(1) as u64);
                    }
                    Err(why) => {
                        let conn = &mut self.conns[key];
                        conn.done = true;
                        self.cancel_all(key);
                        fail(&why, key);
                    }
                }
            }
        }
        (times, failures)
    }

    /// Starts connection `key`'s TCP connect, from `source` if given.
    fn start_connect(
        &mut self,
        key: usize,
        source: Option<std::net::IpAddr>,
        token: Option<String>,
        began: Instant,
    ) -> std::io::Result<()> {
        let addr = self.target.addr;
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain syscalls on a descriptor this function creates; the
        // option and address values outlive the calls.
        let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.conns[key].fd = fd;
        let one: libc::c_int = 1;
        // SAFETY: as above.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        if let Some(ip) = source {
            let (local, len) = sockaddr(std::net::SocketAddr::new(ip, 0));
            // SAFETY: as above.
            if unsafe { libc::bind(fd, (&local as *const libc::sockaddr_storage).cast(), len) } < 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        let (addr, addr_len) = sockaddr(addr);
        let opening = Box::new(Opening {
            upgraded: false,
            addr,
            addr_len,
            key: String::new(),
            began,
            token,
        });
        let entry = opcode::Connect::new(
            Fd(fd),
            (&opening.addr as *const libc::sockaddr_storage).cast(),
            opening.addr_len,
        )
        .build()
        .user_data(UserData::new(key, OP_CONNECT).encode());
        let conn = &mut self.conns[key];
        // Boxed and kept in the connection until the connect completes: the
        // kernel reads the address from that memory.
        conn.opening = Some(opening);
        // SAFETY: the address lives in `opening`, which is dropped only in
        // finish_open, after the connect's completion (or with the thread's
        // state, after close_all has waited for every operation).
        unsafe { self.ring.push(&entry) }?;
        conn.ops.started();
        Ok(())
    }

    fn on_connect(&mut self, key: usize, cqe: Cqe) {
        let conn = &mut self.conns[key];
        conn.ops.finished();
        if cqe.result < 0 {
            let why = std::io::Error::from_raw_os_error(-cqe.result).to_string();
            self.finish_open(key, Err(why));
            return;
        }
        let token = conn.opening.as_ref().and_then(|o| o.token.as_deref());
        let (request, handshake_key) =
            client::upgrade_request(self.target, token, self.load.deflate);
        if let Some(opening) = conn.opening.as_mut() {
            opening.key = handshake_key;
        }
        conn.queued.extend_from_slice(request.as_bytes());
        self.mark_to_send(key);
        self.arm_recv(key);
    }

    /// The end of connection `key`'s opening, once: Ok with how long it took.
    fn finish_open(&mut self, key: usize, outcome: Result<Duration, String>) {
        let conn = &mut self.conns[key];
        if conn.opening.take().is_some() {
            // A failed opening is over now: the server's close that follows
            // its refusal (often in the same batch of completions) is no
            // unexpected close of an open connection.
            conn.done |= outcome.is_err();
            self.opened.push((key, outcome));
        }
    }

    /// Cancels whatever names connection `key`'s descriptor.
    fn cancel_all(&mut self, key: usize) {
        for op in [OP_RECV, OP_CONNECT] {
            let target = UserData::new(key, op).encode();
            let cancel = self
                .ring
                .cancel(target, UserData::new(key, OP_CANCEL).encode());
            // SAFETY: a cancel names no memory.
            let _ = unsafe { self.ring.push(&cancel) };
        }
    }

    fn arm_recv(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.recv_armed || conn.done {
            return;
        }
        let entry = self
            .ring
            .recv_multi(conn.fd, BUF_GROUP, 0)
            .user_data(UserData::new(key, OP_RECV).encode());
        // SAFETY: a provided-buffer receive names no memory of ours but the
        // pool, which lives as long as the ring.
        if unsafe { self.ring.push(&entry) }.is_ok() {
            conn.recv_armed = true;
            conn.ops.started();
        } else {
            conn.done = true;
        }
    }

    fn on_recv(&mut self, key: usize, cqe: Cqe, now: Instant) {
        let conn = &mut self.conns[key];
        if !cqe.more() {
            conn.recv_armed = false;
            conn.ops.finished();
        }
        if cqe.result > 0 {
            if let Some(first) = cqe.buffer() {
                let mut pieces = std::mem::take(&mut self.pieces);
                self.pool.take(first, cqe.result as usize, |bid, len| {
                    pieces.push((bid, len))
                });
                for &(bid, len) in &pieces {
                    // SAFETY: the completion handed `bid` over and it is
                    // recycled only below, after the slice's last use; the
                    // kernel writes no buffer it does not own, and nothing
                    // of ours writes the pool, so the shared slice is sound
                    // while `self` is borrowed mutably.
                    let piece = unsafe { std::slice::from_raw_parts(self.pool.ptr(bid), len) };
                    self.feed(key, piece, now);
                    self.pool.recycle(bid);
                }
                pieces.clear();
                self.pieces = pieces;
            }
            if !self.conns[key].recv_armed {
                self.arm_recv(key);
            }
        } else if cqe.result == -libc::ENOBUFS {
            self.arm_recv(key);
        } else if !cqe.more() {
            // EOF, a reset, or the cancel at the end.
            if self.conns[key].opening.is_some() {
                self.finish_open(key, Err("the server closed during the handshake".into()));
                return;
            }
            let conn = &mut self.conns[key];
            if !conn.closing && !conn.done {
                self.errors.unexpected_closes += 1;
            }
            conn.done = true;
        }
    }

    /// Handles the frames in one received piece. Frames that lie whole in
    /// the piece are checked where the kernel put them; only the bytes of a
    /// frame that continues in a later piece are copied, into the
    /// connection's own buffer, and handled once it is complete.
    fn feed(&mut self, key: usize, piece: &[u8], now: Instant) {
        if self.conns[key].done {
            return;
        }
        if self.conns[key].opening.is_some() {
            self.opening_bytes(key, piece, now);
            return;
        }
        if self.conns[key].rx.is_empty() {
            let used = self.frames_in(key, piece, now);
            let conn = &mut self.conns[key];
            if !conn.done {
                conn.rx.extend_from_slice(&piece[used..]);
            }
            return;
        }
        let mut rx = std::mem::take(&mut self.conns[key].rx);
        rx.extend_from_slice(piece);
        let used = self.frames_in(key, &rx, now);
        rx.drain(..used);
        let conn = &mut self.conns[key];
        if conn.done {
            rx.clear();
        }
        conn.rx = rx;
    }

    /// Bytes that arrive while the connection opens: the 101, then (hub)
    /// the hub handshake's answer. What follows stays in `rx`.
    fn opening_bytes(&mut self, key: usize, piece: &[u8], now: Instant) {
        let hub = self.hub;
        let conn = &mut self.conns[key];
        conn.rx.extend_from_slice(piece);
        let opening = conn.opening.as_mut().expect("opening");
        let began = opening.began;
        if !opening.upgraded {
            match client::upgrade_response(self.target, &conn.rx, &opening.key) {
                Ok(None) => return,
                Ok(Some(end)) => {
                    if self.load.deflate {
                        match client::agreed_deflate(&conn.rx[..end]) {
                            Some(agreed) => conn.deflate = Some(Deflating::new(agreed)),
                            None => {
                                let why = "the server declined permessage-deflate (--deflate)";
                                self.finish_open(key, Err(why.into()));
                                return;
                            }
                        }
                    }
                    conn.rx.drain(..end);
                    let Some(hub) = hub else {
                        self.finish_open(key, Ok(now.saturating_duration_since(began)));
                        return;
                    };
                    opening.upgraded = true;
                    conn.encoder
                        .encode(OpCode::Text, hub.handshake(), &mut conn.queued);
                    self.mark_to_send(key);
                }
                Err(e) => {
                    self.finish_open(key, Err(format!("{e:#}")));
                    return;
                }
            }
        }
        // The hub handshake's answer: a text frame whose first record is {}.
        let conn = &mut self.conns[key];
        let Some((_, opcode, (head, len))) = frame_at(&conn.rx) else {
            return;
        };
        let answer = &conn.rx[head..head + len];
        let first = answer.split(|&b| b == hub::RECORD_SEPARATOR).next();
        let outcome = match (opcode, first) {
            (Some(OpCode::Text), Some(b"{}")) => Ok(now.saturating_duration_since(began)),
            _ => Err(format!(
                "hub handshake refused: {}",
                String::from_utf8_lossy(answer)
            )),
        };
        conn.rx.drain(..head + len);
        self.finish_open(key, outcome);
    }

    /// A text frame of hub records: completions are checked against the
    /// invocations in flight, in order.
    fn hub_records(&mut self, key: usize, text: &[u8], now: Instant) {
        let mut records = std::mem::take(&mut self.conns[key].records);
        records.feed(text, |record| {
            let expected = self.conns[key].in_flight.front().map(|&(seq, _)| seq);
            let Some(hub) = self.hub else { return };
            match hub.read(record, expected, &self.pattern) {
                Said::Completion { ok } => self.echoed(key, ok, now),
                Said::Ping => {}
                Said::Close => {
                    let conn = &mut self.conns[key];
                    if !conn.closing && !conn.done {
                        self.errors.unexpected_closes += 1;
                    }
                    conn.done = true;
                }
                Said::Unexpected => self.errors.unexpected_frames += 1,
            }
        });
        self.conns[key].records = records;
    }

    /// Handles every complete frame at the front of `bytes`; returns how
    /// many bytes they took (all of them once the connection is done).
    fn frames_in(&mut self, key: usize, bytes: &[u8], now: Instant) -> usize {
        let mut at = 0;
        let deflate = self.conns[key].deflate.is_some();
        loop {
            let Some((fin, op, compressed, payload)) = frame_at_with(&bytes[at..], deflate) else {
                return at;
            };
            let (head, len) = payload;
            let range = at + head..at + head + len;
            at += head + len;
            let Some(opcode) = op else {
                self.violation(key);
                return bytes.len();
            };
            match opcode {
                OpCode::Text | OpCode::Binary if fin => {
                    if self.conns[key].fragments.is_some() {
                        self.violation(key);
                        return bytes.len();
                    }
                    self.message(key, opcode, compressed, &bytes[range], now);
                    if self.conns[key].done {
                        return bytes.len();
                    }
                }
                OpCode::Text | OpCode::Binary => {
                    let mut assembled = Vec::with_capacity(self.load.size);
                    assembled.extend_from_slice(&bytes[range]);
                    self.conns[key].fragments = Some((opcode, compressed, assembled));
                }
                OpCode::Continuation => {
                    let Some((first, compressed, mut assembled)) = self.conns[key].fragments.take()
                    else {
                        self.violation(key);
                        return bytes.len();
                    };
                    assembled.extend_from_slice(&bytes[range]);
                    if fin {
                        self.message(key, first, compressed, &assembled, now);
                        if self.conns[key].done {
                            return bytes.len();
                        }
                    } else {
                        self.conns[key].fragments = Some((first, compressed, assembled));
                    }
                }
                OpCode::Ping => {
                    let conn = &mut self.conns[key];
                    conn.encoder
                        .encode(OpCode::Pong, &bytes[range], &mut conn.queued);
                    self.mark_to_send(key);
                }
                OpCode::Pong => {}
                OpCode::Close => {
                    let conn = &mut self.conns[key];
                    if !conn.closing {
                        self.errors.unexpected_closes += 1;
                    }
                    conn.done = true;
                    return bytes.len();
                }
            }
        }
    }

    /// A whole message from the server: inflated if compressed, then hub
    /// records or an echo to check.
    fn message(
        &mut self,
        key: usize,
        opcode: OpCode,
        compressed: bool,
        payload: &[u8],
        now: Instant,
    ) {
        let mut inflated = std::mem::take(&mut self.inflated);
        let payload = if compressed {
            let deflate = self.conns[key]
                .deflate
                .as_deref_mut()
                .expect("RSV1 is refused unless deflate was agreed");
            inflated.clear();
            let limit = inflate_limit(self.load.size);
            let ok = pmd::inflate(&mut deflate.inflate, payload, &mut inflated, limit).is_ok();
            if deflate.reset_inflate || !ok {
                deflate.inflate.reset(false);
            }
            if !ok {
                // Not what was sent, whatever it was.
                self.inflated = inflated;
                self.echoed(key, false, now);
                return;
            }
            &inflated[..]
        } else {
            payload
        };
        match opcode {
            _ if self.hub.is_some_and(|hub| hub.opcode() == opcode) => {
                self.hub_records(key, payload, now)
            }
            _ if self.hub.is_some() => self.errors.unexpected_frames += 1,
            _ => {
                let ok = self.check(&self.conns[key], opcode, payload);
                self.echoed(key, ok, now);
            }
        }
        self.inflated = inflated;
    }

    /// Whether an echo is exactly the message it answers.
    fn check(&self, conn: &Conn, opcode: OpCode, payload: &[u8]) -> bool {
        let Some(&(seq, _)) = conn.in_flight.front() else {
            return false;
        };
        opcode == self.opcode && self.pattern.matches(seq, payload)
    }

    fn echoed(&mut self, key: usize, ok: bool, now: Instant) {
        let conn = &mut self.conns[key];
        let Some((_, due)) = conn.in_flight.pop_front() else {
            self.errors.unexpected_frames += 1;
            return;
        };
        self.awaited -= 1;
        if !ok {
            self.errors.mismatches += 1;
        }
        let micros = now.saturating_duration_since(due).as_micros().max(1) as u64;
        self.second.saturating_record(micros);
        if now >= self.measure_from && now <= self.end {
            self.latency.saturating_record(micros);
        }
        if self.load.rate.is_none() && self.stage == Stage::Running && now < self.end {
            if self.ids[key] < self.sending_below {
                // One message, or more where a fall in the count had let
                // the connection drain partway.
                for _ in self.conns[key].in_flight.len()..self.load.in_flight as usize {
                    self.queue_message(key, now, now);
                }
            } else if self.conns[key].in_flight.is_empty() {
                self.conns[key].parked = true;
            }
        }
    }

    /// --connection-stages: connections with ids below `below` send from
    /// now; those above it park at their next echo. Only a rise has work to
    /// do, on the connections it takes in: the work over a run is one pass
    /// over the connections per ramp.
    fn send_below(&mut self, below: u32, now: Instant) {
        let was = std::mem::replace(&mut self.sending_below, below);
        if below <= was {
            return;
        }
        let from = self.ids.partition_point(|&id| id < was);
        let to = self.ids.partition_point(|&id| id < below);
        for key in from..to {
            let conn = &mut self.conns[key];
            if !std::mem::take(&mut conn.parked) {
                continue;
            }
            for _ in conn.in_flight.len()..self.load.in_flight as usize {
                self.queue_message(key, now, now);
            }
        }
    }

    fn violation(&mut self, key: usize) {
        self.errors.unexpected_frames += 1;
        self.conns[key].done = true;
    }

    /// Queues the connection's next message, due at `due` (latency counts
    /// from then); `now` is when it is queued, for the send lag.
    fn queue_message(&mut self, key: usize, due: Instant, now: Instant) {
        let conn = &mut self.conns[key];
        if conn.done || conn.closing {
            return;
        }
        if conn.queued.capacity() == 0 {
            conn.queued = self.spare.pop().unwrap_or_default();
        }
        if let Some(deflate) = conn.deflate.as_deref_mut() {
            self.frames
                .compress(&self.pattern, conn.seq, &mut self.scratch, deflate);
            let start = conn.queued.len();
            conn.encoder
                .encode(self.opcode, &self.scratch.1, &mut conn.queued);
            conn.queued[start] |= 0x40; // RSV1: a compressed message
        } else {
            let mask = conn.encoder.next_mask();
            self.frames
                .write(&self.pattern, conn.seq, mask, &mut conn.queued);
        }
        conn.in_flight.push_back((conn.seq, due));
        self.awaited += 1;
        conn.seq += 1;
        if self.load.rate.is_some() && now >= self.measure_from && now <= self.end {
            let lag = now.saturating_duration_since(due).as_micros() as u64;
            self.send_lag.saturating_record(lag);
        }
        self.mark_to_send(key);
    }

    fn queue_close(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.done || conn.closing {
            return;
        }
        conn.closing = true;
        conn.encoder
            .encode(OpCode::Close, &1000u16.to_be_bytes(), &mut conn.queued);
        self.mark_to_send(key);
    }

    fn mark_to_send(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.sending.is_empty() && !conn.listed {
            conn.listed = true;
            self.to_send.push(key);
        }
    }

    /// Sends what is queued, unless a send is in flight (its completion
    /// sends the rest).
    fn start_send(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        conn.listed = false;
        if !conn.sending.is_empty() || conn.queued.is_empty() {
            return;
        }
        std::mem::swap(&mut conn.sending, &mut conn.queued);
        conn.sent = 0;
        self.push_send(key);
    }

    fn push_send(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let rest = &conn.sending[conn.sent..];
        let entry = opcode::Send::new(Fd(conn.fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(UserData::new(key, OP_SEND).encode());
        // SAFETY: `sending` is neither written nor moved until this send's
        // completion (start_send swaps only an empty one).
        if unsafe { self.ring.push(&entry) }.is_ok() {
            conn.ops.started();
        } else {
            conn.sending.clear();
            conn.done = true;
        }
    }

    fn on_send(&mut self, key: usize, cqe: Cqe) {
        let conn = &mut self.conns[key];
        conn.ops.finished();
        if cqe.result < 0 && conn.opening.is_some() {
            conn.sending.clear();
            let why = std::io::Error::from_raw_os_error(-cqe.result).to_string();
            self.finish_open(key, Err(why));
            return;
        }
        if cqe.result < 0 {
            if !conn.closing && !conn.done {
                self.errors.unexpected_closes += 1;
            }
            conn.done = true;
            conn.sending.clear();
            return;
        }
        conn.sent += cqe.result as usize;
        if conn.sent < conn.sending.len() {
            self.push_send(key);
            return;
        }
        let mut sent = std::mem::take(&mut conn.sending);
        sent.clear();
        self.spare.push(sent);
        self.start_send(key);
    }

    /// Cancels what is still in flight, waits briefly for it, and closes
    /// every descriptor once nothing names it.
    fn close_all(&mut self) {
        for key in 0..self.conns.len() {
            if !self.conns[key].ops.none() {
                self.cancel_all(key);
            }
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut batch = [Cqe::default(); 256];
        while self.conns.iter().any(|c| !c.ops.none()) && Instant::now() < deadline {
            if self.ring.wait(Some(Duration::from_millis(10))).is_err() {
                break;
            }
            let n = self.ring.reap(&mut batch);
            for cqe in &batch[..n] {
                let ud = UserData::decode(cqe.user_data);
                let conn = &mut self.conns[ud.key as usize];
                match ud.op {
                    OP_RECV if !cqe.more() => {
                        conn.recv_armed = false;
                        conn.ops.finished();
                    }
                    OP_RECV => {}
                    OP_SEND | OP_CONNECT => conn.ops.finished(),
                    _ => continue,
                }
                if let Some(first) = cqe.buffer() {
                    let pool = &self.pool;
                    pool.take(first, cqe.result.max(0) as usize, |bid, _| {
                        pool.recycle(bid)
                    });
                }
            }
        }
        for conn in &self.conns {
            if conn.fd >= 0 && conn.ops.none() {
                // SAFETY: no operation names the descriptor any more.
                unsafe { libc::close(conn.fd) };
            }
            // Otherwise the kernel still holds an operation on it: the
            // descriptor is left to the process's exit rather than reused.
        }
        self.pool.unregister(&self.ring);
    }
}

/// `addr` as the kernel's socket address.
fn sockaddr(addr: std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        std::net::SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Where the first frame in `bytes` lies, once it is all there: whether it
/// is final, its opcode (None: one the protocol does not define, reserved
/// bits set, or a masked server frame), and (header length, payload length).
/// The head is read by the same code as the tokio client's
/// (`client::frame_head`); the checks for masks and reserved bits are this
/// client's own.
fn frame_at(bytes: &[u8]) -> Option<(bool, Option<OpCode>, (usize, usize))> {
    frame_at_with(bytes, false).map(|(fin, op, _, range)| (fin, op, range))
}

/// [`frame_at`] when permessage-deflate may have been agreed (`deflate`):
/// RSV1 then marks the first frame of a compressed message (the third
/// value), and is a violation anywhere else (RFC 7692 §6.1).
#[allow(clippy::type_complexity)]
fn frame_at_with(
    bytes: &[u8],
    deflate: bool,
) -> Option<(bool, Option<OpCode>, bool, (usize, usize))> {
    let violation = |fin| Some((fin, None, false, (0, 0)));
    let reserved = if deflate { 0x30 } else { 0x70 };
    match client::frame_head(bytes, usize::MAX) {
        Ok(None) => None,
        Err(_) => violation(false),
        Ok(Some(head)) if head.mask.is_some() || bytes[0] & reserved != 0 => violation(head.fin),
        Ok(Some(head)) if bytes.len() - head.len < head.payload_len => None,
        Ok(Some(head)) => {
            let compressed = bytes[0] & 0x40 != 0;
            if compressed && !matches!(head.opcode, OpCode::Text | OpCode::Binary) {
                return violation(head.fin);
            }
            Some((
                head.fin,
                Some(head.opcode),
                compressed,
                (head.len, head.payload_len),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unmasks one client frame: (first byte, payload).
    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        assert!(frame[1] & 0x80 != 0, "client frames are masked");
        let (len, at) = match frame[1] & 0x7f {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let key = &frame[at..at + 4];
        let payload = &frame[at + 4..];
        assert_eq!(payload.len(), len, "the head's length is the payload's");
        let payload = payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        (frame[0], payload)
    }

    #[test]
    fn the_receive_pool_holds_whole_echoes_in_at_most_8_mib() {
        for size in [0, 20, 1024, 16384, 65536, 1 << 20] {
            for connections in [1, 10, 100, 500, 10_000] {
                let (count, buffer) = pool_shape(size, connections);
                assert!(
                    count.is_power_of_two() && count >= 64,
                    "{size} B, {connections}: {count}"
                );
                assert!(count as usize * buffer <= 8 << 20 || count == 64);
                if size + 128 <= 64 * 1024 {
                    assert!(buffer >= size + 128, "{size} B in {buffer} B");
                }
            }
        }
        // Few connections, few buffers: 10 of 16 KiB use 64 of 16.5 KiB.
        assert_eq!(pool_shape(16384, 10), (64, 16512));
        assert_eq!(pool_shape(20, 100), (256, 4096));
    }

    #[test]
    fn frames_carry_exactly_the_message_under_a_fresh_key_each() {
        use crate::options::HubEncoding;
        let hub = |encoding, message_type| {
            Some(Hub {
                encoding,
                message_type,
            })
        };
        for (size, hub) in [
            (0, None),
            (5, None),
            (20, None),
            (3, hub(HubEncoding::Json, MessageType::Text)),
            (200, hub(HubEncoding::Json, MessageType::Text)),
            (16384, None),
            (16384, hub(HubEncoding::Json, MessageType::Text)),
            (3, hub(HubEncoding::Messagepack, MessageType::Binary)),
            (31, hub(HubEncoding::Messagepack, MessageType::Text)),
            (200, hub(HubEncoding::Messagepack, MessageType::Text)),
            (300, hub(HubEncoding::Messagepack, MessageType::Binary)),
            (70_000, hub(HubEncoding::Messagepack, MessageType::Binary)),
        ] {
            let message_type = hub.map_or(MessageType::Binary, |h| h.message_type);
            let pattern = Pattern::new(size, message_type);
            let opcode = hub.map_or(OpCode::Binary, Hub::opcode);
            let frames = Frames::new(&pattern, opcode, hub);
            let mut encoder = Encoder::default();
            let mut keys = std::collections::HashSet::new();
            for seq in [0, 1, 9, 10, 12_345, 99_999_999, u64::MAX] {
                let mut out = b"before".to_vec();
                let key = encoder.next_mask();
                keys.insert(key);
                frames.write(&pattern, seq, key, &mut out);
                let (first, payload) = unmask(&out[6..]);
                assert_eq!(&out[..6], b"before");
                assert_eq!(first, 0x80 | opcode as u8);
                let mut expected = Vec::new();
                pattern.write(seq, &mut expected);
                match hub.map(|h| h.encoding) {
                    Some(HubEncoding::Json) => {
                        let mut record = Vec::new();
                        hub::invocation(seq, &expected, &mut record);
                        assert_eq!(payload, record, "size {size}, json hub, seq {seq}");
                    }
                    // The engine's reader finds the invocation and the
                    // payload in it: a str or bin of exactly the pattern.
                    Some(HubEncoding::Messagepack) => {
                        let mut bodies = Vec::new();
                        let used = hub_msgpack::split(&payload, usize::MAX, |b| {
                            bodies.push(b.to_vec());
                            Ok(())
                        });
                        assert_eq!(used, Ok(payload.len()), "one whole message");
                        let m = hub_msgpack::parse(&bodies[0]).unwrap();
                        assert_eq!((m.kind, m.target), (1, Some("Echo")));
                        assert_eq!(m.invocation_id, Some(seq.to_string().as_str()));
                        let argument = m.arguments[0];
                        let value = rmpv::decode::read_value(&mut &argument[..]).unwrap();
                        let bytes = match (message_type, value) {
                            (MessageType::Text, rmpv::Value::String(s)) => s.into_bytes(),
                            (MessageType::Binary, rmpv::Value::Binary(b)) => b,
                            (t, v) => panic!("{t:?} payload as {v:?}"),
                        };
                        assert_eq!(bytes, expected, "size {size}, seq {seq}");
                    }
                    None => assert_eq!(payload, expected, "size {size}, raw, seq {seq}"),
                }
            }
            assert_eq!(keys.len(), 7, "a fresh key per frame");
        }
    }

    #[test]
    fn frames_are_found_only_when_complete() {
        assert_eq!(frame_at(&[0x82]), None);
        assert_eq!(frame_at(&[0x82, 3, 1, 2]), None);
        assert_eq!(
            frame_at(&[0x82, 3, 1, 2, 3]),
            Some((true, Some(OpCode::Binary), (2, 3)))
        );
        let mut long = vec![0x01, 126, 0x01, 0x00];
        long.resize(4 + 256, b'a');
        assert_eq!(frame_at(&long), Some((false, Some(OpCode::Text), (4, 256))));
        assert_eq!(frame_at(&long[..100]), None);
    }

    #[test]
    fn masked_reserved_or_unknown_server_frames_are_violations() {
        assert_eq!(
            frame_at(&[0x82, 0x81, 0, 0, 0, 0, 1]).map(|f| f.1),
            Some(None)
        );
        assert_eq!(frame_at(&[0xc2, 1, 0]).map(|f| f.1), Some(None));
        assert_eq!(frame_at(&[0x83, 1, 0]).map(|f| f.1), Some(None));
    }

    #[test]
    fn compressed_frames_inflate_to_the_message_with_and_without_takeover() {
        for (hub, takeover) in [(false, true), (false, false), (true, true)] {
            let message_type = if hub {
                MessageType::Text
            } else {
                MessageType::Binary
            };
            let pattern = Pattern::of(4096, message_type, crate::options::PayloadKind::Words, true);
            let opcode = if hub { OpCode::Text } else { OpCode::Binary };
            let json_hub = hub.then_some(Hub {
                encoding: crate::options::HubEncoding::Json,
                message_type,
            });
            let frames = Frames::new(&pattern, opcode, json_hub);
            let agreed = pmd::Params {
                client_no_context_takeover: !takeover,
                ..pmd::Params::default()
            };
            let mut sender = Deflating::new(agreed);
            // The server's side of the conversation: it inflates what we sent.
            let mut server = pmd::decompressor(15);
            let mut scratch = (Vec::new(), Vec::new());
            for seq in 0..5 {
                frames.compress(&pattern, seq, &mut scratch, &mut sender);
                let mut expected = Vec::new();
                pattern.write(seq, &mut expected);
                if hub {
                    let mut record = Vec::new();
                    hub::invocation(seq, &expected, &mut record);
                    expected = record;
                }
                assert!(scratch.1.len() < expected.len() / 2, "words compress");
                let mut inflated = Vec::new();
                pmd::inflate(&mut server, &scratch.1, &mut inflated, 1 << 20).unwrap();
                assert_eq!(
                    inflated, expected,
                    "hub {hub}, takeover {takeover}, seq {seq}"
                );
                if !takeover {
                    server.reset(false);
                }
            }
        }
    }

    #[test]
    fn rsv1_marks_a_compressed_message_only_once_deflate_is_agreed() {
        let compressed_text = [0xc1, 1, 0];
        assert_eq!(frame_at(&compressed_text).map(|f| f.1), Some(None));
        assert_eq!(
            frame_at_with(&compressed_text, true),
            Some((true, Some(OpCode::Text), true, (2, 1)))
        );
        // Never on control frames or continuations (RFC 7692 §6.1).
        for frame in [[0xc9, 1, 0], [0xc0, 1, 0]] {
            assert_eq!(frame_at_with(&frame, true).map(|f| f.1), Some(None));
        }
        // RSV2 and RSV3 stay violations.
        assert_eq!(frame_at_with(&[0xa2, 1, 0], true).map(|f| f.1), Some(None));
    }
}
