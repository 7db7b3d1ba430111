//! The cluster's key material: the RSA signing key of the outer JWS and the 256-bit symmetric key
//! of the inner JWE, each with the `kid` and hash derived from it.
//!
//! Nothing here formats or parses tokens (that is `jose`); this module only loads,
//! checks and names keys. Neither key type prints its secret in `Debug`.

use std::fmt;

use aws_lc_rs::cipher::{
    AES_128, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::hmac;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rcgen::{KeyPair, PublicKeyData};
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::KeyError;

/// Smallest RSA modulus accepted for the signing key, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Length of the JWE encryption key: A128CBC-HS256 takes 16 bytes of HMAC key then 16 of AES key.
pub const ENCRYPTION_KEY_LEN: usize = 32;

/// A fresh random 256-bit JWE encryption key, from aws-lc's CSPRNG.
pub fn generate_encryption_key() -> [u8; ENCRYPTION_KEY_LEN] {
    let mut key = [0u8; ENCRYPTION_KEY_LEN];
    // Invariant: aws-lc's `RAND_bytes` does not return failure; if the OS entropy source is
    // unusable it aborts the process itself. The `Err` arm is unreachable in practice.
    aws_lc_rs::rand::fill(&mut key).expect("aws-lc RAND_bytes never fails (it aborts instead)");
    key
}

/// One RSA signing key and everything derived from it.
pub(super) struct SigningKey {
    /// `<cluster-uuid>:<key_hash>`, the JWS header's `kid`.
    pub(super) kid: Box<str>,
    /// SHA-256 hex of the public key's SPKI DER.
    pub(super) key_hash: String,
    pub(super) encoding: EncodingKey,
    pub(super) decoding: DecodingKey,
}

impl SigningKey {
    /// Loads a PKCS#8 (or PKCS#1) PEM RSA key of at least [`MIN_RSA_BITS`] bits.
    pub(super) fn load(cluster_uuid: &str, pem: &str) -> Result<Self, KeyError> {
        let pair = KeyPair::from_pem(pem).map_err(|e| KeyError::BadPem(e.to_string()))?;
        if pair.algorithm() != &rcgen::PKCS_RSA_SHA256 {
            return Err(KeyError::NotRsa);
        }
        let spki = pair.subject_public_key_info();
        let bits = rsa_modulus_bits(&spki)?;
        if bits < MIN_RSA_BITS {
            return Err(KeyError::KeyTooSmall { bits });
        }
        let key_hash = hex::encode(Sha256::digest(&spki));
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| KeyError::BadPem(e.to_string()))?;
        // For RSA, rcgen's raw public key is the PKCS#1 RSAPublicKey, which aws-lc verifies with.
        let decoding = DecodingKey::from_rsa_der(pair.public_key_raw());
        let key = Self {
            kid: format!("{cluster_uuid}:{key_hash}").into(),
            key_hash,
            encoding,
            decoding,
        };
        key.self_test()?;
        Ok(key)
    }

    /// Signs and verifies a probe: the two halves come from two PEM parsers (rcgen and
    /// jsonwebtoken), and a disagreement must fail at load time, not on every REGISTER.
    fn self_test(&self) -> Result<(), KeyError> {
        const PROBE: &[u8] = b"sip-oauth-registrar key self-test";
        let sig = jsonwebtoken::crypto::sign(PROBE, &self.encoding, Algorithm::RS256)
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        match jsonwebtoken::crypto::verify(&sig, PROBE, &self.decoding, Algorithm::RS256) {
            Ok(true) => Ok(()),
            Ok(false) => Err(KeyError::BadPem(
                "public and private halves disagree".into(),
            )),
            Err(e) => Err(KeyError::BadPem(e.to_string())),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn rsa_modulus_bits(spki: &[u8]) -> Result<usize, KeyError> {
    let (_, info) = SubjectPublicKeyInfo::from_der(spki).map_err(|_| KeyError::NotRsa)?;
    match info.parsed() {
        Ok(PublicKey::RSA(rsa)) => Ok(rsa.key_size()),
        _ => Err(KeyError::NotRsa),
    }
}

/// The JWE key, split as A128CBC-HS256 wants it (RFC 7518 §5.2.2.1): `MAC_KEY` = the first 16
/// bytes, `ENC_KEY` = the last 16. The raw bytes are not kept: only the prepared aws-lc keys
/// (which zeroise on drop) and the hash.
pub(super) struct EncryptionKey {
    /// `<cluster-uuid>:<key_hash>`, the JWE header's `kid`.
    pub(super) kid: Box<str>,
    /// SHA-256 hex of the 32 key bytes (what `show key authz encryption` prints).
    pub(super) key_hash: String,
    pub(super) mac: hmac::Key,
    pub(super) encrypt: PaddedBlockEncryptingKey,
    pub(super) decrypt: PaddedBlockDecryptingKey,
}

impl EncryptionKey {
    pub(super) fn load(
        cluster_uuid: &str,
        key: &[u8; ENCRYPTION_KEY_LEN],
    ) -> Result<Self, KeyError> {
        let (mac_key, aes_key) = key.split_at(ENCRYPTION_KEY_LEN / 2);
        let aes = |k: &[u8]| {
            UnboundCipherKey::new(&AES_128, k).map_err(|_| KeyError::Encryption("AES-128 key"))
        };
        let encrypt = PaddedBlockEncryptingKey::cbc_pkcs7(aes(aes_key)?)
            .map_err(|_| KeyError::Encryption("AES-128-CBC encrypting key"))?;
        let decrypt = PaddedBlockDecryptingKey::cbc_pkcs7(aes(aes_key)?)
            .map_err(|_| KeyError::Encryption("AES-128-CBC decrypting key"))?;
        let key_hash = hex::encode(Sha256::digest(key));
        Ok(Self {
            kid: format!("{cluster_uuid}:{key_hash}").into(),
            key_hash,
            mac: hmac::Key::new(hmac::HMAC_SHA256, mac_key),
            encrypt,
            decrypt,
        })
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}
