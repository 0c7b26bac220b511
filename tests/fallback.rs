//! Where io_uring is blocked (Docker's default seccomp profile answers
//! io_uring_setup with EPERM), `auto` falls back to epoll with one warning and
//! an explicit io_uring backend refuses to start. The block is real: the engine
//! runs under a seccomp filter installed just before exec.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// io_uring_setup's number on x86-64 and arm64 alike.
const SYS_IO_URING_SETUP: u32 = 425;

/// Installs a seccomp filter that fails io_uring_setup with EPERM.
fn block_io_uring(command: &mut Command) {
    let filter = [
        // A = syscall number
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // if A == io_uring_setup fall through, else skip one
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: SYS_IO_URING_SETUP,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x0005_0000 | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        },
    ];
    unsafe {
        command.pre_exec(move || {
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn engine(backend: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringecho"));
    command.args(["--listen", "127.0.0.1:0", "--backend", backend]);
    block_io_uring(&mut command);
    command
}

#[test]
fn auto_falls_back_to_epoll_with_one_warning() {
    let mut child = engine("auto")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("backend epoll"), "{line}");
    let addr = common::startup_address(&line);

    // It serves: a WebSocket echo through a plain HTTP upgrade.
    let mut stream = common::raw_websocket_at(addr, common::UPGRADE);
    // A masked binary frame "hi" (mask 1,2,3,4) comes back unmasked.
    stream
        .write_all(&[0x82, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2])
        .unwrap();
    let mut echo = [0u8; 4];
    stream.read_exact(&mut echo).unwrap();
    assert_eq!(echo, [0x82, 2, b'h', b'i']);
    drop(stream);

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("io_uring")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains("epoll"),
        "{stderr}"
    );
}

#[test]
fn explicit_io_uring_backends_refuse_to_start_with_status_1() {
    for backend in ["io-uring", "tokio-uring"] {
        let output = engine(backend).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{backend}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("io_uring is unavailable"), "{stderr}");
        assert!(
            stderr.contains(&format!("the {backend} backend")),
            "{stderr}"
        );
        assert!(stderr.contains("--backend epoll"), "{stderr}");
    }
}
