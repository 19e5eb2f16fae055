//! Assets of the catalogue: validated IDs and kinds.

use std::fmt;

/// Longest asset ID, in characters.
pub const MAX_ID_CHARS: usize = 512;

/// An asset ID: 1–512 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssetId(String);

impl AssetId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let count = raw.chars().count();
        if count == 0 {
            return Err("the asset ID is empty.".into());
        }
        if count > MAX_ID_CHARS {
            return Err(format!(
                "the asset ID is {count} characters long; at most {MAX_ID_CHARS} are allowed."
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err("the asset ID contains a control character.".into());
        }
        // As a whole path segment these mean "this/parent directory": every URL parser and
        // cache resolves them away, so no URL can address such an asset.
        if raw == "." || raw == ".." {
            return Err(format!(
                "the asset ID \"{raw}\" cannot be used in a URL path."
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an asset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetKind {
    Image,
    Video,
    Other,
}

impl AssetKind {
    /// Parses `image`, `video` or `other` (any case); empty means `other`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "image" => Ok(Self::Image),
            "video" => Ok(Self::Video),
            "other" | "" => Ok(Self::Other),
            other => Err(format!(
                "type \"{other}\" is not one of image, video, other."
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_limited_in_length_and_characters() {
        assert!(AssetId::parse("Backpack_B").is_ok());
        assert!(AssetId::parse("ünïcödé id").is_ok());
        assert!(AssetId::parse(&"é".repeat(512)).is_ok());
        assert!(AssetId::parse(&"é".repeat(513)).is_err());
        assert!(AssetId::parse("").is_err());
        assert!(AssetId::parse("a\nb").is_err());
        assert!(AssetId::parse("a\u{7f}").is_err());
        assert!(AssetId::parse(".").is_err());
        assert!(AssetId::parse("..").is_err());
        assert!(AssetId::parse("...").is_ok());
    }

    #[test]
    fn kinds_parse_case_insensitively_and_default_to_other() {
        assert_eq!(AssetKind::parse("Image").unwrap(), AssetKind::Image);
        assert_eq!(AssetKind::parse(" video ").unwrap(), AssetKind::Video);
        assert_eq!(AssetKind::parse("").unwrap(), AssetKind::Other);
        assert!(AssetKind::parse("pdf").is_err());
    }
}
