//! Akamai EdgeGrid request signing (`EG1-HMAC-SHA256`) and `.edgerc` parsing.
//!
//! The algorithm follows Akamai's published description (reference/cdn-apis.md §1) and is
//! checked against the test vectors the AkamaiOPEN-edgegrid libraries ship (`testdata.json`).

use argon2::password_hash::rand_core::{OsRng, RngCore};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use time::OffsetDateTime;
use time::macros::format_description;
use url::Url;

/// Bytes of a POST body that go into the content hash (the current libraries' default).
pub const DEFAULT_MAX_BODY: usize = 131_072;

/// An `.edgerc` API client: where to send requests and what to sign them with.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The per-credential API host, e.g. `akab-xxxx.luna.akamaiapis.net`.
    pub host: String,
    pub client_token: String,
    pub client_secret: String,
    pub access_token: String,
}

impl fmt::Debug for Credentials {
    // Tokens and secret are credentials: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("host", &self.host)
            .field("client_token", &"<redacted>")
            .field("client_secret", &"<redacted>")
            .field("access_token", &"<redacted>")
            .finish()
    }
}

/// Signs requests for one API client.
#[derive(Clone, Debug)]
pub struct Signer {
    credentials: Credentials,
    max_body: usize,
    /// Header names whose values are signed, in this order (none by default).
    headers_to_sign: Vec<String>,
}

impl Signer {
    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            max_body: DEFAULT_MAX_BODY,
            headers_to_sign: Vec::new(),
        }
    }

    /// Sets the content-hash limit and the headers to sign (`.edgerc` options; Fast Purge
    /// needs neither, Akamai's test vectors use both).
    #[cfg(test)]
    pub fn with_options(mut self, max_body: usize, headers_to_sign: Vec<String>) -> Self {
        self.max_body = max_body;
        self.headers_to_sign = headers_to_sign;
        self
    }

    /// The `Authorization` header for a request sent now, with a fresh nonce.
    pub fn authorization(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> String {
        self.authorization_at(
            method,
            url,
            headers,
            body,
            &timestamp(OffsetDateTime::now_utc()),
            &nonce(),
        )
    }

    /// The `Authorization` header for a request with a given timestamp and nonce.
    pub fn authorization_at(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        body: &[u8],
        timestamp: &str,
        nonce: &str,
    ) -> String {
        let c = &self.credentials;
        let unsigned = format!(
            "EG1-HMAC-SHA256 client_token={};access_token={};timestamp={timestamp};nonce={nonce};",
            c.client_token, c.access_token
        );
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let data_to_sign = [
            method.to_ascii_uppercase().as_str(),
            url.scheme(),
            &host,
            &url[url::Position::BeforePath..url::Position::AfterQuery],
            &self.canonical_headers(headers),
            &content_hash(method, body, self.max_body),
            &unsigned,
        ]
        .join("\t");
        let key = signing_key(&c.client_secret, timestamp);
        format!(
            "{unsigned}signature={}",
            hmac_base64(key.as_bytes(), data_to_sign.as_bytes())
        )
    }

    /// `name:value` for each configured header present, lower-cased name, whitespace collapsed.
    fn canonical_headers(&self, headers: &[(&str, &str)]) -> String {
        self.headers_to_sign
            .iter()
            .filter_map(|name| {
                let (_, value) = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))?;
                let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
                Some(format!("{}:{value}", name.to_ascii_lowercase()))
            })
            .collect::<Vec<_>>()
            .join("\t")
    }
}

fn hmac_base64(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    BASE64.encode(mac.finalize().into_bytes())
}

/// base64(HMAC-SHA256(client_secret, timestamp)); used, still base64, as the signature key.
pub fn signing_key(client_secret: &str, timestamp: &str) -> String {
    hmac_base64(client_secret.as_bytes(), timestamp.as_bytes())
}

/// base64(SHA-256 of the first `max_body` bytes) for a non-empty POST body, else empty.
pub fn content_hash(method: &str, body: &[u8], max_body: usize) -> String {
    if !method.eq_ignore_ascii_case("POST") || body.is_empty() {
        return String::new();
    }
    BASE64.encode(Sha256::digest(&body[..body.len().min(max_body)]))
}

/// `yyyyMMddTHH:mm:ss+0000` in UTC.
pub fn timestamp(now: OffsetDateTime) -> String {
    let format = format_description!("[year][month][day]T[hour]:[minute]:[second]+0000");
    now.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .expect("a UTC date formats")
}

/// A random UUID version 4, as EdgeGrid's nonce.
pub fn nonce() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

const EDGERC_KEYS: &[&str] = &[
    "client_secret",
    "client_token",
    "access_token",
    "headers_to_sign",
    "max_body",
    "max-body",
    "host",
];

/// Reads the `[default]` section of a pasted `.edgerc` (or its first section when there is
/// no `[default]`; a paste without any section header is one section).
///
/// A password field strips line breaks from what is pasted into it, so a paste without line
/// breaks is read by looking for the known keys (`host = …client_secret = …`).
pub fn parse_edgerc(text: &str) -> Result<Credentials, String> {
    let sections = split_sections(text);
    let (_, body) = sections
        .iter()
        .find(|(name, _)| name == "default")
        .or_else(|| sections.first())
        .ok_or("The .edgerc paste is empty.")?;
    let pairs = if body.contains('\n') {
        line_pairs(body)
    } else {
        keyed_pairs(body)
    };
    let get = |key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let mut missing = Vec::new();
    let mut need = |key: &'static str| {
        get(key).unwrap_or_else(|| {
            missing.push(key);
            String::new()
        })
    };
    let credentials = Credentials {
        host: normalise_host(&need("host")),
        client_token: need("client_token"),
        client_secret: need("client_secret"),
        access_token: need("access_token"),
    };
    if missing.is_empty() {
        Ok(credentials)
    } else {
        Err(format!(
            "The .edgerc section has no {}.",
            missing.join(", no ")
        ))
    }
}

/// `akab-….luna.akamaiapis.net` from a host written with a scheme or a trailing slash.
pub fn normalise_host(host: &str) -> String {
    let host = host.trim();
    let host = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host);
    host.trim_end_matches('/').to_string()
}

/// (section name, its text) in order; text before any header is a section named "".
fn split_sections(text: &str) -> Vec<(String, String)> {
    let mut sections: Vec<(String, String)> = Vec::new();
    let mut rest = text;
    let mut name = String::new();
    loop {
        // A header is `[name]` with no space or `=` inside: base64 and hosts never contain `[`.
        let header = rest.find('[').and_then(|open| {
            let close = open + rest[open..].find(']')?;
            let inner = &rest[open + 1..close];
            (!inner.is_empty() && !inner.contains(|c: char| c.is_whitespace() || c == '='))
                .then_some((open, close, inner.to_string()))
        });
        match header {
            Some((open, close, inner)) => {
                if !rest[..open].trim().is_empty() || !name.is_empty() {
                    sections.push((name, rest[..open].to_string()));
                }
                name = inner;
                rest = &rest[close + 1..];
            }
            None => {
                sections.push((name, rest.to_string()));
                break;
            }
        }
    }
    sections.retain(|(n, t)| !n.is_empty() || !t.trim().is_empty());
    sections
}

fn line_pairs(body: &str) -> Vec<(String, String)> {
    body.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect()
}

/// Pairs from one line of `key = value` runs glued together (line breaks stripped).
fn keyed_pairs(body: &str) -> Vec<(String, String)> {
    let lower = body.to_ascii_lowercase();
    let mut starts: Vec<(usize, usize, &str)> = Vec::new(); // (key start, value start, key)
    let mut i = 0;
    while i < lower.len() {
        let found = EDGERC_KEYS.iter().find_map(|key| {
            let after = lower[i..].strip_prefix(key)?;
            let trimmed = after.trim_start();
            let value = trimmed.strip_prefix('=')?;
            let value_start = lower.len() - value.trim_start().len();
            Some((*key, value_start))
        });
        match found {
            Some((key, value_start)) => {
                starts.push((i, value_start, key));
                i = value_start;
            }
            None => i += lower[i..].chars().next().map_or(1, char::len_utf8),
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, (_, value_start, key))| {
            let end = starts.get(n + 1).map_or(body.len(), |s| s.0);
            (key.to_string(), body[*value_start..end].trim().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Inputs and expected headers from Akamai's EdgeGrid test vectors
    // (akamai/AkamaiOPEN-edgegrid-python akamai/edgegrid/test/testdata.json).
    const BASE: &str = "https://akaa-baseurl-xxxxxxxxxxx-xxxxxxxxxxxxx.luna.akamaiapis.net/";
    const TIMESTAMP: &str = "20140321T19:34:21+0000";
    const NONCE: &str = "nonce-xx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    const SECRET: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx=";
    const PREFIX: &str = "EG1-HMAC-SHA256 client_token=akab-client-token-xxx-xxxxxxxxxxxxxxxx;access_token=akab-access-token-xxx-xxxxxxxxxxxxxxxx;timestamp=20140321T19:34:21+0000;nonce=nonce-xx-xxxx-xxxx-xxxx-xxxxxxxxxxxx;signature=";

    fn vector_signer() -> Signer {
        Signer::new(Credentials {
            host: "akaa-baseurl-xxxxxxxxxxx-xxxxxxxxxxxxx.luna.akamaiapis.net".into(),
            client_token: "akab-client-token-xxx-xxxxxxxxxxxxxxxx".into(),
            client_secret: SECRET.into(),
            access_token: "akab-access-token-xxx-xxxxxxxxxxxxxxxx".into(),
        })
        .with_options(
            2048,
            vec!["X-Test1".into(), "X-Test2".into(), "X-Test3".into()],
        )
    }

    fn sign(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
        let url = Url::parse(BASE).unwrap().join(path).unwrap();
        vector_signer().authorization_at(method, &url, headers, body.as_bytes(), TIMESTAMP, NONCE)
    }

    fn expect(signature: &str) -> String {
        format!("{PREFIX}{signature}")
    }

    #[test]
    fn signing_key_and_content_hash_match_the_vectors() {
        assert_eq!(
            signing_key(SECRET, TIMESTAMP),
            "znsRMDBRqTXGJ7Ojip3/h2FGPu3LuoMYWgv9PKEnE/o="
        );
        assert_eq!(
            content_hash("POST", b"test_body", 2048),
            "REPGqEEubBHzJMhwqDZtbt515/ntEvAMNriNR53zcdY="
        );
        assert_eq!(content_hash("PUT", b"test_body", 2048), "");
        assert_eq!(content_hash("POST", b"", 2048), "");
    }

    #[test]
    fn get_requests_match_the_vectors() {
        assert_eq!(
            sign("GET", "/", &[], ""),
            expect("tL+y4hxyHxgWVD30X3pWnGKHcPzmrIF+LThiAOhMxYU=")
        );
        assert_eq!(
            sign("GET", "/testapi/v1/t1?p1=1&p2=2", &[], ""),
            expect("hKDH1UlnQySSHjvIcZpDMbQHihTQ0XyVAKZaApabdeA=")
        );
    }

    #[test]
    fn post_bodies_are_hashed_up_to_max_body() {
        assert_eq!(
            sign(
                "POST",
                "/testapi/v1/t3",
                &[],
                "datadatadatadatadatadatadatadata"
            ),
            expect("hXm4iCxtpN22m4cbZb4lVLW5rhX8Ca82vCFqXzSTPe4=")
        );
        // "POST length equals max_body" and "POST too large" share one signature: only the
        // first max_body bytes are hashed.
        let at_limit = "d".repeat(2048);
        let too_large = "d".repeat(2048 + 1000);
        let sig = expect("6Q6PiTipLae6n4GsSIDTCJ54bEbHUBp+4MUXrbQCBoY=");
        assert_eq!(sign("POST", "/testapi/v1/t3", &[], &at_limit), sig);
        assert_eq!(sign("POST", "/testapi/v1/t3", &[], &too_large), sig);
        assert_eq!(
            sign("POST", "/testapi/v1/t6", &[], ""),
            expect("1gEDxeQGD5GovIkJJGcBaKnZ+VaPtrc4qBUHixjsPCQ=")
        );
    }

    #[test]
    fn put_bodies_are_not_hashed() {
        assert_eq!(
            sign(
                "PUT",
                "/testapi/v1/t6",
                &[],
                "PPPPPPPPPPPPPPPPPPPPPPPPPPPPPPP"
            ),
            expect("GNBWEYSEWOLtu+7dD52da2C39aX/Jchpon3K/AmBqBU=")
        );
    }

    #[test]
    fn configured_headers_are_signed_in_order_with_whitespace_collapsed() {
        assert_eq!(
            sign(
                "GET",
                "/testapi/v1/t4",
                &[("X-Test1", "test-simple-header")],
                ""
            ),
            expect("8F9AybcRw+PLxnvT+H0JRkjROrrUgsxJTnRXMzqvcwY=")
        );
        assert_eq!(
            sign(
                "GET",
                "/testapi/v1/t4",
                &[("X-Test1", "\"     test-header-with-spaces     \"")],
                ""
            ),
            expect("ucq2AbjCNtobHfCTuS38fdkl5UDdWHZhQX46fYR8CqI=")
        );
        assert_eq!(
            sign(
                "GET",
                "/testapi/v1/t4",
                &[("X-Test1", "     first-thing      second-thing")],
                ""
            ),
            expect("WtnneL539UadAAOJwnsXvPqT4Kt6z7HMgBEwAFpt3+c=")
        );
        let out_of_order = [("X-Test2", "t2"), ("X-Test1", "t1"), ("X-Test3", "t3")];
        assert_eq!(
            sign("GET", "/testapi/v1/t4", &out_of_order, ""),
            expect("Wus73Nx8jOYM+kkBFF2q8D1EATRIMr0WLWwpLBgkBqY=")
        );
        let extra = [
            ("X-Test2", "t2"),
            ("X-Test1", "t1"),
            ("X-Test3", "t3"),
            ("X-Extra", "this won't be included"),
        ];
        assert_eq!(
            sign("GET", "/testapi/v1/t5", &extra, ""),
            expect("Knd/jc0A5Ghhizjayr0AUUvl2MZjBpS3FDSzvtq4Ixc=")
        );
    }

    #[test]
    fn timestamp_and_nonce_have_the_required_shape() {
        let t = OffsetDateTime::from_unix_timestamp(1_395_430_461).unwrap();
        assert_eq!(timestamp(t), TIMESTAMP);
        let n = nonce();
        assert_eq!(n.len(), 36);
        assert_eq!(&n[14..15], "4", "version 4: {n}");
        assert!(matches!(&n[19..20], "8" | "9" | "a" | "b"), "variant: {n}");
        assert_ne!(nonce(), n);
    }

    #[test]
    fn debug_never_prints_credentials() {
        let text = format!("{:?}", vector_signer());
        assert!(!text.contains(SECRET) && !text.contains("akab-client-token"));
        assert!(text.contains("akaa-baseurl"));
    }

    const EDGERC: &str = "[other]\nhost = other.luna.akamaiapis.net\nclient_token = o\nclient_secret = o\naccess_token = o\n\n\
                          [default]\n; comment\nclient_secret = abc+def/ghi=\nhost = https://akab-h.luna.akamaiapis.net/\n\
                          access_token = akab-access\nclient_token = akab-client\nmax_body = 131072\n";

    #[test]
    fn edgerc_default_section_is_read() {
        let c = parse_edgerc(EDGERC).unwrap();
        assert_eq!(c.host, "akab-h.luna.akamaiapis.net");
        assert_eq!(c.client_secret, "abc+def/ghi=");
        assert_eq!(c.access_token, "akab-access");
        assert_eq!(c.client_token, "akab-client");
    }

    #[test]
    fn edgerc_first_section_when_no_default_and_pastes_without_line_breaks() {
        let first = EDGERC.split("[default]").next().unwrap();
        assert_eq!(
            parse_edgerc(first).unwrap().host,
            "other.luna.akamaiapis.net"
        );
        // What a password field leaves of a paste: line breaks removed.
        let glued = EDGERC.replace('\n', "");
        let c = parse_edgerc(&glued).unwrap();
        assert_eq!(c, parse_edgerc(EDGERC).unwrap());
        let bare =
            "client_secret=s3cr3t==host=akab-h.luna.akamaiapis.netaccess_token=a client_token=c";
        let c = parse_edgerc(bare).unwrap();
        assert_eq!(
            (c.client_secret.as_str(), c.host.as_str()),
            ("s3cr3t==", "akab-h.luna.akamaiapis.net")
        );
    }

    #[test]
    fn edgerc_missing_keys_are_named() {
        let err = parse_edgerc("[default]\nhost = h\nclient_token = c\n").unwrap_err();
        assert_eq!(
            err,
            "The .edgerc section has no client_secret, no access_token."
        );
        assert!(parse_edgerc("  ").is_err());
    }
}
