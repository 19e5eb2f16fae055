//! AWS CloudFront `CreateInvalidation`: SigV4-signed XML requests of at most 3,000 paths,
//! polled with `GetInvalidation` until CloudFront reports them `Completed`. A path prefix is
//! sent as a wildcard path (`/is/image/Company/Backpack_B*`) and everything as `/*`; CloudFront
//! has no cache tags.
//!
//! API: <https://docs.aws.amazon.com/cloudfront/latest/APIReference/API_CreateInvalidation.html>.
//! The endpoint `cloudfront.amazonaws.com` lives in us-east-1 (AWS General Reference,
//! "Amazon CloudFront endpoints and quotas"), so requests are signed for `us-east-1/cloudfront`.

use super::{
    Attempt, Batch, BoxFuture, Context, Field, FieldError, FieldKind, Measured, Model, OVERHEAD_MS,
    Poll, ProviderKind, PurgeConfig, PurgeResult, Purger, Receipt, Scope, Sending, Values,
    describe_error, lines, parse_base_url, retry_after, value,
};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use quick_xml::events::Event;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};
use url::Url;

/// The API version every path starts with.
const API_VERSION: &str = "2020-05-31";
/// Namespace of the request body, as the API reference writes it.
const XMLNS: &str = "http://cloudfront.amazonaws.com/doc/2020-05-31/";
/// Region and service name the global endpoint is signed for.
const REGION: &str = "us-east-1";
const SERVICE: &str = "cloudfront";
/// Most file paths in progress per distribution (and so per request).
pub const MAX_PATHS: usize = 3000;
/// Most wildcard paths (ending in `*`) in progress per distribution, counted apart from the
/// 3,000 file paths; beyond either, CloudFront answers `TooManyInvalidationsInProgress`
/// (developer guide, "Invalidating files": concurrent invalidation request maximum).
pub const MAX_WILDCARDS: usize = 15;
/// Round trip assumed for `CreateInvalidation` before one has been measured.
const UNMEASURED_REQUEST_MS: f64 = 500.0;
/// The completion time assumed before this installation has seen one complete: the middle of
/// the 60–300 s commonly quoted (no official figure exists).
const TYPICAL_COMPLETION: Duration = Duration::from_secs(120);
/// A provider value no form has: benchmarks run CloudFront's completion this many times
/// faster (the simulator's, and the model's typical time with it).
pub const TIME_SCALE_VALUE: &str = "cloudfront_time_scale";
/// Longest invalidation path CloudFront accepts.
const MAX_PATH_CHARS: usize = 4000;

/// AWS CloudFront, one distribution.
pub struct CloudFrontKind;

const FIELDS: &[Field] = &[
    Field {
        name: "cloudfront_base_url",
        label: "CloudFront API base URL",
        help: "The CloudFront API endpoint. Change it only to point at a test double.",
        kind: FieldKind::Text,
        default: "https://cloudfront.amazonaws.com",
        docs: "",
    },
    Field {
        name: "cloudfront_distribution_id",
        label: "Distribution ID",
        help: "The distribution whose edge caches are invalidated, e.g. E2QWRUHAPOMQZL.",
        kind: FieldKind::Text,
        default: "",
        docs: "",
    },
    Field {
        name: "cloudfront_domains",
        label: "Distribution domain names",
        help: "One per line: the distribution's domain (d111111abcdef8.cloudfront.net) and its alternate \
               domain names (CNAMEs). Only URLs on these hosts can be invalidated; CloudFront is sent their path.",
        kind: FieldKind::Lines,
        default: "",
        docs: "",
    },
    Field {
        name: "cloudfront_access_key_id",
        label: "Access key ID",
        help: "Of an IAM user or role allowed cloudfront:CreateInvalidation, GetInvalidation and ListInvalidations.",
        kind: FieldKind::Secret,
        default: "",
        docs: "",
    },
    Field {
        name: "cloudfront_secret_access_key",
        label: "Secret access key",
        help: "The secret that goes with the access key ID.",
        kind: FieldKind::Secret,
        default: "",
        docs: "",
    },
    Field {
        name: "cloudfront_session_token",
        label: "Session token (optional)",
        help: "Only for temporary credentials (STS); leave empty for long-term access keys.",
        kind: FieldKind::Secret,
        default: "",
        docs: "",
    },
];

fn error(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// A domain line as a lower-case host: accepts `host`, `host:port` or a URL, as admins paste them.
fn parse_domain(line: &str) -> Result<String, String> {
    let text = line.trim().trim_end_matches('/');
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("https://{text}")
    };
    let url =
        Url::parse(&with_scheme).map_err(|e| format!("\"{line}\" is not a host name ({e})."))?;
    match url.host_str() {
        Some(host) if !host.is_empty() && url.path() == "/" && url.query().is_none() => {
            Ok(host.to_ascii_lowercase())
        }
        _ => Err(format!(
            "\"{line}\" must be a host name such as d111111abcdef8.cloudfront.net."
        )),
    }
}

/// The settings a purger needs, validated.
struct Settings {
    base: Url,
    distribution_id: String,
    domains: Vec<String>,
    credentials: Credentials,
}

fn parse_settings(values: &Values) -> Result<Settings, Vec<FieldError>> {
    let kind = &CloudFrontKind;
    let get = |name: &str| value(kind, values, name).trim().to_string();
    let mut errors = Vec::new();
    let base = match parse_base_url(&get("cloudfront_base_url")) {
        Ok(u) if u.path() == "/" => Some(u),
        Ok(_) => {
            errors.push(error(
                "cloudfront_base_url",
                "The API base URL must not have a path: requests go to /2020-05-31/….",
            ));
            None
        }
        Err(e) => {
            errors.push(error("cloudfront_base_url", e));
            None
        }
    };
    let distribution_id = get("cloudfront_distribution_id");
    if distribution_id.is_empty() {
        errors.push(error(
            "cloudfront_distribution_id",
            "Enter the distribution ID (CloudFront console, Distributions, ID column).",
        ));
    } else if !distribution_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        errors.push(error(
            "cloudfront_distribution_id",
            format!(
                "\"{distribution_id}\" is not a distribution ID: it has only letters and digits, e.g. E2QWRUHAPOMQZL."
            ),
        ));
    }
    let mut domains = Vec::new();
    for (number, line) in lines(value(kind, values, "cloudfront_domains")) {
        match parse_domain(line) {
            Ok(host) if !domains.contains(&host) => domains.push(host),
            Ok(_) => {}
            Err(reason) => errors.push(error(
                "cloudfront_domains",
                format!("Line {number}: {reason}"),
            )),
        }
    }
    if domains.is_empty() && errors.iter().all(|e| e.field != "cloudfront_domains") {
        errors.push(error(
            "cloudfront_domains",
            "Enter at least one of the distribution's domain names.",
        ));
    }
    let key_id = get("cloudfront_access_key_id");
    let secret = get("cloudfront_secret_access_key");
    if key_id.is_empty() {
        errors.push(error(
            "cloudfront_access_key_id",
            "Enter the access key ID.",
        ));
    }
    if secret.is_empty() {
        errors.push(error(
            "cloudfront_secret_access_key",
            "Enter the secret access key.",
        ));
    }
    let token = get("cloudfront_session_token");
    match base {
        Some(base) if errors.is_empty() => Ok(Settings {
            base,
            distribution_id,
            domains,
            credentials: Credentials::new(
                key_id,
                secret,
                (!token.is_empty()).then_some(token),
                None,
                "cdn-invalidator settings",
            ),
        }),
        _ => Err(errors),
    }
}

impl ProviderKind for CloudFrontKind {
    fn name(&self) -> &'static str {
        "cloudfront"
    }

    fn short_name(&self) -> &'static str {
        "CloudFront"
    }

    fn label(&self) -> &'static str {
        "AWS CloudFront (CreateInvalidation)"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn prepare(&self, values: &mut Values) -> Vec<FieldError> {
        // Keep domains as the hosts they are compared as; leave lines that do not parse for
        // `validate` to name.
        if let Some(text) = values.get_mut("cloudfront_domains") {
            *text = lines(text)
                .map(|(_, l)| parse_domain(l).unwrap_or_else(|_| l.to_string()))
                .collect::<Vec<_>>()
                .join("\n");
        }
        if let Some(id) = values.get_mut("cloudfront_distribution_id") {
            *id = id.trim().to_string();
        }
        Vec::new()
    }

    fn validate(&self, values: &Values) -> Vec<FieldError> {
        parse_settings(values).err().unwrap_or_default()
    }

    fn served_hosts(&self, values: &Values) -> Option<(Vec<String>, String)> {
        let domains: Vec<String> = lines(value(self, values, "cloudfront_domains"))
            .filter_map(|(_, l)| parse_domain(l).ok())
            .collect();
        let id = value(self, values, "cloudfront_distribution_id").trim();
        Some((domains, format!("CloudFront distribution {id}")))
    }

    fn check_prefix(&self, values: &Values, prefix: &Url) -> Result<(), String> {
        let domains: Vec<String> = lines(value(self, values, "cloudfront_domains"))
            .filter_map(|(_, l)| parse_domain(l).ok())
            .collect();
        wildcard_path(prefix, &domains).map(drop)
    }

    fn describe(&self, values: &Values) -> String {
        let id = value(self, values, "cloudfront_distribution_id").trim();
        let domains: Vec<&str> = lines(value(self, values, "cloudfront_domains"))
            .map(|(_, l)| l)
            .collect();
        if domains.is_empty() {
            format!("AWS CloudFront distribution {id}")
        } else {
            format!("AWS CloudFront distribution {id} ({})", domains.join(", "))
        }
    }

    /// Waves of at most 3,000 paths in progress, each completing after [`TYPICAL_COMPLETION`]
    /// and seen at the next status poll. AWS publishes no completion time (the 60–300 s often
    /// quoted is third-party lore, and runs over 10 minutes are reported), so the figure is a
    /// starting point that this installation's own completed invalidations correct.
    fn model(&self, values: &Values, config: &PurgeConfig, measured: Option<Measured>) -> Model {
        let scale = super::speed_up(values, TIME_SCALE_VALUE);
        Model {
            sending: Sending::Capped {
                per_request: MAX_PATHS,
                cap: MAX_PATHS,
                request_ms: measured.map_or(UNMEASURED_REQUEST_MS, |m| m.request_ms),
                completion_ms: TYPICAL_COMPLETION.as_secs_f64() * 1000.0 / scale,
                poll_ms: config.poll_interval.as_secs_f64() * 1000.0,
            },
            clearing_ms: 0.0,
            overhead_ms: OVERHEAD_MS,
        }
    }

    /// Prefixes: waves of at most 15 wildcards in progress, each completing like a wave of
    /// paths. Everything: one `/*` request, whatever the sites.
    fn model_for(
        &self,
        scope: Scope,
        values: &Values,
        config: &PurgeConfig,
        measured: Option<Measured>,
    ) -> Model {
        let mut model = self.model(values, config, measured);
        let cap = match scope {
            Scope::Prefixes => MAX_WILDCARDS,
            Scope::Everything => usize::MAX,
            Scope::Urls | Scope::Tags => return model,
        };
        if let Sending::Capped {
            per_request,
            cap: in_progress,
            ..
        } = &mut model.sending
        {
            *per_request = cap;
            *in_progress = cap;
        }
        model
    }

    /// Path prefixes become wildcard paths and everything `/*`. A wildcard path is billed as
    /// one path, however many files it clears (developer guide, "Paying for file
    /// invalidation"), so a prefix costs what one listed URL costs.
    fn scopes(&self, _values: &Values) -> Vec<Scope> {
        vec![Scope::Prefixes, Scope::Everything]
    }

    /// The 3,000 paths and 15 wildcards in progress are counted per distribution.
    fn pacing_key(&self, values: &Values) -> Option<String> {
        Some(
            value(self, values, "cloudfront_distribution_id")
                .trim()
                .to_string(),
        )
    }

    fn build(&self, values: &Values, ctx: &Context) -> anyhow::Result<Box<dyn Purger>> {
        let settings = parse_settings(values).map_err(|e| anyhow::anyhow!("{}", e[0].message))?;
        Ok(Box::new(CloudFront {
            client: ctx.client.clone(),
            settings,
        }))
    }
}

/// The path CloudFront is sent for `url`: path and `?query`, with non-ASCII and RFC 1738
/// "unsafe" characters percent-encoded and everything else (existing `%XX` escapes
/// included) left as it is, because CloudFront misses paths encoded any further.
pub fn invalidation_path(url: &Url) -> String {
    let raw = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len() + 1);
    if !raw.starts_with('/') {
        out.push('/');
    }
    for (i, &b) in bytes.iter().enumerate() {
        let escape_ok = b == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        let unsafe_char = matches!(
            b,
            b' ' | b'"' | b'<' | b'>' | b'{' | b'}' | b'|' | b'\\' | b'^' | b'`' | b'[' | b']'
        ) || (b == b'%' && !escape_ok)
            || b.is_ascii_control()
            || !b.is_ascii();
        if unsafe_char {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Why `url` cannot go to this distribution, if it cannot.
fn check_url(url: &Url, domains: &[String]) -> Result<String, String> {
    check_host(url, domains)?;
    check_length(invalidation_path(url))
}

/// Why `url`'s host is not one of this distribution's domains, if it is not.
fn check_host(url: &Url, domains: &[String]) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if domains.contains(&host) {
        Ok(())
    } else {
        Err(format!(
            "{host} is not a domain of this CloudFront distribution (configured: {})",
            domains.join(", ")
        ))
    }
}

/// `path`, unless it is longer than CloudFront accepts.
fn check_length(path: String) -> Result<String, String> {
    if path.chars().count() > MAX_PATH_CHARS {
        return Err(format!(
            "the path is longer than CloudFront's limit of {MAX_PATH_CHARS} characters"
        ));
    }
    Ok(path)
}

/// The wildcard path for the prefix `url`: its path, encoded as URL paths are, then `*`
/// (`/is/image/Company/Backpack_B*`). CloudFront takes `*` only as a path's last character,
/// so a prefix with a `*` of its own, a query or a fragment is refused.
fn wildcard_path(url: &Url, domains: &[String]) -> Result<String, String> {
    check_host(url, domains)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "the prefix {url} has a query or fragment, which a CloudFront wildcard path cannot have"
        ));
    }
    let path = invalidation_path(url);
    if path.contains('*') {
        return Err(format!(
            "the prefix {path} contains \"*\"; CloudFront allows a wildcard only at the end of a path"
        ));
    }
    check_length(path + "*")
}

/// What one row of a batch of `scope` is sent as (the URL's path, a prefix's wildcard path,
/// `/*` for a site), or why it cannot go to this distribution.
fn path_for(scope: Scope, url: &Url, domains: &[String]) -> Result<String, String> {
    match scope {
        Scope::Urls => check_url(url, domains),
        Scope::Prefixes => wildcard_path(url, domains),
        Scope::Everything => check_host(url, domains).map(|()| "/*".to_string()),
        Scope::Tags => Err("CloudFront cannot purge by cache tag".into()),
    }
}

/// The `InvalidationBatch` request body for `paths`.
pub fn invalidation_batch_xml(paths: &[String], caller_reference: &str) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><InvalidationBatch xmlns=\"{XMLNS}\"><Paths><Quantity>{}</Quantity><Items>",
        paths.len()
    );
    for path in paths {
        xml.push_str("<Path>");
        xml.push_str(&quick_xml::escape::escape(path.as_str()));
        xml.push_str("</Path>");
    }
    xml.push_str("</Items></Paths><CallerReference>");
    xml.push_str(&quick_xml::escape::escape(caller_reference));
    xml.push_str("</CallerReference></InvalidationBatch>");
    xml
}

/// Text of the first element with each of `names` (local names, any depth) in `xml`.
fn xml_fields<const N: usize>(xml: &str, names: [&str; N]) -> [Option<String>; N] {
    let mut found: [Option<String>; N] = std::array::from_fn(|_| None);
    let mut reader = quick_xml::Reader::from_str(xml);
    // The field being read and its text so far (quick-xml reports `&amp;` apart from the text).
    let mut current: Option<(usize, String)> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let local = e.local_name();
                current = names
                    .iter()
                    .position(|n| n.as_bytes() == local.as_ref())
                    .filter(|&i| found[i].is_none())
                    .map(|i| (i, String::new()));
            }
            Ok(Event::Text(t)) => {
                if let (Some((_, text)), Ok(s)) = (current.as_mut(), t.decode()) {
                    text.push_str(&s);
                }
            }
            Ok(Event::GeneralRef(r)) => {
                if let Some((_, text)) = current.as_mut() {
                    if let Ok(Some(c)) = r.resolve_char_ref() {
                        text.push(c);
                    } else if let Some(s) = r
                        .decode()
                        .ok()
                        .and_then(|name| quick_xml::escape::resolve_predefined_entity(&name))
                    {
                        text.push_str(s);
                    }
                }
            }
            Ok(Event::End(_)) => {
                if let Some((i, text)) = current.take() {
                    found[i] = Some(text.trim().to_string());
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    found
}

/// An `<ErrorResponse>` from CloudFront.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
}

impl AwsError {
    /// Parses an `ErrorResponse` body; `None` when the body is not one.
    pub fn parse(body: &str, header_request_id: Option<&str>) -> Option<Self> {
        let [code, message, request_id] = xml_fields(body, ["Code", "Message", "RequestId"]);
        Some(Self {
            code: code?,
            message: message.unwrap_or_default(),
            request_id: request_id.or_else(|| header_request_id.map(str::to_string)),
        })
    }

    /// Errors that go away by waiting: too much in progress, throttling, AWS-side trouble.
    fn transient(&self) -> bool {
        matches!(
            self.code.as_str(),
            "TooManyInvalidationsInProgress"
                | "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "ServiceUnavailable"
                | "InternalError"
                | "InternalFailure"
                | "RequestTimeout"
        )
    }
}

/// "CloudFront 403 AccessDenied: <message> (request id …)", or the HTTP status and the body's
/// start when the body is not an AWS error.
fn describe_answer(status: reqwest::StatusCode, error: Option<&AwsError>, body: &str) -> String {
    let code = status.as_u16();
    match error {
        Some(e) => {
            let mut text = format!("CloudFront {code} {}", e.code);
            if !e.message.is_empty() {
                text.push_str(": ");
                text.push_str(&e.message);
            }
            if let Some(id) = &e.request_id {
                text.push_str(&format!(" (request id {id})"));
            }
            text
        }
        None => {
            let snippet: String = body.trim().chars().take(200).collect();
            let reason = status.canonical_reason().unwrap_or("");
            if snippet.is_empty() {
                format!("CloudFront HTTP {code} {reason}")
                    .trim_end()
                    .to_string()
            } else {
                format!("CloudFront HTTP {code} {reason}: {snippet}")
            }
        }
    }
}

/// What CloudFront answered, read in full.
struct Answer {
    status: reqwest::StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn error(&self) -> Option<AwsError> {
        let header_id = self
            .headers
            .get("x-amz-request-id")
            .and_then(|v| v.to_str().ok());
        AwsError::parse(&self.body, header_id)
    }

    /// The `Attempt` a non-2xx answer stands for.
    fn failure(&self) -> Attempt {
        let error = self.error();
        let reason = describe_answer(self.status, error.as_ref(), &self.body);
        let http_status = Some(self.status.as_u16());
        let transient = self.status.as_u16() == 429
            || self.status.is_server_error()
            || error.as_ref().is_some_and(AwsError::transient);
        if transient {
            Attempt::Retry {
                http_status,
                reason,
                retry_after: retry_after(&self.headers),
            }
        } else {
            Attempt::Fail {
                http_status,
                reason,
            }
        }
    }
}

/// The parts of a request that SigV4 signs.
#[derive(Clone, Copy)]
struct Unsigned<'a> {
    method: &'a str,
    url: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: &'a [u8],
}

/// Signs a request for SigV4 and returns the headers to add (`authorization`, `x-amz-date`,
/// `x-amz-security-token` when there is a session token). Signs `content-type` when given.
/// `(service, region)` is the credential scope.
fn sign_headers(
    credentials: &Credentials,
    (service, region): (&str, &str),
    request: &Unsigned<'_>,
    time: SystemTime,
) -> anyhow::Result<Vec<(String, String)>> {
    let Unsigned {
        method,
        url,
        headers,
        body,
    } = *request;
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )?;
    let (instructions, _signature) = sign(request, &params)?.into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Sends CloudFront invalidations for one distribution.
pub struct CloudFront {
    client: reqwest::Client,
    settings: Settings,
}

impl std::fmt::Debug for CloudFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Credentials`' own Debug redacts the secret; spell out what is shown anyway.
        f.debug_struct("CloudFront")
            .field("base", &self.settings.base.as_str())
            .field("distribution_id", &self.settings.distribution_id)
            .field("domains", &self.settings.domains)
            .finish_non_exhaustive()
    }
}

impl CloudFront {
    fn url(&self, rest: &str) -> String {
        format!(
            "{}/{API_VERSION}/distribution/{}/invalidation{rest}",
            self.settings.base.as_str().trim_end_matches('/'),
            self.settings.distribution_id
        )
    }

    /// Sends one signed request and reads the answer; `Err` is a transport error in words.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<String>,
    ) -> Result<Answer, String> {
        let content_type = "text/xml";
        let mut signed: Vec<(&str, &str)> = Vec::new();
        if body.is_some() {
            signed.push(("content-type", content_type));
        }
        let bytes = body.as_deref().unwrap_or("").as_bytes();
        let unsigned = Unsigned {
            method: method.as_str(),
            url,
            headers: &signed,
            body: bytes,
        };
        let auth = sign_headers(
            &self.settings.credentials,
            (SERVICE, REGION),
            &unsigned,
            SystemTime::now(),
        )
        .map_err(|e| format!("could not sign the request: {e}"))?;
        let mut request = self.client.request(method, url);
        for (name, value) in signed.iter().copied() {
            request = request.header(name, value);
        }
        for (name, value) in auth {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.map_err(|e| describe_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.map_err(|e| describe_error(&e))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Sizes of requests: runs of URLs this distribution can take, at most 3,000 each, and runs
    /// of URLs it cannot (failed without a request). Keeping them apart means every URL of a
    /// sent batch gets the same answer, so a retry resends exactly the same batch and its
    /// `CallerReference` (derived from the batch's URLs) is the same.
    fn sizes(&self, urls: &[Url]) -> Vec<usize> {
        let mut sizes: Vec<usize> = Vec::new();
        let mut last: Option<bool> = None;
        for url in urls {
            let ok = check_url(url, &self.settings.domains).is_ok();
            match sizes.last_mut() {
                Some(n) if last == Some(ok) && (!ok || *n < MAX_PATHS) => *n += 1,
                _ => sizes.push(1),
            }
            last = Some(ok);
        }
        sizes
    }

    async fn create(&self, batch: &Batch) -> PurgeResult {
        if batch.scope == Scope::Tags {
            return super::unsupported(batch, "CloudFront");
        }
        let checked: Vec<Result<String, String>> = batch
            .urls
            .iter()
            .map(|u| path_for(batch.scope, u, &self.settings.domains))
            .collect();
        // The same path from two of the distribution's domains is one path to CloudFront (and
        // every site of a purge of everything is the one `/*`).
        let mut seen = BTreeSet::new();
        let paths: Vec<String> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok())
            .filter(|p| seen.insert(p.as_str()))
            .cloned()
            .collect();
        let answer_for_sent = if paths.is_empty() {
            None
        } else {
            let body = invalidation_batch_xml(&paths, &batch.reference);
            Some(self.answer_create(body).await)
        };
        let (sent, receipt) = match answer_for_sent {
            Some((attempt, receipt)) => (Some(attempt), receipt),
            None => (None, None),
        };
        let attempts = checked
            .into_iter()
            .map(|c| match c {
                Ok(_) => sent.clone().expect("a request was sent for valid paths"),
                Err(reason) => Attempt::Fail {
                    http_status: None,
                    reason,
                },
            })
            .collect();
        PurgeResult { attempts, receipt }
    }

    async fn answer_create(&self, body: String) -> (Attempt, Option<Receipt>) {
        let answer = match self
            .send(reqwest::Method::POST, &self.url(""), Some(body))
            .await
        {
            Ok(a) => a,
            Err(reason) => {
                return (
                    Attempt::Retry {
                        http_status: None,
                        reason,
                        retry_after: None,
                    },
                    None,
                );
            }
        };
        let code = answer.status.as_u16();
        if !answer.status.is_success() {
            return (answer.failure(), None);
        }
        let [id, status] = xml_fields(&answer.body, ["Id", "Status"]);
        let Some(id) = id.filter(|s| !s.is_empty()) else {
            return (
                Attempt::Fail {
                    http_status: Some(code),
                    reason: describe_answer(answer.status, None, &answer.body)
                        + " (no invalidation Id in the answer)",
                },
                None,
            );
        };
        let receipt = Receipt {
            provider_id: Some(id),
            support_id: None,
            estimated_seconds: None,
        };
        // A resent CallerReference returns the earlier invalidation, which may be done already.
        let attempt = if status.as_deref().is_some_and(is_completed) {
            Attempt::Done {
                http_status: Some(code),
                note: None,
            }
        } else {
            Attempt::Pending {
                http_status: Some(code),
            }
        };
        (attempt, Some(receipt))
    }
}

/// CloudFront answers `Completed`; some compatible services answer `COMPLETED`: an
/// invalidation must not sit running for an hour over spelling.
fn is_completed(status: &str) -> bool {
    status.eq_ignore_ascii_case("Completed")
}

impl Purger for CloudFront {
    fn batch_sizes(&self, urls: &[Url]) -> Vec<usize> {
        self.sizes(urls)
    }

    /// Prefixes: at most 15 wildcard paths a request, all CloudFront allows in progress.
    /// Everything: every site in one request, sent as the one path `/*`.
    fn batch_size(&self, scope: Scope) -> usize {
        match scope {
            Scope::Urls => MAX_PATHS,
            Scope::Prefixes | Scope::Tags => MAX_WILDCARDS,
            Scope::Everything => usize::MAX,
        }
    }

    fn purge<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, PurgeResult> {
        Box::pin(self.create(batch))
    }

    fn max_pending(&self) -> Option<usize> {
        Some(MAX_PATHS)
    }

    /// File paths: 3,000 in progress. Wildcards (prefixes, and everything's `/*`): 15 in
    /// progress, counted apart from file paths. A purge of everything's rows are its sites,
    /// each counted though they share one `/*`: that errs towards waiting.
    fn max_pending_for(&self, scope: Scope) -> Option<(usize, Vec<Scope>)> {
        match scope {
            Scope::Urls => Some((MAX_PATHS, vec![Scope::Urls])),
            Scope::Prefixes | Scope::Everything => {
                Some((MAX_WILDCARDS, vec![Scope::Prefixes, Scope::Everything]))
            }
            Scope::Tags => None,
        }
    }

    fn poll<'a>(&'a self, provider_id: &'a str) -> BoxFuture<'a, Poll> {
        Box::pin(async move {
            let url = self.url(&format!("/{provider_id}"));
            match self.send(reqwest::Method::GET, &url, None).await {
                Err(reason) => Poll::Unknown(reason),
                Ok(answer) if answer.status.is_success() => {
                    match xml_fields(&answer.body, ["Status"]) {
                        [Some(s)] if is_completed(s.as_str()) => Poll::Completed,
                        [Some(s)] if s.eq_ignore_ascii_case("InProgress") => Poll::InProgress,
                        _ => Poll::Unknown(describe_answer(answer.status, None, &answer.body)),
                    }
                }
                Ok(answer) => Poll::Unknown(describe_answer(
                    answer.status,
                    answer.error().as_ref(),
                    &answer.body,
                )),
            }
        })
    }

    fn test_connection(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            // ListInvalidations reads and changes nothing, yet proves the keys, the signature
            // and access to this distribution.
            let answer = self
                .send(reqwest::Method::GET, &self.url("?MaxItems=1"), None)
                .await
                .map_err(|e| format!("Could not reach CloudFront: {e}."))?;
            let id = &self.settings.distribution_id;
            if answer.status.is_success() {
                let [quantity, status] = xml_fields(&answer.body, ["Quantity", "Status"]);
                let latest = match (quantity.as_deref(), status) {
                    (Some("0"), _) | (None, _) => "it has no invalidations yet".to_string(),
                    (_, Some(status)) => format!("its latest invalidation is {status}"),
                    (_, None) => "it lists its invalidations".to_string(),
                };
                Ok(format!(
                    "CloudFront accepted the credentials for distribution {id}: {latest}."
                ))
            } else {
                Err(format!(
                    "CloudFront refused to list the invalidations of distribution {id}: {}.",
                    describe_answer(answer.status, answer.error().as_ref(), &answer.body)
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> Values {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn good() -> Values {
        values(&[
            ("cloudfront_distribution_id", "E2QWRUHAPOMQZL"),
            (
                "cloudfront_domains",
                "d111111abcdef8.cloudfront.net\nimages.example.com",
            ),
            ("cloudfront_access_key_id", "AKIDEXAMPLE"),
            (
                "cloudfront_secret_access_key",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            ),
        ])
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn completed_in_any_case_is_completed() {
        for word in ["Completed", "COMPLETED", "completed"] {
            assert!(is_completed(word), "{word}");
        }
        assert!(!is_completed("InProgress"));
        assert!(!is_completed("Complete"));
    }

    #[test]
    fn settings_need_distribution_domains_and_keys() {
        let kind = CloudFrontKind;
        assert!(kind.validate(&good()).is_empty());
        let errors = kind.validate(&values(&[
            ("cloudfront_base_url", "https://cloudfront.amazonaws.com/x"),
            ("cloudfront_distribution_id", "E2 bad"),
            (
                "cloudfront_domains",
                "ok.example.com\nhttps://x.example.com/path",
            ),
        ]));
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "cloudfront_base_url",
                "cloudfront_distribution_id",
                "cloudfront_domains",
                "cloudfront_access_key_id",
                "cloudfront_secret_access_key"
            ]
        );
        assert!(
            errors[2].message.starts_with("Line 2:"),
            "{}",
            errors[2].message
        );
    }

    #[test]
    fn domains_are_normalised_to_hosts() {
        let mut v = values(&[(
            "cloudfront_domains",
            " https://Images.Example.com/ \n\nd1.cloudfront.net:443",
        )]);
        CloudFrontKind.prepare(&mut v);
        assert_eq!(
            v["cloudfront_domains"],
            "images.example.com\nd1.cloudfront.net"
        );
        assert_eq!(
            CloudFrontKind.describe(&v),
            "AWS CloudFront distribution  (images.example.com, d1.cloudfront.net)"
        );
    }

    #[test]
    fn paths_keep_query_and_escapes_and_encode_only_unsafe_characters() {
        let cases = [
            ("https://h/is/image/a?$p$&wid=10", "/is/image/a?$p$&wid=10"),
            ("https://h", "/"),
            ("https://h/x%20y/%C3%A9", "/x%20y/%C3%A9"),
            ("https://h/a b/é", "/a%20b/%C3%A9"),
            ("https://h/[1]|^/file.*", "/%5B1%5D%7C%5E/file.*"),
            ("https://h/images/*", "/images/*"),
            (
                "https://h/a~b/c-d_e.f;g=h,i+j@k!l$m'n(o)p",
                "/a~b/c-d_e.f;g=h,i+j@k!l$m'n(o)p",
            ),
            ("https://h/100%/x?q=1%", "/100%25/x?q=1%25"),
        ];
        for (input, path) in cases {
            assert_eq!(invalidation_path(&url(input)), path, "{input}");
        }
    }

    #[test]
    fn the_batch_body_counts_and_escapes_its_paths() {
        let xml = invalidation_batch_xml(&["/a?x=1&y=2".into(), "/b".into()], "ref-1");
        assert!(xml.contains(
            "<InvalidationBatch xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\"><Paths><Quantity>2</Quantity>\
             <Items><Path>/a?x=1&amp;y=2</Path><Path>/b</Path></Items></Paths><CallerReference>ref-1</CallerReference>\
             </InvalidationBatch>"
        ), "{xml}");
    }

    fn purger() -> CloudFront {
        CloudFront {
            client: reqwest::Client::new(),
            settings: parse_settings(&good())
                .map_err(|e| e[0].message.clone())
                .unwrap(),
        }
    }

    #[test]
    fn batches_hold_3000_paths_and_keep_foreign_hosts_apart() {
        let p = purger();
        let mut urls: Vec<Url> = (0..6500)
            .map(|i| url(&format!("https://images.example.com/{i}")))
            .collect();
        assert_eq!(p.batch_sizes(&urls), [3000, 3000, 500]);
        urls.insert(10, url("https://elsewhere.example.com/x"));
        urls.insert(11, url("https://elsewhere.example.com/y"));
        assert_eq!(p.batch_sizes(&urls), [10, 2, 3000, 3000, 490]);
        assert_eq!(p.max_pending(), Some(3000));
        assert!(check_url(&url("https://IMAGES.example.com/a"), &p.settings.domains).is_ok());
        let reason =
            check_url(&url("https://elsewhere.example.com/a"), &p.settings.domains).unwrap_err();
        assert!(
            reason.contains("elsewhere.example.com is not a domain"),
            "{reason}"
        );
        let long = url(&format!("https://images.example.com/{}", "a".repeat(4000)));
        assert!(check_url(&long, &p.settings.domains).is_err());
    }

    #[test]
    fn prefixes_become_wildcard_paths_and_everything_is_one_slash_star() {
        let p = purger();
        let domains = &p.settings.domains;
        let at = |scope, u: &str| path_for(scope, &url(u), domains);
        assert_eq!(
            at(
                Scope::Prefixes,
                "https://images.example.com/is/image/Company/Backpack_B"
            )
            .unwrap(),
            "/is/image/Company/Backpack_B*"
        );
        // Encoded as listed URLs are: non-ASCII and unsafe characters only.
        assert_eq!(
            at(
                Scope::Prefixes,
                "https://images.example.com/is/image/Company/café [1]"
            )
            .unwrap(),
            "/is/image/Company/caf%C3%A9%20%5B1%5D*"
        );
        let star = at(Scope::Prefixes, "https://images.example.com/is/image/a*b").unwrap_err();
        assert!(star.contains("only at the end"), "{star}");
        assert!(at(Scope::Prefixes, "https://images.example.com/is/image/a?x=1").is_err());
        assert!(
            at(Scope::Prefixes, "https://elsewhere.example.com/is/image/a")
                .unwrap_err()
                .contains("not a domain")
        );
        assert_eq!(
            at(Scope::Everything, "https://images.example.com/").unwrap(),
            "/*"
        );
        assert!(at(Scope::Everything, "https://elsewhere.example.com/").is_err());
        assert!(at(Scope::Tags, "https://images.example.com/a").is_err());
    }

    #[test]
    fn wildcards_are_capped_at_15_in_progress_apart_from_3000_paths() {
        let p = purger();
        assert_eq!(
            p.max_pending_for(Scope::Urls),
            Some((3000, vec![Scope::Urls]))
        );
        for scope in [Scope::Prefixes, Scope::Everything] {
            assert_eq!(
                p.max_pending_for(scope),
                Some((15, vec![Scope::Prefixes, Scope::Everything]))
            );
        }
        assert_eq!(p.max_pending_for(Scope::Tags), None);
        assert_eq!(p.batch_size(Scope::Prefixes), 15);
        assert_eq!(
            CloudFrontKind.scopes(&good()),
            [Scope::Prefixes, Scope::Everything]
        );
        // 40 prefixes: three waves; everything: one request, one wave, whatever the sites.
        let config = PurgeConfig::default();
        let prefixes = CloudFrontKind.model_for(Scope::Prefixes, &good(), &config, None);
        let one = prefixes.millis(0, 15);
        let three = prefixes.millis(0, 40);
        assert!(three > 2.9 * one && three < 3.1 * one, "{one} {three}");
        let everything = CloudFrontKind.model_for(Scope::Everything, &good(), &config, None);
        let sites = everything.millis(0, 20);
        assert!(sites < 1.1 * one, "{sites} {one}");
    }

    #[test]
    fn aws_errors_are_read_in_awss_words_and_classified() {
        let body = "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\">\
            <Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: arn:aws:iam::1:user/x is not authorized</Message></Error>\
            <RequestId>b1c2</RequestId></ErrorResponse>";
        let answer = |status: u16, body: &str| Answer {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            headers: reqwest::header::HeaderMap::new(),
            body: body.into(),
        };
        match answer(403, body).failure() {
            Attempt::Fail {
                http_status: Some(403),
                reason,
            } => assert_eq!(
                reason,
                "CloudFront 403 AccessDenied: User: arn:aws:iam::1:user/x is not authorized (request id b1c2)"
            ),
            other => panic!("{other:?}"),
        }
        let amp = body.replace(
            "is not authorized",
            "is not authorized &amp; &#x263A; &lt;x&gt;",
        );
        assert!(matches!(answer(403, &amp).failure(),
            Attempt::Fail { ref reason, .. } if reason.contains("is not authorized & \u{263A} <x> (request id b1c2)")));
        let too_many = body.replace("AccessDenied", "TooManyInvalidationsInProgress");
        assert!(matches!(
            answer(400, &too_many).failure(),
            Attempt::Retry { .. }
        ));
        let throttled = body.replace("AccessDenied", "Throttling");
        assert!(matches!(
            answer(400, &throttled).failure(),
            Attempt::Retry { .. }
        ));
        for code in [
            "NoSuchDistribution",
            "InvalidArgument",
            "BatchTooLarge",
            "InconsistentQuantities",
            "InvalidationBatchAlreadyExists",
        ] {
            let b = body.replace("AccessDenied", code);
            assert!(
                matches!(answer(400, &b).failure(), Attempt::Fail { .. }),
                "{code}"
            );
        }
        assert!(
            matches!(answer(503, "<html>busy</html>").failure(), Attempt::Retry { ref reason, .. } if reason == "CloudFront HTTP 503 Service Unavailable: <html>busy</html>")
        );
    }

    #[test]
    fn created_invalidations_are_read_for_id_and_status() {
        let body = "<?xml version=\"1.0\"?><Invalidation xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\">\
            <Id>IDFDVBD632BHDS5</Id><Status>InProgress</Status><CreateTime>2024-01-01T00:00:00Z</CreateTime>\
            <InvalidationBatch><Paths><Quantity>1</Quantity><Items><Path>/a</Path></Items></Paths>\
            <CallerReference>r</CallerReference></InvalidationBatch></Invalidation>";
        assert_eq!(
            xml_fields(body, ["Id", "Status", "Path"]),
            [
                Some("IDFDVBD632BHDS5".to_string()),
                Some("InProgress".to_string()),
                Some("/a".to_string())
            ]
        );
    }

    /// The "get-vanilla" case of AWS's SigV4 test suite: proves the signing call is wired as AWS signs.
    #[test]
    fn signing_matches_the_aws_sigv4_test_suite() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160); // 20150830T123600Z
        let headers = sign_headers(
            &creds,
            ("service", "us-east-1"),
            &Unsigned {
                method: "GET",
                url: "https://example.amazonaws.com/",
                headers: &[],
                body: b"",
            },
            time,
        )
        .unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        assert_eq!(get("x-amz-date"), "20150830T123600Z");
        assert_eq!(
            get("authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn cloudfront_requests_are_scoped_to_us_east_1_and_sign_the_body_type() {
        let creds = Credentials::new("AKID", "secret", Some("token".into()), None, "test");
        let headers = sign_headers(
            &creds,
            (SERVICE, REGION),
            &Unsigned {
                method: "POST",
                url: "https://cloudfront.amazonaws.com/2020-05-31/distribution/E1/invalidation",
                headers: &[("content-type", "text/xml")],
                body: b"<x/>",
            },
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        )
        .unwrap();
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKID/20231114/us-east-1/cloudfront/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
            ),
            "{auth}"
        );
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "x-amz-security-token" && v == "token")
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let text = format!("{:?}", purger());
        assert!(!text.contains("wJalrXUtnFEMI"), "{text}");
        assert!(!text.contains("AKIDEXAMPLE"), "{text}");
    }
}
