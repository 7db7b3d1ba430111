//! Passwords of end users and application users: argon2id PHC strings in the configuration,
//! verified with the `argon2` crate. Verification is deliberately slow (tens of milliseconds
//! and ~19 MiB): callers on the async runtime run it in `spawn_blocking`, behind a bound on
//! how many run at once.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};

/// Whether `phc` is an argon2 PHC string this build can verify; the reason when not.
pub fn check_phc(phc: &str) -> Result<(), String> {
    let hash = PasswordHash::new(phc).map_err(|e| {
        format!("not a PHC password hash ({e}); make one with `sip-oauth-registrar hash-password`")
    })?;
    Algorithm::try_from(hash.algorithm)
        .map(|_| ())
        .map_err(|_| format!("algorithm {} is not argon2", hash.algorithm))
}

/// Whether `password` matches the PHC string `phc`. A malformed hash matches nothing.
pub fn verify(phc: &str, password: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

/// An argon2id PHC string (default parameters: m=19456 KiB, t=2, p=1) with a random salt.
pub fn hash(password: &str) -> Result<String, String> {
    // 16 bytes from the OS CSPRNG (uuid v4 draws from getrandom): a salt needs uniqueness.
    let salt_bytes = uuid::Uuid::new_v4().into_bytes();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let phc = hash("lab").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(check_phc(&phc).is_ok());
        assert!(verify(&phc, "lab"));
        assert!(!verify(&phc, "Lab"));
        assert!(!verify(&phc, ""));
        assert_ne!(hash("lab").unwrap(), phc, "salted");
    }

    #[test]
    fn bad_hashes_are_reported_and_match_nothing() {
        assert!(check_phc("lab").is_err());
        assert!(check_phc("$2b$12$abcdefghijklmnopqrstuv").is_err());
        assert!(!verify("lab", "lab"));
        assert!(!verify("", ""));
    }
}
