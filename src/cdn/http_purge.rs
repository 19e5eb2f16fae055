//! HTTP `PURGE`: what Varnish, Fastly, nginx cache purge and Squid accept.

use super::{
    Attempt, Batch, BoxFuture, Context, Field, FieldError, FieldKind, ProviderKind, PurgeResult,
    Purger, Values, classify, describe_error, lines, parse_base_url,
};
use futures_util::future::join_all;
use reqwest::Method;
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

    fn propagation_seconds(&self) -> u64 {
        0
    }

    fn build(&self, values: &Values, ctx: &Context) -> anyhow::Result<Box<dyn Purger>> {
        let nodes = parse_nodes(values.get("purge_nodes").map_or("", String::as_str))
            .map_err(|e| anyhow::anyhow!("{}", e[0].message))?;
        Ok(Box::new(HttpPurge::new(ctx.client.clone(), nodes)))
    }
}

/// Sends `PURGE <url>` to the URL's host, or `PURGE <path?query>` with the URL's `Host` to each node.
pub struct HttpPurge {
    client: reqwest::Client,
    nodes: Vec<Url>,
}

impl HttpPurge {
    pub fn new(client: reqwest::Client, nodes: Vec<Url>) -> Self {
        Self { client, nodes }
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

    async fn purge_one(&self, url: &Url) -> Attempt {
        if self.nodes.is_empty() {
            return self.send(url.clone(), None).await;
        }
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => {
                return Attempt::Fail {
                    http_status: None,
                    reason: "URL has no host".into(),
                };
            }
        };
        let path_and_query = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let sends = self.nodes.iter().map(|node| {
            let mut target = node.clone();
            target.set_path(url.path());
            target.set_query(url.query());
            debug_assert!(target.as_str().ends_with(path_and_query));
            let node_name = node.as_str().trim_end_matches('/').to_string();
            let host = host.clone();
            async move { (node_name, self.send(target, Some(host)).await) }
        });
        combine(join_all(sends).await)
    }
}

/// A URL is done only when every node is done; one permanent failure fails it; otherwise retry.
fn combine(results: Vec<(String, Attempt)>) -> Attempt {
    let many = results.len() > 1;
    let label = |node: &str, reason: &str| {
        if many {
            format!("{node}: {reason}")
        } else {
            reason.to_string()
        }
    };
    let mut retry: Option<Attempt> = None;
    let mut done: Option<Attempt> = None;
    for (node, attempt) in results {
        match attempt {
            Attempt::Fail {
                http_status,
                reason,
            } => {
                return Attempt::Fail {
                    http_status,
                    reason: label(&node, &reason),
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
                        reason: label(&node, &reason),
                        retry_after,
                    });
                }
            }
            d @ (Attempt::Done { .. } | Attempt::Pending { .. }) => {
                // Prefer reporting a real purge over "was not cached" when nodes disagree.
                if !matches!(done, Some(Attempt::Done { note: None, .. })) {
                    done = Some(d);
                }
            }
        }
    }
    retry.or(done).unwrap_or(Attempt::Fail {
        http_status: None,
        reason: "no purge node".into(),
    })
}

impl Purger for HttpPurge {
    fn purge<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, PurgeResult> {
        Box::pin(async move {
            let attempts = join_all(batch.urls.iter().map(|u| self.purge_one(u))).await;
            PurgeResult {
                attempts,
                receipt: None,
            }
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
            for node in &self.nodes {
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
        let out = combine(vec![("a".into(), done(200)), ("b".into(), retry)]);
        assert!(matches!(out, Attempt::Retry { ref reason, .. } if reason == "b: HTTP 503"));
        assert_eq!(
            combine(vec![("a".into(), done(200)), ("b".into(), done(200))]),
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
        let out = combine(vec![("a".into(), retry), ("b".into(), fail)]);
        assert!(matches!(out, Attempt::Fail { ref reason, .. } if reason == "b: HTTP 405"));
    }
}
