//! API tokens: what a token looks like, how it is stored (only a hash), and its name's rules.

use sha2::{Digest, Sha256};

/// Every token starts with this, so a leaked one is recognisable (and scanners can find it).
pub const PREFIX: &str = "cdni_";
/// Random bytes in a token: 256 bits, so a plain SHA-256 is a safe way to store it (unlike a
/// password, it cannot be guessed from a list).
pub const RANDOM_BYTES: usize = 32;
/// Longest token name.
pub const MAX_NAME_CHARS: usize = 100;

/// The text of a new token from `random` bytes: the prefix and the bytes in lower-case hex.
pub fn format(random: &[u8; RANDOM_BYTES]) -> String {
    let mut text = String::with_capacity(PREFIX.len() + 2 * RANDOM_BYTES);
    text.push_str(PREFIX);
    for b in random {
        text.push_str(&format!("{b:02x}"));
    }
    text
}

/// What is stored and looked up: the SHA-256 of the whole token, in hex. `None` for text that
/// cannot be a token (wrong prefix or length), which is refused without a lookup.
pub fn hash(token: &str) -> Option<String> {
    let hex = token.strip_prefix(PREFIX)?;
    if hex.len() != 2 * RANDOM_BYTES || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let digest = Sha256::digest(token.as_bytes());
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// A token's name, trimmed: 1 to [`MAX_NAME_CHARS`] printable characters.
pub fn name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("Give the token a name (what it is for, e.g. \"nightly publish\").".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "A token name has at most {MAX_NAME_CHARS} characters."
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("A token name cannot contain control characters.".into());
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_hex_and_stored_as_their_sha256() {
        let token = format(&[0xab; RANDOM_BYTES]);
        assert_eq!(token.len(), PREFIX.len() + 64);
        assert!(token.starts_with("cdni_abab"));
        let h = hash(&token).unwrap();
        assert_eq!(h.len(), 64);
        assert_ne!(h, token[PREFIX.len()..], "the hash, not the token");
        assert_eq!(hash(&token), Some(h), "the same token, the same hash");
        assert_ne!(hash(&format(&[0xac; RANDOM_BYTES])), hash(&token));
    }

    #[test]
    fn text_that_cannot_be_a_token_has_no_hash() {
        assert_eq!(hash(""), None);
        assert_eq!(hash("cdni_"), None);
        assert_eq!(hash(&format!("xxxx_{}", "a".repeat(64))), None);
        assert_eq!(hash(&format!("cdni_{}", "g".repeat(64))), None);
        assert_eq!(hash(&format!("cdni_{}", "a".repeat(63))), None);
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("  nightly publish "), Ok("nightly publish".into()));
        assert!(name("   ").is_err());
        assert!(name(&"x".repeat(101)).is_err());
        assert!(name("a\u{7}b").is_err());
        assert_eq!(name(&"é".repeat(100)).map(|n| n.chars().count()), Ok(100));
    }
}
