//! Every variant of an asset: what an invalidation sends (listed URLs, cache tags, path
//! prefixes, or everything), and the rules a tag or a prefix must follow before it is sent.
//!
//! Dynamic Media caches by URL, and image URLs carry modifiers in endless combinations. A tag
//! (the origin labels each response with its asset ID) or a path prefix (`/is/image/<ID>*`)
//! clears every variant at once where the CDN supports it.

use super::InvalidationTemplate;
use super::template::PLACEHOLDER;
use url::Url;

pub use super::status::Scope;

// The enum comes from a macro that cannot mark a default variant.
#[allow(clippy::derivable_impls)]
impl Default for Scope {
    fn default() -> Self {
        Self::Urls
    }
}

impl Scope {
    /// What one row is called, singular and plural ("URL"/"URLs", "tag"/"tags").
    pub fn noun(self, count: usize) -> &'static str {
        match (self, count == 1) {
            (Self::Urls, true) => "URL",
            (Self::Urls, false) => "URLs",
            (Self::Tags, true) => "cache tag",
            (Self::Tags, false) => "cache tags",
            (Self::Prefixes, true) => "path prefix",
            (Self::Prefixes, false) => "path prefixes",
            (Self::Everything, true) => "site",
            (Self::Everything, false) => "sites",
        }
    }

    /// How the scope reads in a sentence: "listed URLs", "cache tag", …
    pub fn label(self) -> &'static str {
        match self {
            Self::Urls => "listed URLs",
            Self::Tags => "cache tag",
            Self::Prefixes => "path prefix",
            Self::Everything => "everything",
        }
    }
}

/// The admin's choice of how an asset maps to what the cache knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variants {
    /// Only listed URLs (today's behaviour).
    #[default]
    Urls,
    /// The origin labels each response with the asset ID; purge by tag.
    Tags,
    /// Every URL under the asset's image path; purge by prefix (wildcard, ban).
    Prefixes,
}

impl Variants {
    pub const CHOICES: [(&'static str, &'static str); 3] = [
        ("urls", "Listed URLs only (from the template)"),
        (
            "tags",
            "Cache tag: the origin labels each response with the asset ID",
        ),
        (
            "prefixes",
            "Path prefix: every cached URL under the asset's image path",
        ),
    ];

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "" | "urls" => Some(Self::Urls),
            "tags" => Some(Self::Tags),
            "prefixes" => Some(Self::Prefixes),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Urls => "urls",
            Self::Tags => "tags",
            Self::Prefixes => "prefixes",
        }
    }

    /// The scope an invalidation of every variant uses; `None` for listed URLs only.
    pub fn scope(self) -> Option<Scope> {
        match self {
            Self::Urls => None,
            Self::Tags => Some(Scope::Tags),
            Self::Prefixes => Some(Scope::Prefixes),
        }
    }
}

/// The response header names origins label responses with, per CDN.
pub const TAG_HEADERS: [(&str, &str); 4] = [
    ("Surrogate-Key", "Surrogate-Key (Fastly)"),
    ("xkey", "xkey (Varnish with the xkey module)"),
    ("Cache-Tag", "Cache-Tag (Cloudflare)"),
    ("Edge-Cache-Tag", "Edge-Cache-Tag (Akamai)"),
];

/// What a provider accepts as one tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagRules {
    /// Who sets the rules, for messages ("Akamai").
    pub who: &'static str,
    /// Longest tag, in bytes.
    pub max_len: usize,
    /// Printable ASCII characters (besides letters and digits) a tag may contain.
    pub punctuation: &'static str,
}

impl TagRules {
    /// Tags sent in a header list separated by spaces or commas (xkey, Surrogate-Key,
    /// Cache-Tag): any visible ASCII but the separator comma.
    pub const fn header_list(who: &'static str, max_len: usize) -> Self {
        Self {
            who,
            max_len,
            punctuation: "!\"#$%&'()*+-./:;<=>?@[\\]^_`{|}~",
        }
    }

    /// Checks one tag; the error says what is wrong with it.
    pub fn check(&self, tag: &str) -> Result<(), String> {
        if tag.is_empty() {
            return Err("an empty tag would match nothing (or, on some CDNs, everything).".into());
        }
        if tag.len() > self.max_len {
            return Err(format!(
                "is {} bytes long; {} accepts tags of at most {}.",
                tag.len(),
                self.who,
                self.max_len
            ));
        }
        if let Some(c) = tag
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || self.punctuation.contains(*c)))
        {
            let shown = if c.is_whitespace() || c.is_control() {
                format!("{:?}", c)
            } else {
                format!("\"{c}\"")
            };
            return Err(format!(
                "contains {shown}, which {} does not accept in a tag.",
                self.who
            ));
        }
        Ok(())
    }
}

/// A refused tag or prefix: which asset, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError {
    pub asset_id: String,
    pub reason: String,
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.asset_id, self.reason)
    }
}

/// The image path every prefix must stay inside.
pub const IMAGE_PATH: &str = "/is/image/";

/// A prefix must stay inside [`IMAGE_PATH`] and name something in it, so no prefix can clear
/// a site.
pub fn check_image_path(prefix: &Url) -> Result<(), String> {
    let path = prefix.path();
    if !path.starts_with(IMAGE_PATH) || path.len() <= IMAGE_PATH.len() {
        return Err(format!(
            "the prefix {prefix} is outside the image path {IMAGE_PATH}: only images can be cleared by prefix"
        ));
    }
    Ok(())
}

/// The prefixes of one asset: each template line cut right after its `<ID>` (query dropped),
/// duplicates dropped. A prefix must stay inside [`IMAGE_PATH`] and name the asset, so no
/// prefix can clear a whole site. Lines with `<ID>` only in their query give no prefix.
pub fn prefixes(template: &InvalidationTemplate, asset_id: &str) -> Result<Vec<Url>, String> {
    if asset_id.is_empty() {
        return Err("an empty asset ID would clear the whole image path.".into());
    }
    if matches!(asset_id, "." | "..") {
        return Err(format!(
            "\"{asset_id}\" names a folder, not an asset: its prefix would clear the folder."
        ));
    }
    let encoded = super::template::encode_id(asset_id);
    let mut out: Vec<Url> = Vec::new();
    for line in template.expand_cut(asset_id) {
        let Some(line) = line else { continue };
        let url = Url::parse(&line).map_err(|e| format!("\"{line}\" is not a URL ({e})."))?;
        let path = url.path();
        // A URL parser resolves dot segments: a prefix must still end with the asset's ID as
        // written, or it would name something wider than the asset.
        if !path.ends_with(&format!("/{encoded}")) {
            return Err(format!(
                "the prefix {line} does not end with the asset's ID once read as a URL ({url}): it would clear more than the asset."
            ));
        }
        check_image_path(&url).map_err(|reason| format!("{reason}."))?;
        if !out.contains(&url) {
            out.push(url);
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no template line has {PLACEHOLDER} in its path, so there is no prefix to clear."
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PublishServer;

    fn template(text: &str) -> InvalidationTemplate {
        InvalidationTemplate::parse(text, Some(&PublishServer::parse("server.com").unwrap()))
            .unwrap()
    }

    #[test]
    fn scopes_round_trip_their_names() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(*s));
        }
        assert_eq!(Scope::parse("url"), None);
        assert_eq!(Variants::parse(""), Some(Variants::Urls));
        assert_eq!(Variants::parse("tags").unwrap().scope(), Some(Scope::Tags));
        assert_eq!(Variants::parse("bans"), None);
    }

    #[test]
    fn tags_are_checked_for_emptiness_length_and_characters() {
        let akamai = TagRules {
            who: "Akamai",
            max_len: 128,
            punctuation: "!#$%&'+-.^_`|~",
        };
        assert!(akamai.check("Backpack_B").is_ok());
        assert!(akamai.check("").unwrap_err().contains("empty"));
        assert!(
            akamai
                .check(&"a".repeat(129))
                .unwrap_err()
                .contains("at most 128")
        );
        assert!(akamai.check(&"a".repeat(128)).is_ok());
        assert!(akamai.check("a/b").unwrap_err().contains("\"/\""));
        assert!(akamai.check("a*").unwrap_err().contains("\"*\""));
        let xkey = TagRules::header_list("Varnish xkey", 1024);
        assert!(xkey.check("Company/a*b").is_ok());
        assert!(xkey.check("a b").unwrap_err().contains("' '"));
        assert!(xkey.check("a,b").unwrap_err().contains("\",\""));
        assert!(xkey.check("é").is_err());
    }

    #[test]
    fn prefixes_cut_each_line_after_the_id_and_drop_queries() {
        let t = template(
            "Company/<ID>?$product$\nCompany/<ID>?$thumb$\nhttps://server.com/is/image/<ID>/crop",
        );
        let p = prefixes(&t, "Backpack_B").unwrap();
        let p: Vec<&str> = p.iter().map(Url::as_str).collect();
        assert_eq!(
            p,
            [
                "https://server.com/is/image/Company/Backpack_B",
                "https://server.com/is/image/Backpack_B"
            ]
        );
    }

    #[test]
    fn prefixes_stay_inside_the_image_path() {
        let t = template("https://server.com/<ID>");
        assert!(
            prefixes(&t, "a")
                .unwrap_err()
                .contains("outside the image path")
        );
        let t = template("https://server.com/is/image/x?id=<ID>");
        assert!(prefixes(&t, "a").unwrap_err().contains("no template line"));
        let t = template("<ID>");
        assert!(prefixes(&t, "").unwrap_err().contains("empty asset ID"));
        // Dot segments would widen a prefix to its folder.
        let t = template("Company/<ID>?$product$");
        assert!(prefixes(&t, ".").unwrap_err().contains("names a folder"));
        assert!(prefixes(&t, "..").unwrap_err().contains("names a folder"));
        assert_eq!(
            prefixes(&t, "a.b").unwrap()[0].as_str(),
            "https://server.com/is/image/Company/a.b"
        );
        assert!(prefixes(&template(""), "a").is_err());
    }
}
