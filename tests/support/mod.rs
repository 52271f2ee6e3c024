//! A loopback HTTP/1.1 server that can misbehave on purpose, for integration tests.
//!
//! Written directly on `tokio::net::TcpListener` (no HTTP library) so a route can do what real
//! servers do wrong: hang before the headers, drip the body, send more than it should, lie about
//! the charset, bomb us with gzip, redirect in circles. Every request is recorded (method, path,
//! headers, body) so a test can assert what the client sent.
//!
//! ```ignore
//! mod support;
//! use support::{FaultServer, Response};
//! let srv = FaultServer::start().await;
//! srv.route("/feed.xml", Response::ok("<rss/>").header("ETag", "\"v1\"").etag("\"v1\""));
//! let url = srv.url("/feed.xml");
//! // ... fetch ...
//! assert_eq!(srv.requests()[1].header("if-none-match"), Some("\"v1\""));
//! ```
//!
//! Only ever binds 127.0.0.1 on an ephemeral port. One response per connection
//! (`Connection: close`), which keeps the raw writer simple and makes every request visible.
//! The server task is aborted when the `FaultServer` is dropped.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, as on the request line.
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// First value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How the body is produced.
#[derive(Debug, Clone)]
enum Body {
    Bytes(Vec<u8>),
    /// `len` bytes of `byte`, generated in chunks so a 64 MiB body costs the server nothing.
    Generated {
        len: u64,
        byte: u8,
    },
}

/// Misbehaviours.
#[derive(Debug, Clone)]
enum Mode {
    Normal,
    /// Accept and read the request, then never answer.
    HangBeforeHeaders,
    /// Send headers at once, then `chunk` body bytes every `every`.
    Drip {
        every: Duration,
        chunk: usize,
    },
    /// Write these exact bytes and close (malformed HTTP, truncated bodies, ...).
    Raw(Vec<u8>),
}

/// A scripted response. Build with the constructors, refine with the chained setters.
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
    mode: Mode,
    /// Whether to send `Content-Length` (off: the body is delimited by closing the connection).
    content_length: bool,
    /// Answer 304 when the request's `If-None-Match` contains this tag.
    etag: Option<String>,
    /// Answer 304 when the request's `If-Modified-Since` equals this date.
    last_modified: Option<String>,
}

impl Response {
    pub fn status(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
            mode: Mode::Normal,
            content_length: true,
            etag: None,
            last_modified: None,
        }
    }

    /// 200 with this body.
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Self::status(200).body(body)
    }

    /// A redirect (`301`, `302`, `303`, `307`, `308`) to `location` (sent verbatim).
    pub fn redirect(status: u16, location: &str) -> Self {
        Self::status(status).header("Location", location)
    }

    /// Reads the request, then never answers.
    pub fn hang() -> Self {
        let mut r = Self::status(200);
        r.mode = Mode::HangBeforeHeaders;
        r
    }

    /// 200 whose body is `len` bytes of `b'x'`, generated on the fly.
    pub fn huge(len: u64) -> Self {
        let mut r = Self::status(200);
        r.body = Body::Generated { len, byte: b'x' };
        r
    }

    /// 200 with `Content-Encoding: gzip` whose body inflates to `inflated_len` zero bytes
    /// (about 1000:1, so 64 MiB travels as ~64 KiB).
    pub fn gzip_bomb(inflated_len: u64) -> Self {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let block = vec![0u8; 1 << 20];
        let mut left = inflated_len;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            enc.write_all(&block[..n]).expect("gzip to memory");
            left -= n as u64;
        }
        let gz = enc.finish().expect("gzip to memory");
        Self::ok(gz).header("Content-Encoding", "gzip")
    }

    /// 200 with `body` gzip-compressed and `Content-Encoding: gzip`.
    pub fn gzipped(body: impl AsRef<[u8]>) -> Self {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(body.as_ref()).expect("gzip to memory");
        Self::ok(enc.finish().expect("gzip to memory")).header("Content-Encoding", "gzip")
    }

    /// Exactly these bytes on the wire, then close.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Self {
        let mut r = Self::status(200);
        r.mode = Mode::Raw(bytes.into());
        r
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn content_type(self, value: &str) -> Self {
        self.header("Content-Type", value)
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Bytes(body.into());
        self
    }

    /// Send headers, then `chunk` bytes every `every`.
    pub fn drip(mut self, every: Duration, chunk: usize) -> Self {
        self.mode = Mode::Drip {
            every,
            chunk: chunk.max(1),
        };
        self
    }

    /// Leave out `Content-Length`; the body ends when the connection closes.
    pub fn without_content_length(mut self) -> Self {
        self.content_length = false;
        self
    }

    /// Send `ETag: tag` and answer 304 to a request whose `If-None-Match` carries it.
    pub fn etag(mut self, tag: &str) -> Self {
        self.etag = Some(tag.to_string());
        self.header("ETag", tag)
    }

    /// Send `Last-Modified: date` and answer 304 to `If-Modified-Since: date`.
    pub fn last_modified(mut self, date: &str) -> Self {
        self.last_modified = Some(date.to_string());
        self.header("Last-Modified", date)
    }

    fn not_modified(&self, req: &RecordedRequest) -> bool {
        let etag_hit = match (&self.etag, req.header("if-none-match")) {
            (Some(tag), Some(inm)) => inm.split(',').any(|t| t.trim() == tag || t.trim() == "*"),
            _ => false,
        };
        let date_hit = match (&self.last_modified, req.header("if-modified-since")) {
            (Some(lm), Some(ims)) => lm == ims,
            _ => false,
        };
        etag_hit || date_hit
    }
}

#[derive(Default)]
struct State {
    /// Per path: responses served in order; the last one repeats.
    routes: HashMap<String, Vec<Response>>,
    served: HashMap<String, usize>,
    requests: Vec<RecordedRequest>,
    in_flight: usize,
    max_in_flight: usize,
}

/// The server. Dropping it stops it.
pub struct FaultServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultServer {
    /// Binds 127.0.0.1:0 and starts serving. Unrouted paths get 404.
    pub async fn start() -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(sock, st.clone()));
            }
        });
        FaultServer { addr, state, task }
    }

    /// Serve `resp` for `path` (path plus query, exactly as requested; query-less routes
    /// also match requests with a query).
    pub fn route(&self, path: &str, resp: Response) {
        self.route_seq(path, vec![resp]);
    }

    /// Serve these responses for `path` in turn; the last one repeats.
    pub fn route_seq(&self, path: &str, resps: Vec<Response>) {
        let mut st = self.state.lock().unwrap();
        st.routes.insert(path.to_string(), resps);
        st.served.remove(path);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> url::Url {
        url::Url::parse(&format!("http://{}{}", self.addr, path)).expect("valid test URL")
    }

    /// Same server, other host name (`localhost`): a distinct host for per-host limits.
    pub fn url_as_localhost(&self, path: &str) -> url::Url {
        url::Url::parse(&format!("http://localhost:{}{}", self.addr.port(), path))
            .expect("valid test URL")
    }

    /// All requests so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests to one path (query included in the comparison only if `path` has one).
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| route_key_matches(path, &r.path))
            .collect()
    }

    /// The most requests the server was handling at the same moment.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }
}

fn route_key_matches(route: &str, request_path: &str) -> bool {
    route == request_path || (!route.contains('?') && request_path.split('?').next() == Some(route))
}

/// Reads one request head (and a `Content-Length` body). `None` if the client went away or
/// sent garbage.
async fn read_request(sock: &mut TcpStream) -> Option<RecordedRequest> {
    let mut buf = Vec::with_capacity(1024);
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let path = request_line.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    body.truncate(len);
    Some(RecordedRequest {
        method,
        path,
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn serve(mut sock: TcpStream, state: Arc<Mutex<State>>) {
    let Some(req) = read_request(&mut sock).await else {
        return;
    };
    let resp = {
        let mut st = state.lock().unwrap();
        st.requests.push(req.clone());
        st.in_flight += 1;
        st.max_in_flight = st.max_in_flight.max(st.in_flight);
        let key = st
            .routes
            .keys()
            .find(|k| route_key_matches(k, &req.path))
            .cloned();
        match key {
            Some(key) => {
                let n = *st.served.get(&key).unwrap_or(&0);
                st.served.insert(key.clone(), n + 1);
                let seq = &st.routes[&key];
                seq.get(n).or(seq.last()).cloned()
            }
            None => None,
        }
    };
    let resp = resp.unwrap_or_else(|| Response::status(404).body("no route"));
    // Errors writing are the client hanging up (often on purpose: size caps, timeouts).
    let mut done = Some(move || state.lock().unwrap().in_flight -= 1);
    let _ = write_response(&mut sock, &req, resp, &mut || {
        if let Some(d) = done.take() {
            d()
        }
    })
    .await;
    // However the response ended (early error, hang aborted), count it as finished once.
    if let Some(d) = done.take() {
        d()
    }
    let _ = sock.shutdown().await;
}

async fn write_response(
    sock: &mut TcpStream,
    req: &RecordedRequest,
    resp: Response,
    // Called just before the last bytes go out: once the client has everything it may start
    // its next request, and that must not look like an overlap in `max_in_flight`.
    finishing: &mut (dyn FnMut() + Send),
) -> std::io::Result<()> {
    match &resp.mode {
        Mode::HangBeforeHeaders => {
            // Long enough for any timeout under test; the task is aborted with the server.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        Mode::Raw(bytes) => {
            finishing();
            return sock.write_all(bytes).await;
        }
        _ => {}
    }
    if resp.not_modified(req) {
        let mut head = "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n".to_string();
        for (k, v) in &resp.headers {
            if k.eq_ignore_ascii_case("etag") || k.eq_ignore_ascii_case("cache-control") {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        head.push_str("\r\n");
        finishing();
        return sock.write_all(head.as_bytes()).await;
    }
    let len = match &resp.body {
        Body::Bytes(b) => b.len() as u64,
        Body::Generated { len, .. } => *len,
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nConnection: close\r\n",
        resp.status,
        reason(resp.status)
    );
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if resp.content_length {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    if len == 0 {
        finishing();
    }
    sock.write_all(head.as_bytes()).await?;
    sock.flush().await?;

    let (every, chunk) = match resp.mode {
        Mode::Drip { every, chunk } => (Some(every), chunk),
        _ => (None, 64 * 1024),
    };
    let mut sent = 0u64;
    let filler = match &resp.body {
        Body::Generated { byte, .. } => vec![*byte; chunk],
        Body::Bytes(_) => Vec::new(),
    };
    while sent < len {
        let n = (len - sent).min(chunk as u64) as usize;
        let last = sent + n as u64 == len;
        if last {
            finishing();
        }
        match &resp.body {
            Body::Bytes(b) => sock.write_all(&b[sent as usize..sent as usize + n]).await?,
            Body::Generated { .. } => sock.write_all(&filler[..n]).await?,
        }
        sent += n as u64;
        if let (Some(every), false) = (every, last) {
            sock.flush().await?;
            tokio::time::sleep(every).await;
        }
    }
    sock.flush().await
}
