//! The Publish Server Name: the host that serves `/is/image/…` URLs.

use std::fmt;
use url::Url;

/// A normalised publish server: `scheme://host[:port]`, https unless a scheme was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishServer {
    origin: Url,
}

impl PublishServer {
    /// Accepts `server.com`, `server.com:8443`, `https://server.com/`, `http://127.0.0.1:6081`.
    /// Rejects paths, queries, fragments, user-info and other schemes.
    pub fn parse(input: &str) -> Result<Self, String> {
        let input = input.trim();
        if input.is_empty() {
            return Err("Publish Server Name is empty.".into());
        }
        let lower = input.to_ascii_lowercase();
        let candidate = if lower.starts_with("http://") || lower.starts_with("https://") {
            input.to_string()
        } else if input.contains("://") {
            return Err(format!(
                "\"{input}\" uses a scheme other than http or https."
            ));
        } else {
            format!("https://{input}")
        };
        let url = Url::parse(&candidate)
            .map_err(|e| format!("\"{input}\" is not a valid server name ({e})."))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("\"{input}\" has no host name."));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "\"{input}\" must not contain a user name or password."
            ));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "\"{input}\" must be a server name only, without a path, query or fragment."
            ));
        }
        Ok(Self { origin: url })
    }

    /// The host name (no port), lower case.
    pub fn host(&self) -> &str {
        self.origin.host_str().unwrap_or_default()
    }

    /// The port (the scheme's default when none was given).
    pub fn port(&self) -> u16 {
        self.origin.port_or_known_default().unwrap_or(443)
    }

    /// Base URL that relative template lines are resolved against.
    pub fn image_base(&self) -> String {
        format!("{}/is/image/", self.origin.origin().ascii_serialization())
    }
}

impl fmt::Display for PublishServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin.origin().ascii_serialization())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms_and_normalises_them() {
        let cases = [
            ("server.com", "https://server.com"),
            ("server.com:8443", "https://server.com:8443"),
            ("https://server.com/", "https://server.com"),
            ("http://127.0.0.1:6081", "http://127.0.0.1:6081"),
            ("  Server.COM  ", "https://server.com"),
            ("https://server.com:443", "https://server.com"),
        ];
        for (input, expected) in cases {
            let server = PublishServer::parse(input).unwrap();
            assert_eq!(server.to_string(), expected, "{input}");
        }
    }

    #[test]
    fn image_base_keeps_scheme_and_port() {
        let server = PublishServer::parse("http://127.0.0.1:6081").unwrap();
        assert_eq!(server.image_base(), "http://127.0.0.1:6081/is/image/");
        assert_eq!(server.host(), "127.0.0.1");
    }

    #[test]
    fn rejects_paths_schemes_and_credentials() {
        for bad in [
            "",
            "server.com/is/image",
            "ftp://server.com",
            "https://user:pw@server.com",
            "https://server.com/?a=b",
            "http://",
            "bad host.com",
        ] {
            assert!(PublishServer::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
