//! A minimal HTTP/1.1 client for the emulators' control endpoints: loopback only, one request
//! per connection, every read and write with a timeout. (The harness stays free of an async
//! runtime and of HTTP-client features the rest of the workspace does not build with.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read (the counters are a few kB).
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// `http://127.0.0.1:port` → the socket address; anything but a loopback address is refused.
pub fn loopback(base_url: &str) -> Result<SocketAddr> {
    let rest = base_url
        .strip_prefix("http://")
        .with_context(|| format!("not an http URL: {base_url}"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("not ip:port: {authority}"))?;
    if !addr.ip().is_loopback() {
        bail!("refusing to talk to {addr}: the harness only talks to loopback addresses");
    }
    Ok(addr)
}

/// Sends one request and returns (status, body as JSON — `Null` when empty).
pub fn request(
    base_url: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let addr = loopback(base_url)?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n",
        payload.len()
    );
    if body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str("\r\n");
    head.push_str(&payload);
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .take(MAX_BODY)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {method} {path}"))?;
    let (status, body) = parse_response(&raw).with_context(|| format!("{method} {path}"))?;
    let json = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "{method} {path}: the body is not JSON: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        })?
    };
    Ok((status, json))
}

/// Like [`request`], but any status outside 2xx is an error.
pub fn call(base_url: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let (status, json) = request(base_url, method, path, body)?;
    if !(200..300).contains(&status) {
        bail!("{method} {base_url}{path} answered {status}: {json}");
    }
    Ok(json)
}

/// Splits a whole HTTP/1.1 response into status and (de-chunked) body.
pub fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).context("headers are not UTF-8")?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line `{status_line}`"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_text = std::str::from_utf8(&rest[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size `{size_text}`"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        if rest.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_chunked_bodies() {
        let (s, b) =
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{\"a\":1}").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"{\"a\":1}"[..]));
        let (s, b) = parse_response(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (201, &b"{\"a\":1}"[..]));
        let (s, b) = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((s, b.len()), (204, 0));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn only_loopback() {
        assert_eq!(
            loopback("http://127.0.0.1:8081").unwrap(),
            "127.0.0.1:8081".parse().unwrap()
        );
        assert!(loopback("http://10.0.0.1:80").is_err());
        assert!(loopback("https://127.0.0.1:80").is_err());
        assert!(loopback("http://example.com:80").is_err());
    }

    #[test]
    fn round_trip_against_a_local_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.ends_with(b"{\"n\":1}") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "the client closed early");
                req.extend_from_slice(&buf[..n]);
            }
            let req = String::from_utf8_lossy(&req).into_owned();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"n\":42}")
                .unwrap();
            req
        });
        let body = call(
            &format!("http://{addr}"),
            "POST",
            "/_emulator/touch",
            Some(&serde_json::json!({"n": 1})),
        )
        .unwrap();
        assert_eq!(body["n"], 42);
        let req = server.join().unwrap();
        assert!(
            req.starts_with("POST /_emulator/touch HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(req.ends_with("{\"n\":1}"), "{req}");
    }
}
