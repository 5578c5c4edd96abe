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

/// A key ring: the current key seals; it and the previous keys open (a seal
/// key rotation keeps the old key here until `bridge inbox reseal` has
/// moved every kept message to the new one).
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    previous: Vec<XChaCha20Poly1305>,
}

// Never print key material.
impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key redacted>)")
    }
}

impl Sealer {
    pub fn from_hex(key: &str) -> Result<Self, SealError> {
        Ok(Self {
            cipher: cipher(key)?,
            previous: Vec::new(),
        })
    }

    /// Also open what an older key sealed (64 hex characters).
    pub fn with_previous(mut self, key: &str) -> Result<Self, SealError> {
        self.previous.push(cipher(key)?);
        Ok(self)
    }

    /// Whether the current key (not an older one) opens this body.
    pub fn sealed_with_current(&self, id: &str, sealed: &[u8]) -> bool {
        open_with(&self.cipher, id, sealed).is_ok()
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

    /// Open with the current key, else with each previous one.
    pub fn open(&self, id: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        std::iter::once(&self.cipher)
            .chain(&self.previous)
            .find_map(|c| open_with(c, id, sealed).ok())
            .ok_or(SealError::Open)
    }
}

fn cipher(key: &str) -> Result<XChaCha20Poly1305, SealError> {
    let bytes = hex::decode(key.trim()).map_err(|_| SealError::BadKey)?;
    if bytes.len() != 32 {
        return Err(SealError::BadKey);
    }
    XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SealError::BadKey)
}

fn open_with(cipher: &XChaCha20Poly1305, id: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    if sealed.len() < 24 {
        return Err(SealError::Open);
    }
    let (nonce, ct) = sealed.split_at(24);
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: id.as_bytes(),
            },
        )
        .map_err(|_| SealError::Open)
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

    #[test]
    fn a_ring_opens_what_older_keys_sealed_and_seals_with_the_current_one() {
        let (old, new) = (Sealer::generate_key_hex(), Sealer::generate_key_hex());
        let before = Sealer::from_hex(&old).unwrap();
        let sealed_old = before.seal("m1", b"x").unwrap();
        let ring = Sealer::from_hex(&new).unwrap().with_previous(&old).unwrap();
        assert_eq!(ring.open("m1", &sealed_old).unwrap(), b"x");
        assert!(!ring.sealed_with_current("m1", &sealed_old));
        let resealed = ring.seal("m1", b"x").unwrap();
        assert!(ring.sealed_with_current("m1", &resealed));
        let new_only = Sealer::from_hex(&new).unwrap();
        assert_eq!(new_only.open("m1", &resealed).unwrap(), b"x");
        assert_eq!(new_only.open("m1", &sealed_old), Err(SealError::Open));
    }
}
