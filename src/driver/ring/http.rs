//! The HTTP/1.1 phase on the native ring: request heads parsed with
//! httparse (the parser under hyper), answered from the engine's one
//! routing table ([`crate::routes`]), responses written out by hand. This is
//! the cold path: it allocates freely.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, StatusCode, Uri, Version};

use crate::routes::{self, Reply};

/// At most this many header lines per request.
const MAX_HEADERS: usize = 64;

/// What the bytes received so far hold (the cold path: size does not matter).
#[allow(clippy::large_enum_variant)]
pub enum Head {
    /// Not a whole request head yet.
    Partial,
    /// A request head of `len` bytes, followed by a body of `body` bytes.
    Complete {
        request: Parts,
        len: usize,
        body: usize,
        /// The client does not keep the connection open after this request.
        close: bool,
    },
}

/// Parses the request head at the front of `buf`. An error is the status
/// to answer before closing: 400 for what is not HTTP/1.x, 431 for heads
/// too large, 413 for bodies too large: `hub` is the hub's path and the
/// largest body it takes (the fallback transports' POSTs carry messages);
/// elsewhere a body is at most as large as a head.
pub fn parse(buf: &[u8], hub: (&str, usize)) -> Result<Head, (StatusCode, &'static str)> {
    let bad = |why| Err((StatusCode::BAD_REQUEST, why));
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > routes::MAX_HEADER_BYTES => {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large",
            ))
        }
        Ok(httparse::Status::Partial) => return Ok(Head::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header lines",
            ))
        }
        Err(_) => return bad("malformed HTTP request"),
    };
    if len > routes::MAX_HEADER_BYTES {
        return Err((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        ));
    }
    let Ok(method) = Method::from_bytes(parsed.method.unwrap_or("").as_bytes()) else {
        return bad("malformed method");
    };
    let Ok(uri) = parsed.path.unwrap_or("").parse::<Uri>() else {
        return bad("malformed request target");
    };
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return bad("malformed header");
        };
        map.append(name, value);
    }
    if map.contains_key(header::TRANSFER_ENCODING) {
        return bad("chunked request bodies are not supported here");
    }
    let limit = if uri.path() == hub.0 {
        hub.1.max(routes::MAX_HEADER_BYTES)
    } else {
        routes::MAX_HEADER_BYTES
    };
    let body = match map.get(header::CONTENT_LENGTH) {
        None => 0,
        Some(value) => match value.to_str().ok().and_then(|v| v.trim().parse().ok()) {
            Some(n) if n <= limit => n,
            Some(_) => return Err((StatusCode::PAYLOAD_TOO_LARGE, "request body too large")),
            None => return bad("malformed Content-Length"),
        },
    };
    let connection = |token: &str| {
        map.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let close = connection("close") || (version == Version::HTTP_10 && !connection("keep-alive"));
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    let (request, ()) = request.into_parts();
    Ok(Head::Complete {
        request,
        len,
        body,
        close,
    })
}

/// A reply as bytes: status line, headers (with Content-Length, Date and,
/// when the connection ends after it, `Connection: close`), then the body
/// unless the request was a HEAD.
pub fn serialize(reply: &Reply, head_only: bool, close: bool) -> Vec<u8> {
    let body: &Bytes = reply.body();
    let mut out = Vec::with_capacity(256 + body.len());
    let status = reply.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in reply.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        if close && !reply.headers().contains_key(header::CONNECTION) {
            out.extend_from_slice(b"connection: close\r\n");
        }
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: (&str, usize) = ("/hub", 1 << 20);

    #[test]
    fn a_request_head_parses_with_its_body_length_and_keep_alive() {
        let raw = b"POST /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET";
        let Ok(Head::Complete {
            request,
            len,
            body,
            close,
        }) = parse(raw, HUB)
        else {
            panic!("complete");
        };
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.uri.path(), "/hub/negotiate");
        assert_eq!(request.uri.query(), Some("negotiateVersion=1"));
        assert_eq!((len, body, close), (raw.len() - 5, 2, false));
        assert!(matches!(parse(&raw[..20], HUB), Ok(Head::Partial)));
    }

    #[test]
    fn bad_heads_get_400_and_huge_ones_431() {
        assert_eq!(parse(b"HELLO THERE\r\n\r\n", HUB).err().unwrap().0, 400);
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(20_000));
        assert_eq!(parse(huge.as_bytes(), HUB).err().unwrap().0, 431);
        let http10 = parse(b"GET / HTTP/1.0\r\n\r\n", HUB);
        assert!(matches!(http10, Ok(Head::Complete { close: true, .. })));
    }

    #[test]
    fn replies_carry_length_and_close_and_head_has_no_body() {
        let reply = routes::text(StatusCode::NOT_FOUND, "not found\n");
        let text = String::from_utf8(serialize(&reply, false, true)).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("content-length: 10\r\n"));
        assert!(text.contains("connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nnot found\n"));
        let head = String::from_utf8(serialize(&reply, true, false)).unwrap();
        assert!(head.ends_with("\r\n\r\n") && !head.contains("connection: close"));
    }
}
