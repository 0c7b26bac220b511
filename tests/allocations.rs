//! Zero allocations per echoed message in steady state on the io-uring
//! backend, and in loadgen's load thread on its io_uring client: the engine
//! runs in this process under an allocator that counts allocations per
//! thread, loadgen drives it from other threads, and each thread's count over
//! a measured window is set against the messages echoed in that window. 16 KiB messages span four 4 KiB receive buffers
//! and are assembled: their frames come from the worker's spare ones.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser as _;
use loadgen::options::{LoadConfig, MessageType, Protocol, RunArgs};

/// Allocation counts by thread ID (modulo the table's size; the IDs of a
/// fresh test process are small and do not collide).
static BY_THREAD: [AtomicU64; 1 << 16] = [const { AtomicU64::new(0) }; 1 << 16];

struct CountingAllocator;

fn count() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as usize;
    BY_THREAD[tid & (BY_THREAD.len() - 1)].fetch_add(1, Ordering::Relaxed);
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The thread ID of the engine's worker `name`, from /proc.
fn thread_id(name: &str) -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|task| {
        let task = task.ok()?;
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        (comm.trim() == name).then(|| task.file_name().to_str()?.parse().ok())?
    })
}

fn allocations_of(tid: usize) -> u64 {
    BY_THREAD[tid & (BY_THREAD.len() - 1)].load(Ordering::Relaxed)
}

#[test]
fn echoing_allocates_nothing_per_message_on_the_io_uring_backend() {
    let addr: SocketAddr = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let options = ringecho::options::Options::parse_from([
        "ringecho",
        "--backend",
        "io-uring",
        "--threads",
        "1",
        "--no-pin",
        "--listen",
        &addr.to_string(),
    ]);
    let (started, stats) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        ringecho::runtime::run_with(options, move |stats| started.send(stats).unwrap())
    });
    let stats = stats
        .recv_timeout(Duration::from_secs(10))
        .expect("the engine started");
    // Read straight from the counters: asking /stats would make the worker
    // allocate for its answer inside the window.
    let echoed = || stats.report().totals.messages_out;
    let worker = thread_id("ringecho-w0").expect("the worker thread is named ringecho-w0");

    // The hub's invocations too: loadgen writes and checks them in place.
    for (size, protocol) in [
        (20, Protocol::Raw),
        (1024, Protocol::Raw),
        (16384, Protocol::Raw),
        (1024, Protocol::Hub),
    ] {
        let (path, message_type) = match protocol {
            Protocol::Raw => ("/ws", MessageType::Binary),
            Protocol::Hub => ("/hub", MessageType::Text),
        };
        let mut load = LoadConfig::with_defaults(&format!("ws://{addr}{path}"));
        load.connections = 50;
        load.size = size;
        load.message_type = message_type;
        load.duration = 3.0;
        load.no_pin = true;
        load.protocol = protocol;
        let args = RunArgs {
            load,
            out: None,
            hgrm: None,
            hlog: None,
            quiet: true,
            label: None,
            // The engine is this process: its CPU from /proc, so that
            // loadgen reads no /stats (whose answer allocates) in the window.
            server_pid: Some(std::process::id()),
            start_at: None,
            limits: Default::default(),
        };
        let first = echoed();
        let load = std::thread::spawn(move || loadgen::run::run(&args));
        // Steady state: every connection open and echoing for a while (the
        // test command builds without optimisation: 16 KiB messages then
        // echo at about a thousand a second). The window is the next
        // WINDOW messages, all within the run's four seconds.
        const STEADY: u64 = 1500;
        const WINDOW: u64 = 1000;
        let wait_for = |count: u64, what: &str| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while echoed() < count {
                assert!(
                    Instant::now() < deadline && !load.is_finished(),
                    "{size} B {protocol:?}: {what}: only {} messages echoed",
                    echoed() - first
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        wait_for(first + STEADY, "steady state never came");
        let client = thread_id("loadgen-0").expect("loadgen's load thread is named loadgen-0");
        let (before, client_before, start) =
            (allocations_of(worker), allocations_of(client), echoed());
        wait_for(start + WINDOW, "the run ended inside the window");
        let during = allocations_of(worker) - before;
        let client_during = allocations_of(client) - client_before;
        let in_window = echoed() - start;
        let result = load.join().unwrap().expect("the load runs");
        let s = &result.summary;
        assert_eq!(s.errors.total(), 0, "{size} B {protocol:?}: {:?}", s.errors);
        // One allocation per message would be hundreds at least; a handful
        // is the runtime's own bookkeeping (timer wheel, task queues growing).
        // The engine's hub parses each invocation into owned JSON values (about
        // four allocations per message): only loadgen is held to zero there.
        assert!(
            during <= 20 || protocol == Protocol::Hub,
            "{size} B {protocol:?}: the worker allocated {during} times while echoing about {in_window} messages"
        );
        // loadgen's thread: its per-second report allocates a histogram a
        // second, nothing else should.
        assert_eq!(result.load.io, loadgen::options::Io::IoUring);
        assert!(
            client_during <= 20,
            "{size} B {protocol:?}: loadgen's thread allocated {client_during} times while sending about {in_window} messages"
        );
        println!(
            "{size} B {protocol:?}: engine {during}, loadgen {client_during} allocations over {in_window} echoed messages"
        );
    }
}
