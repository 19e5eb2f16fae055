//! Password hashing with argon2id.

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use std::sync::LazyLock;

/// Shortest password accepted.
pub const MIN_LENGTH: usize = 8;

/// Checks a new password's length (in characters); the reason is shown to the user.
pub fn check_new(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_LENGTH {
        Err(format!(
            "The password must have at least {MIN_LENGTH} characters."
        ))
    } else if chars > 1024 {
        Err("The password must have at most 1024 characters.".into())
    } else {
        Ok(())
    }
}

/// Hashes with argon2id and a random salt (PHC string).
pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?
        .to_string())
}

/// A hash of nothing, verified against when the user does not exist so both cases take as long.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| hash("not a real password").expect("hash"));

/// Verifies `password` against `stored`, or against a dummy hash when there is no user.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    let hash_text = stored.unwrap_or(DUMMY_HASH.as_str());
    let ok = PasswordHash::new(hash_text)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false);
    ok && stored.is_some()
}

/// Runs a blocking hash/verify off the async runtime.
pub async fn spawn_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("password task panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_use_argon2id() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", Some(&h)));
        assert!(!verify("wrong horse", Some(&h)));
        assert!(!verify("not a real password", None));
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(check_new("1234567").is_err());
        assert!(check_new("12345678").is_ok());
    }
}
