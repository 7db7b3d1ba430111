//! Mutual TLS on the MRA port (5091): an Expressway-C certificate chained to tomcat-trust and
//! named in the Expressway-C table is accepted; anything else fails the handshake with a fatal
//! `unknown_ca` alert from the server (docs/ucm.md §3).

use rustls::AlertDescription;
use sip_oauth_registrar::net::ListenerKind::{MraOAuth, SipSecure};
use sip_oauth_registrar::net::Transport::Tls;
use sip_oauth_registrar::pki::{Authority, CertAndKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// Connects with `cert` and returns the alert the server sent, if any. With TLS 1.3 the server
/// judges the client certificate after the client's Finished, so the alert arrives on the
/// first read.
async fn server_alert(
    s: &TestServer,
    cert: Option<&CertAndKey>,
) -> Result<(), Option<AlertDescription>> {
    let addr = s.addr(0, MraOAuth, Tls);
    let mut tls = match tls_connect(addr, s.lab_ca().cert_pem(), cert).await {
        Ok(t) => t,
        Err(e) => return Err(alert_of(&e)),
    };
    let reg = Register::jabber("CSFrado", "1010").bytes();
    if let Err(e) = tls.write_all(&reg).await {
        return Err(alert_of(&e));
    }
    let mut buf = [0u8; 16];
    match tokio::time::timeout(WAIT, tls.read(&mut buf))
        .await
        .expect("answer in time")
    {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err(None),
        Err(e) => Err(alert_of(&e)),
    }
}

fn alert_of(e: &std::io::Error) -> Option<AlertDescription> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    }
}

#[tokio::test]
async fn expressway_certificate_is_accepted() {
    let s = TestServer::lab().await;
    assert_eq!(server_alert(&s, Some(&s.expressway_cert())).await, Ok(()));
    // Any listed name works, by SAN: the lab entry lists domain-2.com.
    let by_san = s
        .lab_ca()
        .issue_client("some-host", &["domain-2.com".into()])
        .unwrap();
    assert_eq!(server_alert(&s, Some(&by_san)).await, Ok(()));
    // Case does not matter in DNS names.
    let upper = s.lab_ca().issue_client("EXP-C.DOMAIN-1.COM", &[]).unwrap();
    assert_eq!(server_alert(&s, Some(&upper)).await, Ok(()));
}

#[tokio::test]
async fn unknown_ca_is_refused_with_unknown_ca_alert() {
    let s = TestServer::lab().await;
    let stranger = Authority::generate("Some Other CA").unwrap();
    let cert = stranger
        .issue_client("exp-c.domain-1.com", &["exp-c.domain-1.com".into()])
        .unwrap();
    assert_eq!(
        server_alert(&s, Some(&cert)).await,
        Err(Some(AlertDescription::UnknownCA))
    );
    // A self-signed certificate (a CA used as a leaf), as `openssl req -x509` makes.
    let self_signed = CertAndKey {
        cert_pem: stranger.cert_pem().to_owned(),
        key_pem: stranger.key_pem().to_owned(),
    };
    assert_eq!(
        server_alert(&s, Some(&self_signed)).await,
        Err(Some(AlertDescription::UnknownCA))
    );
}

#[tokio::test]
async fn trusted_certificate_naming_no_expressway_is_refused_with_unknown_ca_alert() {
    let s = TestServer::lab().await;
    let cert = s
        .lab_ca()
        .issue_client("jabber.domain-3.com", &["jabber.domain-3.com".into()])
        .unwrap();
    assert_eq!(
        server_alert(&s, Some(&cert)).await,
        Err(Some(AlertDescription::UnknownCA))
    );
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let s = TestServer::lab().await;
    let r = server_alert(&s, None).await;
    assert!(
        matches!(
            r,
            Err(Some(
                AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure
            ))
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn secure_port_verifies_a_given_certificate_against_callmanager_trust() {
    let s = TestServer::lab().await;
    let stranger = Authority::generate("Some Other CA").unwrap();
    let cert = stranger.issue_client("SEP0011223344AA", &[]).unwrap();
    let addr = s.addr(0, SipSecure, Tls);
    let result = async {
        let mut tls = tls_connect(addr, s.lab_ca().cert_pem(), Some(&cert)).await?;
        tls.write_all(&Register::jabber("SEP0011223344AA", "2003").bytes())
            .await?;
        let mut buf = [0u8; 16];
        tls.read(&mut buf).await
    }
    .await;
    let e = result.expect_err("an untrusted LSC fails the handshake");
    assert_eq!(alert_of(&e), Some(AlertDescription::UnknownCA));
}

#[tokio::test]
async fn a_refused_expressway_is_reset_after_the_alert() {
    let s = TestServer::lab().await;
    let stranger = Authority::generate("Some Other CA").unwrap();
    let cert = stranger.issue_client("exp-c.domain-1.com", &[]).unwrap();
    let mut tls = tls_connect(s.addr(0, MraOAuth, Tls), s.lab_ca().cert_pem(), Some(&cert))
        .await
        .expect("TLS 1.3: the client finishes before the server judges its certificate");
    // Nothing is sent: unread data at close would make any socket send RST by itself.
    let mut buf = [0u8; 64];
    let first = tokio::time::timeout(WAIT, tls.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(
        alert_of(&first.unwrap_err()),
        Some(AlertDescription::UnknownCA)
    );
    // Then the TCP connection is reset, not closed with FIN (docs/ucm.md §3).
    let tcp = tls.get_mut().0;
    let second = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(
        second.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "RST after the alert"
    );
}

/// The lab Expressway-C certificate follows the persisted table: after the table changed (here
/// through the store the admin CLI and AXL use) and the certificate was deleted, the restart
/// issues one naming the table's first entry, and it passes 5091.
#[tokio::test]
async fn reissued_lab_expressway_certificate_names_the_persisted_table() {
    use rustls::pki_types::pem::PemObject;
    use sip_oauth_registrar::expressway::{Key, NewEntry};

    let mut s = TestServer::lab().await;
    let store = s.server().expressway().clone();
    store
        .add(NewEntry {
            host: "exp-c7".into(),
            description: "replacement".into(),
            names: "exp-c7.domain-7.com".into(),
        })
        .unwrap();
    store.remove(&Key::Host("exp-c".into())).unwrap();
    // The old lab certificate names only the removed entry.
    assert_eq!(
        server_alert(&s, Some(&s.expressway_cert())).await,
        Err(Some(AlertDescription::UnknownCA))
    );
    let dir = s.state.path().join("certs");
    std::fs::remove_file(dir.join("expressway-c.pem")).unwrap();
    std::fs::remove_file(dir.join("expressway-c-key.pem")).unwrap();
    let ca_before = std::fs::read(dir.join("lab-ca.pem")).unwrap();

    s.restart().await;
    let cert = s.expressway_cert();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(x.subject().to_string(), "CN=exp-c7.domain-7.com");
    assert_eq!(std::fs::read(dir.join("lab-ca.pem")).unwrap(), ca_before);
    assert_eq!(server_alert(&s, Some(&cert)).await, Ok(()));
}
