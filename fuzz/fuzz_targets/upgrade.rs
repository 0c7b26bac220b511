//! The upgrade request checks: arbitrary bytes parsed as an HTTP request head
//! (with httparse, the parser under hyper), then judged. Nothing may panic;
//! an accepted request must carry a valid key.
#![no_main]

use clap::Parser as _;
use libfuzzer_sys::fuzz_target;
use ringecho::routes::check_upgrade;
use ringecho::options::Options;

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = request.parse(data) else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(request.method.unwrap_or("").as_bytes()) else {
        return;
    };
    let version = if request.version == Some(1) {
        http::Version::HTTP_11
    } else {
        http::Version::HTTP_10
    };
    let mut map = http::HeaderMap::new();
    for h in request.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_bytes(h.value),
        ) {
            map.append(name, value);
        }
    }
    let options =
        Options::try_parse_from(["ringecho", "--allowed-origin", "https://a.example"]).unwrap();
    if let Ok(accept) = check_upgrade(&method, version, &map, &options) {
        assert_eq!(accept.len(), 28, "base64 of a SHA-1");
    }
});
