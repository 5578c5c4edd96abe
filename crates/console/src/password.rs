//! Password hashes (argon2id PHC strings) and token comparison.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use subtle::ConstantTimeEq as _;

use crate::settings::Credential;

/// A new argon2id hash of `password` with a random salt, as a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$…`): what an account's `password_hash`
/// holds.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Why `phc` is not an argon2 password hash, if it is not (never quoting it).
pub fn hash_problem(phc: &str) -> Option<String> {
    match PasswordHash::new(phc) {
        Ok(h) if h.algorithm.as_str().starts_with("argon2") && h.hash.is_some() => None,
        Ok(h) => Some(format!(
            "is a {} hash: only argon2 hashes are accepted (make one with `bridge console hash-password`)",
            h.algorithm
        )),
        Err(_) => Some(
            "is not a PHC password hash string: make one with `bridge console hash-password`"
                .into(),
        ),
    }
}

/// A hash checked when the account name is unknown, so a wrong name takes
/// as long as a wrong password (the answer does not tell names apart).
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3ktc2FsdC0xMjM0$0Ae2+RFeQWfUNhmn4Xwr9Ig1dhvaV16MxxTrqtrUk+o";

/// Whether `given` proves `credential`. Slow on purpose for passwords
/// (argon2): call it off the async workers.
pub fn matches(credential: Option<&Credential>, given: &str) -> bool {
    match credential {
        Some(Credential::PasswordHash(phc)) => verify_hash(phc, given),
        Some(Credential::Token(token)) => token.as_bytes().ct_eq(given.as_bytes()).into(),
        None => {
            let _ = verify_hash(DECOY, given);
            false
        }
    }
}

fn verify_hash(phc: &str, given: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(given.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(hash_problem(&phc).is_none());
        let c = Credential::PasswordHash(phc.clone());
        assert!(matches(Some(&c), "correct horse"));
        assert!(!matches(Some(&c), "correct horse "));
        // A new salt each time.
        assert_ne!(phc, hash_password("correct horse").unwrap());
    }

    #[test]
    fn tokens_compare_exactly_and_unknown_accounts_never_match() {
        let c = Credential::Token("t0ken".into());
        assert!(matches(Some(&c), "t0ken"));
        assert!(!matches(Some(&c), "t0ke"));
        assert!(!matches(None, "anything"));
        assert!(hash_problem(DECOY).is_none());
    }

    #[test]
    fn other_hashes_are_refused_without_being_quoted() {
        let why = hash_problem("$2b$12$abcdefghijklmnopqrstuv").unwrap();
        assert!(!why.contains("abcdefgh"), "{why}");
        assert!(hash_problem("plain text password").is_some());
    }
}
