//! `set cert regen tomcat`: a new tomcat key and certificate, signed by the lab CA, naming
//! what the current one names (subject and SANs), written over the configured files. The
//! daemon then reloads its TLS configurations, so the next handshake on 5090, 5091, 6971 and
//! 8443 presents it (UCM needs a service restart for that; docs/ucm.md §1).

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{Authority, PkiError};

/// Where the pieces are.
#[derive(Debug, Clone)]
pub struct TomcatFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What the new certificate is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regenerated {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub names: Vec<String>,
}

/// A new tomcat pair, issued but not yet written.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// What the new certificate is.
    pub summary: Regenerated,
}

/// Issues a new pair naming what the current certificate names. Reads only.
pub fn issue_tomcat(files: &TomcatFiles) -> Result<Issued, PkiError> {
    let ca = Authority::from_pem(&read(&files.ca_cert)?, &read(&files.ca_key)?)?;
    let current = read(&files.cert)?;
    let bad = |reason: String| PkiError::BadPem {
        path: files.cert.clone(),
        reason,
    };
    let der = CertificateDer::from_pem_slice(current.as_bytes())
        .map_err(|e| bad(format!("no certificate: {e}")))?;
    let (cn, unit, names) = subject_and_names(&der).map_err(bad)?;
    let issued = ca.issue_server_for_unit(&cn, unit.as_deref(), &names)?;
    let new_der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
        .map_err(|e| bad(format!("issued certificate does not parse: {e}")))?;
    let summary = describe(&new_der).map_err(bad)?;
    Ok(Issued {
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
        summary,
    })
}

/// Writes `new` over the configured files; on error the files hold the old pair again (each
/// file is replaced atomically, and what was written before the failure is put back).
pub fn write_tomcat(files: &TomcatFiles, new: &Issued) -> Result<(), PkiError> {
    let old_key = std::fs::read(&files.key).map_err(io(&files.key))?;
    let old_cert = std::fs::read(&files.cert).map_err(io(&files.cert))?;
    let written = write_pair(files, new.key_pem.as_bytes(), new.cert_pem.as_bytes());
    if written.is_err() {
        // Best effort: the failure that made the write fail may make this fail too, and the
        // first error is the one to report.
        if let Err(error) = write_pair(files, &old_key, &old_cert) {
            tracing::error!(%error, "could not restore the previous tomcat key and certificate");
        }
    }
    written
}

fn write_pair(files: &TomcatFiles, key: &[u8], cert: &[u8]) -> Result<(), PkiError> {
    // Key first: between the two renames the pair mismatches, and a TLS load then fails
    // loudly instead of presenting the old certificate with a key it does not match.
    super::write_private_file(&files.key, key).map_err(io(&files.key))?;
    super::write_private_file(&files.cert, cert).map_err(io(&files.cert))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // A certificate is public; the atomic writer made it 0600 like a key.
        std::fs::set_permissions(&files.cert, std::fs::Permissions::from_mode(0o644))
            .map_err(io(&files.cert))?;
    }
    Ok(())
}

/// Issues and writes the new pair; on error nothing on disk changed.
pub fn regenerate_tomcat(files: &TomcatFiles) -> Result<Regenerated, PkiError> {
    let issued = issue_tomcat(files)?;
    write_tomcat(files, &issued)?;
    Ok(issued.summary)
}

fn read(p: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(p).map_err(|source| PkiError::Io {
        path: p.to_owned(),
        source,
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError {
    let path = path.to_owned();
    move |source| PkiError::Io { path, source }
}

/// Subject, serial and SANs of a certificate, as `show cert list own` prints them.
pub fn describe(der: &CertificateDer<'_>) -> Result<Regenerated, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let (_, _, names) = subject_and_names(der)?;
    Ok(Regenerated {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        names,
    })
}

/// CN, OU and SANs (DNS names and IP addresses as text) of a certificate.
fn subject_and_names(
    der: &CertificateDer<'_>,
) -> Result<(String, Option<String>, Vec<String>), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let cn = (cert.subject().iter_common_name())
        .find_map(|a| a.as_str().ok().map(str::to_owned))
        .ok_or_else(|| "the certificate has no common name".to_owned())?;
    let unit = (cert.subject().iter_organizational_unit())
        .find_map(|a| a.as_str().ok().map(str::to_owned));
    let names = super::certs::dns_and_ip_sans(&cert);
    Ok((cn, unit, names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn the_new_tomcat_certificate_names_the_same_and_chains_to_the_lab_ca() {
        let dir = tempfile::tempdir().unwrap();
        let plan = super::super::LabPkiPlan {
            dir: dir.path().to_owned(),
            server_names: vec!["ucm-pub.lab".into(), "127.0.0.1".into(), "localhost".into()],
            expressway_names: vec!["exp-c.lab".into()],
            devices: Vec::new(),
        };
        let (lab, _) = super::super::ensure_lab_pki(&plan).unwrap();
        let files = TomcatFiles {
            ca_cert: lab.ca_cert.clone(),
            ca_key: lab.ca_key.clone(),
            cert: lab.tomcat_cert.clone(),
            key: lab.tomcat_key.clone(),
        };
        let old_pem = std::fs::read(&lab.tomcat_cert).unwrap();
        let old_key = std::fs::read(&lab.tomcat_key).unwrap();
        let old = describe(&CertificateDer::from_pem_slice(&old_pem).unwrap()).unwrap();
        let new = regenerate_tomcat(&files).unwrap();
        assert_eq!(new.subject, old.subject);
        assert_eq!(new.issuer, old.issuer);
        assert_eq!(new.names, old.names);
        assert_ne!(new.serial, old.serial);
        assert_ne!(std::fs::read(&lab.tomcat_key).unwrap(), old_key);
        let on_disk = std::fs::read(&lab.tomcat_cert).unwrap();
        assert_eq!(
            describe(&CertificateDer::from_pem_slice(&on_disk).unwrap()).unwrap(),
            new
        );
        // Chains to the lab CA: a webpki server verification against it succeeds.
        let ca = CertificateDer::from_pem_file(&lab.ca_cert).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder(std::sync::Arc::new(roots))
            .build()
            .unwrap();
        let leaf = CertificateDer::from_pem_slice(&on_disk).unwrap();
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &rustls::pki_types::ServerName::try_from("ucm-pub.lab").unwrap(),
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .unwrap();
    }
}
