//! The URL list a user submits with Continue: parsed and validated line by line.

use url::Url;

/// Longest URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 4096;

/// Where a user may invalidate: the publish server (its host, on its own port or the scheme's
/// default port) and the allowed hosts (on the default ports). Ports matter: with no purge
/// nodes a PURGE goes to the URL's own host and port, and any port would make this a port scanner.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// (host, extra port besides the scheme's default)
    entries: Vec<(String, Option<u16>)>,
    /// The provider purges only these hosts (CloudFront: its distribution's domains), and says
    /// so in these words ("CloudFront distribution E2…"): others are refused at once.
    served: Option<(Vec<String>, String)>,
}

impl HostPolicy {
    pub fn new<'a>(
        publish_server: Option<(&str, u16)>,
        allowed_hosts: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut entries: Vec<(String, Option<u16>)> = publish_server
            .map(|(h, p)| (h.to_ascii_lowercase(), Some(p)))
            .into_iter()
            .collect();
        entries.extend(
            allowed_hosts
                .into_iter()
                .map(|h| (h.trim().to_ascii_lowercase(), None)),
        );
        Self {
            entries,
            served: None,
        }
    }

    /// The provider purges only `hosts` (`who` in messages): they are allowed without being
    /// typed again as allowed hosts, and every other host is refused, with the reason.
    pub fn served_only(mut self, hosts: Vec<String>, who: String) -> Self {
        let hosts: Vec<String> = hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect();
        for h in &hosts {
            if !self.entries.iter().any(|(e, _)| e == h) {
                self.entries.push((h.clone(), None));
            }
        }
        self.served = Some((hosts, who));
        self
    }

    /// Why the provider cannot purge `url`'s host, when it purges only some hosts.
    fn not_served(&self, url: &Url) -> Option<String> {
        let (hosts, who) = self.served.as_ref()?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        (!hosts.contains(&host)).then(|| {
            format!(
                "host {host} is not served by {who} (its domains: {}); add it to the distribution's domains in the settings, or remove the line.",
                hosts.join(", ")
            )
        })
    }

    /// True when `url`'s host is allowed on the port it names.
    pub fn allows(&self, url: &Url) -> bool {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        // The url crate drops a port equal to the scheme's default, so `port()` is None then.
        let port = url.port();
        self.entries
            .iter()
            .any(|(h, extra)| *h == host && (port.is_none() || port == *extra))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A problem with one line of the user's list (1-based line number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError {
    pub line: usize,
    pub reason: String,
}

/// A list that passed validation: absolute, allowed, distinct URLs in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlList {
    pub urls: Vec<Url>,
    /// Lines dropped because they repeated an earlier URL.
    pub duplicates_dropped: usize,
}

/// Why a list was refused: per-line errors, or a whole-list problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlListErrors {
    pub lines: Vec<UrlError>,
    pub list: Option<String>,
    pub duplicates_dropped: usize,
}

/// Message shown when nothing was entered (wording from Dynamic Media).
pub const NO_URLS: &str = "No URLs entered to be invalidated.";

fn check_line(line: &str, hosts: &HostPolicy) -> Result<Url, String> {
    if line.len() > MAX_URL_BYTES {
        return Err(format!(
            "is {} bytes long; at most {MAX_URL_BYTES} bytes are allowed.",
            line.len()
        ));
    }
    let url = Url::parse(line).map_err(|e| format!("is not an absolute URL ({e})."))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "uses {}:, only http and https URLs can be invalidated.",
            url.scheme()
        ));
    }
    if url.fragment().is_some() || line.contains('#') {
        return Err("contains a fragment (#…); CDNs cache without it, remove it.".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("contains a user name or password.".into());
    }
    if !hosts.allows(&url) {
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        return Err(if let Some(reason) = hosts.not_served(&url) {
            reason
        } else if hosts.is_empty() {
            format!(
                "host {host} is not allowed: no Publish Server Name or allowed hosts are set (ask an admin)."
            )
        } else {
            format!("host {host} is neither the publish server nor an allowed host (on its port).")
        });
    }
    if let Some(reason) = hosts.not_served(&url) {
        return Err(reason);
    }
    Ok(url)
}

/// Validates the textarea's content. Blank lines are ignored, duplicates dropped.
pub fn parse(text: &str, hosts: &HostPolicy, max_urls: usize) -> Result<UrlList, UrlListErrors> {
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut urls = Vec::new();
    let mut duplicates_dropped = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        match check_line(line, hosts) {
            Ok(url) => {
                if seen.insert(url.as_str().to_string()) {
                    urls.push(url);
                } else {
                    duplicates_dropped += 1;
                }
            }
            Err(reason) => errors.push(UrlError {
                line: index + 1,
                reason,
            }),
        }
    }
    let list = if urls.is_empty() && errors.is_empty() {
        Some(NO_URLS.to_string())
    } else if urls.len() > max_urls {
        Some(format!(
            "{} URLs entered; at most {max_urls} can be invalidated at once. Split the list.",
            urls.len()
        ))
    } else {
        None
    };
    if errors.is_empty() && list.is_none() {
        Ok(UrlList {
            urls,
            duplicates_dropped,
        })
    } else {
        Err(UrlListErrors {
            lines: errors,
            list,
            duplicates_dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> HostPolicy {
        HostPolicy::new(Some(("server.com", 8443)), ["cdn.example.org"])
    }

    #[test]
    fn a_provider_serving_only_some_hosts_allows_them_and_refuses_the_rest() {
        let cloudfront = policy().served_only(
            vec!["images.example.com".into(), "d111.cloudfront.net".into()],
            "CloudFront distribution E2".into(),
        );
        // Its domains need not be typed again as allowed hosts.
        let list = parse(
            "https://images.example.com/a\nhttps://D111.cloudfront.net/b",
            &cloudfront,
            10,
        )
        .unwrap();
        assert_eq!(list.urls.len(), 2);
        // The publish server is allowed, but CloudFront cannot purge it: refused now, with why.
        let errors = parse(
            "https://images.example.com/a\nhttps://server.com/b\nhttps://elsewhere.org/c",
            &cloudfront,
            10,
        )
        .unwrap_err();
        let reasons: Vec<(usize, &str)> = errors
            .lines
            .iter()
            .map(|e| (e.line, e.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    2,
                    "host server.com is not served by CloudFront distribution E2 (its domains: images.example.com, d111.cloudfront.net); add it to the distribution's domains in the settings, or remove the line."
                ),
                (
                    3,
                    "host elsewhere.org is not served by CloudFront distribution E2 (its domains: images.example.com, d111.cloudfront.net); add it to the distribution's domains in the settings, or remove the line."
                ),
            ]
        );
    }

    #[test]
    fn accepts_allowed_hosts_and_drops_duplicates_and_blank_lines() {
        let text = "\n https://server.com/is/image/a?$p$ \n\nhttp://CDN.example.org/x\nhttps://server.com/is/image/a?$p$\n";
        let list = parse(text, &policy(), 10).unwrap();
        let urls: Vec<&str> = list.urls.iter().map(Url::as_str).collect();
        assert_eq!(
            urls,
            [
                "https://server.com/is/image/a?$p$",
                "http://cdn.example.org/x"
            ]
        );
        assert_eq!(list.duplicates_dropped, 1);
    }

    #[test]
    fn empty_input_says_no_urls_entered() {
        let err = parse("  \n\n", &policy(), 10).unwrap_err();
        assert_eq!(err.list.as_deref(), Some(NO_URLS));
        assert!(err.lines.is_empty());
    }

    #[test]
    fn each_bad_line_is_reported_with_its_number() {
        let long = format!("https://server.com/{}", "a".repeat(MAX_URL_BYTES));
        let text = format!(
            "https://server.com/ok\n/relative\nftp://server.com/x\nhttps://server.com/a#frag\nhttps://u:p@server.com/x\nhttps://evil.com/x\n{long}"
        );
        let err = parse(&text, &policy(), 10).unwrap_err();
        let lines: Vec<usize> = err.lines.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7]);
        assert!(err.lines[0].reason.contains("absolute"));
        assert!(err.lines[1].reason.contains("ftp"));
        assert!(err.lines[2].reason.contains("fragment"));
        assert!(err.lines[3].reason.contains("user name"));
        assert!(err.lines[4].reason.contains("evil.com"));
        assert!(err.lines[5].reason.contains("bytes"));
    }

    #[test]
    fn only_default_ports_or_the_publish_servers_own_port_are_allowed() {
        let ok = "https://server.com/a\nhttp://server.com/b\nhttps://server.com:8443/c\nhttps://cdn.example.org:443/d";
        assert_eq!(parse(ok, &policy(), 10).unwrap().urls.len(), 4);
        let err = parse(
            "https://server.com:22/a\nhttp://cdn.example.org:8443/b",
            &policy(),
            10,
        )
        .unwrap_err();
        assert_eq!(err.lines.len(), 2);
        assert!(
            err.lines[0].reason.contains("server.com:22"),
            "{:?}",
            err.lines
        );
    }

    #[test]
    fn too_many_urls_is_a_list_error() {
        let text: String = (0..11)
            .map(|i| format!("https://server.com/{i}\n"))
            .collect();
        let err = parse(&text, &policy(), 10).unwrap_err();
        assert!(err.list.unwrap().contains("at most 10"));
        assert!(parse(&text, &policy(), 11).is_ok());
    }

    #[test]
    fn without_any_host_policy_every_url_is_refused() {
        let err = parse("https://server.com/x", &HostPolicy::default(), 10).unwrap_err();
        assert!(err.lines[0].reason.contains("no Publish Server Name"));
    }

    proptest! {
        #[test]
        fn accepted_urls_are_always_allowed_http_urls(text in "(https?://(server\\.com|evil\\.com)/[a-z#?]{0,5}\n|[ a-z:/]{0,12}\n){0,12}") {
            if let Ok(list) = parse(&text, &policy(), 100) {
                for url in &list.urls {
                    prop_assert!(url.scheme() == "http" || url.scheme() == "https");
                    prop_assert_eq!(url.host_str(), Some("server.com"));
                    prop_assert!(url.fragment().is_none());
                }
            }
        }
    }
}
