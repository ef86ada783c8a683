//! What a server port speaks, told from its first bytes: TLS or plaintext
//! HTTP/2. A client whose call failed asks this to explain why when the
//! URL's scheme and the server disagree (`http://` to a TLS port, or
//! `https://` to a plaintext one), since neither transport error says so.
//!
//! The probe opens one TCP connection and sends the HTTP/2 client preface
//! with an empty SETTINGS frame. A plaintext HTTP/2 server answers with its
//! own SETTINGS frame; a TLS server cannot read the bytes as a TLS record
//! and answers with a TLS alert record (content type 21, version 3.x)
//! before it closes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codegen::http::Uri;

/// The HTTP/2 connection preface, then an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// How long each of connecting and reading may take: a port that says
/// nothing within it is reported as unknown, not guessed at.
const PROBE_WAIT: Duration = Duration::from_secs(3);

/// What the port at a URL speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// A TLS server (it answered plaintext with a TLS alert).
    Tls,
    /// A plaintext HTTP/2 server (it answered with a SETTINGS frame).
    PlaintextHttp2,
}

/// What the server at `url` (`http://host:port` or `https://host:port`)
/// speaks; `None` when it cannot be told (no connection, no answer, or an
/// answer that is neither).
pub async fn speaks(url: &str) -> Option<Wire> {
    let uri: Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    let mut stream =
        tokio::time::timeout(PROBE_WAIT, tokio::net::TcpStream::connect((host, port))).await.ok()?.ok()?;
    stream.write_all(PREFACE).await.ok()?;
    let mut head = [0u8; 9];
    let mut got = 0;
    // Read until there are enough bytes to tell (a TLS record header is 5,
    // an HTTP/2 frame header 9), the server closes, or the wait runs out.
    while got < head.len() {
        match tokio::time::timeout(PROBE_WAIT, stream.read(&mut head[got..])).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
        }
    }
    classify(&head[..got])
}

/// Tells the wire from a server's first bytes.
fn classify(head: &[u8]) -> Option<Wire> {
    match head {
        // A TLS record: alert (21) or handshake (22), protocol version 3.x.
        [21 | 22, 3, ..] => Some(Wire::Tls),
        // An HTTP/2 frame header: 3 bytes of length, type 4 (SETTINGS).
        [_, _, _, 4, ..] => Some(Wire::PlaintextHttp2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_tls_from_http2() {
        assert_eq!(classify(&[21, 3, 3, 0, 2, 2, 50]), Some(Wire::Tls));
        assert_eq!(classify(&[0, 0, 6, 4, 0, 0, 0, 0, 0]), Some(Wire::PlaintextHttp2));
        assert_eq!(classify(b"HTTP/1.1 400"), None);
        assert_eq!(classify(&[]), None);
    }
}
