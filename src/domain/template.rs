//! The CDN invalidation template: one URL template per line with an `<ID>` placeholder.

use super::PublishServer;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use url::Url;

/// The placeholder every template line must contain.
pub const PLACEHOLDER: &str = "<ID>";
/// Most lines a template may have.
pub const MAX_LINES: usize = 50;

/// Everything outside RFC 3986 "unreserved" (`A-Z a-z 0-9 - . _ ~`) is percent-encoded.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes an asset ID for use in a URL.
pub fn encode_id(id: &str) -> String {
    utf8_percent_encode(id, NOT_UNRESERVED).to_string()
}

/// One line of a template: absolute (`http(s)://…`) or relative to the publish server's `/is/image/`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Absolute(String),
    Relative(String),
}

/// A template error, tied to the line of the admin's text (1-based) it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Line {}: {}", self.line, self.reason)
    }
}

/// A validated template. Expanding it for an asset gives one URL per line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InvalidationTemplate {
    lines: Vec<Line>,
    publish_server: Option<PublishServer>,
}

fn is_absolute(line: &str) -> bool {
    let lower = line.get(..8).unwrap_or(line).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

impl InvalidationTemplate {
    /// Parses the admin's text. Lines are trimmed and blank lines dropped; errors name the line.
    pub fn parse(
        text: &str,
        publish_server: Option<&PublishServer>,
    ) -> Result<Self, Vec<LineError>> {
        let mut errors = Vec::new();
        let mut lines = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let mut error = |reason: String| {
                errors.push(LineError {
                    line: number,
                    reason,
                })
            };
            if !line.contains(PLACEHOLDER) {
                error(format!("does not contain the {PLACEHOLDER} placeholder."));
                continue;
            }
            if line.chars().any(char::is_control) {
                error("contains a control character.".into());
                continue;
            }
            let parsed = if is_absolute(line) {
                Line::Absolute(line.to_string())
            } else {
                if publish_server.is_none() {
                    error(
                        "is relative to the publish server, but no Publish Server Name is set."
                            .into(),
                    );
                    continue;
                }
                Line::Relative(line.trim_start_matches('/').to_string())
            };
            let sample = expand_line(&parsed, publish_server, "ID");
            match Url::parse(&sample) {
                Ok(url) if url.host_str().is_some_and(|h| !h.is_empty()) => {
                    if url.fragment().is_some() {
                        error("must not contain a fragment (#…): CDNs never see it.".into());
                        continue;
                    }
                    if !url.username().is_empty() || url.password().is_some() {
                        error("must not contain a user name or password.".into());
                        continue;
                    }
                }
                Ok(_) => {
                    error(format!("does not give a URL with a host (\"{sample}\")."));
                    continue;
                }
                Err(e) => {
                    error(format!("does not give a valid URL (\"{sample}\": {e})."));
                    continue;
                }
            }
            lines.push(parsed);
        }
        if lines.len() > MAX_LINES {
            errors.push(LineError {
                line: text.lines().count(),
                reason: format!(
                    "the template has {} lines; at most {MAX_LINES} are allowed.",
                    lines.len()
                ),
            });
        }
        if errors.is_empty() {
            Ok(Self {
                lines,
                publish_server: publish_server.cloned(),
            })
        } else {
            Err(errors)
        }
    }

    /// True when the template has no lines (it expands to an empty list).
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The URLs for one asset, in template order.
    pub fn expand(&self, asset_id: &str) -> Vec<String> {
        self.lines
            .iter()
            .map(|line| expand_line(line, self.publish_server.as_ref(), asset_id))
            .collect()
    }

    /// Each line expanded for one asset and cut right after the (first) `<ID>` in its path,
    /// without query: the asset's path prefixes. `None` for a line whose `<ID>` is not in its
    /// path (only in its query).
    pub fn expand_cut(&self, asset_id: &str) -> Vec<Option<String>> {
        self.lines
            .iter()
            .map(|line| {
                let text = match line {
                    Line::Absolute(t) | Line::Relative(t) => t,
                };
                let at = text.find(PLACEHOLDER)?;
                let head = &text[..at];
                if head.contains(['?', '#']) {
                    return None;
                }
                let cut = match line {
                    Line::Absolute(_) => Line::Absolute(text[..at + PLACEHOLDER.len()].into()),
                    Line::Relative(_) => Line::Relative(text[..at + PLACEHOLDER.len()].into()),
                };
                Some(expand_line(&cut, self.publish_server.as_ref(), asset_id))
            })
            .collect()
    }

    /// The URLs for many assets: asset order, then template order, duplicates dropped.
    pub fn expand_all<'a>(&self, asset_ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut urls = Vec::new();
        for id in asset_ids {
            for url in self.expand(id) {
                if seen.insert(url.clone()) {
                    urls.push(url);
                }
            }
        }
        urls
    }
}

fn expand_line(line: &Line, publish_server: Option<&PublishServer>, asset_id: &str) -> String {
    let encoded = encode_id(asset_id);
    match line {
        Line::Absolute(t) => t.replace(PLACEHOLDER, &encoded),
        Line::Relative(t) => {
            let base = publish_server
                .map(PublishServer::image_base)
                .unwrap_or_default();
            format!("{base}{}", t.replace(PLACEHOLDER, &encoded))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn server(s: &str) -> PublishServer {
        PublishServer::parse(s).unwrap()
    }

    #[test]
    fn seed_example_absolute_template() {
        let t =
            InvalidationTemplate::parse("https://server.com/is/image/Company/<ID>?$product$", None)
                .unwrap();
        assert_eq!(
            t.expand("Backpack_B"),
            ["https://server.com/is/image/Company/Backpack_B?$product$"]
        );
    }

    #[test]
    fn seed_example_bare_id_uses_publish_server() {
        let t = InvalidationTemplate::parse("<ID>", Some(&server("server.com"))).unwrap();
        assert_eq!(
            t.expand("Backpack_B"),
            ["https://server.com/is/image/Backpack_B"]
        );
    }

    #[test]
    fn seed_example_empty_template_gives_blank_list() {
        let t = InvalidationTemplate::parse("", None).unwrap();
        assert!(t.is_empty());
        assert!(t.expand_all(["Backpack_B", "Shoe"]).is_empty());
        let blank = InvalidationTemplate::parse("  \n\n \t\n", None).unwrap();
        assert!(blank.is_empty());
    }

    #[test]
    fn relative_lines_keep_scheme_port_and_drop_leading_slash() {
        let s = server("http://127.0.0.1:6081");
        let t = InvalidationTemplate::parse("/Company/<ID>?$thumb$\n  Company/<ID>  ", Some(&s))
            .unwrap();
        assert_eq!(
            t.expand("a"),
            [
                "http://127.0.0.1:6081/is/image/Company/a?$thumb$",
                "http://127.0.0.1:6081/is/image/Company/a"
            ]
        );
    }

    #[test]
    fn ids_are_percent_encoded_outside_unreserved() {
        assert_eq!(encode_id("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(encode_id("a b/c?d#e&f"), "a%20b%2Fc%3Fd%23e%26f");
        assert_eq!(encode_id("é"), "%C3%A9");
        assert_eq!(encode_id("100%"), "100%25");
        let t = InvalidationTemplate::parse("https://s.com/<ID>/<ID>", None).unwrap();
        assert_eq!(t.expand("x y"), ["https://s.com/x%20y/x%20y"]);
    }

    #[test]
    fn expand_all_is_asset_then_template_order_without_duplicates() {
        let t = InvalidationTemplate::parse("https://s.com/<ID>?$a$\nhttps://s.com/<ID>?$b$", None)
            .unwrap();
        assert_eq!(
            t.expand_all(["x", "y", "x"]),
            [
                "https://s.com/x?$a$",
                "https://s.com/x?$b$",
                "https://s.com/y?$a$",
                "https://s.com/y?$b$"
            ]
        );
    }

    #[test]
    fn errors_name_the_original_line_and_reason() {
        let text =
            "https://s.com/<ID>\n\nhttps://s.com/fixed\nCompany/<ID>\nhttps://exa mple.com/<ID>";
        let errors = InvalidationTemplate::parse(text, None).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5]);
        assert!(errors[0].reason.contains("<ID>"));
        assert!(errors[1].reason.contains("Publish Server Name"));
        assert!(errors[2].reason.contains("valid URL"));
    }

    #[test]
    fn rejects_fragments_credentials_and_too_many_lines() {
        assert!(InvalidationTemplate::parse("https://s.com/<ID>#x", None).is_err());
        assert!(InvalidationTemplate::parse("https://u:p@s.com/<ID>", None).is_err());
        let fifty = "https://s.com/<ID>\n".repeat(50);
        assert!(InvalidationTemplate::parse(&fifty, None).is_ok());
        let errors =
            InvalidationTemplate::parse(&format!("{fifty}https://s.com/<ID>"), None).unwrap_err();
        assert!(errors[0].reason.contains("at most 50"));
    }

    proptest! {
        #[test]
        fn encoded_ids_only_contain_unreserved_or_escapes(id in "\\PC{1,40}") {
            let encoded = encode_id(&id);
            prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            let decoded = percent_encoding::percent_decode_str(&encoded).decode_utf8().unwrap();
            prop_assert_eq!(decoded, id);
        }

        #[test]
        fn every_expanded_url_parses_and_keeps_the_id(id in "\\PC{1,40}".prop_filter("a valid asset ID", |id| crate::domain::AssetId::parse(id).is_ok())) {
            let t = InvalidationTemplate::parse("<ID>\nhttps://s.com/x/<ID>?$p$", Some(&server("server.com"))).unwrap();
            for url in t.expand(&id) {
                let parsed = Url::parse(&url).unwrap();
                prop_assert!(parsed.path().contains(&encode_id(&id)));
            }
        }
    }
}
