//! Threads, cores and rings: one worker per core, pinned, each with its own
//! reactor and its own SO_REUSEPORT listener on the same address, so that the
//! kernel spreads connections across cores and a connection lives and dies on
//! the core that accepted it. The main thread only starts the workers, waits
//! for SIGINT or SIGTERM, and tells them to stop.

use std::io::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use socket2::{Domain, Socket, Type};
use tokio::sync::watch;

use crate::admission::Admissions;
use crate::connection;
use crate::driver::ring;
use crate::engine::{Engine, Worker};
use crate::handover;
use crate::hub::{self, HubWorker, Inbox};
use crate::memory;
use crate::options::{Backend, BackendChoice, Options};
use crate::shutdown::Shutdown;
use crate::stats::EngineStats;
use crate::transports;

/// Submission queue entries per io_uring. In-flight operations are not
/// bounded by it; it only caps one batch of submissions.
const RING_ENTRIES: u32 = 1024;
const LISTEN_BACKLOG: i32 = 4096;
/// Descriptors kept free of connections: listeners, rings, logs, /stats.
const RESERVED_FDS: u64 = 64;

/// Runs the engine until SIGINT or SIGTERM, then shuts down gracefully.
pub fn run(options: Options) -> anyhow::Result<()> {
    run_with(options, |_| {})
}

/// [`run`], handing the engine's counters to `started` once every worker
/// serves: a test running the engine in its own process watches them without
/// asking /stats (which the workers would serve, and count).
pub fn run_with(options: Options, started: impl FnOnce(Arc<EngineStats>)) -> anyhow::Result<()> {
    // Registered first, so that a signal sent as soon as the start-up line
    // appears is never lost to the default action.
    let signals = Signals::register()?;
    memory::set_purge_delay();
    if options.transparent_huge_pages {
        memory::transparent_huge_pages(true);
    }
    let backend = resolve_backend(options.backend)?;
    if options.send_zc_min > 0 && backend != Backend::IoUring {
        tracing::warn!(
            "--send-zc-min applies to the io-uring backend only; ignored on {}",
            backend.name()
        );
    }
    let available = core_affinity::get_core_ids().unwrap_or_default();
    let threads = options
        .threads
        .map(usize::from)
        .unwrap_or(available.len().max(1));
    let pin = !options.no_pin && !available.is_empty();
    let cores: Vec<Option<usize>> = (0..threads)
        .map(|i| pin.then(|| available[i % available.len()].id))
        .collect();
    let (listeners, listen) = bind_listeners(options.listen, threads)?;
    let max_connections = connection_limit(options.max_connections, threads);
    let (transports_sender, transports_receiver) = handover::channel();
    let engine = Arc::new(Engine {
        listen,
        backend,
        stats: EngineStats::new(cores.clone()),
        cores,
        options: options.clone(),
        hub_tokens: hub::Tokens::default(),
        transports: transports_sender,
        admissions: Admissions::new(max_connections),
        stopping: AtomicBool::new(false),
        started: Instant::now(),
        started_at: SystemTime::now(),
    });
    // One broadcast queue per core: SendToAll puts its frame on each.
    // On the io-uring backend a doorbell per worker wakes its loop for
    // broadcasts and for shutdown.
    let doorbells = (0..threads)
        .map(|_| match backend {
            Backend::IoUring => uring_loop::Doorbell::new().map(Some),
            _ => Ok(None),
        })
        .collect::<std::io::Result<Vec<_>>>()
        .context("creating the workers' doorbells")?;
    let (mut hub_senders, hub_receivers): (Vec<_>, Vec<_>) = doorbells
        .iter()
        .map(|doorbell| {
            let (channel, inbox) = tokio::sync::mpsc::unbounded_channel();
            let doorbell = doorbell.clone();
            (Inbox { channel, doorbell }, inbox)
        })
        .unzip();
    // The transports thread takes broadcasts too, for its hub connections.
    let (channel, transports_inbox) = tokio::sync::mpsc::unbounded_channel();
    hub_senders.push(Inbox {
        channel,
        doorbell: None,
    });

    let (stop, stopped) = watch::channel(false);
    let (ready_tx, ready) = mpsc::channel();
    let options = Arc::new(options);
    let mut handles = Vec::with_capacity(threads);
    for (((index, listener), hub_inbox), doorbell) in listeners
        .into_iter()
        .enumerate()
        .zip(hub_receivers)
        .zip(doorbells.iter().cloned())
    {
        let hub_senders = hub_senders.clone();
        let (engine, options, stopped, ready_tx) = (
            engine.clone(),
            options.clone(),
            stopped.clone(),
            ready_tx.clone(),
        );
        let handle = thread::Builder::new()
            .name(format!("ringecho-w{index}"))
            .spawn(move || {
                let core = engine.cores[index];
                if let Some(id) = core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                        tracing::warn!(worker = index, "could not pin to core {id}");
                    }
                }
                let worker = Rc::new(Worker {
                    index,
                    backend,
                    options,
                    engine,
                    shutdown: Shutdown::new(),
                    hub: HubWorker::new(hub_senders),
                });
                if let Some(doorbell) = doorbell {
                    let start = ring::Start {
                        listener,
                        inbox: hub_inbox,
                        doorbell,
                        ready: ready_tx,
                    };
                    ring::serve(worker, start);
                    return;
                }
                if let Err(e) = run_worker(worker, listener, hub_inbox, stopped, ready_tx.clone()) {
                    let _ = ready_tx.send(Err(format!("worker {index}: {e}")));
                }
            })
            .context("spawning a worker thread")?;
        handles.push(handle);
    }
    let transports_thread = {
        let (engine, options, stopped) = (engine.clone(), options.clone(), stopped.clone());
        let index = engine.stats.transports_index();
        let ready_tx = ready_tx.clone();
        thread::Builder::new()
            .name("ringecho-transports".into())
            .spawn(move || {
                // It shares the first worker's core: what it serves is the
                // fallback, and a benchmark of it then knows where it runs.
                if let Some(id) = engine.cores[0] {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                        tracing::warn!("could not pin the transports thread to core {id}");
                    }
                }
                let worker = Rc::new(Worker {
                    index,
                    // It serves with hyper on tokio's reactor, as an epoll worker.
                    backend: Backend::Epoll,
                    options,
                    engine,
                    shutdown: Shutdown::new(),
                    hub: HubWorker::new(hub_senders),
                });
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("the transports thread: {e}")));
                        return;
                    }
                };
                // Ready like a worker: the engine counts as started (and its
                // descriptors as settled) once this thread has its reactor.
                let _ = ready_tx.send(Ok(()));
                let serve = async move {
                    tokio::task::spawn_local(memory::return_free_memory());
                    transports::serve(worker, transports_receiver, transports_inbox, stopped).await
                };
                tokio::task::LocalSet::new().block_on(&runtime, serve);
            })
            .context("spawning the transports thread")?
    };
    handles.push(transports_thread);
    drop(ready_tx);
    // The workers and the transports thread.
    for _ in 0..=threads {
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stop_workers(&engine, &stop, &doorbells);
                handles.into_iter().for_each(|h| drop(h.join()));
                bail!("{e}");
            }
            Err(_) => bail!("a worker thread died while starting"),
        }
    }
    println!("{}", engine.startup().line(engine.options.startup_line));
    let _ = std::io::stdout().flush();
    started(engine.stats.clone());

    let signal = signals.wait();
    tracing::info!(
        "{signal}: closing connections with 1001 (up to {}s)",
        engine.options.shutdown_timeout
    );
    stop_workers(&engine, &stop, &doorbells);
    for handle in handles {
        if handle.join().is_err() {
            tracing::error!("a worker thread panicked");
        }
    }
    Ok(())
}

/// Tells every worker to stop: the tokio backends through their channel,
/// the io-uring backend's loops through their doorbells.
fn stop_workers(
    engine: &Engine,
    stop: &watch::Sender<bool>,
    doorbells: &[Option<Arc<uring_loop::Doorbell>>],
) {
    engine.stopping.store(true, Ordering::Release);
    let _ = stop.send(true);
    for doorbell in doorbells.iter().flatten() {
        doorbell.ring();
    }
}

/// Raises the soft open-file limit to the hard one and derives the
/// connection limit from it (each connection holds one descriptor).
fn connection_limit(asked: Option<u32>, threads: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    let files = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur
        } else {
            1024
        }
    };
    let available = files
        .saturating_sub(RESERVED_FDS + 4 * threads as u64)
        .max(1) as usize;
    match asked {
        Some(n) if n as usize > available => {
            tracing::warn!(
                "--max-connections {n} exceeds what {files} open files allow; \
                 past {available} connections accept will fail with EMFILE (and recover)"
            );
            n as usize
        }
        Some(n) => n as usize,
        None => available,
    }
}

fn resolve_backend(choice: BackendChoice) -> anyhow::Result<Backend> {
    let probe = io_uring::IoUring::new(8).map(drop);
    match (choice, probe) {
        (BackendChoice::Epoll, _) => Ok(Backend::Epoll),
        (BackendChoice::IoUring | BackendChoice::Auto, Ok(())) => Ok(Backend::IoUring),
        (BackendChoice::TokioUring, Ok(())) => Ok(Backend::TokioUring),
        (BackendChoice::Auto, Err(e)) => {
            tracing::warn!("io_uring is unavailable ({e}); falling back to the epoll backend");
            Ok(Backend::Epoll)
        }
        (BackendChoice::IoUring | BackendChoice::TokioUring, Err(e)) => bail!(
            "io_uring is unavailable here ({e}), so the {} backend cannot start; \
             use --backend epoll (or auto, which falls back by itself)",
            choice.name()
        ),
    }
}

/// Binds `threads` SO_REUSEPORT listeners on one address.
///
/// SO_REUSEPORT would let a second engine silently share a busy port, so a
/// probe socket without it is bound first: it fails if anything listens there.
fn bind_listeners(
    addr: SocketAddr,
    threads: usize,
) -> anyhow::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let domain = Domain::for_address(addr);
    if addr.port() != 0 {
        let probe = Socket::new(domain, Type::STREAM, None)?;
        probe.set_reuse_address(true)?;
        if let Err(e) = probe.bind(&addr.into()) {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                bail!("{addr} is already in use (another ringecho?): stop it or choose another --listen address");
            }
            bail!("cannot bind {addr}: {e}");
        }
    }
    let mut bound = addr;
    let mut listeners = Vec::with_capacity(threads);
    for _ in 0..threads {
        let socket = Socket::new(domain, Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket
            .bind(&bound.into())
            .with_context(|| format!("cannot bind {bound}"))?;
        socket.listen(LISTEN_BACKLOG)?;
        // With port 0 the first listener picks the port; the others join it.
        bound = socket
            .local_addr()?
            .as_socket()
            .context("listener has no IP address")?;
        listeners.push(socket.into());
    }
    Ok((listeners, bound))
}

fn run_worker(
    worker: Rc<Worker>,
    listener: std::net::TcpListener,
    hub_inbox: tokio::sync::mpsc::UnboundedReceiver<hub::Broadcast>,
    stopped: watch::Receiver<bool>,
    ready: mpsc::Sender<Result<(), String>>,
) -> std::io::Result<()> {
    let backend = worker.backend;
    let serve = async move {
        tokio::task::spawn_local(worker.hub.clone().deliver(hub_inbox));
        tokio::task::spawn_local(memory::return_free_memory());
        accept_loop(worker, listener, stopped, ready).await
    };
    match backend {
        Backend::TokioUring => {
            // COOP_TASKRUN with TASKRUN_FLAG measured cheapest for
            // tokio-uring here; DEFER_TASKRUN hangs it (it waits on the ring through
            // epoll and never enters the kernel to run the deferred work).
            let mut ring = tokio_uring::uring_builder();
            ring.setup_coop_taskrun().setup_taskrun_flag();
            let mut builder = tokio_uring::builder();
            builder.entries(RING_ENTRIES).uring_builder(&ring);
            tokio_uring::Runtime::new(&builder)?.block_on(serve);
        }
        Backend::IoUring => unreachable!("the io-uring backend runs its own loop"),
        Backend::Epoll => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            tokio::task::LocalSet::new().block_on(&rt, serve);
        }
    }
    Ok(())
}

async fn accept_loop(
    worker: Rc<Worker>,
    listener: std::net::TcpListener,
    mut stopped: watch::Receiver<bool>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = ready.send(Err(format!("worker {}: {e}", worker.index)));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut last_error_log: Option<Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::task::spawn_local(connection::serve(stream, worker.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off and keep accepting once
                    // descriptors free up; never stop the loop.
                    worker.stats().accept_errors.add(1);
                    if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(worker = worker.index, "accept failed: {e}; retrying");
                        last_error_log = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    worker.shutdown.fire();
    let deadline = Instant::now() + worker.options.shutdown_timeout();
    while worker.stats().open_connections.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// SIGINT and SIGTERM, caught on the main thread.
struct Signals {
    runtime: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let _context = runtime.enter();
        let term = signal(SignalKind::terminate()).context("catching SIGTERM")?;
        let int = signal(SignalKind::interrupt()).context("catching SIGINT")?;
        drop(_context);
        Ok(Signals { runtime, term, int })
    }

    fn wait(mut self) -> &'static str {
        self.runtime.block_on(async {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        })
    }
}
