//! The wire format of UCM's tokens: compact JWS (RS256) and compact JWE (`dir`, A128CBC-HS256),
//! encoded and decoded by pure functions over the keys of [`super::keys`].
//!
//! Headers are written by hand-ordered structs (serde keeps field order) so that the bytes are
//! UCM's, `{"alg":"RS256","typ":"JWT","kid":..}` and `{"alg":"dir","cty":"JWT",
//! "enc":"A128CBC-HS256","kid":..}`; JSON gives key order no meaning, but a byte-for-byte
//! emulation should not differ where nothing forces it to. Decoding never reads a claim: it
//! returns the payload bytes only after the signature (JWS) or the tag (JWE) has verified.

use aws_lc_rs::cipher::DecryptionContext;
use aws_lc_rs::constant_time;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::keys::{EncryptionKey, SigningKey};
use super::{AuthError, KeyError};

/// The only JWS algorithm accepted or produced.
pub(super) const JWS_ALG: &str = "RS256";
/// JWE key management: the shared key is the content key (RFC 7518 §4.5).
pub(super) const JWE_ALG: &str = "dir";
/// JWE content encryption (RFC 7518 §5.2.3).
pub(super) const JWE_ENC: &str = "A128CBC-HS256";

const IV_LEN: usize = 16;
/// A128CBC-HS256 keeps the first half of the HMAC-SHA-256 output (`T_LEN` = 16).
const TAG_LEN: usize = 16;

/// JWS protected header as issued. Field order is the JSON order.
#[derive(Serialize)]
struct JwsHeaderOut<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

/// JWE protected header as issued. Field order is the JSON order.
#[derive(Serialize)]
struct JweHeaderOut<'a> {
    alg: &'a str,
    cty: &'a str,
    enc: &'a str,
    kid: &'a str,
}

/// What the JWS verifier reads of a header; other members are ignored (RFC 7515 §4), except
/// `crit`: we implement no extension, so a token that requires one is refused.
#[derive(Deserialize)]
struct JwsHeaderIn {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// What the JWE decrypter reads of a header; `zip` is refused too (we never compress).
#[derive(Deserialize)]
struct JweHeaderIn {
    alg: String,
    enc: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
    #[serde(default)]
    zip: Option<IgnoredAny>,
}

/// base64url without padding (RFC 7515 §2).
pub(super) fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Strict base64url decoding: no padding, no non-zero trailing bits; anything else is
/// [`AuthError::Malformed`].
pub(super) fn unb64(text: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| AuthError::Malformed)
}

fn json_part<T: DeserializeOwned>(b64_text: &str) -> Result<T, AuthError> {
    serde_json::from_slice(&unb64(b64_text)?).map_err(|_| AuthError::Malformed)
}

/// A compact JWS of `payload_json` under UCM's header, signed RS256 with `key`.
pub(super) fn encode_jws(payload_json: &[u8], key: &SigningKey) -> Result<String, KeyError> {
    let header = JwsHeaderOut {
        alg: JWS_ALG,
        typ: "JWT",
        kid: &key.kid,
    };
    let header = serde_json::to_vec(&header).map_err(|e| KeyError::Signing(e.to_string()))?;
    sign_compact(&header, payload_json, &key.encoding)
}

/// Signs `header_json` and `payload_json` as given (RS256): the building block of
/// [`encode_jws`], and of tests that forge headers.
pub(super) fn sign_compact(
    header_json: &[u8],
    payload_json: &[u8],
    key: &EncodingKey,
) -> Result<String, KeyError> {
    let mut token = b64(header_json);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload_json, &mut token);
    let signature = jsonwebtoken::crypto::sign(token.as_bytes(), key, Algorithm::RS256)
        .map_err(|e| KeyError::Signing(e.to_string()))?;
    token.push('.');
    token.push_str(&signature);
    Ok(token)
}

/// Checks a compact JWS against `key` and returns its payload bytes.
///
/// Order: three non-empty parts, else `Malformed`; header JSON (`Malformed`); `alg` = RS256,
/// whatever else it says (`none`, `HS256`, `RS384`...) is `BadAlgorithm`; no `crit`
/// (`Malformed`); `kid` = `key`'s (`UnknownKey`, before any RSA work); then the RSA signature
/// (`BadSignature`). The payload is not decoded before the signature has verified.
pub(super) fn verify_jws(token: &str, key: &SigningKey) -> Result<Vec<u8>, AuthError> {
    let (signing_input, signature) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
    let (header, payload) = signing_input.split_once('.').ok_or(AuthError::Malformed)?;
    if [header, payload, signature].iter().any(|p| p.is_empty()) || payload.contains('.') {
        return Err(AuthError::Malformed);
    }
    let header: JwsHeaderIn = json_part(header)?;
    if header.alg != JWS_ALG {
        return Err(AuthError::BadAlgorithm);
    }
    if header.crit.is_some() {
        return Err(AuthError::Malformed);
    }
    if header.kid.as_deref() != Some(&*key.kid) {
        return Err(AuthError::UnknownKey);
    }
    match jsonwebtoken::crypto::verify(
        signature,
        signing_input.as_bytes(),
        &key.decoding,
        Algorithm::RS256,
    ) {
        Ok(true) => unb64(payload),
        Ok(false) => Err(AuthError::BadSignature),
        Err(e) if matches!(e.kind(), ErrorKind::Base64(_)) => Err(AuthError::Malformed),
        // Key or provider failures: ours, not the client's.
        Err(_) => Err(AuthError::Internal),
    }
}

/// A compact JWE of `plaintext` with `key` (`dir`, A128CBC-HS256, random IV), UCM's header.
pub(super) fn encrypt_jwe(plaintext: &[u8], key: &EncryptionKey) -> Result<String, KeyError> {
    let header = JweHeaderOut {
        alg: JWE_ALG,
        cty: "JWT",
        enc: JWE_ENC,
        kid: &key.kid,
    };
    let header = serde_json::to_vec(&header).map_err(|e| KeyError::Signing(e.to_string()))?;
    let header = b64(&header);
    let mut ciphertext = plaintext.to_vec();
    // `encrypt` draws a fresh random IV from aws-lc's CSPRNG and hands it back in the context.
    let context = key
        .encrypt
        .encrypt(&mut ciphertext)
        .map_err(|_| KeyError::Encryption("AES-128-CBC encryption"))?;
    let iv: &[u8] = (&context)
        .try_into()
        .map_err(|_| KeyError::Encryption("AES-128-CBC IV"))?;
    let tag = tag(key, header.as_bytes(), iv, &ciphertext);
    // The encrypted-key part is empty with `dir`: hence the `..`.
    Ok(format!(
        "{header}..{}.{}.{}",
        b64(iv),
        b64(&ciphertext),
        b64(&tag)
    ))
}

/// Checks and decrypts a compact JWE with `key`; returns the plaintext.
///
/// Order: five parts with an empty encrypted key and base64url everywhere (`Malformed`); header
/// JSON (`Malformed`); `alg` = `dir` and `enc` = A128CBC-HS256 (`BadAlgorithm`); no `crit` or
/// `zip` (`Malformed`); `kid` = `key`'s (`UnknownKey`); the tag over header, IV and ciphertext,
/// compared in constant time before anything is decrypted (`BadCiphertext`). A failure after a
/// good tag (IV length, padding) means we produced something broken: `Internal`.
pub(super) fn decrypt_jwe(jwe: &str, key: &EncryptionKey) -> Result<Vec<u8>, AuthError> {
    let mut parts = jwe.split('.');
    let (Some(header), Some(""), Some(iv), Some(ciphertext), Some(tag_part), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(AuthError::Malformed);
    };
    let parsed: JweHeaderIn = json_part(header)?;
    if parsed.alg != JWE_ALG || parsed.enc != JWE_ENC {
        return Err(AuthError::BadAlgorithm);
    }
    if parsed.crit.is_some() || parsed.zip.is_some() {
        return Err(AuthError::Malformed);
    }
    if parsed.kid.as_deref() != Some(&*key.kid) {
        return Err(AuthError::UnknownKey);
    }
    let (iv, mut ciphertext, received) = (unb64(iv)?, unb64(ciphertext)?, unb64(tag_part)?);
    // The AAD is the protected header exactly as sent (its base64url text), RFC 7516 §5.2.14.
    let expected = tag(key, header.as_bytes(), &iv, &ciphertext);
    constant_time::verify_slices_are_equal(&expected, &received)
        .map_err(|_| AuthError::BadCiphertext)?;
    // From here on the parts are ones we made: a failure is our bug, not the client's.
    let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| AuthError::Internal)?;
    let plain_len = key
        .decrypt
        .decrypt(
            &mut ciphertext,
            DecryptionContext::Iv128(FixedLength::from(iv)),
        )
        .map_err(|_| AuthError::Internal)?
        .len();
    // `decrypt` unpads in place: the plaintext is the buffer's prefix.
    ciphertext.truncate(plain_len);
    Ok(ciphertext)
}

/// A128CBC-HS256's authentication tag (RFC 7518 §5.2.2.1): the first 16 bytes of
/// HMAC-SHA-256(MAC_KEY, AAD || IV || ciphertext || AL), AL = the AAD's length in bits as a
/// 64-bit big-endian number.
fn tag(key: &EncryptionKey, aad: &[u8], iv: &[u8], ciphertext: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = hmac::Context::with_key(&key.mac);
    mac.update(aad);
    mac.update(iv);
    mac.update(ciphertext);
    // The AAD is a token part, at most MAX_TOKEN_LEN bytes: the bit count cannot overflow.
    let aad_bits = u64::try_from(aad.len())
        .unwrap_or(u64::MAX)
        .saturating_mul(8);
    mac.update(&aad_bits.to_be_bytes());
    let full = mac.sign();
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&full.as_ref()[..TAG_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7518 Appendix B.1: the A128CBC-HS256 test vector, tag part.
    #[test]
    fn tag_matches_rfc7518_b1() {
        let k: Vec<u8> = (0u8..32).collect();
        let key = EncryptionKey::load(
            "8d0d5324-f4f0-4b0b-811e-4a59fdb6b722",
            &k.try_into().unwrap(),
        )
        .unwrap();
        let iv = hex::decode("1af38c2dc2b96ffdd86694092341bc04").unwrap();
        let aad = b"The second principle of Auguste Kerckhoffs";
        let e = hex::decode(concat!(
            "c80edfa32ddf39d5ef00c0b468834279a2e46a1b8049f792f76bfe54b903a9c9",
            "a94ac9b47ad2655c5f10f9aef71427e2fc6f9b3f399a221489f16362c7032336",
            "09d45ac69864e3321cf82935ac4096c86e133314c54019e8ca7980dfa4b9cf1b",
            "384c486f3a54c51078158ee5d79de59fbd34d848b3d69550a67646344427ade5",
            "4b8851ffb598f7f80074b9473c82e2db",
        ))
        .unwrap();
        let t = hex::decode("652c3fa36b0a7c5b3219fab3a30bc1c4").unwrap();
        assert_eq!(tag(&key, aad, &iv, &e).to_vec(), t);
        // And the ciphertext decrypts to the RFC's plaintext.
        let mut buf = e;
        let iv: [u8; 16] = iv.try_into().unwrap();
        let plain = key
            .decrypt
            .decrypt(&mut buf, DecryptionContext::Iv128(FixedLength::from(iv)))
            .unwrap();
        assert!(plain.starts_with(b"A cipher system must not be required to be secret"));
    }

    #[test]
    fn base64url_is_strict() {
        assert_eq!(unb64("AQ").unwrap(), [1]);
        assert_eq!(unb64("AQ=="), Err(AuthError::Malformed));
        assert_eq!(
            unb64("AR"),
            Err(AuthError::Malformed),
            "non-zero trailing bits"
        );
        assert_eq!(unb64("A+"), Err(AuthError::Malformed));
        assert_eq!(b64(&[0xfb, 0xff]), "-_8");
    }
}
