//! Shared by the hostile_* tests: a raw TCP upstream the test owns, which records every
//! HTTP request the gateway sends it (so a test sees exactly what a worker would see), and
//! can misbehave on purpose; raw HTTP/1.1 exchanges with the gateway.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    /// Header names lower-cased, in arrival order, repeated names kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which connection it came on (numbered from 1 in accept order).
    pub conn: usize,
    /// How many reads of the socket it took to arrive whole.
    pub reads: usize,
}

impl Recorded {
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// How the upstream answers MCP requests (`/health` always gets 200 unless `sick_health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// A fixed JSON-RPC result echoing the request id.
    Answer,
    /// Reads the request, never answers, keeps the connection open.
    Silent,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// 200 with a chunked JSON body of this many MiB.
    Huge(usize),
    /// Starts an SSE answer, sends one event, then closes the connection mid-stream.
    CloseMidStream,
    /// An SSE answer that sends events as fast as it can until the client goes away.
    SseFlood,
    /// The answer as an event stream (priming event, then the result), chunked, written in
    /// one piece, as a worker does whose call is done at once.
    SseAnswer,
    /// Like `Answer` (keep-alive), then closes the connection 100 ms later, as a worker
    /// with a short idle timeout does.
    AnswerThenClose,
}

#[derive(Default)]
pub struct Log {
    pub requests: Vec<Recorded>,
    /// Bytes that could not be parsed as an HTTP/1.1 request (framing broken).
    pub unparsed: Vec<Vec<u8>>,
    pub connections: usize,
    /// Connections (by number) the gateway closed.
    pub closed: Vec<usize>,
}

pub struct Upstream {
    pub port: u16,
    pub log: Arc<Mutex<Log>>,
}

impl Upstream {
    pub async fn start(behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let log = Arc::new(Mutex::new(Log::default()));
        let l2 = log.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = match l2.lock() {
                    Ok(mut g) => {
                        g.connections += 1;
                        g.connections
                    }
                    Err(_) => 0,
                };
                tokio::spawn(serve(stream, behaviour, l2.clone(), conn));
            }
        });
        Upstream { port, log }
    }

    /// MCP requests only (health checks left out).
    pub fn requests(&self) -> Vec<Recorded> {
        self.log
            .lock()
            .map(|g| {
                g.requests
                    .iter()
                    .filter(|r| r.target != "/health")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the gateway closed connection number `conn`.
    pub fn closed(&self, conn: usize) -> bool {
        self.log
            .lock()
            .map(|g| g.closed.contains(&conn))
            .unwrap_or(false)
    }

    pub fn unparsed(&self) -> Vec<Vec<u8>> {
        self.log
            .lock()
            .map(|g| g.unparsed.clone())
            .unwrap_or_default()
    }

    pub fn clear(&self) {
        if let Ok(mut g) = self.log.lock() {
            g.requests.clear();
            g.unparsed.clear();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

enum Parse {
    Need,
    Bad,
    Done(Recorded, usize),
}

/// A strict HTTP/1.1 request parser: CRLF only, one Content-Length or chunked, nothing else.
fn parse_request(buf: &[u8]) -> Parse {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > 1 << 20 {
            Parse::Bad
        } else {
            Parse::Need
        };
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Parse::Bad;
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    if parts.len() != 3 || parts[2] != "HTTP/1.1" {
        return Parse::Bad;
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.contains('\n') || line.contains('\r') {
            return Parse::Bad;
        }
        let Some((n, v)) = line.split_once(':') else {
            return Parse::Bad;
        };
        if n.is_empty() || n.contains(' ') || n.contains('\t') {
            return Parse::Bad;
        }
        headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
    }
    let cl: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    let te: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut pos = end + 4;
    let body = match (cl.as_slice(), te.as_slice()) {
        ([], []) => Vec::new(),
        ([len], []) => {
            let Ok(len) = len.parse::<usize>() else {
                return Parse::Bad;
            };
            if buf.len() < pos + len {
                return Parse::Need;
            }
            let b = buf[pos..pos + len].to_vec();
            pos += len;
            b
        }
        ([], ["chunked"]) => {
            let mut body = Vec::new();
            loop {
                let Some(line_end) = find(&buf[pos..], b"\r\n") else {
                    return Parse::Need;
                };
                let Ok(size_text) = std::str::from_utf8(&buf[pos..pos + line_end]) else {
                    return Parse::Bad;
                };
                let Ok(size) = usize::from_str_radix(size_text, 16) else {
                    return Parse::Bad;
                };
                pos += line_end + 2;
                if buf.len() < pos + size + 2 {
                    return Parse::Need;
                }
                body.extend_from_slice(&buf[pos..pos + size]);
                if &buf[pos + size..pos + size + 2] != b"\r\n" {
                    return Parse::Bad;
                }
                pos += size + 2;
                if size == 0 {
                    break;
                }
            }
            body
        }
        _ => return Parse::Bad,
    };
    Parse::Done(
        Recorded {
            method: parts[0].to_string(),
            target: parts[1].to_string(),
            headers,
            body,
            conn: 0,
            reads: 0,
        },
        pos,
    )
}

fn answer_json(req: &Recorded) -> Vec<u8> {
    let id = serde_json::from_slice::<serde_json::Value>(&req.body)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(serde_json::Value::from(1));
    let body = serde_json::json!({"jsonrpc":"2.0","id":id,"result":{"recorded":true}}).to_string();
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn serve(mut s: TcpStream, behaviour: Behaviour, log: Arc<Mutex<Log>>, conn: usize) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut reads = 0;
    loop {
        match parse_request(&buf) {
            Parse::Need => match s.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    if let Ok(mut g) = log.lock() {
                        g.closed.push(conn);
                        if !buf.is_empty() {
                            g.unparsed.push(buf);
                        }
                    }
                    return;
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    reads += 1;
                }
            },
            Parse::Bad => {
                if let Ok(mut g) = log.lock() {
                    g.unparsed.push(buf);
                }
                return;
            }
            Parse::Done(mut req, used) => {
                buf.drain(..used);
                req.conn = conn;
                // Pipelined bytes already read count as no read of their own.
                req.reads = std::mem::take(&mut reads);
                if let Ok(mut g) = log.lock() {
                    g.requests.push(req.clone());
                }
                if req.target == "/health" {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    continue;
                }
                if !misbehave(&mut s, behaviour, &req).await {
                    return;
                }
            }
        }
    }
}

/// Answer one MCP request; false when the connection is done.
async fn misbehave(s: &mut TcpStream, behaviour: Behaviour, req: &Recorded) -> bool {
    match behaviour {
        Behaviour::Answer => s.write_all(&answer_json(req)).await.is_ok(),
        Behaviour::SseAnswer => {
            let json = answer_json(req);
            let body = json
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| &json[i + 4..])
                .unwrap_or_default();
            let events = [
                "data: \nid: 0/1\nretry: 3000\n\n".to_string(),
                format!(
                    "event: message\ndata: {}\n\n",
                    String::from_utf8_lossy(body)
                ),
            ];
            let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for e in &events {
                out.extend_from_slice(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes());
            }
            out.extend_from_slice(b"0\r\n\r\n");
            s.write_all(&out).await.is_ok()
        }
        Behaviour::AnswerThenClose => {
            let _ = s.write_all(&answer_json(req)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = s.shutdown().await;
            false
        }
        Behaviour::Silent => {
            // Hold the connection open, say nothing, until the gateway gives up on it.
            let mut sink = [0u8; 1024];
            while let Ok(n) = s.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            false
        }
        Behaviour::Garbage => {
            let _ = s
                .write_all(b"\x00\x01garbage that is not HTTP at all\r\n\r\n{}")
                .await;
            false
        }
        Behaviour::Huge(mib) => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_err() {
                return false;
            }
            let piece = vec![b' '; 1 << 20];
            let mut frame = format!("{:x}\r\n", piece.len()).into_bytes();
            frame.extend_from_slice(&piece);
            frame.extend_from_slice(b"\r\n");
            let start = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
            let first = format!("{:x}\r\n", start.len());
            let _ = s.write_all(first.as_bytes()).await;
            let _ = s.write_all(start).await;
            let _ = s.write_all(b"\r\n").await;
            for _ in 0..mib {
                if s.write_all(&frame).await.is_err() {
                    return false;
                }
            }
            s.write_all(b"0\r\n\r\n").await.is_ok()
        }
        Behaviour::CloseMidStream => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            let event = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n";
            let frame = format!("{:x}\r\n{event}\r\n", event.len());
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(frame.as_bytes()).await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = s.shutdown().await;
            false
        }
        Behaviour::SseFlood => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_err() {
                return false;
            }
            let event = format!(
                "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{\"level\":\"info\",\"data\":\"{}\"}}}}\n\n",
                "x".repeat(900)
            );
            let mut batch = Vec::new();
            for _ in 0..64 {
                batch.extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
            }
            // Until the gateway stops reading (the client went away).
            while s.write_all(&batch).await.is_ok() {}
            false
        }
    }
}

/// The gateway's answer to raw bytes: waits (up to 30 s) for the connection to close or for
/// a first complete response, then collects whatever else arrives until `quiet` passes.
pub async fn raw_exchange(port: u16, request: &[u8], quiet: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    s.write_all(request)
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !response_complete(&out) {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
    }
    out.extend(read_until_quiet(&mut s, quiet).await);
    out
}

/// Does `raw` hold at least one whole HTTP response (header, and body by its framing)?
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= len;
    }
    if head.contains("transfer-encoding: chunked") {
        return find(body, b"0\r\n\r\n").is_some();
    }
    true
}

pub async fn read_until_quiet(s: &mut TcpStream, quiet: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(quiet, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Status codes of every HTTP response in `raw` (responses may be pipelined).
pub fn statuses(raw: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(raw);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(i) = rest.find("HTTP/1.1 ") {
        let code = rest[i + 9..].get(..3).and_then(|c| c.parse::<u16>().ok());
        if let Some(c) = code {
            out.push(c);
        }
        rest = &rest[i + 9..];
    }
    out
}

/// A gateway configuration with two routes: `/mcp` to the recording upstream (a remote
/// pool), `/good` to one real spawned tools worker, for the well-behaved client.
pub fn two_route_config(
    port: u16,
    admin: u16,
    upstream_port: u16,
    pool_extra: &str,
    extra: &str,
) -> String {
    format!(
        r#"listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
shutdown_grace: 1s
routes:
  - path: /mcp
    pool: recorder
  - path: /good
    pool: tools
    upstream_path: /mcp
pools:
  recorder:
    upstreams: ["127.0.0.1:{upstream_port}"]
    health: {{ kind: http, path: /health, interval: 1h }}
{pool_extra}
  tools:
    spawn:
      command: ["{worker}", tools, --id, "{{id}}"]
      count: 1
      stop_grace: 1s
    health: {{ kind: http, path: /health, interval: 1s }}
{extra}"#,
        worker = super::common::worker_bin().display()
    )
}

/// A well-behaved client's full exchange on `/good`: a session, then `add(2, 3)`; true when it
/// got its correct answer.
pub async fn well_behaved_call(port: u16) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://127.0.0.1:{port}/good");
    let sid = super::common::raw_session(&client, &url).await;
    let (status, v) = super::common::raw_call(
        &client,
        &url,
        &sid,
        9,
        "add",
        serde_json::json!({"a": 2, "b": 3}),
    )
    .await;
    status == 200 && v.map(|v| super::common::result_text(&v)) == Some("5".into())
}

/// Resident memory of a process, in KiB.
pub fn vm_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Send raw bytes; read until the gateway closes the connection or `limit` passes.
/// Returns what it sent back and whether it closed.
pub async fn exchange_until_close(port: u16, request: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    s.write_all(request)
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Err(_) => return (out, false),
        }
    }
}
