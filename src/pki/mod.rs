//! Lab PKI: a small certificate authority that issues the certificates the emulated UCM needs
//! (tomcat and CallManager server certificates, the Expressway-C client certificate for mutual
//! TLS on the MRA OAuth port, a device certificate (LSC) per secure legacy device for 5061) and
//! the RSA key that signs OAuth tokens.
//!
//! The daemon calls [`ensure_lab_pki`] and [`ensure_secret_file`] on start, so a new user never
//! runs a manual certificate step; `certs init` and `certs show` ([`certs`]) do the same on
//! demand and report what is in use. The integration tests use [`Authority`] directly to make
//! their own CAs and client certificates (expired ones too) at test time.

pub mod certs;
mod lab;
pub mod regen;

pub(crate) use certs::dns_and_ip_sans;
pub use certs::{LAB_DIR, lab_plan};
pub use lab::{
    LOCK_FILE, LabPkiFiles, LabPkiPlan, create_private_dir, ensure_lab_pki, ensure_secret_file,
    write_private_file,
};

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, PublicKeyData, RsaKeySize, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Certificates start one day in the past so a peer whose clock lags still accepts them.
const BACKDATE: Duration = DAY;
const CA_VALIDITY_DAYS: u32 = 3653;
const LEAF_VALIDITY_DAYS: u32 = 730;

/// Everything that can go wrong while making, loading or storing lab certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused to generate a key or certificate (e.g. a name that is not IA5 text).
    #[error("certificate generation failed")]
    Rcgen(#[from] rcgen::Error),
    /// Reading, writing or renaming a file failed.
    #[error("{}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A PEM file on disk is not what it should be.
    #[error("{}: {reason}", path.display())]
    BadPem {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A CA certificate or key given in memory cannot be used to issue certificates.
    #[error("unusable CA: {reason}")]
    BadCa {
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate exists on disk without its private key, so it can neither be used nor
    /// re-issued without overwriting something the user may rely on.
    #[error(
        "{} exists but its key {} is missing; restore the key or delete the certificate \
         to have a new pair issued",
        cert.display(),
        key.display()
    )]
    IncompletePair {
        /// The certificate that is present.
        cert: PathBuf,
        /// The key that is missing.
        key: PathBuf,
    },
    /// A device name that cannot name a file (the lab writes `devices/<name>.pem`).
    #[error("device name {name:?} cannot name a certificate file")]
    BadDeviceName {
        /// The offending name.
        name: String,
    },
    /// A certificate must be issued but there is nothing to name in it.
    #[error("no names given for the {what} certificate")]
    NoNames {
        /// Which certificate.
        what: &'static str,
    },
    /// The system clock is before 1970, so no validity period can be computed.
    #[error("system clock is before the Unix epoch")]
    Clock,
}

/// A PEM certificate with its PEM private key (PKCS#8).
#[derive(Clone)]
pub struct CertAndKey {
    /// The certificate, `-----BEGIN CERTIFICATE-----`.
    pub cert_pem: String,
    /// The private key, PKCS#8 `-----BEGIN PRIVATE KEY-----`.
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    // The key is a secret: keep it out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A certificate authority that can issue leaf certificates.
pub struct Authority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// Whether the CA certificate carries a subject key identifier; leaves then carry it as
    /// their authority key identifier (OpenSSL rejects a chain whose AKI and SKI disagree).
    has_key_id: bool,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Makes a new self-signed CA: ECDSA P-256, `CA:TRUE` (path length 0: it issues only
    /// leaves), key usage keyCertSign + cRLSign, valid from a day ago for ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let key_pem = key.serialize_pem();
        Self::self_signed(common_name, key, key_pem)
    }

    /// A new CA certificate for a given key (used when the lab CA key survived but its
    /// certificate did not: same key and same name make a certificate the old leaves chain to).
    fn self_signed(common_name: &str, key: KeyPair, key_pem: String) -> Result<Self, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial());
        set_validity(&mut params, CA_VALIDITY_DAYS)?;
        let cert = params.self_signed(&key)?;
        // Going through the same path as a reload means the freshly made CA issues exactly as
        // a reloaded one will after a restart.
        Self::from_der_and_key(cert.der(), cert.pem(), key, key_pem)
    }

    /// Reloads a CA saved earlier (or any CA whose key is at hand): `cert_pem` holds the CA
    /// certificate (the first certificate is used), `key_pem` its private key (PKCS#8, SEC1 or
    /// PKCS#1). Fails if the certificate is not a CA or the key does not belong to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| PkiError::BadCa {
                reason: format!("no PEM certificate found: {e}"),
            })?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::BadCa {
            reason: format!("private key not usable: {e}"),
        })?;
        Self::from_der_and_key(&der, cert_pem.to_owned(), key, key_pem.to_owned())
    }

    fn from_der_and_key(
        der: &CertificateDer<'_>,
        cert_pem: String,
        key: KeyPair,
        key_pem: String,
    ) -> Result<Self, PkiError> {
        let bad = |reason: String| PkiError::BadCa { reason };
        let (_, x509) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| bad(format!("certificate does not parse: {e}")))?;
        let is_ca = x509
            .basic_constraints()
            .map_err(|e| bad(format!("bad basicConstraints: {e}")))?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(bad(
                "certificate is not a CA (basicConstraints cA is not set)".into(),
            ));
        }
        if x509.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(bad("private key does not match the certificate".into()));
        }
        let key_id = x509
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                    Some(id.0.to_vec())
                }
                _ => None,
            });

        let mut params = CertificateParams::default();
        params.distinguished_name = dn_from_x509(x509.subject()).map_err(bad)?;
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let has_key_id = key_id.is_some();
        if let Some(id) = key_id {
            params.key_identifier_method = KeyIdMethod::PreSpecified(id);
        }
        Ok(Self {
            cert_pem,
            key_pem,
            issuer: Issuer::new(params, key),
            has_key_id,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM, as generated (PKCS#8) or as given to [`Self::from_pem`].
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a server leaf (EKU serverAuth), CN = `common_name`. Each name becomes a SAN: an
    /// IP SAN when it parses as an IP address, else a DNS SAN (duplicates are dropped).
    pub fn issue_server(
        &self,
        common_name: &str,
        names: &[String],
    ) -> Result<CertAndKey, PkiError> {
        self.issue_server_for_unit(common_name, None, names)
    }

    /// Like [`Self::issue_server`], with an organizational unit in the subject so certificates
    /// that share a host name can be told apart (UCM's tomcat and CallManager certificates both
    /// name the node).
    pub fn issue_server_for_unit(
        &self,
        common_name: &str,
        unit: Option<&str>,
        names: &[String],
    ) -> Result<CertAndKey, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert_pem = self.certify_server(common_name, unit, names, &key)?;
        Ok(CertAndKey {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a client leaf, CN = `common_name`, with EKU clientAuth **and** serverAuth because
    /// Expressway-C uses one certificate in both directions. `dns_sans` become DNS SANs; when
    /// empty, only the CN names the client.
    pub fn issue_client(
        &self,
        common_name: &str,
        dns_sans: &[String],
    ) -> Result<CertAndKey, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert_pem = self.certify_client(common_name, dns_sans, &key)?;
        Ok(CertAndKey {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Like [`Self::issue_client`], valid from `not_before` to `not_after` instead of from a
    /// day ago for two years: for tests of expired and not-yet-valid certificates.
    pub fn issue_client_valid(
        &self,
        common_name: &str,
        dns_sans: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<CertAndKey, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = self.client_params(common_name, dns_sans)?;
        set_period(&mut params, not_before, not_after)?;
        Ok(CertAndKey {
            cert_pem: params.signed_by(&key, &self.issuer)?.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Server certificate for an existing key (used to complete a pair whose key survived).
    fn certify_server(
        &self,
        common_name: &str,
        unit: Option<&str>,
        names: &[String],
        key: &KeyPair,
    ) -> Result<String, PkiError> {
        if names.is_empty() {
            return Err(PkiError::NoNames { what: "server" });
        }
        let mut params = self.leaf_params(common_name, unit)?;
        params.subject_alt_names = dedup(names)
            .into_iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(name.try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        Ok(params.signed_by(key, &self.issuer)?.pem())
    }

    /// Client certificate for an existing key.
    fn certify_client(
        &self,
        common_name: &str,
        dns_sans: &[String],
        key: &KeyPair,
    ) -> Result<String, PkiError> {
        let params = self.client_params(common_name, dns_sans)?;
        Ok(params.signed_by(key, &self.issuer)?.pem())
    }

    /// A name that parses as an IP address becomes an IP SAN (an Expressway-C table entry may
    /// list an address, and the 5091 check compares IP SANs in canonical form).
    fn client_params(
        &self,
        common_name: &str,
        dns_sans: &[String],
    ) -> Result<CertificateParams, PkiError> {
        let mut params = self.leaf_params(common_name, None)?;
        params.subject_alt_names = dedup(dns_sans)
            .into_iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(name.try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        Ok(params)
    }

    fn leaf_params(
        &self,
        common_name: &str,
        unit: Option<&str>,
    ) -> Result<CertificateParams, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(unit) = unit {
            dn.push(DnType::OrganizationalUnitName, unit);
        }
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = self.has_key_id;
        set_validity(&mut params, LEAF_VALIDITY_DAYS)?;
        Ok(params)
    }
}

/// Makes an RSA-2048 private key, PKCS#8 PEM (`BEGIN PRIVATE KEY`), for RS256 token signing.
pub fn generate_rsa_signing_key_pem() -> Result<String, PkiError> {
    Ok(KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?.serialize_pem())
}

/// The public half of a private key PEM (as made by [`generate_rsa_signing_key_pem`]), as
/// SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`). `jsonwebtoken::DecodingKey::from_rsa_pem`
/// accepts it directly.
pub fn public_key_pem(private_key_pem: &str) -> Result<String, PkiError> {
    Ok(KeyPair::from_pem(private_key_pem)?.public_key_pem())
}

fn common_name_dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Rebuilds a subject name so that rcgen re-encodes it byte for byte (same attribute order and
/// string types): certificate path building matches the issuer name against the CA subject.
fn dn_from_x509(name: &x509_parser::x509::X509Name<'_>) -> Result<DistinguishedName, String> {
    use x509_parser::der_parser::asn1_rs::Tag;

    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err("CA subject has an empty or multi-valued RDN".into());
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or("CA subject attribute type is not a valid OID")?
            .collect();
        let data = attr.attr_value().data;
        let text = || {
            std::str::from_utf8(data)
                .map_err(|_| "CA subject attribute is not valid text".to_owned())
        };
        let rcgen_err = |e: rcgen::Error| format!("CA subject attribute: {e}");
        let value = match attr.attr_value().header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_owned()),
            Tag::PrintableString => {
                DnValue::PrintableString(text()?.try_into().map_err(rcgen_err)?)
            }
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(rcgen_err)?),
            Tag::T61String => DnValue::TeletexString(text()?.try_into().map_err(rcgen_err)?),
            Tag::BmpString => DnValue::BmpString(
                rcgen::string::BmpString::from_utf16be(data.to_vec()).map_err(rcgen_err)?,
            ),
            Tag::UniversalString => DnValue::UniversalString(
                rcgen::string::UniversalString::from_utf32be(data.to_vec()).map_err(rcgen_err)?,
            ),
            other => return Err(format!("CA subject attribute has unsupported type {other}")),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// 128 bits from the OS CSPRNG (uuid v4 draws from getrandom; 122 of them are random), high
/// bit cleared so the DER integer stays positive in 16 bytes.
fn random_serial() -> SerialNumber {
    let mut bytes = uuid::Uuid::new_v4().into_bytes().to_vec();
    bytes[0] &= 0x7f;
    SerialNumber::from(bytes)
}

/// Valid from a day ago for `days` days.
fn set_validity(params: &mut CertificateParams, days: u32) -> Result<(), PkiError> {
    let now = SystemTime::now();
    set_period(params, now - BACKDATE, now + DAY * days)
}

/// Sets the validity period, in whole seconds (X.509 times carry no fractions). rcgen takes
/// `time::OffsetDateTime`, which this crate does not depend on directly, so times are built by
/// adding std durations to the epoch.
fn set_period(
    params: &mut CertificateParams,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(), PkiError> {
    let secs = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| Duration::from_secs(d.as_secs()))
            .map_err(|_| PkiError::Clock)
    };
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + secs(not_before)?;
    params.not_after = epoch + secs(not_after)?;
    Ok(())
}

/// Order-preserving, case-insensitive de-duplication (a SAN listed twice is harmless but
/// untidy, and node lists often repeat "localhost" or an address).
fn dedup(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !out.iter().any(|seen| seen.eq_ignore_ascii_case(name)) {
            out.push(name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{PrivateKeyDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{CertificateError, RootCertStore};

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    pub(super) fn roots_from_pem(ca_pem: &str) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(der(ca_pem)).unwrap();
        Arc::new(roots)
    }

    /// Server verification as a rustls client would do it. `builder` (not
    /// `builder_with_provider`) on purpose: it proves the process default provider is picked
    /// from crate features without an explicit install.
    pub(super) fn verify_server(
        ca_pem: &str,
        cert_pem: &str,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let verifier = WebPkiServerVerifier::builder(roots_from_pem(ca_pem))
            .build()
            .unwrap();
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(&der(cert_pem), &[], &server_name, &[], UnixTime::now())
            .map(|_| ())
    }

    pub(super) fn verify_client(ca_pem: &str, cert_pem: &str) -> Result<(), rustls::Error> {
        let verifier = WebPkiClientVerifier::builder(roots_from_pem(ca_pem))
            .build()
            .unwrap();
        verifier
            .verify_client_cert(&der(cert_pem), &[], UnixTime::now())
            .map(|_| ())
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn unknown_issuer(r: Result<(), rustls::Error>) -> bool {
        matches!(
            r,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        )
    }

    #[test]
    fn server_cert_verifies_for_ip_and_dns_names() {
        let ca = Authority::generate("test CA").unwrap();
        let leaf = ca
            .issue_server(
                "ucm-pub",
                &names(&["127.0.0.1", "localhost", "ucm-pub.lab"]),
            )
            .unwrap();
        for name in ["127.0.0.1", "localhost", "ucm-pub.lab", "UCM-PUB.lab"] {
            verify_server(ca.cert_pem(), &leaf.cert_pem, name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let wrong = verify_server(ca.cert_pem(), &leaf.cert_pem, "other.lab");
        assert!(
            matches!(
                wrong,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                ))
            ),
            "{wrong:?}"
        );
        let other = Authority::generate("other CA").unwrap();
        assert!(unknown_issuer(verify_server(
            other.cert_pem(),
            &leaf.cert_pem,
            "localhost"
        )));
        // A server-only certificate must not pass as a client (EKU).
        assert!(verify_client(ca.cert_pem(), &leaf.cert_pem).is_err());
    }

    #[test]
    fn ipv6_names_become_ip_sans() {
        let ca = Authority::generate("test CA").unwrap();
        let leaf = ca.issue_server("n", &names(&["::1"])).unwrap();
        verify_server(ca.cert_pem(), &leaf.cert_pem, "::1").unwrap();
    }

    #[test]
    fn server_cert_needs_names() {
        let ca = Authority::generate("test CA").unwrap();
        assert!(matches!(
            ca.issue_server("x", &[]),
            Err(PkiError::NoNames { .. })
        ));
    }

    #[test]
    fn client_cert_verifies_only_against_its_ca() {
        let ca = Authority::generate("tomcat-trust CA").unwrap();
        let other = Authority::generate("stranger CA").unwrap();
        let leaf = ca
            .issue_client("exp-c", &names(&["exp-c.domain-1.com", "domain-2.com"]))
            .unwrap();
        verify_client(ca.cert_pem(), &leaf.cert_pem).unwrap();
        assert!(unknown_issuer(verify_client(
            other.cert_pem(),
            &leaf.cert_pem
        )));
        // Expressway-C uses the same certificate as a server.
        verify_server(ca.cert_pem(), &leaf.cert_pem, "exp-c.domain-1.com").unwrap();

        let bare = ca.issue_client("exp-c", &[]).unwrap();
        verify_client(ca.cert_pem(), &bare.cert_pem).unwrap();
    }

    #[test]
    fn certificate_fields() {
        use x509_parser::extensions::ParsedExtension;

        let ca = Authority::generate("fields CA").unwrap();
        let a = ca.issue_client("exp-c", &names(&["exp-c.lab"])).unwrap();
        let b = ca
            .issue_server_for_unit("node", Some("tomcat"), &names(&["node"]))
            .unwrap();
        let ca_der = der(ca.cert_pem());
        let (a_der, b_der) = (der(&a.cert_pem), der(&b.cert_pem));
        let (_, ca_x) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let (_, a_x) = x509_parser::parse_x509_certificate(&a_der).unwrap();
        let (_, b_x) = x509_parser::parse_x509_certificate(&b_der).unwrap();

        assert!(ca_x.basic_constraints().unwrap().unwrap().value.ca);
        assert!(ca_x.key_usage().unwrap().unwrap().value.key_cert_sign());
        assert_eq!(a_x.issuer().as_raw(), ca_x.subject().as_raw());
        assert_eq!(b_x.subject().to_string(), "OU=tomcat, CN=node");
        assert_ne!(a_x.raw_serial(), b_x.raw_serial());
        let eku = a_x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && eku.server_auth);
        let eku = b_x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let day = 86_400;
        let nb = a_x.validity().not_before.timestamp();
        let na = a_x.validity().not_after.timestamp();
        assert!(
            (now - day - nb).abs() < 60,
            "leaf not_before {nb} vs now {now}"
        );
        assert!((na - now - 730 * day).abs() < 60);
        let ca_na = ca_x.validity().not_after.timestamp();
        assert!(ca_na - now > 3650 * day);

        let ski = ca_x
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            });
        let aki = a_x
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => None,
            });
        assert!(ski.is_some());
        assert_eq!(ski, aki);
    }

    #[test]
    fn from_pem_round_trips_and_still_issues() {
        let ca = Authority::generate("reloaded CA").unwrap();
        let again = Authority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        assert_eq!(again.key_pem(), ca.key_pem());
        let server = again.issue_server("n", &names(&["localhost"])).unwrap();
        verify_server(ca.cert_pem(), &server.cert_pem, "localhost").unwrap();
        let client = again.issue_client("c", &names(&["c.lab"])).unwrap();
        verify_client(ca.cert_pem(), &client.cert_pem).unwrap();
        // Keys are PKCS#8 PEM that rustls loads.
        assert!(client.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(matches!(
            PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap(),
            PrivateKeyDer::Pkcs8(_)
        ));
    }

    #[test]
    fn from_pem_rejects_wrong_key_and_non_ca() {
        let ca = Authority::generate("a").unwrap();
        let other = Authority::generate("b").unwrap();
        assert!(matches!(
            Authority::from_pem(ca.cert_pem(), other.key_pem()),
            Err(PkiError::BadCa { .. })
        ));
        let leaf = ca.issue_server("n", &names(&["localhost"])).unwrap();
        assert!(matches!(
            Authority::from_pem(&leaf.cert_pem, &leaf.key_pem),
            Err(PkiError::BadCa { .. })
        ));
        assert!(matches!(
            Authority::from_pem("junk", ca.key_pem()),
            Err(PkiError::BadCa { .. })
        ));
    }

    #[test]
    fn from_pem_keeps_a_foreign_subject_exact() {
        // A CA made elsewhere with a richer subject (PrintableString C, several attributes):
        // issued leaves must name it byte for byte or chain building fails.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CountryName,
            DnValue::PrintableString("US".try_into().unwrap()),
        );
        dn.push(DnType::OrganizationName, "Example Corp");
        dn.push(DnType::CommonName, "Example Issuing CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        let ca = Authority::from_pem(&cert.pem(), &key.serialize_pem()).unwrap();
        let leaf = ca
            .issue_client("exp-c", &names(&["exp-c.example.com"]))
            .unwrap();
        verify_client(&cert.pem(), &leaf.cert_pem).unwrap();
    }

    #[test]
    fn rsa_signing_key_signs_and_verifies_rs256() {
        use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

        let pem = generate_rsa_signing_key_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let signing = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        let public = public_key_pem(&pem).unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
        let verifying = DecodingKey::from_rsa_pem(public.as_bytes()).unwrap();

        let now = jsonwebtoken::get_current_timestamp();
        let claims = serde_json::json!({ "sub": "rado", "exp": now + 3600 });
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &signing).unwrap();
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &verifying,
            &Validation::new(Algorithm::RS256),
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "rado");

        let stranger = public_key_pem(&generate_rsa_signing_key_pem().unwrap()).unwrap();
        let stranger = DecodingKey::from_rsa_pem(stranger.as_bytes()).unwrap();
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(
                &token,
                &stranger,
                &Validation::new(Algorithm::RS256)
            )
            .is_err()
        );
    }

    #[test]
    fn debug_output_hides_keys() {
        let ca = Authority::generate("dbg").unwrap();
        let leaf = ca.issue_client("c", &[]).unwrap();
        assert!(!format!("{leaf:?}").contains("PRIVATE"));
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }
}
