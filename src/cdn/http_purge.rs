//! HTTP `PURGE`: what Varnish, Fastly, nginx cache purge and Squid accept.

mod pipeline;

use super::{
    Attempt, Batch, BoxFuture, Context, Field, FieldError, FieldKind, Measured, Model, OVERHEAD_MS,
    ProviderKind, PurgeConfig, PurgeResult, Purger, Sending, Values, classify, describe_error,
    lines, parse_base_url,
};
use futures_util::future::join_all;
use reqwest::Method;
use std::time::Duration;
use url::Url;

/// HTTP `PURGE`, to the URL's own host or to the configured purge nodes.
pub struct HttpPurgeKind;

const FIELDS: &[Field] = &[Field {
    name: "purge_nodes",
    label: "Purge nodes",
    help: "One base URL per line, e.g. http://127.0.0.1:6081. Each URL is purged on every node as PURGE <path?query> \
           with the URL's Host header. Leave empty to send PURGE <url> to each URL's own host.",
    kind: FieldKind::Lines,
    default: "",
    docs: "",
}];

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
        Vec::new()
    }

    fn validate(&self, values: &Values) -> Vec<FieldError> {
        parse_nodes(values.get("purge_nodes").map_or("", String::as_str))
            .err()
            .unwrap_or_default()
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
        let round_trip_ms = measured.map_or(UNMEASURED_ROUND_TRIP_MS, |m| {
            m.request_ms / m.urls_per_request.max(1.0)
        });
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

    fn build(&self, values: &Values, ctx: &Context) -> anyhow::Result<Box<dyn Purger>> {
        let nodes = parse_nodes(values.get("purge_nodes").map_or("", String::as_str))
            .map_err(|e| anyhow::anyhow!("{}", e[0].message))?;
        Ok(Box::new(HttpPurge::new(
            ctx.client.clone(),
            nodes,
            &ctx.config,
        )))
    }
}

/// Sends `PURGE <url>` to the URL's host, or `PURGE <path?query>` with the URL's `Host` to each node.
pub struct HttpPurge {
    client: reqwest::Client,
    nodes: Vec<PurgeNode>,
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

impl HttpPurge {
    /// `config.concurrency` is the number of batches in flight, so it is also the number of
    /// connections each `http://` node is given; `config.timeout` limits each answer.
    pub fn new(client: reqwest::Client, nodes: Vec<Url>, config: &PurgeConfig) -> Self {
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
            connections,
        }
    }

    fn method() -> Method {
        Method::from_bytes(b"PURGE").expect("PURGE is a valid method token")
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
            let host = match (url.host_str(), url.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                (None, _) => {
                    sent.push(None);
                    continue;
                }
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

    fn purge<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, PurgeResult> {
        Box::pin(async move {
            let attempts = if self.nodes.is_empty() {
                join_all(batch.urls.iter().map(|u| self.send(u.clone(), None))).await
            } else {
                self.purge_on_nodes(&batch.urls).await
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
            HttpPurge::new(reqwest::Client::new(), nodes, &config)
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
}
