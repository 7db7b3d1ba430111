//! AXL over real TLS on 8443 (`POST /axl/`, HTTP Basic of `admin`/`lab`), the Expressway-C
//! table it changes (persisted across restarts, applied at the next 5091 handshake), the admin
//! CLI's `set expresswayc` and `run sql`, and a real AXL client: Python's zeep with Cisco's
//! AXL 12.5 WSDL from the `ciscoaxl` package, installed by this test with pip.

use std::path::PathBuf;
use std::sync::OnceLock;

use base64::Engine;
use rustls::AlertDescription;
use sip_oauth_registrar::admin;
use sip_oauth_registrar::net::ListenerKind::MraOAuth;
use sip_oauth_registrar::net::Transport::Tls;
use sip_oauth_registrar::pki::CertAndKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

fn basic(user: &str, pass: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {token}")
}

async fn axl_as(s: &TestServer, auth: Option<&str>, op: &str) -> HttpAnswer {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:ns=\"http://www.cisco.com/AXL/API/12.5\"><soapenv:Header/>\
         <soapenv:Body>{op}</soapenv:Body></soapenv:Envelope>"
    );
    let mut headers = vec![
        ("content-type", "text/xml; charset=utf-8"),
        ("soapaction", "\"CUCM:DB ver=12.5\""),
    ];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    let req = http_request("POST", "/axl/", &headers, body);
    https(s.web(0), s.lab_ca().cert_pem(), req).await
}

async fn axl(s: &TestServer, op: &str) -> HttpAnswer {
    axl_as(s, Some(&basic("admin", "lab")), op).await
}

/// The text between `<tag>` and `</tag>`, first occurrence.
fn between<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = xml[start..].find(&format!("</{tag}>")).unwrap() + start;
    &xml[start..end]
}

/// Connects to 5091 with `cert`; Ok when the server answers a REGISTER, the alert otherwise.
async fn mra_handshake(s: &TestServer, cert: &CertAndKey) -> Result<(), Option<AlertDescription>> {
    let alert_of = |e: &std::io::Error| match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    };
    let mut tls = tls_connect(s.addr(0, MraOAuth, Tls), s.lab_ca().cert_pem(), Some(cert))
        .await
        .map_err(|e| alert_of(&e))?;
    tls.write_all(&Register::jabber("CSFrado", "1010").bytes())
        .await
        .map_err(|e| alert_of(&e))?;
    let mut buf = [0u8; 16];
    match tokio::time::timeout(WAIT, tls.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(Ok(_)) | Err(_) => Err(None),
        Ok(Err(e)) => Err(alert_of(&e)),
    }
}

#[tokio::test]
async fn credentials_are_required() {
    let s = TestServer::lab().await;
    let op = "<ns:listExpresswayCConfiguration><searchCriteria><HostNameOrIP>%</HostNameOrIP>\
              </searchCriteria><returnedTags/></ns:listExpresswayCConfiguration>";
    let a = axl_as(&s, None, op).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("www-authenticate"), Some("Basic realm=\"AXL\""));
    assert_eq!(
        axl_as(&s, Some(&basic("admin", "nope")), op).await.status,
        401
    );
    assert_eq!(
        axl_as(&s, Some(&basic("rado", "lab")), op).await.status,
        401
    );
    assert_eq!(axl_as(&s, Some("Bearer x"), op).await.status, 401);
    let ok = axl(&s, op).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("content-type"), Some("text/xml; charset=utf-8"));
    // The lab entry from the configuration, with its stable pkid.
    assert!(
        ok.text().contains("<HostNameOrIP>exp-c</HostNameOrIP>"),
        "{}",
        ok.text()
    );
}

#[tokio::test]
async fn add_get_list_update_remove_and_sql_over_tls() {
    let s = TestServer::lab().await;
    let add = axl(
        &s,
        "<ns:addExpresswayCConfiguration><expresswayCConfiguration>\
         <HostNameOrIP>exp-c2</HostNameOrIP><description>added through axl</description>\
         <X509SubjectNameorSubjectAlternateName>exp-c2.domain-9.com</X509SubjectNameorSubjectAlternateName>\
         </expresswayCConfiguration></ns:addExpresswayCConfiguration>",
    )
    .await;
    assert_eq!(add.status, 200, "{}", add.text());
    let text = add.text();
    let uuid = between(&text, "return").to_owned();
    assert!(
        uuid.starts_with('{') && uuid.ends_with('}') && uuid.len() == 38,
        "{uuid}"
    );
    assert_eq!(uuid, uuid.to_uppercase());

    let dup = axl(
        &s,
        "<ns:addExpresswayCConfiguration><expresswayCConfiguration>\
         <HostNameOrIP>EXP-C2</HostNameOrIP></expresswayCConfiguration>\
         </ns:addExpresswayCConfiguration>",
    )
    .await;
    assert_eq!(dup.status, 500);
    assert!(
        dup.text().contains("<faultcode>soapenv:Client</faultcode>"),
        "{}",
        dup.text()
    );
    assert_eq!(between(&dup.text(), "axlcode"), "-239");
    assert_eq!(
        between(&dup.text(), "request"),
        "addExpresswayCConfiguration"
    );

    let get = axl(
        &s,
        &format!(
            "<ns:getExpresswayCConfiguration><uuid>{uuid}</uuid></ns:getExpresswayCConfiguration>"
        ),
    )
    .await;
    assert!(
        get.text().contains(&format!(
            "<expresswayCConfiguration uuid=\"{uuid}\"><HostNameOrIP>exp-c2</HostNameOrIP>"
        )),
        "{}",
        get.text()
    );

    let update = axl(
        &s,
        "<ns:updateExpresswayCConfiguration><HostNameOrIP>exp-c2</HostNameOrIP>\
         <description>renamed</description></ns:updateExpresswayCConfiguration>",
    )
    .await;
    assert_eq!(between(&update.text(), "return"), uuid);

    let list = axl(
        &s,
        "<ns:listExpresswayCConfiguration><searchCriteria><description>ren%</description>\
         </searchCriteria><returnedTags><description/></returnedTags>\
         </ns:listExpresswayCConfiguration>",
    )
    .await;
    assert!(
        list.text().contains(&format!(
            "<return><expresswayCConfiguration uuid=\"{uuid}\"><description>renamed</description>\
             </expresswayCConfiguration></return>"
        )),
        "{}",
        list.text()
    );

    let sql = axl(
        &s,
        "<ns:executeSQLQuery><sql>select * from expresswaycconfiguration</sql></ns:executeSQLQuery>",
    )
    .await;
    let pkid = uuid.trim_matches(['{', '}']).to_lowercase();
    assert!(
        sql.text().contains(&format!(
            "<row><pkid>{pkid}</pkid><hostnameorip>exp-c2</hostnameorip>\
             <description>renamed</description>\
             <x509subjectnameoraltname>exp-c2.domain-9.com</x509subjectnameoraltname></row>"
        )),
        "{}",
        sql.text()
    );
    let mode = axl(
        &s,
        "<ns:executeSQLQuery><sql>select paramvalue FROM processconfig WHERE paramname = \
         'ClusterSIPOAuthMode'</sql></ns:executeSQLQuery>",
    )
    .await;
    assert!(
        mode.text()
            .contains("<row><paramvalue>1</paramvalue></row>"),
        "{}",
        mode.text()
    );

    let remove = axl(
        &s,
        &format!(
            "<ns:removeExpresswayCConfiguration><uuid>{}</uuid>\
             </ns:removeExpresswayCConfiguration>",
            uuid.to_lowercase()
        ),
    )
    .await;
    assert_eq!(between(&remove.text(), "return"), uuid);
    let gone = axl(
        &s,
        "<ns:getExpresswayCConfiguration><HostNameOrIP>exp-c2</HostNameOrIP>\
         </ns:getExpresswayCConfiguration>",
    )
    .await;
    assert_eq!(gone.status, 500);
    assert_eq!(between(&gone.text(), "axlcode"), "5007");
    let unknown = axl(&s, "<ns:addPhone><phone/></ns:addPhone>").await;
    assert_eq!(between(&unknown.text(), "axlcode"), "5002");
}

#[tokio::test]
async fn entries_persist_across_restarts() {
    let mut s = TestServer::lab().await;
    let add = axl(
        &s,
        "<ns:addExpresswayCConfiguration><expresswayCConfiguration>\
         <HostNameOrIP>exp-c2</HostNameOrIP>\
         <X509SubjectNameorSubjectAlternateName>exp-c2.domain-9.com</X509SubjectNameorSubjectAlternateName>\
         </expresswayCConfiguration></ns:addExpresswayCConfiguration>",
    )
    .await;
    let uuid = between(&add.text(), "return").to_owned();
    s.restart().await;
    let before = s.server().expressway().list();
    assert_eq!(before.len(), 2);
    let get = axl(
        &s,
        "<ns:getExpresswayCConfiguration><HostNameOrIP>exp-c2</HostNameOrIP>\
         </ns:getExpresswayCConfiguration>",
    )
    .await;
    assert!(
        get.text().contains(&format!("uuid=\"{uuid}\"")),
        "{}",
        get.text()
    );
    let cert = s
        .lab_ca()
        .issue_client("exp-c2", &["exp-c2.domain-9.com".into()])
        .unwrap();
    assert_eq!(mra_handshake(&s, &cert).await, Ok(()));
}

#[tokio::test]
async fn cli_entry_applies_to_the_next_mra_handshake() {
    let s = TestServer::lab().await;
    let cert = s
        .lab_ca()
        .issue_client("exp-c3", &["exp-c3.domain-9.com".into()])
        .unwrap();
    assert_eq!(
        mra_handshake(&s, &cert).await,
        Err(Some(AlertDescription::UnknownCA))
    );
    let dir = s.state.path();
    let out = admin::run_command(
        dir,
        "set expresswayc add exp-c3 \"Exp-C3.domain-9.com other.example\" from the cli",
    )
    .await
    .unwrap();
    assert!(out.starts_with("Expressway-C exp-c3 added (pkid "), "{out}");
    assert_eq!(mra_handshake(&s, &cert).await, Ok(()));

    let out = admin::run_command(dir, "run sql select * from expresswaycconfiguration")
        .await
        .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("pkid  "), "{out}");
    assert!(lines[0].ends_with("  x509subjectnameoraltname"), "{out}");
    assert_eq!(lines[1], "=====");
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[3].contains("  exp-c3  "), "{out}");
    assert!(
        lines[3].ends_with("  Exp-C3.domain-9.com other.example"),
        "{out}"
    );
    let out = admin::run_command(
        dir,
        "run sql select paramvalue FROM processconfig WHERE paramname = 'ClusterSIPOAuthMode'",
    )
    .await
    .unwrap();
    assert_eq!(out, "paramvalue\n=====\n1\n");
    let err = admin::run_command(dir, "run sql select * from device")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not supported"), "{err}");

    admin::run_command(dir, "set expresswayc remove EXP-C3")
        .await
        .unwrap();
    assert_eq!(
        mra_handshake(&s, &cert).await,
        Err(Some(AlertDescription::UnknownCA))
    );
}

/// `zeep` and `ciscoaxl` installed once per test build under the cargo temporary directory.
fn python_packages() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| pip_target("axl-python", &["zeep", "ciscoaxl"], "ciscoaxl"))
}

#[tokio::test]
async fn zeep_with_ciscos_wsdl_adds_an_entry_that_opens_the_mra_port() {
    let packages = tokio::task::spawn_blocking(python_packages)
        .await
        .unwrap()
        .clone();
    let s = TestServer::lab().await;
    let cert = s
        .lab_ca()
        .issue_client("exp-c2", &["exp-c2.domain-9.com".into()])
        .unwrap();
    assert_eq!(
        mra_handshake(&s, &cert).await,
        Err(Some(AlertDescription::UnknownCA))
    );

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/axl_client.py");
    let ca = s.state.path().join("certs").join("lab-ca.pem");
    let port = s.web(0).port().to_string();
    // Blocking in the pool: the current-thread runtime keeps serving the daemon meanwhile.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(port)
            .arg(&ca)
            .args(["admin", "lab"])
            .env("PYTHONPATH", &packages)
            .output()
    });
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("zeep finishes")
        .unwrap()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "zeep failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON from the script");
    let uuid = v["add"].as_str().unwrap();
    let row = v["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["HostNameOrIP"] == "exp-c2")
        .unwrap_or_else(|| panic!("exp-c2 listed: {v}"));
    assert_eq!(row["uuid"], uuid);
    assert_eq!(row["description"], "added through axl");
    assert_eq!(
        row["X509SubjectNameorSubjectAlternateName"],
        "exp-c2.domain-9.com"
    );
    assert_eq!(v["get"]["uuid"], uuid);

    assert_eq!(mra_handshake(&s, &cert).await, Ok(()));
}
