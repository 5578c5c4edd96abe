//! Sealing inbox bodies at rest with XChaCha20-Poly1305.
//!
//! The key comes from configuration (an environment variable or a file), 32
//! bytes as 64 hex characters. Each body gets a random 24-byte nonce stored in
//! front of the ciphertext; the message id is bound as associated data so a
//! body cannot be swapped between rows.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("inbox key must be 64 hex characters (32 bytes)")]
    BadKey,
    #[error("sealed body is damaged or was sealed with another key")]
    Open,
    #[error("sealing failed")]
    Seal,
}

#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

// Never print key material.
impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key redacted>)")
    }
}

impl Sealer {
    pub fn from_hex(key: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(key.trim()).map_err(|_| SealError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        Ok(Self {
            cipher: XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SealError::BadKey)?,
        })
    }

    /// A fresh random key, hex encoded (for `bridge` to suggest to an operator).
    pub fn generate_key_hex() -> String {
        hex::encode(rand::random::<[u8; 32]>())
    }

    pub fn seal(&self, id: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce_bytes: [u8; 24] = rand::random();
        let nonce = XNonce::from_slice(&nonce_bytes);
        let ct = self
            .cipher
            .encrypt(
                nonce,
                Payload {
                    msg: plaintext,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, id: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 24 {
            return Err(SealError::Open);
        }
        let (nonce, ct) = sealed.split_at(24);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let s = Sealer::from_hex(&Sealer::generate_key_hex()).unwrap();
        let sealed = s.seal("m1", b"{\"name\":\"someone\"}").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"someone"));
        assert_eq!(s.open("m1", &sealed).unwrap(), b"{\"name\":\"someone\"}");
        assert_eq!(s.open("m2", &sealed), Err(SealError::Open));
        let other = Sealer::from_hex(&Sealer::generate_key_hex()).unwrap();
        assert_eq!(other.open("m1", &sealed), Err(SealError::Open));
        assert_eq!(Sealer::from_hex("abcd").unwrap_err(), SealError::BadKey);
    }
}
