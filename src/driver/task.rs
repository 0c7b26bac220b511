//! A session driven from a tokio task per connection, over any backend's
//! [`Io`]: the epoll and tokio-uring backends. The keep-alive, client-timeout
//! and shutdown timers race a read that is never dropped while the
//! connection lives (dropping an in-flight io_uring read would lose its
//! bytes). The native ring backend has no task: `driver::ring` calls the
//! session from completions.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use crate::deflate::Agreed;
use crate::driver::Io;
use crate::options::Options;
use crate::session::{Due, Handler, Phase, Session, Timers, CLOSE_WAIT};
use crate::shutdown::Listener;
use crate::stats::WorkerStats;

/// A deadline on tokio's clock (the same monotonic clock).
fn at(instant: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(instant)
}

/// Boxes a future that runs rarely (pings, closes, broadcasts) beside a
/// pending read, so that it costs memory while it runs rather than in every
/// idle connection's task: a session's future is as large as the most that is
/// alive at one await, and these would add about 500 bytes to the read's.
fn rare<F: Future>(future: F) -> Pin<Box<F>> {
    Box::pin(future)
}

/// Serves the WebSocket phase of one connection until it closes.
/// `initial` holds bytes that arrived with the upgrade request.
pub async fn run<S: Io, H: Handler>(
    io: S,
    initial: &[u8],
    handler: &H,
    deflate: Option<Agreed>,
    options: &Options,
    stats: &WorkerStats,
    mut shutdown: Listener,
) {
    stats.open_websockets.add(1);
    stats.upgraded.add(1);
    let capacity = options.receive_buffer_size;
    let mut session = Session::new(handler, capacity, options.max_message_size);
    if let Some(agreed) = deflate {
        session.set_deflate(agreed);
    }
    let mut buf = io.buffer(initial, capacity);
    let mut filled = initial.len();
    let mut out = Vec::new();
    let mut timers = Timers::new(options, handler.keep_alive_interval());
    let sleep = tokio::time::sleep_until(at(timers.next().unwrap_or_else(Instant::now)));
    tokio::pin!(sleep);
    let mut half_closed = false;

    'session: loop {
        if filled > 0 {
            let consumed = session.on_bytes(&mut buf[..filled], &mut out);
            if !out.is_empty() {
                // A client that stops reading would hold this write forever:
                // with --client-timeout it gets that long, then is closed.
                let (result, back) = match options.client_timeout() {
                    Some(limit) => {
                        // The session's own timer, not tokio::time::timeout:
                        // a second Sleep would add 96 bytes to every idle
                        // connection's task. Armed only if the write waits.
                        let deadline = Instant::now() + limit;
                        let write = io.write(buf, &mut out);
                        tokio::pin!(write);
                        let mut armed = false;
                        let written = std::future::poll_fn(|cx| {
                            if let Poll::Ready(written) = write.as_mut().poll(cx) {
                                return Poll::Ready(Some(written));
                            }
                            if !armed {
                                sleep.as_mut().reset(at(deadline));
                                armed = true;
                            }
                            sleep.as_mut().poll(cx).map(|()| None)
                        })
                        .await;
                        if armed {
                            if let Some(next) = timers.next() {
                                sleep.as_mut().reset(at(next));
                            }
                        }
                        match written {
                            Some(written) => written,
                            None => {
                                stats.client_timeouts.add(1);
                                break;
                            }
                        }
                    }
                    None => io.write(buf, &mut out).await,
                };
                buf = back;
                if result.is_err() {
                    break;
                }
            }
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
        }
        match session.phase() {
            Phase::Done => break,
            Phase::Closing | Phase::Draining => {
                if session.phase() == Phase::Draining && !half_closed {
                    io.half_close(); // after our close, written above
                    half_closed = true;
                }
                if timers.close_deadline().is_none() {
                    timers.closing(CLOSE_WAIT);
                    sleep
                        .as_mut()
                        .reset(at(timers.next().expect("a close deadline")));
                }
            }
            Phase::Open => {}
        }

        let read = io.read(buf, filled);
        tokio::pin!(read);
        let (result, back) = loop {
            tokio::select! {
                biased;
                result = &mut read => break result,
                () = &mut shutdown, if session.phase() == Phase::Open => {
                    let frame = session.close(1001, "server shutting down");
                    timers.closing(options.shutdown_timeout());
                    sleep.as_mut().reset(at(timers.next().expect("a close deadline")));
                    if rare(io.send(frame)).await.is_err() {
                        break 'session;
                    }
                }
                pushed = handler.pushed(), if session.phase() == Phase::Open => {
                    // A client too slow for its broadcasts gets 1008, sent
                    // within the close wait even if it never reads again.
                    let (frame, limit) = match pushed {
                        Ok(frame) => (frame, options.client_timeout()),
                        Err(violation) => {
                            stats.overflows.add(1);
                            let frame = session.close(violation.close_code(), violation.reason());
                            (frame, Some(CLOSE_WAIT))
                        }
                    };
                    let send = async {
                        match limit {
                            Some(limit) => tokio::time::timeout(limit, io.send(frame))
                                .await
                                .unwrap_or(Err(std::io::ErrorKind::TimedOut.into())),
                            None => io.send(frame).await,
                        }
                    };
                    let open = session.phase() == Phase::Open;
                    let sent = rare(async {
                        tokio::select! {
                            sent = send => Some(sent),
                            // Stuck behind a client that does not read while
                            // more piles up: give up on it. No close frame can
                            // follow a half-sent one, so 1008 is only recorded.
                            () = handler.overflowed(), if open => None,
                        }
                    })
                    .await;
                    let Some(sent) = sent else {
                        stats.overflows.add(1);
                        let _ = session.close(1008, "too much output waiting");
                        break 'session;
                    };
                    if sent.is_err() || session.phase() != Phase::Open {
                        break 'session;
                    }
                }
                () = &mut sleep, if timers.next().is_some() => {
                    match timers.due(Instant::now()) {
                        Some(Due::Ping) => {
                            stats.keep_alive_pings.add(1);
                            if rare(io.send(handler.keep_alive_frame())).await.is_err() {
                                break 'session;
                            }
                        }
                        Some(Due::ClientTimeout) => {
                            tracing::info!("client disconnected: nothing received for {}s", options.client_timeout);
                            stats.client_timeouts.add(1);
                            let _ = rare(io.send(session.close(1001, "client timeout"))).await;
                            break 'session;
                        }
                        Some(Due::CloseWaitOver) => break 'session,
                        None => {}
                    }
                    if let Some(next) = timers.next() {
                        sleep.as_mut().reset(at(next));
                    }
                }
            }
        };
        buf = back;
        match result {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                filled += n;
                timers.received();
            }
        }
    }
    io.shutdown();
    stats.count_close(session.close_code().unwrap_or(1006));
    stats.open_websockets.sub(1);
}
