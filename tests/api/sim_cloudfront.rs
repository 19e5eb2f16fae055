//! A loopback CloudFront API: checks SigV4 signatures the way AWS does (recomputed here with
//! plain HMAC-SHA256, independently of the app's signer), validates `InvalidationBatch`
//! bodies, keeps invalidations that complete after a set delay, enforces the 3,000 file paths
//! and, apart from them, the 15 wildcard paths (ending in `*`) in progress, and answers `CreateInvalidation`, `GetInvalidation` and `ListInvalidations` with
//! AWS's XML, errors as `<ErrorResponse>`.

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{Hmac, Mac};
use quick_xml::events::Event;
use sha2::{Digest, Sha256};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ACCESS_KEY_ID: &str = "AKIASIMULATOR0001";
pub const SECRET_ACCESS_KEY: &str = "sim/Secret+Access/Key0123456789abcdefXYZ";
pub const DISTRIBUTION_ID: &str = "E2SIMULATED01";
const XMLNS: &str = "http://cloudfront.amazonaws.com/doc/2020-05-31/";
const MAX_PATHS_IN_PROGRESS: usize = 3000;
const MAX_WILDCARDS_IN_PROGRESS: usize = 15;

/// One request as received, with the answer given.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path_and_query: String,
    pub authorization: String,
    pub body: String,
    pub status: u16,
    /// The error code answered, if any.
    pub error_code: Option<String>,
}

/// One invalidation the simulator holds.
#[derive(Debug, Clone)]
pub struct Invalidation {
    pub id: String,
    pub caller_reference: String,
    pub paths: Vec<String>,
    created: Instant,
}

#[derive(Default)]
struct State {
    /// Added to every answer: a real API is a round trip across the internet away.
    latency: Duration,
    received: Vec<Received>,
    invalidations: Vec<Invalidation>,
    complete_after: Duration,
    /// Errors to answer to the next CreateInvalidation requests, before doing anything.
    errors_before_create: Vec<(u16, String, String)>,
    /// How many CreateInvalidation requests get a 503 *after* the invalidation was created.
    fail_after_create: u32,
    /// Most paths in progress at once, seen when creating.
    peak_in_progress: usize,
    /// Most wildcard paths in progress at once, seen when creating.
    peak_wildcards_in_progress: usize,
    next_id: u32,
    /// The word for a finished invalidation (CloudFront: `Completed`; some compatible
    /// services: `COMPLETED`).
    completed_word: Option<&'static str>,
}

impl State {
    fn completed(&self, inv: &Invalidation) -> bool {
        inv.created.elapsed() >= self.complete_after
    }

    fn status(&self, inv: &Invalidation) -> &'static str {
        if self.completed(inv) {
            self.completed_word.unwrap_or("Completed")
        } else {
            "InProgress"
        }
    }

    fn in_progress(&self) -> impl Iterator<Item = &Invalidation> {
        self.invalidations.iter().filter(|i| !self.completed(i))
    }
}

#[derive(Clone)]
pub struct SimCloudFront {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters kept, everything else `%XX`.
fn uri_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// An AWS `<ErrorResponse>` answer.
fn aws_error(status: u16, code: &str, message: &str, request_id: &str) -> HttpResponse {
    let kind = if status >= 500 { "Receiver" } else { "Sender" };
    let body = format!(
        "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>{kind}</Type><Code>{code}</Code>\
         <Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        quick_xml::escape::escape(message)
    );
    HttpResponse::build(StatusCode::from_u16(status).unwrap())
        .insert_header(("x-amz-request-id", request_id))
        .content_type("text/xml")
        .body(body)
}

struct Failure {
    status: u16,
    code: String,
    message: String,
}

fn failure(status: u16, code: &str, message: impl Into<String>) -> Failure {
    Failure {
        status,
        code: code.into(),
        message: message.into(),
    }
}

/// `20240501T100000Z` as a time.
fn parse_amz_date(text: &str) -> Option<time::OffsetDateTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<u32>().ok();
    let month = time::Month::try_from(num(4..6)? as u8).ok()?;
    let date = time::Date::from_calendar_date(num(0..4)? as i32, month, num(6..8)? as u8).ok()?;
    let t = time::Time::from_hms(num(9..11)? as u8, num(11..13)? as u8, num(13..15)? as u8).ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc())
}

/// Verifies the SigV4 `Authorization` header of `req` over `body`, as AWS does.
fn verify_signature(req: &HttpRequest, body: &[u8]) -> Result<(), Failure> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let Some(auth) = header("authorization") else {
        return Err(failure(
            403,
            "MissingAuthenticationToken",
            "Missing Authentication Token",
        ));
    };
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(failure(
            400,
            "IncompleteSignature",
            format!("Authorization header requires the AWS4-HMAC-SHA256 algorithm: {auth}"),
        ));
    };
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(", ") {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v.to_string()),
            Some(("SignedHeaders", v)) => signed_headers = Some(v.to_string()),
            Some(("Signature", v)) => signature = Some(v.to_string()),
            _ => {}
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(failure(
            400,
            "IncompleteSignature",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'.",
        ));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = scope[..] else {
        return Err(failure(
            400,
            "IncompleteSignature",
            format!("Credential is malformed: {credential}"),
        ));
    };
    if key_id != ACCESS_KEY_ID {
        return Err(failure(
            403,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ));
    }
    if region != "us-east-1" {
        return Err(failure(
            403,
            "SignatureDoesNotMatch",
            format!("Credential should be scoped to a valid region, not '{region}'."),
        ));
    }
    if service != "cloudfront" || terminator != "aws4_request" {
        return Err(failure(
            403,
            "SignatureDoesNotMatch",
            format!(
                "Credential should be scoped to correct service: 'cloudfront', not '{service}'."
            ),
        ));
    }
    let Some(amz_date) = header("x-amz-date") else {
        return Err(failure(
            400,
            "IncompleteSignature",
            "Authorization requires an x-amz-date header.",
        ));
    };
    if !amz_date.starts_with(date) {
        return Err(failure(
            403,
            "SignatureDoesNotMatch",
            "Date in Credential scope does not match x-amz-date.",
        ));
    }
    let when = parse_amz_date(&amz_date)
        .ok_or_else(|| failure(400, "IncompleteSignature", "x-amz-date is malformed."))?;
    if (time::OffsetDateTime::now_utc() - when).abs() > time::Duration::minutes(5) {
        return Err(failure(
            403,
            "SignatureDoesNotMatch",
            "Signature expired: the request time is too far from the server time.",
        ));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") || !names.contains(&"x-amz-date") {
        return Err(failure(
            403,
            "SignatureDoesNotMatch",
            "SignedHeaders must include host and x-amz-date.",
        ));
    }
    let mut sorted = names.clone();
    sorted.sort_unstable();
    if sorted != names {
        return Err(failure(
            403,
            "SignatureDoesNotMatch",
            "SignedHeaders must be sorted.",
        ));
    }
    let mut canonical_headers = String::new();
    for name in &names {
        let values: Vec<String> = req
            .headers()
            .get_all(*name)
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() {
            return Err(failure(
                403,
                "SignatureDoesNotMatch",
                format!("Signed header {name} is missing from the request."),
            ));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    // Non-S3 services encode each path segment once more on top of the request's encoding.
    let canonical_uri: String = req
        .uri()
        .path()
        .split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/");
    let mut query: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k)),
                uri_encode(&percent_decode(v)),
            )
        })
        .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_request = format!(
        "{}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{}",
        req.method().as_str(),
        sha256_hex(body)
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let k_date = hmac(format!("AWS4{SECRET_ACCESS_KEY}").as_bytes(), date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    let k_signing = hmac(&k_service, "aws4_request");
    let expected = hex(&hmac(&k_signing, &string_to_sign));
    if expected != signature {
        return Err(failure(
            403,
            "SignatureDoesNotMatch",
            format!(
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method. The Canonical String for this request should have been\n\
                 '{canonical_request}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n"
            ),
        ));
    }
    Ok(())
}

/// Parsed `InvalidationBatch`: (namespace ok, CallerReference, Quantity, paths).
struct ParsedBatch {
    namespace: Option<String>,
    caller_reference: Option<String>,
    quantity: Option<String>,
    paths: Vec<String>,
}

fn parse_batch(xml: &str) -> Result<ParsedBatch, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut parsed = ParsedBatch {
        namespace: None,
        caller_reference: None,
        quantity: None,
        paths: Vec::new(),
    };
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if stack.is_empty() {
                    if name != "InvalidationBatch" {
                        return Err(format!("unexpected root element {name}"));
                    }
                    parsed.namespace = e
                        .try_get_attribute("xmlns")
                        .ok()
                        .flatten()
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned());
                }
                stack.push(name);
                text.clear();
            }
            Event::Empty(e) if e.local_name().as_ref() == b"Path" => {
                parsed.paths.push(String::new());
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| e.to_string())?),
            Event::GeneralRef(r) => {
                // quick-xml reports entity references apart from the text around them.
                let name = r.decode().map_err(|e| e.to_string())?;
                match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => text.push(c),
                    None => text.push_str(
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("unknown entity &{name};"))?,
                    ),
                }
            }
            Event::End(_) => {
                let path: Vec<&str> = stack.iter().map(String::as_str).collect();
                let value = std::mem::take(&mut text);
                match path[..] {
                    ["InvalidationBatch", "CallerReference"] => {
                        parsed.caller_reference = Some(value)
                    }
                    ["InvalidationBatch", "Paths", "Quantity"] => {
                        parsed.quantity = Some(value.trim().to_string())
                    }
                    ["InvalidationBatch", "Paths", "Items", "Path"] => parsed.paths.push(value),
                    _ => {}
                }
                stack.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(parsed)
}

/// A path CloudFront takes: leading `/`, at most 4,000 characters, `*` only last, and only
/// printable ASCII that is not RFC 1738 "unsafe" (those must arrive percent-encoded).
fn path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!("{path} does not begin with a slash"));
    }
    if path.chars().count() > 4000 {
        return Some("a path is longer than 4000 characters".into());
    }
    if path.trim_end_matches('*').contains('*') {
        return Some(format!("{path} has a wildcard before its end"));
    }
    if path.bytes().any(|b| {
        !b.is_ascii_graphic()
            || matches!(
                b,
                b'"' | b'<' | b'>' | b'{' | b'}' | b'|' | b'\\' | b'^' | b'`' | b'[' | b']'
            )
    }) {
        return Some(format!(
            "{path} contains unencoded unsafe or non-ASCII characters"
        ));
    }
    None
}

fn invalidation_xml(inv: &Invalidation, status: &str) -> String {
    let items: String = inv
        .paths
        .iter()
        .map(|p| format!("<Path>{}</Path>", quick_xml::escape::escape(p.as_str())))
        .collect();
    format!(
        "<?xml version=\"1.0\"?>\n<Invalidation xmlns=\"{XMLNS}\"><Id>{}</Id><Status>{status}</Status>\
         <CreateTime>2024-05-01T10:00:00.000Z</CreateTime><InvalidationBatch><Paths><Quantity>{}</Quantity>\
         <Items>{items}</Items></Paths><CallerReference>{}</CallerReference></InvalidationBatch></Invalidation>",
        inv.id,
        inv.paths.len(),
        quick_xml::escape::escape(inv.caller_reference.as_str())
    )
}

impl SimCloudFront {
    /// Starts the simulator; invalidations complete `complete_after` after being created.
    pub async fn start(complete_after: Duration) -> Self {
        let state = Arc::new(Mutex::new(State {
            complete_after,
            ..State::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = state.clone();
        let server = HttpServer::new(move || {
            let state = shared.clone();
            App::new()
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                    let state = state.clone();
                    async move {
                        let latency = state.lock().unwrap().latency;
                        tokio::time::sleep(latency).await;
                        handle(&state, port, &req, &body)
                    }
                }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self { port, state }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every answer comes `latency` after its request (`benches/estimate_accuracy.rs`).
    #[allow(dead_code)]
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// CreateInvalidation requests received (every POST), in order.
    pub fn creates(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }

    pub fn invalidations(&self) -> Vec<Invalidation> {
        self.state.lock().unwrap().invalidations.clone()
    }

    pub fn peak_in_progress(&self) -> usize {
        self.state.lock().unwrap().peak_in_progress
    }

    /// Most wildcard paths it had in progress at once (CloudFront allows 15).
    pub fn peak_wildcards_in_progress(&self) -> usize {
        self.state.lock().unwrap().peak_wildcards_in_progress
    }

    /// Answers the next CreateInvalidation with this AWS error (queued, one per request).
    pub fn fail_next_create(&self, status: u16, code: &str, message: &str) {
        self.state
            .lock()
            .unwrap()
            .errors_before_create
            .push((status, code.into(), message.into()));
    }

    /// Reports finished invalidations with `word` instead of `Completed`.
    pub fn say_completed_as(&self, word: &'static str) {
        self.state.lock().unwrap().completed_word = Some(word);
    }

    /// Creates the next `n` invalidations but answers 503 ServiceUnavailable, as AWS sometimes does at peak.
    pub fn fail_after_create(&self, n: u32) {
        self.state.lock().unwrap().fail_after_create = n;
    }
}

fn handle(state: &Mutex<State>, port: u16, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let mut st = state.lock().unwrap();
    st.next_id += 1;
    let request_id = format!("sim-{:08}-0000-4000-8000-000000000000", st.next_id);
    let (response, error_code) = match route(&mut st, port, req, body) {
        Ok(r) => (r, None),
        Err(f) => (
            aws_error(f.status, &f.code, &f.message, &request_id),
            Some(f.code),
        ),
    };
    let response = {
        let mut r = response;
        r.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-amz-request-id"),
            request_id.parse().unwrap(),
        );
        r
    };
    st.received.push(Received {
        method: req.method().to_string(),
        path_and_query: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: String::from_utf8_lossy(body).into_owned(),
        status: response.status().as_u16(),
        error_code,
    });
    response
}

fn route(
    st: &mut State,
    port: u16,
    req: &HttpRequest,
    body: &[u8],
) -> Result<HttpResponse, Failure> {
    verify_signature(req, body)?;
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/2020-05-31/distribution/") else {
        return Err(failure(404, "NotFound", format!("No API at {path}")));
    };
    let mut parts = rest.split('/');
    let (dist, what, id) = (parts.next(), parts.next(), parts.next());
    if what != Some("invalidation") || parts.next().is_some() {
        return Err(failure(404, "NotFound", format!("No API at {path}")));
    }
    if dist != Some(DISTRIBUTION_ID) {
        return Err(failure(
            404,
            "NoSuchDistribution",
            "The specified distribution does not exist.",
        ));
    }
    match (req.method().as_str(), id) {
        ("POST", None) => create(st, port, body),
        ("GET", Some(id)) => {
            let inv = st
                .invalidations
                .iter()
                .find(|i| i.id == id)
                .ok_or_else(|| {
                    failure(
                        404,
                        "NoSuchInvalidation",
                        "The specified invalidation does not exist.",
                    )
                })?;
            let status = st.status(inv);
            Ok(HttpResponse::Ok()
                .content_type("text/xml")
                .body(invalidation_xml(inv, status)))
        }
        ("GET", None) => Ok(list(st, req)),
        _ => Err(failure(
            405,
            "MethodNotAllowed",
            "The method is not allowed here.",
        )),
    }
}

fn create(st: &mut State, port: u16, body: &[u8]) -> Result<HttpResponse, Failure> {
    if !st.errors_before_create.is_empty() {
        let (status, code, message) = st.errors_before_create.remove(0);
        return Err(failure(status, &code, message));
    }
    if body.is_empty() {
        return Err(failure(
            400,
            "MissingBody",
            "This operation requires a body. Ensure that the body is present and the Content-Type header is set.",
        ));
    }
    let xml = std::str::from_utf8(body)
        .map_err(|_| failure(400, "MalformedInput", "The body is not UTF-8."))?;
    let batch = parse_batch(xml).map_err(|e| {
        failure(
            400,
            "MalformedInput",
            format!("Could not parse the XML: {e}"),
        )
    })?;
    if batch.namespace.as_deref() != Some(XMLNS) {
        return Err(failure(
            400,
            "MalformedInput",
            format!("InvalidationBatch must be in the namespace {XMLNS}"),
        ));
    }
    let caller_reference = batch
        .caller_reference
        .filter(|c| !c.is_empty())
        .ok_or_else(|| failure(400, "InvalidArgument", "CallerReference is required."))?;
    let quantity: usize = batch
        .quantity
        .and_then(|q| q.parse().ok())
        .ok_or_else(|| failure(400, "InvalidArgument", "Paths/Quantity is required."))?;
    if quantity != batch.paths.len() {
        return Err(failure(
            400,
            "InconsistentQuantities",
            "The value of Quantity and the size of Items don't match.",
        ));
    }
    if batch.paths.is_empty() {
        return Err(failure(
            400,
            "InvalidArgument",
            "Paths/Items must not be empty.",
        ));
    }
    if batch.paths.len() > MAX_PATHS_IN_PROGRESS {
        return Err(failure(
            413,
            "BatchTooLarge",
            "Invalidation batch specified is too large.",
        ));
    }
    if let Some(problem) = batch.paths.iter().find_map(|p| path_problem(p)) {
        return Err(failure(
            400,
            "InvalidArgument",
            format!("Your request contains one or more invalid invalidation paths: {problem}."),
        ));
    }
    let location = |id: &str| {
        format!(
            "http://127.0.0.1:{port}/2020-05-31/distribution/{DISTRIBUTION_ID}/invalidation/{id}"
        )
    };
    if let Some(existing) = st
        .invalidations
        .iter()
        .find(|i| i.caller_reference == caller_reference)
    {
        let mut a = existing.paths.clone();
        let mut b = batch.paths.clone();
        a.sort();
        b.sort();
        if a != b {
            return Err(failure(
                409,
                "InvalidationBatchAlreadyExists",
                format!(
                    "CallerReference {caller_reference} was already used for an invalidation batch with different paths."
                ),
            ));
        }
        let status = st.status(existing);
        return Ok(HttpResponse::Created()
            .insert_header(("Location", location(&existing.id)))
            .content_type("text/xml")
            .body(invalidation_xml(existing, status)));
    }
    let files_in_progress: usize = st
        .in_progress()
        .flat_map(|i| &i.paths)
        .filter(|p| !p.ends_with('*'))
        .count();
    let wildcards_in_progress: usize = st
        .in_progress()
        .flat_map(|i| &i.paths)
        .filter(|p| p.ends_with('*'))
        .count();
    let new_files = batch.paths.iter().filter(|p| !p.ends_with('*')).count();
    let new_wildcards = batch.paths.len() - new_files;
    if files_in_progress + new_files > MAX_PATHS_IN_PROGRESS
        || wildcards_in_progress + new_wildcards > MAX_WILDCARDS_IN_PROGRESS
    {
        return Err(failure(
            400,
            "TooManyInvalidationsInProgress",
            format!(
                "Processing your request will cause you to exceed the maximum number of in-progress invalidations \
                 ({files_in_progress} file paths and {wildcards_in_progress} wildcard paths in progress)."
            ),
        ));
    }
    let inv = Invalidation {
        id: format!("I{:013}", st.invalidations.len() + 1),
        caller_reference,
        paths: batch.paths,
        created: Instant::now(),
    };
    st.peak_in_progress = st.peak_in_progress.max(files_in_progress + new_files);
    st.peak_wildcards_in_progress = st
        .peak_wildcards_in_progress
        .max(wildcards_in_progress + new_wildcards);
    let response = HttpResponse::Created()
        .insert_header(("Location", location(&inv.id)))
        .content_type("text/xml")
        .body(invalidation_xml(&inv, "InProgress"));
    st.invalidations.push(inv);
    if st.fail_after_create > 0 {
        st.fail_after_create -= 1;
        return Err(failure(
            503,
            "ServiceUnavailable",
            "CloudFront is temporarily unable to process the request.",
        ));
    }
    Ok(response)
}

fn list(st: &State, req: &HttpRequest) -> HttpResponse {
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let max_items: usize = get("MaxItems").and_then(|v| v.parse().ok()).unwrap_or(100);
    let marker = get("Marker").unwrap_or_default();
    // Newest first; `Marker` is the Id to continue after.
    let newest_first: Vec<&Invalidation> = st.invalidations.iter().rev().collect();
    let start = if marker.is_empty() {
        0
    } else {
        newest_first
            .iter()
            .position(|i| i.id == marker)
            .map_or(newest_first.len(), |p| p + 1)
    };
    let page: Vec<&&Invalidation> = newest_first.iter().skip(start).take(max_items).collect();
    let truncated = start + page.len() < newest_first.len();
    let items: String = page
        .iter()
        .map(|i| {
            let status = st.status(i);
            format!(
                "<InvalidationSummary><Id>{}</Id><CreateTime>2024-05-01T10:00:00.000Z</CreateTime><Status>{status}</Status></InvalidationSummary>",
                i.id
            )
        })
        .collect();
    let next_marker = if truncated {
        page.last()
            .map(|i| format!("<NextMarker>{}</NextMarker>", i.id))
            .unwrap_or_default()
    } else {
        String::new()
    };
    HttpResponse::Ok().content_type("text/xml").body(format!(
        "<?xml version=\"1.0\"?>\n<InvalidationList xmlns=\"{XMLNS}\"><Marker>{marker}</Marker>{next_marker}\
         <MaxItems>{max_items}</MaxItems><IsTruncated>{truncated}</IsTruncated><Quantity>{}</Quantity>\
         <Items>{items}</Items></InvalidationList>",
        page.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request signed with the wrong secret or changed after signing is refused, as AWS would.
    #[tokio::test]
    async fn the_simulator_rejects_bad_signatures_and_checks_batches() {
        use aws_credential_types::Credentials;
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        use aws_sigv4::sign::v4;

        let sim = SimCloudFront::start(Duration::from_secs(60)).await;
        let client = reqwest::Client::new();
        let url = format!(
            "{}/2020-05-31/distribution/{DISTRIBUTION_ID}/invalidation",
            sim.base()
        );
        let send = |secret: &'static str, signed_body: String, sent_body: String| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let identity = Credentials::new(ACCESS_KEY_ID, secret, None, None, "t").into();
                let params = v4::SigningParams::builder()
                    .identity(&identity)
                    .region("us-east-1")
                    .name("cloudfront")
                    .time(std::time::SystemTime::now())
                    .settings(SigningSettings::default())
                    .build()
                    .unwrap()
                    .into();
                let signable = SignableRequest::new(
                    "POST",
                    url.as_str(),
                    std::iter::empty(),
                    SignableBody::Bytes(signed_body.as_bytes()),
                )
                .unwrap();
                let (instructions, _) = sign(signable, &params).unwrap().into_parts();
                let mut r = client.post(&url).body(sent_body);
                for (k, v) in instructions.headers() {
                    r = r.header(k, v);
                }
                let response = r.send().await.unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            }
        };
        let body = |paths: &[&str], quantity: usize, reference: &str| {
            let items: String = paths.iter().map(|p| format!("<Path>{p}</Path>")).collect();
            format!(
                "<InvalidationBatch xmlns=\"{XMLNS}\"><Paths><Quantity>{quantity}</Quantity><Items>{items}</Items></Paths>\
                 <CallerReference>{reference}</CallerReference></InvalidationBatch>"
            )
        };
        let ok = body(&["/a", "/b?x=1&amp;y=2"], 2, "r1");
        let (status, text) = send("wrong-secret", ok.clone(), ok.clone()).await;
        assert_eq!(status, 403);
        assert!(
            text.contains("<Code>SignatureDoesNotMatch</Code>"),
            "{text}"
        );
        let (status, text) = send(SECRET_ACCESS_KEY, ok.clone(), body(&["/c"], 1, "r1")).await;
        assert_eq!(status, 403, "a body changed after signing: {text}");
        let (status, text) = send(SECRET_ACCESS_KEY, ok.clone(), ok.clone()).await;
        assert_eq!(status, 201, "{text}");
        assert!(text.contains("<Status>InProgress</Status>"), "{text}");
        assert_eq!(sim.invalidations()[0].paths, ["/a", "/b?x=1&y=2"]);
        // Same reference, same paths: the same invalidation again; different paths: 409.
        let (status, _) = send(SECRET_ACCESS_KEY, ok.clone(), ok.clone()).await;
        assert_eq!((status, sim.invalidations().len()), (201, 1));
        let other = body(&["/z"], 1, "r1");
        let (status, text) = send(SECRET_ACCESS_KEY, other.clone(), other).await;
        assert_eq!(status, 409);
        assert!(text.contains("InvalidationBatchAlreadyExists"), "{text}");
        for (b, code) in [
            (body(&["/a"], 2, "r2"), "InconsistentQuantities"),
            (body(&["a"], 1, "r3"), "InvalidArgument"),
            (body(&["/a b"], 1, "r4"), "InvalidArgument"),
        ] {
            let (status, text) = send(SECRET_ACCESS_KEY, b.clone(), b).await;
            assert_eq!(status, 400, "{code}");
            assert!(text.contains(code), "{text}");
        }
        let many: Vec<String> = (0..3001).map(|i| format!("/{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let big = body(&refs, 3001, "r5");
        let (status, text) = send(SECRET_ACCESS_KEY, big.clone(), big).await;
        assert_eq!(status, 413);
        assert!(text.contains("BatchTooLarge"), "{text}");
        // 2 in progress + 2,999 more would pass 3,000.
        let full = body(&refs[..2999], 2999, "r6");
        let (status, text) = send(SECRET_ACCESS_KEY, full.clone(), full).await;
        assert_eq!(status, 400);
        assert!(text.contains("TooManyInvalidationsInProgress"), "{text}");
        // Wildcards are counted apart: 15 fit beside the file paths, a 16th does not.
        let stars: Vec<String> = (0..16).map(|i| format!("/w{i}*")).collect();
        let stars: Vec<&str> = stars.iter().map(String::as_str).collect();
        let fifteen = body(&stars[..15], 15, "r7");
        let (status, text) = send(SECRET_ACCESS_KEY, fifteen.clone(), fifteen).await;
        assert_eq!(status, 201, "{text}");
        let one_more = body(&stars[15..], 1, "r8");
        let (status, text) = send(SECRET_ACCESS_KEY, one_more.clone(), one_more).await;
        assert_eq!(status, 400);
        assert!(
            text.contains("TooManyInvalidationsInProgress") && text.contains("15 wildcard"),
            "{text}"
        );
        let file = body(&["/plain"], 1, "r9");
        let (status, text) = send(SECRET_ACCESS_KEY, file.clone(), file).await;
        assert_eq!(status, 201, "a file path still fits: {text}");
    }
}
