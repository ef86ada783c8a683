//! A test double for an OpenAI-wire-protocol server (chat completions,
//! plain and streamed), shared by the provider and judge tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the test server answers to one request.
pub enum Reply {
    /// A complete JSON (or not quite JSON) body with a status and headers.
    Body { status: u16, headers: Vec<(String, String)>, body: String },
    /// An SSE stream of `data:` lines, ending with `data: [DONE]`.
    Sse(Vec<Value>),
    /// Waits, then answers (or finds the client gone).
    Slow(Duration, Box<Reply>),
    /// Waits until the test opens the gate (`true` on the channel), then
    /// answers: a slow model whose slowness the test ends, not a clock.
    Held(tokio::sync::watch::Receiver<bool>, Box<Reply>),
    /// SSE in chunked encoding that breaks off after these events (no
    /// `[DONE]`, no closing chunk), as when a connection dies mid-answer.
    SseBroken(Vec<Value>),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub type Script = Arc<dyn Fn(usize, &Seen) -> Reply + Send + Sync>;

/// A test double for an OpenAI-wire-protocol server: real HTTP/1.1 on
/// 127.0.0.1:0 (one request per connection, `Connection: close`), JSON
/// bodies and SSE `data:` lines ending with `[DONE]`. What it answers comes
/// from a script of the request number and the request; every request is
/// recorded.
pub struct FakeOpenAi {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeOpenAi {
    pub async fn start(script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { break };
                let script = script.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let _ = serve(socket, script, recorded).await;
                });
            }
        });
        Self { addr, seen, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut socket: TcpStream, script: Script, seen: Arc<Mutex<Vec<Seen>>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let path = request_line.split(' ').nth(1).unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
    let request = Seen { path, headers, body };
    let index = {
        let mut all = seen.lock().unwrap();
        all.push(request.clone());
        all.len() - 1
    };
    let mut reply = script(index, &request);
    let reply = loop {
        reply = match reply {
            Reply::Slow(delay, inner) => {
                tokio::time::sleep(delay).await;
                *inner
            }
            Reply::Held(mut gate, inner) => {
                // A dropped sender opens nothing: the reply never comes.
                if gate.wait_for(|open| *open).await.is_err() {
                    return Ok(());
                }
                *inner
            }
            other => break other,
        };
    };
    match reply {
        Reply::Body { status, headers, body } => {
            let mut out = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            out.push_str(&body);
            socket.write_all(out.as_bytes()).await?;
        }
        Reply::Sse(events) => {
            socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
                )
                .await?;
            for event in events {
                socket.write_all(format!("data: {event}\n\n").as_bytes()).await?;
                socket.flush().await?;
                // Separate writes, so deltas really arrive one by one.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            socket.write_all(b"data: [DONE]\n\n").await?;
        }
        Reply::SseBroken(events) => {
            socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
                )
                .await?;
            for event in events {
                let data = format!("data: {event}\n\n");
                socket.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes()).await?;
                socket.flush().await?;
            }
            // Dropping the socket without the closing `0` chunk is the break.
            return Ok(());
        }
        Reply::Slow(..) | Reply::Held(..) => {}
    }
    socket.shutdown().await
}

pub fn completion(text: &str, model: &str, usage: Option<(u64, u64)>) -> Reply {
    let mut body = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000u32,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            "logprobs": null
        }]
    });
    if let Some((i, o)) = usage {
        body["usage"] = json!({"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o});
    }
    Reply::Body { status: 200, headers: vec![], body: body.to_string() }
}

pub fn error(status: u16, message: &str, headers: &[(&str, &str)]) -> Reply {
    Reply::Body {
        status,
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        body: json!({"error": {"message": message, "type": "test_error", "param": null, "code": null}})
            .to_string(),
    }
}
