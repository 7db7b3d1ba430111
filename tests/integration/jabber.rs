//! A scripted "Jabber" that uses nothing but the wire. It knows a user name, a password and
//! the first server's address (and trusts the lab CA, as a real client trusts the cluster's
//! certificates). From there it goes the way Jabber goes:
//!
//! 1. UDS `clusterUser` finds the user's home cluster;
//! 2. UDS `user/<id>/devices` (HTTP Basic) names its device and config-file URL;
//! 3. the token endpoint (password grant) gives an access and a refresh token;
//! 4. the config file over HTTPS (Bearer) gives `sipOAuthMode`, the nodes in priority order with
//!    their `sipOAuthPort`, and the line (DN, contact UUID);
//! 5. TLS to the first node's OAuth port: REGISTER → 407 → REGISTER with the token → 200;
//! 6. later, the refresh grant gives a new access token, and the refresh REGISTER gets 200.

use std::net::SocketAddr;

use base64::Engine;

use crate::harness::*;
use crate::xml;

const USER: &str = "rado";
const PASSWORD: &str = "lab";

/// What the client has learnt so far, all of it from the wire.
struct Jabber {
    server: SocketAddr,
    ca: String,
}

impl Jabber {
    async fn get(&self, at: SocketAddr, path: &str, auth: &str) -> HttpAnswer {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            Vec::new()
        } else {
            vec![("authorization", auth)]
        };
        let a = https(at, &self.ca, http_request("GET", path, &headers, "")).await;
        assert_eq!(a.status, 200, "GET {path}: {}", a.text());
        a
    }

    async fn token(&self, form: &[(&str, &str)]) -> serde_json::Value {
        let body = serde_urlencoded::to_string(form).unwrap();
        let a = https(
            self.server,
            &self.ca,
            http_request(
                "POST",
                "/ssosp/oauth/token",
                &[("content-type", "application/x-www-form-urlencoded")],
                body,
            ),
        )
        .await;
        assert_eq!(a.status, 200, "token endpoint: {}", a.text());
        a.json()
    }
}

/// `https://host:port/path` → (address, path).
fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url
        .strip_prefix("https://")
        .expect("an https config-file URL");
    let (host, path) = rest.split_once('/').expect("a path");
    (host.parse().expect("host:port"), format!("/{path}"))
}

#[tokio::test]
async fn a_scripted_jabber_logs_in_from_zero_and_registers() {
    let s = TestServer::lab().await;
    // All the client is given:
    let jabber = Jabber {
        server: s.web(0),
        ca: s.lab_ca().cert_pem().to_owned(),
    };

    // 1. Which cluster is home?
    let a = jabber
        .get(
            jabber.server,
            &format!("/cucm-uds/clusterUser?username={USER}"),
            "",
        )
        .await;
    let doc = xml::parse(&a.body);
    assert_eq!(doc.child("result").attr("found"), Some("true"));
    assert_eq!(
        doc.child("homeCluster").text,
        jabber.server.ip().to_string(),
        "this server's cluster is the user's home"
    );

    // 2. Which device, and where is its config file?
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let a = jabber
        .get(
            jabber.server,
            &format!("/cucm-uds/user/{USER}/devices"),
            &basic,
        )
        .await;
    let doc = xml::parse(&a.body);
    let device = doc
        .all("device")
        .into_iter()
        .find(|d| d.text_of("name").starts_with("CSF"))
        .expect("a Jabber (CSF) device");
    let name = device.text_of("name").to_owned();
    let pkid = device.text_of("id").to_owned();
    let (file_at, file_path) = split_url(device.child("configFile").text_of("uri"));

    // 3. Tokens.
    let client_id = format!("C{}", "5a".repeat(32));
    let grant = jabber
        .token(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", PASSWORD),
            ("client_id", &client_id),
            ("scope", "UnifiedCommunications:readwrite"),
        ])
        .await;
    let access = grant["access_token"].as_str().unwrap().to_owned();
    let refresh = grant["refresh_token"].as_str().unwrap().to_owned();

    // 4. The config file, with the token.
    let a = jabber
        .get(file_at, &file_path, &format!("Bearer {access}"))
        .await;
    let file = xml::parse(&a.body);
    assert_eq!(file.text_of("sipOAuthMode"), "1");
    assert_eq!(
        file.attr("uuid"),
        Some(format!("{{{pkid}}}").as_str()),
        "UDS and the config file name the device by the same id"
    );
    let mut members: Vec<(u32, &xml::El)> = file
        .path("devicePool/callManagerGroup/members")
        .all("member")
        .into_iter()
        .map(|m| (m.attr("priority").unwrap().parse().unwrap(), m))
        .collect();
    members.sort_by_key(|(p, _)| *p);
    let first = members[0].1.child("callManager");
    let sip_at = SocketAddr::new(
        first.text_of("processNodeName").parse().unwrap(),
        first.path("ports/sipOAuthPort").text.parse().unwrap(),
    );
    let line = file.path("sipProfile/sipLines/line");
    let (dn, contact) = (line.text_of("name"), line.text_of("contact"));

    // 5. Register where the file says, as Jabber does.
    let mut c = Client::tls(sip_at, &jabber.ca, None).await;
    let mut register = Register::jabber(&name, dn);
    register.contact = Some(format!(
        "<sip:{contact}@10.10.10.10:62162;transport=tls>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-882323451234>\";+u.sip!devicename.ccm.cisco.com=\"{name}\";+u.sip!model.ccm.cisco.com=\"503\";video"
    ));
    let r = c.register(&register).await;
    assert_eq!(r.status, 407, "{}", r.raw);
    assert_eq!(
        r.header("Proxy-Authenticate"),
        Some("Bearer realm=\"ccmsipline\"")
    );
    let with_token = register.next().bearer(&access);
    let r = c.register(&with_token).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(r.header("Contact").unwrap().ends_with(";x-cisco-newreg"));

    // 6. Later: a new access token from the refresh token, and the refresh REGISTER.
    let renewed = jabber
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ])
        .await;
    let fresh = renewed["access_token"].as_str().unwrap();
    assert_ne!(fresh, access);
    let r = c.register(&with_token.next().bearer(fresh)).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(!r.header("Contact").unwrap().contains("x-cisco-newreg"));
}
