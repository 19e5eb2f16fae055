//! A lean HTTP/1.1 sender for purge nodes on `http://`: a few kept-alive connections per node,
//! each carrying a whole batch of PURGE requests written back to back (pipelined), whose
//! answers are read back in order.
//!
//! A purge is a tiny request with a tiny answer, so a general client's cost per request (and a
//! wake-up per request on each side of the loopback) was most of the time; a pipelined batch
//! costs a few system calls. PURGE is idempotent, so requests a node left unanswered (it closed
//! the connection, or a kept-alive connection had gone stale) are simply sent again.

use crate::cdn::{Attempt, USER_AGENT, classify_code, parse_retry_after};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The PURGE requests of one batch, formatted once and sent to every node.
#[derive(Default)]
pub(super) struct Requests {
    bytes: Vec<u8>,
    /// Where each request starts in `bytes`.
    starts: Vec<usize>,
}

impl Requests {
    /// Adds `PURGE <path_and_query>` with `Host: <host>`: the request the reqwest path sends.
    /// Both come from a parsed [`url::Url`], which never holds spaces or line breaks there.
    pub fn push(&mut self, path_and_query: &str, host: &str) {
        self.starts.push(self.bytes.len());
        for part in [
            "PURGE ",
            path_and_query,
            " HTTP/1.1\r\nhost: ",
            host,
            "\r\naccept: */*\r\nuser-agent: ",
            USER_AGENT,
            "\r\n\r\n",
        ] {
            self.bytes.extend_from_slice(part.as_bytes());
        }
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// The requests from the `first`-th on, as written.
    fn from(&self, first: usize) -> &[u8] {
        self.starts
            .get(first)
            .map_or(&[][..], |&start| &self.bytes[start..])
    }
}

/// One purge node reached over plain HTTP, with its idle kept-alive connections.
pub(super) struct Node {
    /// `host:port` as the node's base URL names it (`[::1]:6081` for IPv6).
    address: String,
    idle: Mutex<Vec<TcpStream>>,
    /// Connections kept for the next batch; as many as batches in flight.
    max_idle: usize,
    /// How long the node may take to answer a request once it has answered the one before.
    timeout: Duration,
    /// When the node last kept a request waiting past the timeout.
    hung_at: Mutex<Option<Instant>>,
}

/// How a connection's exchange ended.
#[derive(Debug)]
enum End {
    /// Every request was answered and the connection can carry the next batch.
    Open,
    /// The node closed the connection, or it failed (the reason): requests after the answered
    /// ones were not answered.
    Closed(String),
    /// The next request was not answered in time.
    TimedOut,
}

fn retry(reason: &str) -> Attempt {
    Attempt::Retry {
        http_status: None,
        reason: reason.to_string(),
        retry_after: None,
    }
}

impl Node {
    pub fn new(host: &str, port: u16, max_idle: usize, timeout: Duration) -> Self {
        Self {
            address: format!("{host}:{port}"),
            idle: Mutex::new(Vec::new()),
            max_idle,
            timeout,
            hung_at: Mutex::new(None),
        }
    }

    /// Whether the node kept a request waiting past the timeout within `window`: then a
    /// batch pipelined on one connection would wait out each of its hangs one after another.
    pub fn hung_within(&self, window: Duration) -> bool {
        self.hung_at
            .lock()
            .expect("hang clock")
            .is_some_and(|at| at.elapsed() < window)
    }

    /// Sends every request and returns one attempt per request, in order. A URL is only done
    /// when its own answer said so; unanswered requests are sent again on a new connection
    /// when the last one made progress (or was an idle one the node had dropped), and are
    /// otherwise left to the worker's retries with the reason.
    pub async fn purge(&self, requests: &Requests) -> Vec<Attempt> {
        let count = requests.len();
        let mut attempts = Vec::with_capacity(count);
        while attempts.len() < count {
            let (mut stream, reused) = match self.take_idle() {
                Some(stream) => (stream, true),
                None => match self.connect().await {
                    Ok(stream) => (stream, false),
                    Err(reason) => {
                        attempts.resize(count, retry(&reason));
                        break;
                    }
                },
            };
            let before = attempts.len();
            let end = self.exchange(&mut stream, requests, &mut attempts).await;
            let progressed = attempts.len() > before;
            match end {
                End::Open => self.put_idle(stream),
                End::Closed(reason) => {
                    if !progressed && !reused {
                        attempts.resize(count, retry(&reason));
                    }
                }
                End::TimedOut => {
                    // The request the node kept waiting, and those behind it: a node that hangs
                    // once may hang again, and on one connection each hang would hold up all
                    // the rest. They go back to the worker, which sends them one per request
                    // while the node is known to hang (see `HttpPurge::batch_sizes`).
                    *self.hung_at.lock().expect("hang clock") = Some(Instant::now());
                    attempts.push(retry("timed out"));
                    attempts.resize(
                        count,
                        Attempt::Unanswered {
                            reason: "not answered: the node was stuck on an earlier request on the connection".into(),
                        },
                    );
                }
            }
        }
        attempts
    }

    fn take_idle(&self) -> Option<TcpStream> {
        self.idle.lock().expect("idle connections").pop()
    }

    fn put_idle(&self, stream: TcpStream) {
        let mut idle = self.idle.lock().expect("idle connections");
        if idle.len() < self.max_idle {
            idle.push(stream);
        }
    }

    /// A new connection, in the words of the reqwest path's errors.
    async fn connect(&self) -> Result<TcpStream, String> {
        let limit = self.timeout.min(Duration::from_secs(5));
        match tokio::time::timeout(limit, TcpStream::connect(self.address.as_str())).await {
            Err(_) => Err("timed out".into()),
            Ok(Err(e)) => Err(format!("could not connect: {e}")),
            Ok(Ok(stream)) => {
                // Answers come back whole and at once: no reason to hold small writes back.
                stream
                    .set_nodelay(true)
                    .map_err(|e| format!("could not connect: {e}"))?;
                Ok(stream)
            }
        }
    }

    /// Writes the requests from the first unanswered one on while reading answers into
    /// `attempts`, until every request is answered or the connection cannot go on.
    async fn exchange(
        &self,
        stream: &mut TcpStream,
        requests: &Requests,
        attempts: &mut Vec<Attempt>,
    ) -> End {
        let count = requests.len();
        let (mut reader, mut writer) = stream.split();
        // Written while reading: a node may answer before it has read everything, and a
        // batch larger than the socket buffers must not wait on answers nobody reads.
        let write = writer.write_all(requests.from(attempts.len()));
        tokio::pin!(write);
        let mut writing = true;
        let mut decoder = Decoder::new();
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        loop {
            let before = attempts.len();
            loop {
                match decoder.next_response() {
                    Ok(Some(head)) => {
                        attempts.push(head.attempt());
                        if head.close {
                            return End::Closed("the node closed the connection".into());
                        }
                        if attempts.len() == count {
                            // Bytes beyond the last answer would be read as the next batch's.
                            return if writing || !decoder.is_idle() {
                                End::Closed("the node answered more than it was asked".into())
                            } else {
                                End::Open
                            };
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return End::Closed(format!("invalid response: {e}")),
                }
            }
            if attempts.len() > before {
                deadline.as_mut().reset(Instant::now() + self.timeout);
            }
            tokio::select! {
                biased;
                read = reader.read(decoder.spare()) => match read {
                    Ok(0) => {
                        return match decoder.end_of_stream() {
                            Ok(Some(head)) => {
                                attempts.push(head.attempt());
                                End::Closed("the node closed the connection".into())
                            }
                            Ok(None) => End::Closed("the node closed the connection".into()),
                            Err(e) => End::Closed(format!("invalid response: {e}")),
                        };
                    }
                    Ok(n) => decoder.filled(n),
                    Err(e) => return End::Closed(e.to_string()),
                },
                // A failed write shows up as a failed or ended read, with the node's answers
                // up to then.
                _ = &mut write, if writing => writing = false,
                () = &mut deadline => return End::TimedOut,
            }
        }
    }
}

/// Most bytes of one answer's head (status line and headers), and of a chunk-size or trailer line.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes read at once.
const READ_SIZE: usize = 16 * 1024;

/// What the sender needs from one answer; its body is read past and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Head {
    pub status: u16,
    /// `Retry-After` as sent.
    pub retry_after: Option<String>,
    /// The node closes the connection after this answer.
    pub close: bool,
}

impl Head {
    /// The purge's outcome, as [`crate::cdn::classify`] reads a reqwest answer.
    pub fn attempt(&self) -> Attempt {
        classify_code(self.status, || {
            self.retry_after.as_deref().and_then(parse_retry_after)
        })
    }
}

/// Where the body of the answer being read ends.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// No length given: the body runs to the end of the connection.
    UntilClose,
}

#[derive(Debug)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

#[derive(Debug)]
enum State {
    Head,
    Body(Head, Framing),
}

/// Splits the bytes of a connection into answers (`Content-Length`, chunked, or to the end of
/// the connection), keeping only their heads. Holds at most one head's worth of bytes.
pub(super) struct Decoder {
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    state: State,
}

/// What one step of decoding came to.
enum Step {
    NeedMore,
    Continue,
    Done,
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            buf: vec![0; READ_SIZE],
            start: 0,
            end: 0,
            state: State::Head,
        }
    }

    /// Room to read into; call [`Decoder::filled`] with what was read.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else {
                // One unfinished head fills the buffer ([`MAX_HEAD`] bounds it).
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Between answers, with nothing unread.
    pub fn is_idle(&self) -> bool {
        self.start == self.end && matches!(self.state, State::Head)
    }

    /// The next complete answer, `None` until more bytes arrive.
    pub fn next_response(&mut self) -> Result<Option<Head>, String> {
        loop {
            match self.step()? {
                Step::NeedMore => return Ok(None),
                Step::Continue => {}
                Step::Done => {
                    let State::Body(head, _) = std::mem::replace(&mut self.state, State::Head)
                    else {
                        unreachable!("an answer is done only in its body")
                    };
                    return Ok(Some(head));
                }
            }
        }
    }

    /// The connection ended: completes an answer whose body runs to the end, and says what is
    /// wrong when it ended mid-answer.
    pub fn end_of_stream(&mut self) -> Result<Option<Head>, String> {
        match std::mem::replace(&mut self.state, State::Head) {
            State::Head if self.start == self.end => Ok(None),
            State::Head => Err("the connection ended inside an answer's head".into()),
            State::Body(head, Framing::UntilClose) => Ok(Some(head)),
            State::Body(_, _) => Err("the connection ended inside an answer's body".into()),
        }
    }

    fn step(&mut self) -> Result<Step, String> {
        let data = &self.buf[self.start..self.end];
        let need_more = |buffered: usize, what: &str| {
            if buffered >= MAX_HEAD {
                Err(format!("{what} longer than {} KiB", MAX_HEAD / 1024))
            } else {
                Ok(Step::NeedMore)
            }
        };
        match &mut self.state {
            State::Head => {
                if data.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut response = httparse::Response::new(&mut headers);
                match response.parse(data).map_err(|e| e.to_string())? {
                    httparse::Status::Partial => need_more(data.len(), "an answer's head"),
                    httparse::Status::Complete(len) => {
                        let code = response.code.unwrap_or_default();
                        let version = response.version.unwrap_or_default();
                        let parsed = match code {
                            101 => return Err("the node switched protocols".into()),
                            // An interim answer: the final one follows.
                            100..=199 => None,
                            _ => Some(read_head(code, version, response.headers)?),
                        };
                        self.start += len;
                        if let Some((head, framing)) = parsed {
                            self.state = State::Body(head, framing);
                        }
                        Ok(Step::Continue)
                    }
                }
            }
            State::Body(_, Framing::Length(0)) => Ok(Step::Done),
            State::Body(_, Framing::Length(left)) => {
                let take = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                self.start += take;
                *left -= take as u64;
                Ok(if *left == 0 {
                    Step::Done
                } else {
                    Step::NeedMore
                })
            }
            State::Body(_, Framing::UntilClose) => {
                self.start = self.end;
                Ok(Step::NeedMore)
            }
            State::Body(_, Framing::Chunked(chunk)) => match chunk {
                Chunk::Size => match httparse::parse_chunk_size(data) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.start += used;
                        *chunk = if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        };
                        Ok(Step::Continue)
                    }
                    Ok(httparse::Status::Partial) => need_more(data.len(), "a chunk-size line"),
                    Err(_) => Err("invalid chunk size".into()),
                },
                Chunk::Data(left) => {
                    let take = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    self.start += take;
                    *left -= take as u64;
                    if *left == 0 {
                        *chunk = Chunk::DataEnd;
                        Ok(Step::Continue)
                    } else {
                        Ok(Step::NeedMore)
                    }
                }
                Chunk::DataEnd => match data {
                    [b'\r', b'\n', ..] => {
                        self.start += 2;
                        *chunk = Chunk::Size;
                        Ok(Step::Continue)
                    }
                    [] | [b'\r'] => Ok(Step::NeedMore),
                    _ => Err("a chunk longer than its size".into()),
                },
                // Trailer fields, each on a line, until an empty line.
                Chunk::Trailers => match data.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        self.start += 2;
                        Ok(Step::Done)
                    }
                    Some(line) => {
                        self.start += line + 2;
                        Ok(Step::Continue)
                    }
                    None => need_more(data.len(), "a trailer line"),
                },
            },
        }
    }

    /// Feeds `bytes` as if read from a connection.
    #[cfg(test)]
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let spare = self.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            self.filled(n);
            bytes = &bytes[n..];
        }
    }
}

/// What a final answer's head says about the purge, the connection and the body's end
/// (RFC 9112 §6.3 and §9.3).
fn read_head(
    code: u16,
    version: u8,
    headers: &[httparse::Header<'_>],
) -> Result<(Head, Framing), String> {
    let mut close = false;
    let mut keep_alive = false;
    let mut transfer_encoding: Option<bool> = None;
    let mut length: Option<u64> = None;
    let mut retry_after = None;
    for header in headers {
        let name = header.name;
        let value = || std::str::from_utf8(header.value).ok();
        let tokens = || {
            value()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
        };
        if name.eq_ignore_ascii_case("connection") {
            close |= tokens().any(|t| t.eq_ignore_ascii_case("close"));
            keep_alive |= tokens().any(|t| t.eq_ignore_ascii_case("keep-alive"));
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked only when it is the last coding applied.
            transfer_encoding = Some(
                tokens()
                    .next_back()
                    .is_some_and(|t| t.eq_ignore_ascii_case("chunked")),
            );
        } else if name.eq_ignore_ascii_case("content-length") {
            let parsed = value()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("invalid Content-Length")?;
            if length.is_some_and(|l| l != parsed) {
                return Err("conflicting Content-Length headers".into());
            }
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case("retry-after") && retry_after.is_none() {
            // As reqwest's `HeaderValue::to_str` reads it: visible ASCII only.
            retry_after = value()
                .filter(|v| v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
                .map(str::to_string);
        }
    }
    // HTTP/1.0 closes after each answer unless it says otherwise.
    if version == 0 && !keep_alive {
        close = true;
    }
    let framing = match (code, transfer_encoding, length) {
        (204 | 304, _, _) => Framing::Length(0),
        (_, Some(true), _) => Framing::Chunked(Chunk::Size),
        (_, Some(false), _) | (_, None, None) => Framing::UntilClose,
        (_, None, Some(length)) => Framing::Length(length),
    };
    if matches!(framing, Framing::UntilClose) {
        close = true;
    }
    Ok((
        Head {
            status: code,
            retry_after,
            close,
        },
        framing,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every answer in `bytes`, fed in pieces of `piece` bytes, then the end of the connection.
    fn decode(bytes: &[u8], piece: usize) -> (Vec<Head>, Result<(), String>) {
        let mut decoder = Decoder::new();
        let mut heads = Vec::new();
        for part in bytes.chunks(piece) {
            decoder.feed(part);
            loop {
                match decoder.next_response() {
                    Ok(Some(head)) => heads.push(head),
                    Ok(None) => break,
                    Err(e) => return (heads, Err(e)),
                }
            }
        }
        match decoder.end_of_stream() {
            Ok(Some(head)) => heads.push(head),
            Ok(None) => {}
            Err(e) => return (heads, Err(e)),
        }
        (heads, Ok(()))
    }

    fn statuses(heads: &[Head]) -> Vec<u16> {
        heads.iter().map(|h| h.status).collect()
    }

    /// Varnish's `synth(200, "Purged")` answer, as it sends it.
    const PURGED: &str = "HTTP/1.1 200 Purged\r\nDate: Tue, 01 Jul 2025 10:00:00 GMT\r\nServer: Varnish\r\n\
        X-Varnish: 32770\r\nContent-Type: text/html; charset=utf-8\r\nRetry-After: 5\r\n\
        Content-Length: 12\r\nConnection: keep-alive\r\n\r\n<html></html";

    #[test]
    fn content_length_answers_are_split_at_any_byte() {
        let three = PURGED.repeat(3);
        for piece in [1, 2, 7, 100, three.len()] {
            let (heads, end) = decode(three.as_bytes(), piece);
            assert_eq!(end, Ok(()), "piece {piece}");
            assert_eq!(statuses(&heads), [200, 200, 200], "piece {piece}");
            assert!(heads.iter().all(|h| !h.close));
        }
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers_are_read_past() {
        let chunked = "HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n\
            5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: yes\r\n\r\n";
        let bytes =
            format!("{chunked}HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n{chunked}");
        for piece in [1, 3, bytes.len()] {
            let (heads, end) = decode(bytes.as_bytes(), piece);
            assert_eq!(end, Ok(()), "piece {piece}");
            assert_eq!(statuses(&heads), [503, 404, 503], "piece {piece}");
        }
        let (heads, _) = decode(bytes.as_bytes(), 5);
        assert_eq!(
            heads[0].attempt(),
            Attempt::Retry {
                http_status: Some(503),
                reason: "HTTP 503 Service Unavailable".into(),
                retry_after: Some(Duration::from_secs(7)),
            },
            "classified as the reqwest path does, Retry-After included"
        );
        assert_eq!(
            heads[1].attempt(),
            Attempt::Done {
                http_status: Some(404),
                note: Some("was not cached".into())
            }
        );
    }

    #[test]
    fn connection_close_ends_the_answers_mid_pipeline() {
        let closing =
            "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close\r\nContent-Length: 2\r\n\r\nok";
        let bytes = format!("{PURGED}{closing}");
        let (heads, end) = decode(bytes.as_bytes(), 4);
        assert_eq!(end, Ok(()));
        assert_eq!(statuses(&heads), [200, 200]);
        assert_eq!(
            heads.iter().map(|h| h.close).collect::<Vec<_>>(),
            [false, true]
        );
        // HTTP/1.0 closes unless it keeps alive; a body without a length runs to the end.
        let old = "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(decode(old.as_bytes(), 100).0[0].close);
        let kept = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert!(!decode(kept.as_bytes(), 100).0[0].close);
        let unbounded = "HTTP/1.1 200 OK\r\n\r\nthe rest of the connection";
        let (heads, end) = decode(unbounded.as_bytes(), 3);
        assert_eq!((statuses(&heads), end), (vec![200], Ok(())));
        assert!(heads[0].close);
    }

    #[test]
    fn interim_and_bodiless_answers() {
        let bytes = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\
            HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n";
        let (heads, end) = decode(bytes.as_bytes(), 2);
        assert_eq!((statuses(&heads), end), (vec![204, 304], Ok(())));
    }

    #[test]
    fn garbage_and_truncated_answers_are_errors() {
        for (bytes, expected) in [
            ("<html>not http</html>\r\n\r\n", "invalid"),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
                "Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "conflicting",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "chunk size",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
                "longer than its size",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                "inside an answer's body",
            ),
            ("HTTP/1.1 200 OK\r\nContent-Le", "inside an answer's head"),
            (
                "HTTP/1.1 101 Switching Protocols\r\n\r\n",
                "switched protocols",
            ),
        ] {
            let (heads, end) = decode(bytes.as_bytes(), 3);
            assert!(heads.is_empty(), "{bytes:?}");
            let error = end.expect_err(bytes);
            assert!(error.contains(expected), "{bytes:?}: {error}");
        }
        // The answers before the garbage still count.
        let bytes = format!("{PURGED}garbage\r\n\r\n");
        let (heads, end) = decode(bytes.as_bytes(), 10);
        assert_eq!(statuses(&heads), [200]);
        assert!(end.is_err());
    }

    #[test]
    fn an_endless_head_is_an_error_not_unbounded_memory() {
        let mut decoder = Decoder::new();
        decoder.feed(b"HTTP/1.1 200 OK\r\nX-Padding: ");
        let mut error = None;
        for _ in 0..2 * MAX_HEAD / 1000 {
            decoder.feed(&[b'a'; 1000]);
            if let Err(e) = decoder.next_response() {
                error = Some(e);
                break;
            }
        }
        assert!(error.is_some_and(|e| e.contains("longer than 64 KiB")));
        assert!(decoder.buf.len() <= 2 * MAX_HEAD);
    }

    #[test]
    fn requests_have_the_reqwest_shape_back_to_back() {
        let mut requests = Requests::default();
        requests.push("/is/image/a?$p$&wid=10", "images.example.com");
        requests.push("/b", "127.0.0.1:8080");
        let second = format!(
            "PURGE /b HTTP/1.1\r\nhost: 127.0.0.1:8080\r\naccept: */*\r\nuser-agent: {USER_AGENT}\r\n\r\n"
        );
        assert_eq!(requests.len(), 2);
        assert_eq!(requests.from(1), second.as_bytes());
        assert!(
            requests.from(0).starts_with(
                b"PURGE /is/image/a?$p$&wid=10 HTTP/1.1\r\nhost: images.example.com\r\n"
            )
        );
        assert!(requests.from(2).is_empty());
    }
}
