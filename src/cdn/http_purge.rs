//! HTTP `PURGE`: what Varnish, Fastly, nginx cache purge and Squid accept.

use super::{Attempt, BoxFuture, Purger, classify, describe_error};
use futures_util::future::join_all;
use reqwest::Method;
use url::Url;

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
            d @ Attempt::Done { .. } => {
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
    fn purge<'a>(&'a self, urls: &'a [Url]) -> BoxFuture<'a, Vec<Attempt>> {
        Box::pin(async move { join_all(urls.iter().map(|u| self.purge_one(u))).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
