//! How a node's links are protected (SPEC.md §21): Noise on every link, keyed with the
//! network key, or plaintext in the simulator only.

use argon2::{Algorithm, Argon2, Params, Version};

/// argon2id memory cost, KiB (SPEC.md §21.7): 19 MiB, RFC 9106's second recommended option
/// scaled to OWASP's minimum, about 30 ms on one core here.
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
/// argon2id passes over the memory.
pub const ARGON2_PASSES: u32 = 2;
/// argon2id lanes.
pub const ARGON2_LANES: u32 = 1;
/// argon2id salt: fixed, so every node of the network derives the same key from the secret.
pub const ARGON2_SALT: &[u8] = b"weft network secret v1";
/// Longest secret taken, bytes.
pub const SECRET_BYTES_MAX: usize = 4096;

/// The 32-byte pre-shared key mixed into every Noise handshake (`psk0`). A network without a
/// secret uses [`NetworkKey::OPEN`], all zeros; a private network derives it from its secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NetworkKey([u8; 32]);

impl core::fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key bytes.
        if *self == NetworkKey::OPEN {
            f.write_str("NetworkKey(open)")
        } else {
            f.write_str("NetworkKey(secret)")
        }
    }
}

/// Why a secret cannot be turned into a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret is empty.
    #[error("the network secret is empty")]
    Empty,
    /// The secret is longer than [`SECRET_BYTES_MAX`].
    #[error("the network secret is longer than {SECRET_BYTES_MAX} bytes")]
    TooLong,
}

impl NetworkKey {
    /// The key of a network without a secret: 32 zero bytes.
    pub const OPEN: NetworkKey = NetworkKey([0; 32]);

    /// The key of a private network: argon2id of `secret` with the parameters above.
    pub fn derive(secret: &[u8]) -> Result<NetworkKey, SecretError> {
        if secret.is_empty() {
            return Err(SecretError::Empty);
        }
        if secret.len() > SECRET_BYTES_MAX {
            return Err(SecretError::TooLong);
        }
        let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, Some(32))
            // The constants above are within argon2's ranges; a test builds them.
            .expect("argon2 parameters within range");
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut key = [0u8; 32];
        argon
            .hash_password_into(secret, ARGON2_SALT, &mut key)
            // The secret's length is bounded above, the salt and output length are fixed and
            // within range: nothing left for argon2 to refuse.
            .expect("argon2id over a bounded secret");
        Ok(NetworkKey(key))
    }

    /// A key from its 32 bytes (test vectors, a key derived elsewhere).
    pub fn from_bytes(bytes: [u8; 32]) -> NetworkKey {
        NetworkKey(bytes)
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// How a node's links are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkEncryption {
    /// Noise (SPEC.md §21): every byte after the TCP connection opens is a Noise message.
    #[default]
    Noise,
    /// weft frames in the clear. For the simulator's speed runs only: no driver offers it,
    /// and a node so configured cannot talk to any other kind.
    PlaintextSimulationOnly,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_derives_one_key_and_another_secret_another() {
        let a = NetworkKey::derive(b"correct horse").unwrap();
        assert_eq!(a, NetworkKey::derive(b"correct horse").unwrap());
        assert_ne!(a, NetworkKey::derive(b"correct horsf").unwrap());
        assert_ne!(a, NetworkKey::OPEN);
    }

    #[test]
    fn empty_and_overlong_secrets_are_refused() {
        assert_eq!(NetworkKey::derive(b""), Err(SecretError::Empty));
        let long = vec![b'x'; SECRET_BYTES_MAX + 1];
        assert_eq!(NetworkKey::derive(&long), Err(SecretError::TooLong));
        assert!(NetworkKey::derive(&long[..SECRET_BYTES_MAX]).is_ok());
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let k = NetworkKey::derive(b"s").unwrap();
        assert_eq!(format!("{k:?}"), "NetworkKey(secret)");
    }
}
