//! Encryption of provider credentials at rest.
//!
//! A 32-byte master key comes either from `CDN_INVALIDATOR_SECRET` (via HKDF) or
//! from a key file beside the SQLite database. Sub-keys are derived from it with
//! HKDF so that the credential cipher and the session cookie key never share
//! key material. Stored values look like `enc:v1:<base64url(nonce || ciphertext)>`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

/// Minimum length in bytes of a secret given through `CDN_INVALIDATOR_SECRET`.
pub const MIN_SECRET_LEN: usize = 32;

/// Prefix shared by every encrypted format, present and future.
const ENC_PREFIX: &str = "enc:";
/// Prefix of the current format (after [`ENC_PREFIX`]).
const V1_TAG: &str = "v1:";
/// Fixed, app-specific HKDF salt for deriving the master key from a secret.
const SECRET_SALT: &[u8] = b"cdn-invalidator";
const MASTER_INFO: &[u8] = b"cdn-invalidator master key v1";
const CREDENTIALS_INFO: &[u8] = b"cdn-invalidator credentials v1";
const SESSION_INFO: &[u8] = b"cdn-invalidator session cookie key v1";
/// Associated data of the check value, so it cannot pass for a credential.
const CHECK_CONTEXT: &str = "key-check";
const CHECK_PLAINTEXT: &str = "cdn-invalidator key check v1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const KEY_HEX_LEN: usize = 64;

/// Errors from key handling and credential decryption.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The configured secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error(
        "CDN_INVALIDATOR_SECRET must be at least 32 bytes long (generate one with `openssl rand -hex 32`)"
    )]
    SecretTooShort,
    /// The key file exists but does not hold a 64-character hex key.
    #[error("key file {} is invalid: {reason}", .path.display())]
    BadKeyFile { path: PathBuf, reason: String },
    /// The key file can be read or written by group or others.
    #[error(
        "key file {} is accessible by other users (mode {mode:04o}); run `chmod 600 {}` and restart",
        .path.display(),
        .path.display()
    )]
    KeyFileTooOpen { path: PathBuf, mode: u32 },
    /// Reading or writing the key file (or its directory) failed.
    #[error("key file {}: {action} failed", .path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// The stored value has no `enc:` prefix: it is plain text.
    #[error("stored value is not encrypted")]
    NotEncrypted,
    /// The stored value has the prefix but is corrupted, truncated or of an unknown version.
    #[error("stored credential is corrupted or in an unknown format")]
    Malformed,
    /// Authentication failed: another key, another context, or tampering.
    #[error(
        "stored credentials cannot be decrypted with this secret: was CDN_INVALIDATOR_SECRET or the key file changed?"
    )]
    WrongKey,
}

/// The 32-byte root key; every actual key is derived from it with HKDF.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

// Manual impl so the key never ends up in logs or panic messages.
impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Whether a stored value is in an encrypted format (any version), as opposed to plain text.
pub fn is_encrypted(stored: &str) -> bool {
    // Match the whole `enc:` family so a newer format is never mistaken for plain text.
    stored.starts_with(ENC_PREFIX)
}

impl MasterKey {
    /// Derives the master key from a user-supplied secret of at least 32 bytes.
    pub fn from_secret(secret: &str) -> Result<MasterKey, CryptoError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(CryptoError::SecretTooShort);
        }
        let hk = Hkdf::<Sha256>::new(Some(SECRET_SALT), secret.as_bytes());
        let mut key = [0u8; 32];
        hk.expand(MASTER_INFO, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Ok(MasterKey(key))
    }

    /// Generates a new random master key (used on first start and for key rotation).
    pub fn generate() -> MasterKey {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        MasterKey(key)
    }

    /// Loads the key file at `path`, or creates it (mode 0600) with a random key.
    ///
    /// Returns the key and whether the file was created. An existing file must hold
    /// exactly 64 hex characters and must not be accessible by group or others.
    pub fn load_or_create(path: &Path) -> Result<(MasterKey, bool), CryptoError> {
        create_parent_dir(path)?;
        let key = MasterKey::generate();
        // create_new: if another process wins the race we read its key instead of clobbering it.
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match opened {
            Ok(mut file) => {
                if let Err(e) = write_key(&mut file, &key) {
                    // Don't leave an empty key file behind that would block the next start.
                    let _ = fs::remove_file(path);
                    return Err(io_err(path, "writing", e));
                }
                sync_parent_dir(path);
                Ok((key, true))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((read_key_file(path)?, false)),
            Err(e) => Err(io_err(path, "creating", e)),
        }
    }

    /// Writes the key to `path` atomically (0600 temp file in the same directory, then rename),
    /// replacing any existing file.
    pub fn write_to(&self, path: &Path) -> Result<(), CryptoError> {
        create_parent_dir(path)?;
        let file_name = path
            .file_name()
            .ok_or_else(|| CryptoError::BadKeyFile {
                path: path.to_path_buf(),
                reason: "path has no file name".into(),
            })?
            .to_string_lossy();
        // Same directory so the rename is atomic; random suffix so concurrent writers don't collide.
        let tmp = path.with_file_name(format!(
            ".{file_name}.tmp-{}-{:016x}",
            std::process::id(),
            OsRng.next_u64()
        ));
        let result = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, "creating", e))
            .and_then(|mut file| write_key(&mut file, self).map_err(|e| io_err(&tmp, "writing", e)))
            .and_then(|()| fs::rename(&tmp, path).map_err(|e| io_err(path, "replacing", e)));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        sync_parent_dir(path);
        Ok(())
    }

    /// 64 bytes of key material for the session cookie key (`actix_web::cookie::Key::from`).
    pub fn session_key_material(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        self.expand(SESSION_INFO, &mut out);
        out
    }

    /// Encrypts `plaintext` for storage; `context` (e.g. the settings key) is bound as
    /// associated data so the result only decrypts under the same context.
    pub fn encrypt(&self, plaintext: &str, context: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        // 24-byte random nonces: collisions are negligible, no counter to persist.
        OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: context.as_bytes(),
        };
        let ciphertext = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), payload)
            .expect("XChaCha20-Poly1305 only fails on inputs of hundreds of GiB");
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        format!("{ENC_PREFIX}{V1_TAG}{}", URL_SAFE_NO_PAD.encode(blob))
    }

    /// Decrypts a value produced by [`MasterKey::encrypt`] with the same `context`.
    pub fn decrypt(&self, stored: &str, context: &str) -> Result<String, CryptoError> {
        let rest = stored
            .strip_prefix(ENC_PREFIX)
            .ok_or(CryptoError::NotEncrypted)?;
        let body = rest.strip_prefix(V1_TAG).ok_or(CryptoError::Malformed)?;
        let blob = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| CryptoError::Malformed)?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        let plaintext = self
            .cipher()
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| CryptoError::WrongKey)?;
        String::from_utf8(plaintext).map_err(|_| CryptoError::Malformed)
    }

    /// An encrypted known constant to store in the database, so a wrong key is
    /// detected at start even when no credentials are stored yet.
    pub fn check_value(&self) -> String {
        self.encrypt(CHECK_PLAINTEXT, CHECK_CONTEXT)
    }

    /// Verifies a value from [`MasterKey::check_value`]; `WrongKey` if this key did not make it.
    pub fn verify_check_value(&self, stored: &str) -> Result<(), CryptoError> {
        if self.decrypt(stored, CHECK_CONTEXT)? == CHECK_PLAINTEXT {
            Ok(())
        } else {
            Err(CryptoError::WrongKey)
        }
    }

    /// HKDF-expand of the master key; it is already uniformly random, so it serves as the PRK.
    fn expand(&self, info: &[u8], out: &mut [u8]) {
        Hkdf::<Sha256>::from_prk(&self.0)
            .expect("a 32-byte PRK is valid for HKDF-SHA256")
            .expand(info, out)
            .expect("outputs of at most 64 bytes are valid HKDF-SHA256 lengths");
    }

    /// The credential sub-key, so the master key itself never keys a cipher.
    fn credentials_key(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        self.expand(CREDENTIALS_INFO, &mut key);
        key
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.credentials_key()))
    }
}

fn io_err(path: &Path, action: &'static str, source: io::Error) -> CryptoError {
    CryptoError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

fn create_parent_dir(path: &Path) -> Result<(), CryptoError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            fs::create_dir_all(dir).map_err(|e| io_err(dir, "creating directory", e))
        }
        _ => Ok(()),
    }
}

/// Best effort: make the new directory entry durable, since losing the key loses the credentials.
fn sync_parent_dir(path: &Path) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn write_key(file: &mut File, key: &MasterKey) -> io::Result<()> {
    let mut text = String::with_capacity(KEY_HEX_LEN + 1);
    for b in key.0 {
        text.push(char::from_digit(u32::from(b >> 4), 16).expect("nibble < 16"));
        text.push(char::from_digit(u32::from(b & 0xf), 16).expect("nibble < 16"));
    }
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn read_key_file(path: &Path) -> Result<MasterKey, CryptoError> {
    let bad = |reason: &str| CryptoError::BadKeyFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let meta = fs::metadata(path).map_err(|e| io_err(path, "reading", e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CryptoError::KeyFileTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    // A process that just won the create race may not have written yet: wait briefly.
    let mut bytes = Vec::new();
    for attempt in 0..20 {
        bytes = fs::read(path).map_err(|e| io_err(path, "reading", e))?;
        if !bytes.is_empty() {
            break;
        }
        if attempt < 19 {
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    if bytes.is_empty() {
        return Err(bad(
            "the file is empty (if no credentials were ever stored, delete it to generate a new key)",
        ));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| bad("expected 64 hexadecimal characters, found binary data"))?
        .trim();
    if text.len() != KEY_HEX_LEN {
        return Err(bad(&format!(
            "expected 64 hexadecimal characters, found {}",
            text.chars().count()
        )));
    }
    let digits: Option<Vec<u8>> = text
        .chars()
        .map(|c| c.to_digit(16).map(|d| d as u8))
        .collect();
    let digits = digits.ok_or_else(|| bad("contains a character that is not hexadecimal"))?;
    let mut key = [0u8; 32];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (pair[0] << 4) | pair[1];
    }
    Ok(MasterKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: &str = "secret:akamai_client_secret";

    fn key(b: u8) -> MasterKey {
        MasterKey([b; 32])
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn round_trip() {
        let k = key(1);
        for text in ["", "s3cr3t", "ünïcødé ✓", &"x".repeat(10_000)] {
            let stored = k.encrypt(text, CTX);
            assert!(stored.starts_with("enc:v1:"));
            assert!(is_encrypted(&stored));
            assert_eq!(k.decrypt(&stored, CTX).unwrap(), text);
        }
    }

    #[test]
    fn random_nonce_makes_ciphertexts_differ() {
        let k = key(1);
        let a = k.encrypt("same", CTX);
        let b = k.encrypt("same", CTX);
        assert_ne!(a, b);
        assert_eq!(k.decrypt(&a, CTX).unwrap(), k.decrypt(&b, CTX).unwrap());
    }

    #[test]
    fn wrong_key_is_rejected() {
        let stored = key(1).encrypt("s3cr3t", CTX);
        assert!(matches!(
            key(2).decrypt(&stored, CTX),
            Err(CryptoError::WrongKey)
        ));
        let msg = CryptoError::WrongKey.to_string();
        assert!(msg.contains("CDN_INVALIDATOR_SECRET"), "{msg}");
    }

    #[test]
    fn wrong_context_is_rejected() {
        let k = key(1);
        let stored = k.encrypt("s3cr3t", CTX);
        assert!(matches!(
            k.decrypt(&stored, "secret:cloudflare_api_token"),
            Err(CryptoError::WrongKey)
        ));
    }

    #[test]
    fn tampered_ciphertext_is_rejected() {
        let k = key(1);
        let stored = k.encrypt("s3cr3t", CTX);
        let mut blob = URL_SAFE_NO_PAD.decode(&stored["enc:v1:".len()..]).unwrap();
        for i in [0, NONCE_LEN, blob.len() - 1] {
            blob[i] ^= 0x01;
            let tampered = format!("enc:v1:{}", URL_SAFE_NO_PAD.encode(&blob));
            assert!(matches!(
                k.decrypt(&tampered, CTX),
                Err(CryptoError::WrongKey)
            ));
            blob[i] ^= 0x01;
        }
    }

    #[test]
    fn truncated_or_garbled_is_malformed() {
        let k = key(1);
        let stored = k.encrypt("s3cr3t", CTX);
        let short = URL_SAFE_NO_PAD.encode([0u8; NONCE_LEN + TAG_LEN - 1]);
        for bad in [
            "enc:v1:".to_string(),
            format!("enc:v1:{short}"),
            stored[..stored.len() - 1].to_string(),
            "enc:v1:not base64!".to_string(),
            "enc:v2:abcd".to_string(),
        ] {
            assert!(
                matches!(k.decrypt(&bad, CTX), Err(CryptoError::Malformed)),
                "{bad}"
            );
        }
    }

    #[test]
    fn plain_text_is_not_encrypted() {
        assert!(!is_encrypted("s3cr3t"));
        assert!(matches!(
            key(1).decrypt("s3cr3t", CTX),
            Err(CryptoError::NotEncrypted)
        ));
    }

    #[test]
    fn from_secret_checks_length_and_is_deterministic() {
        assert!(matches!(
            MasterKey::from_secret(&"a".repeat(31)),
            Err(CryptoError::SecretTooShort)
        ));
        let secret = "a".repeat(32);
        let a = MasterKey::from_secret(&secret).unwrap();
        let b = MasterKey::from_secret(&secret).unwrap();
        assert_eq!(a.0, b.0);
        assert_ne!(a.0, MasterKey::from_secret(&"b".repeat(32)).unwrap().0);
        // The secret is stretched by HKDF, not used verbatim.
        assert_ne!(&a.0[..], secret.as_bytes());
        assert_eq!(b.decrypt(&a.encrypt("x", CTX), CTX).unwrap(), "x");
    }

    #[test]
    fn session_material_is_separate_and_deterministic() {
        let k = key(1);
        let session = k.session_key_material();
        assert_eq!(session, k.clone().session_key_material());
        assert_ne!(session, key(2).session_key_material());
        let enc = k.credentials_key();
        assert_ne!(&session[..32], &enc[..]);
        assert_ne!(&session[..32], &k.0[..]);
        assert_ne!(enc, k.0);
    }

    #[test]
    fn check_value_detects_wrong_key() {
        let check = key(1).check_value();
        key(1).verify_check_value(&check).unwrap();
        assert!(matches!(
            key(2).verify_check_value(&check),
            Err(CryptoError::WrongKey)
        ));
        // A credential is not accepted as a check value (different context).
        assert!(matches!(
            key(1).verify_check_value(&key(1).encrypt(CHECK_PLAINTEXT, CTX)),
            Err(CryptoError::WrongKey)
        ));
    }

    #[test]
    fn key_file_is_created_0600_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("master.key");
        let (first, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(mode_of(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert!(
            text.trim_end()
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );

        let (second, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(!created);
        let stored = first.encrypt("s3cr3t", CTX);
        assert_eq!(second.decrypt(&stored, CTX).unwrap(), "s3cr3t");
    }

    #[test]
    fn concurrent_creation_yields_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let results: Vec<(MasterKey, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| MasterKey::load_or_create(&path).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
        assert!(results.iter().all(|(k, _)| k.0 == results[0].0.0));
    }

    #[test]
    fn open_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::load_or_create(&path).unwrap_err();
        assert!(
            matches!(&err, CryptoError::KeyFileTooOpen { mode: 0o644, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
    }

    #[test]
    fn bad_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        for content in [
            "xyz\n".to_string(),
            "a".repeat(63),
            "a".repeat(65),
            format!("{}g", "a".repeat(63)),
        ] {
            fs::write(&path, &content).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let err = MasterKey::load_or_create(&path).unwrap_err();
            assert!(matches!(&err, CryptoError::BadKeyFile { .. }), "{err:?}");
            assert!(err.to_string().contains(&*path.to_string_lossy()));
        }
        // Surrounding whitespace and upper case are tolerated.
        fs::write(&path, format!("  {}\n\n", "AB".repeat(32))).unwrap();
        let (k, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k.0, [0xab; 32]);
    }

    #[test]
    fn write_to_is_0600_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (old, _) = MasterKey::load_or_create(&path).unwrap();
        let new = MasterKey::generate();
        assert_ne!(old.0, new.0);
        new.write_to(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        let (loaded, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(loaded.0, new.0);
        // No temp file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn debug_does_not_show_key() {
        let k = key(0xab);
        let shown = format!("{k:?} {k:#?}");
        assert_eq!(format!("{k:?}"), "MasterKey(<redacted>)");
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab,"));
        assert!(!shown.contains('['));
    }
}
