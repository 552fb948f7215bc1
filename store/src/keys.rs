//! API keys as secrets: `aiprod_<prefix>_<secret>`, where the prefix (12 hex digits) is public
//! and names the key, and the secret is 256 random bits. Only the SHA-256 of the whole key is
//! stored: a key has far too much entropy for a fast digest to be guessed back, and a fast
//! digest keeps every request's check cheap.

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every key begins with.
const KEY_MARK: &str = "aiprod_";

/// A key just made: shown once, then only its prefix and digest remain.
pub struct NewKey {
    /// The whole key, for the one time it is shown.
    pub secret: SecretString,
    /// Its public prefix.
    pub prefix: String,
    /// SHA-256 of the whole key.
    pub hash: [u8; 32],
}

impl NewKey {
    /// A fresh random key.
    pub fn generate() -> NewKey {
        let mut rng = rand::rng();
        let mut prefix = [0u8; 6];
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut prefix);
        rng.fill_bytes(&mut secret);
        let prefix = hex::encode(prefix);
        let key = format!("{KEY_MARK}{prefix}_{}", hex::encode(secret));
        let hash = digest(&key);
        NewKey {
            secret: SecretString::from(key),
            prefix,
            hash,
        }
    }
}

/// The prefix of a presented key, if it has a key's shape.
pub fn key_prefix(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_MARK)?;
    let (prefix, secret) = rest.split_once('_')?;
    let hexish = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    (prefix.len() == 12 && secret.len() == 64 && hexish(prefix) && hexish(secret)).then_some(prefix)
}

/// SHA-256 of a key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Whether `presented` is the key whose digest is `stored`, compared in constant time.
pub fn matches(presented: &str, stored: &[u8]) -> bool {
    digest(presented).ct_eq(stored).into()
}

/// Whether two secrets (such as the admin token) are equal, compared as digests in constant
/// time, so neither their contents nor their lengths leak through timing.
pub fn same_secret(given: &str, expected: &SecretString) -> bool {
    digest(given)
        .ct_eq(&digest(expected.expose_secret()))
        .into()
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::{NewKey, key_prefix, matches};

    #[test]
    fn a_new_key_names_its_prefix_and_matches_only_its_digest() {
        let k = NewKey::generate();
        let key = k.secret.expose_secret();
        assert_eq!(key_prefix(key), Some(k.prefix.as_str()));
        assert!(matches(key, &k.hash));
        let other = NewKey::generate();
        assert!(!matches(other.secret.expose_secret(), &k.hash));
        assert_ne!(k.prefix, other.prefix);
    }

    #[test]
    fn a_string_without_a_keys_shape_has_no_prefix() {
        for bad in [
            "",
            "aiprod_",
            "aiprod_abc_def",
            "Bearer x",
            "aiprod_zzzzzzzzzzzz_00",
        ] {
            assert_eq!(key_prefix(bad), None, "{bad}");
        }
    }
}
