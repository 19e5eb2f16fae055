//! HTTP `PURGE`: what Varnish, Fastly, nginx cache purge and Squid accept.

mod pipeline;

use super::{
    Attempt, Batch, BoxFuture, Context, Field, FieldError, FieldKind, Measured, Model, OVERHEAD_MS,
    ProviderKind, PurgeConfig, PurgeResult, Purger, Scope, Sending, TagRules, Values, classify,
    describe_error, lines, parse_base_url, value,
};
use futures_util::future::join_all;
use reqwest::Method;
use reqwest::header::HeaderName;
use std::time::Duration;
use url::Url;

/// HTTP `PURGE`, to the URL's own host or to the configured purge nodes.
pub struct HttpPurgeKind;

const FIELDS: &[Field] = &[
    Field {
        name: "purge_nodes",
        label: "Purge nodes",
        help: "One base URL per line, e.g. http://127.0.0.1:6081. Each URL is purged on every node as PURGE <path?query> \
               with the URL's Host header. Leave empty to send PURGE <url> to each URL's own host.",
        kind: FieldKind::Lines,
        default: "",
        docs: "",
    },
    Field {
        name: "purge_tag_header",
        label: "Tag purge header",
        help: "Purges by cache tag go to every purge node as PURGE / with the tags, separated by spaces, in this \
               request header; the cache's VCL hands them to xkey.purge() (see the README). Path prefixes and \
               everything go as BAN <path> with the site's Host and an X-Ban-Url header.",
        kind: FieldKind::Text,
        default: DEFAULT_TAG_HEADER,
        docs: "https://manpages.ubuntu.com/manpages/noble/man3/vmod_xkey.3.html",
    },
];

/// The request header tag purges carry their tags in, unless the admin names another.
const DEFAULT_TAG_HEADER: &str = "xkey-purge";

/// Headers that frame or route the request: a tag header with one of these names would break it.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "expect",
    "x-ban-url",
];

/// The tag header named in `values` (or the default), checked.
fn tag_header(values: &Values) -> Result<HeaderName, FieldError> {
    let text = value(&HttpPurgeKind, values, "purge_tag_header").trim();
    let error = |message: String| FieldError {
        field: "purge_tag_header",
        message,
    };
    let name = HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| error(format!("\"{text}\" is not an HTTP header name.")))?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(error(format!(
            "{text} already means something else in a purge request; choose another name, e.g. {DEFAULT_TAG_HEADER}."
        )));
    }
    Ok(name)
}

fn parse_nodes(text: &str) -> Result<Vec<Url>, Vec<FieldError>> {
    let mut nodes = Vec::new();
    let mut errors = Vec::new();
    for (number, line) in lines(text) {
        match parse_base_url(line).and_then(|u| {
            if u.path() == "/" {
                Ok(u)
            } else {
                Err(format!("\"{line}\" must be a base URL without a path."))
            }
        }) {
            Ok(url) => nodes.push(url),
            Err(reason) => errors.push(FieldError {
                field: "purge_nodes",
                message: format!("Line {number}: {reason}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(nodes)
    } else {
        Err(errors)
    }
}

impl ProviderKind for HttpPurgeKind {
    fn name(&self) -> &'static str {
        "http_purge"
    }

    fn short_name(&self) -> &'static str {
        "the cache"
    }

    fn label(&self) -> &'static str {
        "HTTP PURGE (Varnish, nginx, Squid, Fastly without API)"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn prepare(&self, values: &mut Values) -> Vec<FieldError> {
        if let Some(text) = values.get_mut("purge_nodes") {
            *text = lines(text)
                .map(|(_, l)| l.trim_end_matches('/'))
                .collect::<Vec<_>>()
                .join("\n");
        }
        if let Some(text) = values.get_mut("purge_tag_header") {
            *text = text.trim().to_string();
        }
        Vec::new()
    }

    fn validate(&self, values: &Values) -> Vec<FieldError> {
        let mut errors = parse_nodes(values.get("purge_nodes").map_or("", String::as_str))
            .err()
            .unwrap_or_default();
        errors.extend(tag_header(values).err());
        errors
    }

    fn describe(&self, values: &Values) -> String {
        let nodes: Vec<&str> = lines(values.get("purge_nodes").map_or("", String::as_str))
            .map(|(_, l)| l.trim_end_matches('/'))
            .collect();
        if nodes.is_empty() {
            "HTTP PURGE to each URL's own host".into()
        } else {
            format!("HTTP PURGE to {}", nodes.join(", "))
        }
    }

    /// Every node gets every URL, spread over `concurrency` connections: pipelined batches of
    /// up to 128 on `http://` nodes (a round trip a batch, plus the cache's own time per
    /// PURGE), one request at a time otherwise (a round trip each). The round trip is what
    /// Test connection measured (or the first requests, divided by the URLs they carried);
    /// a cache answers once purged.
    fn model(&self, values: &Values, config: &PurgeConfig, measured: Option<Measured>) -> Model {
        let nodes =
            parse_nodes(values.get("purge_nodes").map_or("", String::as_str)).unwrap_or_default();
        let pipelined = !nodes.is_empty() && nodes.iter().all(|n| n.scheme() == "http");
        let round_trip_ms = round_trip_ms(measured);
        let (batch, per_url_ms) = if pipelined {
            (PIPELINED_BATCH, PIPELINED_URL_MS)
        } else {
            (1, 0.0)
        };
        Model {
            sending: Sending::Streams {
                connections: config.concurrency.max(1),
                batch,
                round_trip_ms,
                per_url_ms,
            },
            clearing_ms: 0.0,
            overhead_ms: OVERHEAD_MS,
        }
    }

    /// Tags need purge nodes (a tag names no host); prefixes and sites are banned on the
    /// nodes, or on their own host when there are none, as URLs are purged.
    /// A ban of `^/` per site: the publish server's and each allowed host's.
    fn everything_by_site(&self) -> bool {
        true
    }

    fn scopes(&self, values: &Values) -> Vec<Scope> {
        let nodes = lines(values.get("purge_nodes").map_or("", String::as_str)).count();
        if nodes == 0 {
            vec![Scope::Prefixes, Scope::Everything]
        } else {
            vec![Scope::Tags, Scope::Prefixes, Scope::Everything]
        }
    }

    /// xkey splits its header on spaces and commas; a tag must fit a request's header many
    /// times over.
    fn tag_rules(&self) -> TagRules {
        TagRules::header_list("Varnish xkey", MAX_TAG_LEN)
    }

    /// Tags and bans are one reqwest request each per node (never pipelined): up to
    /// [`TAGS_PER_REQUEST`] tags a request, one prefix or site a request. The cache answers
    /// once the objects are gone (xkey) or the ban is on its list (a banned object is never
    /// served again), so nothing clears later.
    fn model_for(
        &self,
        scope: Scope,
        values: &Values,
        config: &PurgeConfig,
        measured: Option<Measured>,
    ) -> Model {
        let (batch, per_row_ms) = match scope {
            Scope::Urls => return self.model(values, config, measured),
            Scope::Tags => (TAGS_PER_REQUEST, XKEY_TAG_MS),
            Scope::Prefixes | Scope::Everything => (1, 0.0),
        };
        Model {
            sending: Sending::Streams {
                connections: config.concurrency.max(1),
                batch,
                round_trip_ms: round_trip_ms(measured),
                per_url_ms: per_row_ms,
            },
            clearing_ms: 0.0,
            overhead_ms: OVERHEAD_MS,
        }
    }

    fn build(&self, values: &Values, ctx: &Context) -> anyhow::Result<Box<dyn Purger>> {
        let nodes = parse_nodes(values.get("purge_nodes").map_or("", String::as_str))
            .map_err(|e| anyhow::anyhow!("{}", e[0].message))?;
        let tag_header = tag_header(values).map_err(|e| anyhow::anyhow!("{}", e.message))?;
        Ok(Box::new(HttpPurge::new(
            ctx.client.clone(),
            nodes,
            tag_header,
            &ctx.config,
        )))
    }
}

/// A request's round trip for estimates: what was measured, per URL it carried.
fn round_trip_ms(measured: Option<Measured>) -> f64 {
    measured.map_or(UNMEASURED_ROUND_TRIP_MS, |m| {
        m.request_ms / m.urls_per_request.max(1.0)
    })
}

/// Sends `PURGE <url>` to the URL's host, or `PURGE <path?query>` with the URL's `Host` to each node.
pub struct HttpPurge {
    client: reqwest::Client,
    nodes: Vec<PurgeNode>,
    /// The request header tag purges carry their tags in.
    tag_header: HeaderName,
    /// Batches in flight, and so connections per pipelined node (`--purge-concurrency`).
    connections: usize,
}

/// One configured purge node and how purges reach it.
struct PurgeNode {
    /// The base URL as configured, without its trailing `/` (names the node in reasons).
    name: String,
    base: Url,
    /// `http://` nodes get batches pipelined on kept-alive connections of their own; `https://`
    /// nodes go through reqwest, one request per URL.
    pipelined: Option<pipeline::Node>,
}

/// URLs per batch when every node takes pipelined batches: large enough that a batch costs a
/// few system calls, small enough that the batches in flight keep every connection busy to the
/// end of an invalidation and a retry resends little.
const PIPELINED_BATCH: usize = 128;
/// A round trip to a purge node before one has been measured: a cache across a network.
const UNMEASURED_ROUND_TRIP_MS: f64 = 20.0;
/// A pipelined PURGE's share of a connection's time, for estimates: Varnish on a 2-core
/// machine answers about 75,000 PURGE/s over 8 connections (`wrk` in BENCHMARKS.md), 0.1 ms
/// each per connection, and the app, sharing the cores, takes as long again to send and read
/// it. Calibrated by `benches/estimate_accuracy.rs` on that machine; history corrects it.
const PIPELINED_URL_MS: f64 = 0.2;

/// How long after a node kept a request waiting past the timeout URLs are sent one per batch
/// (a hang then holds one of the batches in flight, not a pipeline of them).
const AFTER_A_HANG: Duration = Duration::from_secs(60);

/// Most tags in one tag purge request.
const TAGS_PER_REQUEST: usize = 100;
/// The cache's time per tag of an xkey purge (it looks the key up and frees its objects),
/// per connection, in milliseconds: measured by `cargo bench --bench estimate_accuracy` (1,000
/// tags to a local Varnish: about 13 ms beyond the round trips on a 2-core machine).
const XKEY_TAG_MS: f64 = 0.1;
/// Most bytes of tags in one request's header: well under Varnish's default limit on one
/// request header line (`http_req_hdr_len`, 8 KB) with its name, and on the whole request.
const TAG_HEADER_BYTES: usize = 6000;
/// Longest tag accepted (xkey documents none; a long one would crowd a request).
const MAX_TAG_LEN: usize = 256;

/// The request header carrying a ban's anchored, escaped URL pattern.
const BAN_URL_HEADER: &str = "x-ban-url";

/// The `Host` a purge of `url` carries to a node: its host, and its port when it names one.
fn host_header(url: &Url) -> Option<String> {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => Some(format!("{h}:{p}")),
        (Some(h), None) => Some(h.to_string()),
        (None, _) => None,
    }
}

/// `tags` split into requests in order: (how many tags, the header value with them separated
/// by spaces), each of at most [`TAGS_PER_REQUEST`] tags and [`TAG_HEADER_BYTES`] bytes.
fn tag_requests(tags: &[String]) -> Vec<(usize, String)> {
    let mut requests: Vec<(usize, String)> = Vec::new();
    for tag in tags {
        match requests.last_mut() {
            Some((count, header))
                if *count < TAGS_PER_REQUEST
                    && header.len() + 1 + tag.len() <= TAG_HEADER_BYTES =>
            {
                header.push(' ');
                header.push_str(tag);
                *count += 1;
            }
            _ => requests.push((1, tag.clone())),
        }
    }
    requests
}

/// The `X-Ban-Url` for everything under `path_and_query`: anchored at the start of the URL,
/// every regular-expression metacharacter escaped, so the VCL hands it to `ban()` as it is.
fn ban_pattern(path_and_query: &str) -> String {
    let mut pattern = String::with_capacity(path_and_query.len() + 8);
    pattern.push('^');
    for c in path_and_query.chars() {
        if r"\^$.|?*+()[]{}".contains(c) {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// "Not cached" (404, 412) is what caches answer a PURGE of one URL they did not hold; to a
/// tag purge or a ban it means the request did not reach VCL that handles it.
fn scoped_answer(attempt: Attempt, method: &Method) -> Attempt {
    match attempt {
        Attempt::Done {
            http_status: Some(code @ (404 | 412)),
            ..
        } => Attempt::Fail {
            http_status: Some(code),
            reason: format!("HTTP {code}: the cache does not handle this {method} (see its VCL)"),
        },
        other => other,
    }
}

/// What a cache's `200` to a tag purge says: xkey's "Invalidated N objects" as the note. The
/// built-in "Purged" means the VCL ignored the tag header and purged the URL `/` instead.
fn tag_answer(attempt: Attempt, body: &str, header: &HeaderName) -> Attempt {
    let Attempt::Done {
        http_status: Some(200),
        ..
    } = attempt
    else {
        return attempt;
    };
    if let Some(at) = body.find("Invalidated ") {
        let rest = &body[at + "Invalidated ".len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(" object") {
            let count = &rest[..digits];
            let noun = if count == "1" { "object" } else { "objects" };
            return Attempt::Done {
                http_status: Some(200),
                note: Some(format!("Invalidated {count} {noun}")),
            };
        }
    }
    if body.contains("200 Purged") {
        return Attempt::Fail {
            http_status: Some(200),
            reason: format!(
                "the cache purged the URL / instead of the tags: its VCL does not hand the {header} \
                 header to xkey.purge()"
            ),
        };
    }
    attempt
}

impl HttpPurge {
    /// `config.concurrency` is the number of batches in flight, so it is also the number of
    /// connections each `http://` node is given; `config.timeout` limits each answer.
    pub fn new(
        client: reqwest::Client,
        nodes: Vec<Url>,
        tag_header: HeaderName,
        config: &PurgeConfig,
    ) -> Self {
        let connections = config.concurrency.max(1);
        let nodes = nodes
            .into_iter()
            .map(|base| {
                let pipelined = match (base.scheme(), base.host_str(), base.port_or_known_default())
                {
                    ("http", Some(host), Some(port)) => {
                        Some(pipeline::Node::new(host, port, connections, config.timeout))
                    }
                    _ => None,
                };
                PurgeNode {
                    name: base.as_str().trim_end_matches('/').to_string(),
                    base,
                    pipelined,
                }
            })
            .collect();
        Self {
            client,
            nodes,
            tag_header,
            connections,
        }
    }

    fn method() -> Method {
        Method::from_bytes(b"PURGE").expect("PURGE is a valid method token")
    }

    fn ban_method() -> Method {
        Method::from_bytes(b"BAN").expect("BAN is a valid method token")
    }

    async fn send(&self, target: Url, host: Option<String>) -> Attempt {
        let mut request = self.client.request(Self::method(), target);
        if let Some(host) = host {
            request = request.header(reqwest::header::HOST, host);
        }
        match request.send().await {
            Ok(response) => classify(response.status(), response.headers()),
            Err(e) => Attempt::Retry {
                http_status: None,
                reason: describe_error(&e),
                retry_after: None,
            },
        }
    }

    /// `PURGE <path?query>` with the URL's `Host` to every node, one attempt per URL and node.
    async fn purge_on_nodes(&self, urls: &[Url]) -> Vec<Attempt> {
        // The `Host` of each URL that has one; the others fail without a request.
        let mut sent = Vec::with_capacity(urls.len());
        let mut requests = pipeline::Requests::default();
        for url in urls {
            let Some(host) = host_header(url) else {
                sent.push(None);
                continue;
            };
            requests.push(
                &url[url::Position::BeforePath..url::Position::AfterQuery],
                &host,
            );
            sent.push(Some((url, host)));
        }
        let per_node = join_all(self.nodes.iter().map(|node| async {
            match &node.pipelined {
                Some(pipelined) => pipelined.purge(&requests).await,
                None => {
                    join_all(sent.iter().flatten().map(|(url, host)| {
                        let mut target = node.base.clone();
                        target.set_path(url.path());
                        target.set_query(url.query());
                        self.send(target, Some(host.clone()))
                    }))
                    .await
                }
            }
        }))
        .await;
        let mut per_node: Vec<_> = per_node.into_iter().map(Vec::into_iter).collect();
        sent.iter()
            .map(|sent| match sent {
                None => Attempt::Fail {
                    http_status: None,
                    reason: "URL has no host".into(),
                },
                Some(_) => combine(self.nodes.iter().zip(per_node.iter_mut()).map(
                    |(node, attempts)| {
                        let attempt = attempts.next().unwrap_or_else(|| Attempt::Retry {
                            http_status: None,
                            reason: "the node gave no answer".into(),
                            retry_after: None,
                        });
                        (node.name.as_str(), attempt)
                    },
                )),
            })
            .collect()
    }

    /// Sends one tag or ban request (never pipelined: a few a batch), reading the body of a
    /// success, which is where a cache says what it did.
    async fn send_scoped(
        &self,
        method: Method,
        target: Url,
        host: Option<&str>,
        header: (&HeaderName, &str),
    ) -> (Attempt, String) {
        let mut request = self
            .client
            .request(method.clone(), target)
            .header(header.0.clone(), header.1);
        if let Some(host) = host {
            request = request.header(reqwest::header::HOST, host);
        }
        match request.send().await {
            Ok(response) => {
                let attempt =
                    scoped_answer(classify(response.status(), response.headers()), &method);
                let body = if response.status().is_success() {
                    response.text().await.unwrap_or_default()
                } else {
                    String::new()
                };
                (attempt, body)
            }
            Err(e) => (
                Attempt::Retry {
                    http_status: None,
                    reason: describe_error(&e),
                    retry_after: None,
                },
                String::new(),
            ),
        }
    }

    /// `PURGE /` with the tags in the tag header to every node, a request per
    /// [`tag_requests`] share; each tag gets its request's outcome.
    async fn purge_tags(&self, tags: &[String]) -> Vec<Attempt> {
        if self.nodes.is_empty() {
            let reason = "a tag names no host: purges by tag need purge nodes".to_string();
            return vec![
                Attempt::Fail {
                    http_status: None,
                    reason
                };
                tags.len()
            ];
        }
        let requests = tag_requests(tags);
        let per_request = join_all(requests.iter().map(|(_, header)| {
            self.on_every_node(move |base| async move {
                let (attempt, body) = self
                    .send_scoped(Self::method(), base, None, (&self.tag_header, header))
                    .await;
                tag_answer(attempt, &body, &self.tag_header)
            })
        }))
        .await;
        requests
            .iter()
            .zip(per_request)
            .flat_map(|((count, _), attempt)| {
                let attempt = match attempt {
                    // The count is the request's, not each tag's.
                    Attempt::Done {
                        http_status,
                        note: Some(note),
                    } if *count > 1 => Attempt::Done {
                        http_status,
                        note: Some(format!("{note} for the {count} tags of its request")),
                    },
                    other => other,
                };
                std::iter::repeat_n(attempt, *count)
            })
            .collect()
    }

    /// `BAN <path>` with the site's `Host` and `X-Ban-Url: ^<path>` (escaped) for each prefix
    /// (everything under it), or `^/` for each site root (everything on the site): to every
    /// node, or to the prefix's own host when there are none.
    async fn ban(&self, urls: &[Url], scope: Scope) -> Vec<Attempt> {
        let ban_url = HeaderName::from_static(BAN_URL_HEADER);
        join_all(urls.iter().map(|url| {
            let ban_url = &ban_url;
            async move {
                let (path, query) = match scope {
                    Scope::Everything => ("/", None),
                    _ => (url.path(), url.query()),
                };
                let pattern = ban_pattern(&match query {
                    Some(query) => format!("{path}?{query}"),
                    None => path.to_string(),
                });
                let header = (ban_url, pattern.as_str());
                let on = |mut target: Url| {
                    target.set_path(path);
                    target.set_query(query);
                    target
                };
                if self.nodes.is_empty() {
                    let target = on(url.clone());
                    return self
                        .send_scoped(Self::ban_method(), target, None, header)
                        .await
                        .0;
                }
                let Some(host) = host_header(url) else {
                    return Attempt::Fail {
                        http_status: None,
                        reason: "URL has no host".into(),
                    };
                };
                let host = host.as_str();
                self.on_every_node(|base| async move {
                    self.send_scoped(Self::ban_method(), on(base), Some(host), header)
                        .await
                        .0
                })
                .await
            }
        }))
        .await
    }

    /// Runs `send` with each node's base URL at once; the outcome every node must agree on.
    async fn on_every_node<F, Fut>(&self, send: F) -> Attempt
    where
        F: Fn(Url) -> Fut,
        Fut: Future<Output = Attempt>,
    {
        let attempts = join_all(self.nodes.iter().map(|node| send(node.base.clone()))).await;
        let notes: Vec<String> = self
            .nodes
            .iter()
            .zip(&attempts)
            .filter_map(|(node, attempt)| match attempt {
                Attempt::Done {
                    note: Some(note), ..
                } => Some(format!("{}: {note}", node.name)),
                _ => None,
            })
            .collect();
        let combined = combine(
            self.nodes
                .iter()
                .map(|n| n.name.as_str())
                .zip(attempts)
                .collect::<Vec<_>>()
                .into_iter(),
        );
        match combined {
            // Each node's own count, when several purged.
            Attempt::Done { http_status, .. } if notes.len() > 1 => Attempt::Done {
                http_status,
                note: Some(notes.join("; ")),
            },
            other => other,
        }
    }
}

/// A URL is done only when every node is done; one permanent failure fails it; otherwise retry
/// (after the longest wait a node asked for; at once when nodes only left it unanswered).
fn combine<'a>(results: impl ExactSizeIterator<Item = (&'a str, Attempt)>) -> Attempt {
    let many = results.len() > 1;
    let label = |node: &str, reason: &str| {
        if many {
            format!("{node}: {reason}")
        } else {
            reason.to_string()
        }
    };
    let mut retry: Option<Attempt> = None;
    let mut unanswered: Option<Attempt> = None;
    let mut done: Option<Attempt> = None;
    for (node, attempt) in results {
        match attempt {
            Attempt::Fail {
                http_status,
                reason,
            } => {
                return Attempt::Fail {
                    http_status,
                    reason: label(node, &reason),
                };
            }
            Attempt::Retry {
                http_status,
                reason,
                retry_after,
            } => {
                let longer = match &retry {
                    Some(Attempt::Retry { retry_after: r, .. }) => retry_after > *r,
                    _ => true,
                };
                if longer {
                    retry = Some(Attempt::Retry {
                        http_status,
                        reason: label(node, &reason),
                        retry_after,
                    });
                }
            }
            Attempt::Unanswered { reason } => {
                unanswered.get_or_insert(Attempt::Unanswered {
                    reason: label(node, &reason),
                });
            }
            d @ (Attempt::Done { .. } | Attempt::Pending { .. }) => {
                // Prefer reporting a real purge over "was not cached" when nodes disagree.
                if !matches!(done, Some(Attempt::Done { note: None, .. })) {
                    done = Some(d);
                }
            }
        }
    }
    // A node that never got to the URL must be sent it again, as one that failed it.
    retry.or(unanswered).or(done).unwrap_or(Attempt::Fail {
        http_status: None,
        reason: "no purge node".into(),
    })
}

impl Purger for HttpPurge {
    /// Many URLs per batch when every node takes pipelined batches, spread so that a short
    /// invalidation still keeps every connection busy (a slow node answers each connection's
    /// requests one after the other); otherwise one, so that `--purge-concurrency` stays the
    /// number of reqwest requests in flight per node.
    fn batch_sizes(&self, urls: &[Url]) -> Vec<usize> {
        let pipelined = !self.nodes.is_empty()
            && self.nodes.iter().all(|n| {
                n.pipelined
                    .as_ref()
                    .is_some_and(|p| !p.hung_within(AFTER_A_HANG))
            });
        let size = if pipelined {
            urls.len()
                .div_ceil(self.connections)
                .clamp(1, PIPELINED_BATCH)
        } else {
            1
        };
        urls.chunks(size).map(<[Url]>::len).collect()
    }

    /// Tags: up to [`TAGS_PER_REQUEST`] a batch (one request per node, split further only if
    /// the tags would crowd the header); prefixes and sites: one a batch.
    fn batch_size(&self, scope: Scope) -> usize {
        match scope {
            Scope::Tags => TAGS_PER_REQUEST,
            _ => 1,
        }
    }

    fn purge<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, PurgeResult> {
        Box::pin(async move {
            let attempts = match batch.scope {
                Scope::Urls if self.nodes.is_empty() => {
                    join_all(batch.urls.iter().map(|u| self.send(u.clone(), None))).await
                }
                Scope::Urls => self.purge_on_nodes(&batch.urls).await,
                Scope::Tags => self.purge_tags(&batch.tags).await,
                Scope::Prefixes | Scope::Everything => self.ban(&batch.urls, batch.scope).await,
            };
            PurgeResult {
                attempts,
                receipt: None,
            }
        })
    }

    /// The median of three `OPTIONS` to the first node after one that opens the connection.
    fn round_trip(&self) -> BoxFuture<'_, Option<Duration>> {
        Box::pin(async move {
            let node = &self.nodes.first()?.base;
            let mut times = Vec::new();
            for i in 0..4 {
                let started = std::time::Instant::now();
                let answer = self
                    .client
                    .request(Method::OPTIONS, node.clone())
                    .send()
                    .await
                    .ok()?;
                let _ = answer.bytes().await;
                if i > 0 {
                    times.push(started.elapsed());
                }
            }
            times.sort_unstable();
            Some(times[times.len() / 2])
        })
    }

    fn test_connection(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            if self.nodes.is_empty() {
                return Ok("HTTP PURGE has no API to call: each PURGE goes to the URL's own host, which must accept \
                           PURGE from this server. The configuration is valid."
                    .into());
            }
            // OPTIONS changes nothing on a cache; any HTTP answer proves the node is reachable.
            let mut report = Vec::new();
            let mut ok = true;
            for node in self.nodes.iter().map(|n| &n.base) {
                match self
                    .client
                    .request(Method::OPTIONS, node.clone())
                    .send()
                    .await
                {
                    Ok(r) => report.push(format!(
                        "{} answered HTTP {}",
                        node.as_str().trim_end_matches('/'),
                        r.status().as_u16()
                    )),
                    Err(e) => {
                        ok = false;
                        report.push(format!(
                            "{}: {}",
                            node.as_str().trim_end_matches('/'),
                            describe_error(&e)
                        ));
                    }
                }
            }
            let text = format!("{}.", report.join("; "));
            if ok {
                Ok(format!("Every purge node is reachable: {text}"))
            } else {
                Err(format!("Not every purge node is reachable: {text}"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_base_urls_and_errors_name_the_line() {
        let kind = HttpPurgeKind;
        let mut values = Values::new();
        values.insert(
            "purge_nodes".into(),
            "http://127.0.0.1:6081/\n\nftp://x\nhttp://n/path".into(),
        );
        let errors = kind.validate(&values);
        assert_eq!(errors.len(), 2);
        assert!(errors[0].message.starts_with("Line 3:"));
        assert!(errors[1].message.starts_with("Line 4:") && errors[1].message.contains("path"));
        values.insert("purge_nodes".into(), "http://127.0.0.1:6081/".into());
        assert!(kind.validate(&values).is_empty());
        assert_eq!(
            kind.describe(&values),
            "HTTP PURGE to http://127.0.0.1:6081"
        );
    }

    #[test]
    fn http_nodes_get_batches_spread_over_the_connections_others_one_url_each() {
        let config = PurgeConfig::default();
        let purger = |nodes: &[&str]| {
            let nodes = nodes.iter().map(|n| Url::parse(n).unwrap()).collect();
            HttpPurge::new(
                reqwest::Client::new(),
                nodes,
                HeaderName::from_static(DEFAULT_TAG_HEADER),
                &config,
            )
        };
        let urls = |n: usize| -> Vec<Url> {
            (0..n)
                .map(|i| Url::parse(&format!("https://server.com/{i}")).unwrap())
                .collect()
        };
        let varnish = purger(&["http://10.0.0.5:6081", "http://10.0.0.6"]);
        // 10,000 URLs: full batches; 500: one batch per connection (8); a few: one each.
        let sizes = varnish.batch_sizes(&urls(10_000));
        assert_eq!((sizes[0], sizes.len()), (PIPELINED_BATCH, 79));
        assert_eq!(sizes.iter().sum::<usize>(), 10_000);
        assert_eq!(
            varnish.batch_sizes(&urls(500)),
            [63, 63, 63, 63, 63, 63, 63, 59]
        );
        assert_eq!(varnish.batch_sizes(&urls(3)), [1, 1, 1]);
        for one_by_one in [
            purger(&["http://10.0.0.5", "https://cdn.example.com"]),
            purger(&[]),
        ] {
            assert_eq!(one_by_one.batch_sizes(&urls(300)), vec![1; 300]);
        }
    }

    fn done(code: u16) -> Attempt {
        Attempt::Done {
            http_status: Some(code),
            note: None,
        }
    }

    #[test]
    fn all_nodes_must_be_done() {
        let retry = Attempt::Retry {
            http_status: Some(503),
            reason: "HTTP 503".into(),
            retry_after: None,
        };
        let out = combine([("a", done(200)), ("b", retry)].into_iter());
        assert!(matches!(out, Attempt::Retry { ref reason, .. } if reason == "b: HTTP 503"));
        assert_eq!(
            combine([("a", done(200)), ("b", done(200))].into_iter()),
            done(200)
        );
    }

    #[test]
    fn a_permanent_failure_on_any_node_fails_the_url() {
        let fail = Attempt::Fail {
            http_status: Some(405),
            reason: "HTTP 405".into(),
        };
        let retry = Attempt::Retry {
            http_status: None,
            reason: "timed out".into(),
            retry_after: None,
        };
        let out = combine([("a", retry), ("b", fail)].into_iter());
        assert!(matches!(out, Attempt::Fail { ref reason, .. } if reason == "b: HTTP 405"));
    }

    #[test]
    fn a_url_a_node_never_got_to_is_sent_again_unless_another_node_failed_it() {
        let unanswered = || Attempt::Unanswered {
            reason: "not answered".into(),
        };
        let out = combine([("a", done(200)), ("b", unanswered())].into_iter());
        assert_eq!(
            out,
            Attempt::Unanswered {
                reason: "b: not answered".into()
            }
        );
        let retry = Attempt::Retry {
            http_status: Some(503),
            reason: "HTTP 503".into(),
            retry_after: None,
        };
        // A real failure counts as an attempt and waits its backoff.
        let out = combine([("a", unanswered()), ("b", retry)].into_iter());
        assert!(matches!(out, Attempt::Retry { ref reason, .. } if reason == "b: HTTP 503"));
    }

    #[test]
    fn the_tag_header_is_a_header_name_that_means_nothing_else() {
        let kind = HttpPurgeKind;
        let with = |header: &str| {
            let mut values = Values::new();
            values.insert("purge_tag_header".into(), header.into());
            kind.validate(&values)
        };
        assert!(kind.validate(&Values::new()).is_empty(), "the default");
        assert!(with("X-Purge-Tags").is_empty());
        let bad = with("xkey purge");
        assert_eq!(bad[0].field, "purge_tag_header");
        assert!(bad[0].message.contains("not an HTTP header name"));
        assert!(with("Host")[0].message.contains("already means"));
    }

    #[test]
    fn tags_need_purge_nodes_and_prefixes_do_not() {
        let kind = HttpPurgeKind;
        let mut values = Values::new();
        assert_eq!(kind.scopes(&values), [Scope::Prefixes, Scope::Everything]);
        values.insert("purge_nodes".into(), "http://127.0.0.1:6081".into());
        assert_eq!(
            kind.scopes(&values),
            [Scope::Tags, Scope::Prefixes, Scope::Everything]
        );
    }

    #[test]
    fn a_prefix_becomes_an_anchored_pattern_with_every_metacharacter_escaped() {
        assert_eq!(
            ban_pattern("/is/image/Company/Backpack_B"),
            "^/is/image/Company/Backpack_B"
        );
        assert_eq!(
            ban_pattern("/is/image/C/a$b(c)[d]*e|f^g.h+i?x{1}\\"),
            r"^/is/image/C/a\$b\(c\)\[d\]\*e\|f\^g\.h\+i\?x\{1\}\\"
        );
        assert_eq!(ban_pattern("/"), "^/");
    }

    #[test]
    fn tags_are_split_at_a_hundred_a_request_or_before_the_header_grows_past_6_kb() {
        let tags = |n: usize, len: usize| -> Vec<String> {
            (0..n).map(|i| format!("{i:0len$}")).collect()
        };
        let requests = tag_requests(&tags(250, 5));
        let counts: Vec<usize> = requests.iter().map(|r| r.0).collect();
        assert_eq!(counts, [100, 100, 50]);
        assert_eq!(requests[2].1.split(' ').count(), 50);
        assert!(requests[0].1.starts_with("00000 00001 "));
        // 256-byte tags: 23 fit in 6,000 bytes with their separators.
        let requests = tag_requests(&tags(50, MAX_TAG_LEN));
        let counts: Vec<usize> = requests.iter().map(|r| r.0).collect();
        assert_eq!(counts, [23, 23, 4]);
        assert!(requests.iter().all(|r| r.1.len() <= TAG_HEADER_BYTES));
        assert!(tag_requests(&[]).is_empty());
    }

    #[test]
    fn xkeys_count_is_the_note_and_the_built_in_purged_means_the_tags_were_ignored() {
        let header = HeaderName::from_static(DEFAULT_TAG_HEADER);
        let body = "<title>200 Invalidated 5 objects</title>";
        assert_eq!(
            tag_answer(done(200), body, &header),
            Attempt::Done {
                http_status: Some(200),
                note: Some("Invalidated 5 objects".into())
            }
        );
        let ignored = tag_answer(done(200), "<title>200 Purged</title>", &header);
        assert!(
            matches!(ignored, Attempt::Fail { ref reason, .. } if reason.contains("xkey-purge")),
            "{ignored:?}"
        );
        assert_eq!(tag_answer(done(204), "", &header), done(204));
        assert_eq!(tag_answer(done(200), "ok", &header), done(200));
    }

    /// A purge node that answers `200` to `answers` requests and hands back each request head.
    async fn recording_node(answers: usize) -> (Url, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let heads = tokio::spawn(async move {
            let mut heads = Vec::new();
            while heads.len() < answers {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                while heads.len() < answers {
                    let n = stream.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buffer.drain(..end + 4).collect();
                        heads.push(String::from_utf8(head).unwrap().to_lowercase());
                        stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await
                            .unwrap();
                    }
                }
            }
            heads
        });
        (base, heads)
    }

    #[tokio::test]
    async fn prefixes_and_sites_are_banned_and_tags_purged_on_every_node() {
        let (a, heads_a) = recording_node(3).await;
        let (b, heads_b) = recording_node(3).await;
        let purger = HttpPurge::new(
            reqwest::Client::new(),
            vec![a, b],
            HeaderName::from_static("x-purge-tags"),
            &PurgeConfig::default(),
        );
        let prefix = Url::parse("https://server.com:8443/is/image/Company/Back.pack").unwrap();
        let site = Url::parse("https://server.com/").unwrap();
        for batch in [
            Batch {
                scope: Scope::Prefixes,
                urls: vec![prefix],
                ..Batch::default()
            },
            Batch {
                scope: Scope::Everything,
                urls: vec![site],
                ..Batch::default()
            },
            Batch {
                scope: Scope::Tags,
                tags: vec!["Backpack_A".into(), "Backpack_B".into()],
                ..Batch::default()
            },
        ] {
            let result = purger.purge(&batch).await;
            assert_eq!(result.attempts, vec![done(200); batch.len()]);
        }
        for heads in [heads_a.await.unwrap(), heads_b.await.unwrap()] {
            let has = |i: usize, line: &str| {
                assert!(heads[i].contains(line), "{line:?} in {}", heads[i]);
            };
            has(0, "ban /is/image/company/back.pack http/1.1\r\n");
            has(0, "\r\nhost: server.com:8443\r\n");
            has(0, "\r\nx-ban-url: ^/is/image/company/back\\.pack\r\n");
            has(1, "ban / http/1.1\r\n");
            has(1, "\r\nhost: server.com\r\n");
            has(1, "\r\nx-ban-url: ^/\r\n");
            has(2, "purge / http/1.1\r\n");
            has(2, "\r\nx-purge-tags: backpack_a backpack_b\r\n");
        }
    }

    #[test]
    fn not_cached_is_no_answer_to_a_ban_or_a_tag_purge() {
        let not_cached = Attempt::Done {
            http_status: Some(404),
            note: Some("was not cached".into()),
        };
        let out = scoped_answer(not_cached, &HttpPurge::ban_method());
        assert!(
            matches!(out, Attempt::Fail { http_status: Some(404), ref reason } if reason.contains("does not handle this BAN")),
            "{out:?}"
        );
        assert_eq!(scoped_answer(done(200), &HttpPurge::method()), done(200));
    }
}
