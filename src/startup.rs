//! The engine's start-up line: the first line it prints, once it listens.
//! The one place that writes it and the one that reads it back: `bench` and
//! the tests start engines and read their address from it, and scripts ask
//! for its JSON form (`--startup-line json`) to read it without guessing.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// What the start-up line says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Startup {
    /// The address actually bound (`--listen` with port 0 picks one).
    pub listen: SocketAddr,
    /// The echo's path, as in `ws://LISTEN/PATH`.
    pub ws_path: String,
    pub backend: String,
    pub threads: usize,
    /// The core of each worker, when every worker is pinned.
    pub cores: Option<Vec<usize>>,
    pub receive_buffer_size: usize,
}

/// The start-up line's two forms, chosen by `--startup-line`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// A sentence for people.
    #[default]
    Text,
    /// One JSON object, for scripts.
    Json,
}

impl fmt::Display for Startup {
    /// `ringecho listening on ADDR (ws://ADDR/ws): backend B, N threads
    /// pinned to cores 0,1, receive buffer 4096 B`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cores = match &self.cores {
            Some(ids) => {
                let ids: Vec<String> = ids.iter().map(|c| c.to_string()).collect();
                format!("pinned to cores {}", ids.join(","))
            }
            None => "not pinned".to_string(),
        };
        write!(
            f,
            "ringecho listening on {listen} (ws://{listen}{path}): backend {backend}, {n} thread{s} {cores}, receive buffer {buf} B",
            listen = self.listen,
            path = self.ws_path,
            backend = self.backend,
            n = self.threads,
            s = if self.threads == 1 { "" } else { "s" },
            buf = self.receive_buffer_size,
        )
    }
}

impl Startup {
    /// The line in the given form, without its newline.
    pub fn line(&self, format: Format) -> String {
        match format {
            Format::Text => self.to_string(),
            Format::Json => serde_json::to_string(self).expect("start-up line serializes"),
        }
    }

    /// Reads either form back; the error says what was printed instead (an
    /// engine that failed to start prints its error, not this line).
    pub fn parse(line: &str) -> Result<Startup, String> {
        let line = line.trim();
        if line.starts_with('{') {
            return serde_json::from_str(line).map_err(|e| format!("{e} in {line:?}"));
        }
        Self::parse_text(line).ok_or_else(|| format!("not a ringecho start-up line: {line:?}"))
    }

    fn parse_text(line: &str) -> Option<Startup> {
        let rest = line.strip_prefix("ringecho listening on ")?;
        let (listen, rest) = rest.split_once(" (ws://")?;
        let listen: SocketAddr = listen.parse().ok()?;
        let (url_rest, rest) = rest.split_once("): backend ")?;
        let ws_path = url_rest.strip_prefix(&listen.to_string())?.to_string();
        let (backend, rest) = rest.split_once(", ")?;
        let (threads, rest) = rest.split_once(" thread")?;
        let rest = rest.strip_prefix('s').unwrap_or(rest).strip_prefix(' ')?;
        let (pinning, rest) = rest.split_once(", receive buffer ")?;
        let cores = match pinning.strip_prefix("pinned to cores ") {
            Some(ids) => Some(
                ids.split(',')
                    .map(|id| id.parse().ok())
                    .collect::<Option<_>>()?,
            ),
            None if pinning == "not pinned" => None,
            None => return None,
        };
        Some(Startup {
            listen,
            ws_path,
            backend: backend.to_string(),
            threads: threads.parse().ok()?,
            cores,
            receive_buffer_size: rest.strip_suffix(" B")?.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_read_back_as_written() {
        for (threads, cores) in [(1, Some(vec![0])), (2, Some(vec![0, 1])), (3, None)] {
            let startup = Startup {
                listen: "127.0.0.1:43210".parse().unwrap(),
                ws_path: "/ws".into(),
                backend: "io-uring".into(),
                threads,
                cores,
                receive_buffer_size: 4096,
            };
            for format in [Format::Text, Format::Json] {
                let line = startup.line(format);
                assert_eq!(Startup::parse(&line), Ok(startup.clone()), "{line}");
            }
        }
        let v6 = Startup::parse(
            "ringecho listening on [::1]:8080 (ws://[::1]:8080/echo): backend epoll, 1 thread not pinned, receive buffer 65536 B\n",
        )
        .unwrap();
        assert_eq!(
            (v6.ws_path.as_str(), v6.receive_buffer_size),
            ("/echo", 65536)
        );
    }

    #[test]
    fn anything_else_is_refused_with_what_was_printed() {
        let error = Startup::parse("ringecho: cannot listen on 127.0.0.1:80: permission denied")
            .unwrap_err();
        assert!(error.contains("permission denied"), "{error}");
        assert!(Startup::parse("").is_err());
    }
}
