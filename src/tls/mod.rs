//! TLS server configurations for the three TLS listeners, and the Expressway-C check on the
//! MRA port:
//! - 5061 (CallManager certificate): a client certificate is requested and, when given,
//!   verified against CallManager-trust;
//! - 5090 (tomcat certificate): server certificate only;
//! - 5091 (tomcat certificate): a client certificate is required, must chain to tomcat-trust
//!   and must name an Expressway-C entry by CN or SAN; otherwise the handshake fails with a
//!   fatal `unknown_ca` alert, as UCM's does (docs/ucm.md §3);
//! - HTTPS 8443 (tomcat certificate): server certificate only, ALPN `http/1.1`.
//!
//! Listeners read their configuration from a [`TlsSlot`] at every handshake, so a reload (or a
//! regenerated tomcat certificate) swaps it for the next connection without a restart, and
//! established connections keep the configuration they shook hands with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::cluster::ExpresswayEntry;
use crate::config::Settings;

/// The Expressway-C table, swappable at run time (entries added or removed over the admin
/// interface take effect on the next handshake).
pub type ExpresswayTable = Arc<ArcSwap<Vec<ExpresswayEntry>>>;

/// Where a TLS listener finds its current configuration; swapped atomically by a reload.
pub type TlsSlot = Arc<ArcSwap<ServerConfig>>;

/// Server configurations, one per TLS listener kind.
#[derive(Clone)]
pub struct TlsConfigs {
    pub secure: Arc<ServerConfig>,
    pub oauth: Arc<ServerConfig>,
    pub mra: Arc<ServerConfig>,
    /// HTTPS side listeners (8443).
    pub web: Arc<ServerConfig>,
}

/// The slots the listeners read, one per [`TlsConfigs`] field.
#[derive(Clone)]
pub struct TlsSlots {
    pub secure: TlsSlot,
    pub oauth: TlsSlot,
    pub mra: TlsSlot,
    pub web: TlsSlot,
}

impl TlsSlots {
    pub fn new(configs: TlsConfigs) -> Self {
        Self {
            secure: Arc::new(ArcSwap::new(configs.secure)),
            oauth: Arc::new(ArcSwap::new(configs.oauth)),
            mra: Arc::new(ArcSwap::new(configs.mra)),
            web: Arc::new(ArcSwap::new(configs.web)),
        }
    }

    /// Makes `configs` the configuration of every next handshake.
    pub fn swap(&self, configs: TlsConfigs) {
        self.secure.store(configs.secure);
        self.oauth.store(configs.oauth);
        self.mra.store(configs.mra);
        self.web.store(configs.web);
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("tls.{key}: cannot read {}: {reason}", path.display())]
    File {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("tls.{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    /// More than one file is unusable: every one is named.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<Self>),
}

impl TlsError {
    /// Each problem on its own (one for all but [`Self::Several`]).
    pub fn into_list(self) -> Vec<Self> {
        match self {
            Self::Several(list) => list,
            one => vec![one],
        }
    }
}

impl TlsConfigs {
    /// Loads certificates, keys and trust stores named in the configuration.
    pub fn load(
        settings: &Settings,
        state_dir: &Path,
        expressway: ExpresswayTable,
    ) -> Result<Self, TlsError> {
        Self::load_with(settings, state_dir, expressway, None)
    }

    /// As [`Self::load`], with the tomcat certificate and key taken from `tomcat` (PEM text:
    /// certificate chain, private key) instead of their files: `set cert regen tomcat`
    /// checks the new pair with every other current file before writing anything.
    pub fn load_with_tomcat(
        settings: &Settings,
        state_dir: &Path,
        expressway: ExpresswayTable,
        tomcat: (&str, &str),
    ) -> Result<Self, TlsError> {
        Self::load_with(settings, state_dir, expressway, Some(tomcat))
    }

    fn load_with(
        settings: &Settings,
        state_dir: &Path,
        expressway: ExpresswayTable,
        tomcat: Option<(&str, &str)>,
    ) -> Result<Self, TlsError> {
        let files = &settings.tls;
        let path = |p: &Path| Settings::resolve(state_dir, p);
        // Every file is read before any error is returned, so a reload refused for a bad
        // certificate names every bad file at once.
        let tomcat = match tomcat {
            None => load_identity(
                &path(&files.tomcat_cert),
                &path(&files.tomcat_key),
                "tomcat_cert",
                "tomcat_key",
            ),
            Some((cert, key)) => identity_from_pem(cert, key),
        };
        let cm = load_identity(
            &path(&files.callmanager_cert),
            &path(&files.callmanager_key),
            "callmanager_cert",
            "callmanager_key",
        );
        let tomcat_trust = load_roots(state_dir, "tomcat_trust", &files.tomcat_trust);
        let cm_trust = load_roots(state_dir, "callmanager_trust", &files.callmanager_trust);
        let (tomcat, cm, tomcat_trust, cm_trust) = match (tomcat, cm, tomcat_trust, cm_trust) {
            (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
            (a, b, c, d) => {
                let mut errors = Vec::new();
                errors.extend(a.err());
                errors.extend(b.err());
                errors.extend(c.err());
                errors.extend(d.err());
                return Err(match errors.len() {
                    1 => errors.remove(0),
                    _ => TlsError::Several(errors),
                });
            }
        };
        let ((tomcat_chain, tomcat_key), (cm_chain, cm_key)) = (tomcat, cm);

        let invalid = |key: &'static str| {
            move |e: rustls::Error| TlsError::Invalid {
                key,
                reason: e.to_string(),
            }
        };
        let verifier_error = |key: &'static str| {
            move |e: rustls::server::VerifierBuilderError| TlsError::Invalid {
                key,
                reason: e.to_string(),
            }
        };

        let oauth = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(tomcat_chain.clone(), tomcat_key.clone_key())
            .map_err(invalid("tomcat_key"))?;
        let mut web = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(tomcat_chain.clone(), tomcat_key.clone_key())
            .map_err(invalid("tomcat_key"))?;
        // The HTTP side speaks HTTP/1.1 only; a client offering h2 falls back to it.
        web.alpn_protocols = vec![b"http/1.1".to_vec()];

        let webpki = WebPkiClientVerifier::builder(Arc::new(tomcat_trust))
            .build()
            .map_err(verifier_error("tomcat_trust"))?;
        let mut mra = ServerConfig::builder()
            .with_client_cert_verifier(Arc::new(ExpresswayVerifier { webpki, expressway }))
            .with_single_cert(tomcat_chain, tomcat_key)
            .map_err(invalid("tomcat_key"))?;

        // A resumed session skips client certificate verification; without resumption every
        // connection meets the current Expressway-C table.
        mra.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        mra.send_tls13_tickets = 0;

        let optional = WebPkiClientVerifier::builder(Arc::new(cm_trust))
            .allow_unauthenticated()
            .build()
            .map_err(verifier_error("callmanager_trust"))?;
        let secure = ServerConfig::builder()
            .with_client_cert_verifier(optional)
            .with_single_cert(cm_chain, cm_key)
            .map_err(invalid("callmanager_key"))?;

        Ok(Self {
            secure: Arc::new(secure),
            oauth: Arc::new(oauth),
            mra: Arc::new(mra),
            web: Arc::new(web),
        })
    }
}

fn load_identity(
    cert: &Path,
    key: &Path,
    cert_key: &'static str,
    key_key: &'static str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = load_certs(cert, cert_key)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
        key: key_key,
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    Ok((chain, key))
}

/// A certificate chain and key in memory (not yet written to their files).
fn identity_from_pem(
    cert: &str,
    key: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let invalid = |key: &'static str| move |reason: String| TlsError::Invalid { key, reason };
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("tomcat_cert")(e.to_string()))?;
    if chain.is_empty() {
        return Err(invalid("tomcat_cert")("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| invalid("tomcat_key")(e.to_string()))?;
    Ok((chain, key))
}

fn load_certs(path: &Path, key: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        key,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn load_roots(
    state_dir: &Path,
    key: &'static str,
    paths: &[PathBuf],
) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for p in paths {
        let path = Settings::resolve(state_dir, p);
        for cert in load_certs(&path, key)? {
            roots.add(cert).map_err(|e| TlsError::Invalid {
                key,
                reason: format!("{}: {e}", path.display()),
            })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::Invalid {
            key,
            reason: "no trusted certificate".into(),
        });
    }
    Ok(roots)
}

/// CN, DNS SANs and IP SANs of a certificate, lower-cased (IP addresses in canonical text
/// form, as [`crate::expressway::parse_names`] stores them). Unparseable certificates name
/// nothing.
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_ascii_lowercase)
        .collect();
    names.extend(
        crate::pki::dns_and_ip_sans(&cert)
            .iter()
            .map(|n| n.to_ascii_lowercase()),
    );
    names
}

/// Chains to tomcat-trust (webpki), then requires a CN or SAN listed for an Expressway-C.
#[derive(Debug)]
struct ExpresswayVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    expressway: ExpresswayTable,
}

impl ClientCertVerifier for ExpresswayVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // UCM answers every untrusted Expressway-C certificate with `unknown_ca` (docs/ucm.md §3);
        // webpki's finer reasons (a self-signed CA used as a leaf, an expired chain...) would
        // make rustls send other alerts, so they are logged and folded into that one.
        let verified = self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|error| {
                tracing::debug!(%error, "client certificate does not chain to tomcat-trust");
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            })?;
        let names = certificate_names(end_entity);
        let table = self.expressway.load();
        let listed = table
            .iter()
            .any(|e| e.subject_names.iter().any(|s| names.iter().any(|n| n == s)));
        if listed {
            Ok(verified)
        } else {
            tracing::debug!(?names, "client certificate names no Expressway-C entry");
            // rustls sends `unknown_ca` for this error, which is what UCM sends (docs/ucm.md §3).
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_include_ip_sans() {
        let mut params = rcgen::CertificateParams::new(vec![
            "Exp-C2.Domain-9.com".to_owned(),
            "10.1.2.3".to_owned(),
            "2001:DB8::1".to_owned(),
        ])
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "EXP-C2");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            certificate_names(cert.der()),
            ["exp-c2", "exp-c2.domain-9.com", "10.1.2.3", "2001:db8::1"]
        );
    }
}
