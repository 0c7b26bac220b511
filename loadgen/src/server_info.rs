//! What a result records besides the load: the server's own configuration,
//! read from its `/stats` when it has one, and the machine.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::client::Target;
use crate::result::Machine;

/// The server's configuration from `GET /stats` on the target's host and
/// port (ringecho answers it); `{"known": false}` for other servers.
pub fn fetch(target: &Target) -> serde_json::Value {
    read_stats(target)
        .filter(|stats| stats.get("config").is_some())
        .map(|stats| {
            serde_json::json!({
                "known": true,
                "software": "ringecho",
                "version": stats["version"],
                "commit": stats["commit"],
                "backend": stats["backend"],
                "config": stats["config"],
            })
        })
        .unwrap_or_else(|| serde_json::json!({ "known": false }))
}

/// How a server is named in default labels: "ringecho tokio-uring", or the
/// address of a server we know nothing about.
pub fn short_name(server: &serde_json::Value, target: &Target) -> String {
    match server["backend"].as_str() {
        Some(backend) if server["known"] == true => format!("ringecho {backend}"),
        _ => target.host.clone(),
    }
}

pub fn read_stats(target: &Target) -> Option<serde_json::Value> {
    let timeout = Duration::from_secs(2);
    let tcp = TcpStream::connect_timeout(&target.addr, timeout).ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    tcp.set_write_timeout(Some(timeout)).ok()?;
    let request = format!(
        "GET /stats HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        target.host
    );
    fn exchange(mut stream: impl Read + Write, request: &str) -> Option<Vec<u8>> {
        stream.write_all(request.as_bytes()).ok()?;
        stream.flush().ok()?;
        let mut response = Vec::new();
        // A TLS server may end without close_notify; what arrived counts.
        let _ = stream.read_to_end(&mut response);
        Some(response)
    }
    // Behind wss://, /stats is asked over the same TLS (a terminator in
    // front of ringecho passes it on).
    let response = match &target.tls {
        Some(tls) => exchange(tls.blocking(tcp).ok()?, &request)?,
        None => exchange(tcp, &request)?,
    };
    let response = String::from_utf8(response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if head.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    serde_json::from_str(body).ok()
}

pub fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    Machine {
        host,
        cpu_model,
        cores: online_cores(),
        kernel,
    }
}

/// The machine's cores, not this process's share of them: loadgen often
/// runs pinned to one core (taskset, --cores), which available_parallelism
/// would report instead.
fn online_cores() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .map(|info| info.lines().filter(|l| l.starts_with("processor")).count())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(0, |n| n.get()))
}

/// A process's CPU time so far and its resident memory, from /proc.
#[derive(Debug, Clone, Copy)]
pub struct ProcessSample {
    pub user_secs: f64,
    pub system_secs: f64,
    pub rss_bytes: u64,
}

pub fn sample_process(pid: u32) -> Option<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from
    // the last ')'. utime and stime are fields 14 and 15, rss (pages) 24.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
        )
    };
    Some(ProcessSample {
        user_secs: field(14)? as f64 / ticks,
        system_secs: field(15)? as f64 / ticks,
        rss_bytes: field(24)? * page,
    })
}

/// The server's own process figures from its `/stats` (ringecho reports
/// them): its PID, CPU so far, memory, and its start time, which tells one
/// run of the server from the next.
pub fn stats_process(target: &Target) -> Option<(u32, ProcessSample, f64)> {
    let stats = read_stats(target)?;
    let p = stats.get("process")?;
    Some((
        p["pid"].as_u64()? as u32,
        ProcessSample {
            user_secs: p["cpu_user_secs"].as_f64()?,
            system_secs: p["cpu_system_secs"].as_f64()?,
            rss_bytes: p["resident_bytes"].as_u64()?,
        },
        p["start_time_unix_secs"].as_f64()?,
    ))
}
