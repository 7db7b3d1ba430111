//! User Data Services on HTTPS 8443 over real TLS: the resources Jabber reads before it
//! registers, parsed with a real XML parser (quick-xml's reader); authentication (Basic,
//! Bearer), the user-reads-itself rule, and 4xx answers to odd input.

use base64::Engine;

use crate::harness::*;
use crate::xml::{El as Element, parse};

async fn get(s: &TestServer, path: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    https(
        s.web(0),
        s.lab_ca().cert_pem(),
        http_request("GET", path, headers, ""),
    )
    .await
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// A 200 XML answer, parsed; its root must be `root` and carry the UDS version.
fn document(a: &HttpAnswer, root: &str) -> Element {
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("application/xml"));
    let doc = parse(&a.body);
    assert_eq!(doc.name, root, "{}", a.text());
    assert_eq!(doc.attr("version"), Some("12.5.1"));
    doc
}

#[tokio::test]
async fn version_and_servers() {
    let s = TestServer::lab().await;
    let a = get(&s, "/cucm-uds/version", &[]).await;
    assert!(
        a.text()
            .starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
    );
    let doc = document(&a, "versionInformation");
    assert_eq!(doc.text_of("version"), "12.5.1");
    assert_eq!(
        doc.attr("uri"),
        Some("https://127.0.0.1:8443/cucm-uds/version")
    );

    // Every node's 8443 answers alike.
    let a = https(
        s.web(1),
        s.lab_ca().cert_pem(),
        http_request("GET", "/cucm-uds/servers", &[], ""),
    )
    .await;
    let doc = document(&a, "servers");
    let servers: Vec<&str> = doc.all("server").iter().map(|e| e.text.as_str()).collect();
    assert_eq!(servers, ["127.0.0.1", "127.0.0.2"]);
}

#[tokio::test]
async fn cluster_user_finds_the_home_cluster() {
    let s = TestServer::lab().await;
    for query in [
        "username=rado",
        "email=rado%40example.com",
        "useridentifier=rado@lab",
    ] {
        let a = get(&s, &format!("/cucm-uds/clusterUser?{query}"), &[]).await;
        let doc = document(&a, "clusterUser");
        let result = doc.child("result");
        assert_eq!(result.attr("found"), Some("true"), "{query}");
        assert_eq!(
            result.attr("uri"),
            Some("https://127.0.0.1:8443/cucm-uds/user/rado")
        );
        let home = doc.child("homeCluster");
        assert_eq!(home.text, "127.0.0.1");
        assert_eq!(
            home.attr("serversUri"),
            Some("https://127.0.0.1:8443/cucm-uds/servers")
        );
        doc.child("homeClusterDetails")
            .child("selfProvisioningSecureMode");
    }

    let a = get(&s, "/cucm-uds/clusterUser?username=nobody", &[]).await;
    let doc = document(&a, "clusterUser");
    assert_eq!(doc.child("result").attr("found"), Some("false"));
    assert_eq!(doc.children.len(), 1, "only <result>: {}", a.text());

    for bad in ["", "?first=rado", "?username=a&username=b"] {
        let a = get(&s, &format!("/cucm-uds/clusterUser{bad}"), &[]).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.text());
    }
}

#[tokio::test]
async fn user_needs_its_own_credentials() {
    let s = TestServer::lab().await;

    let a = get(&s, "/cucm-uds/user/rado", &[]).await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.header("www-authenticate"),
        Some("Basic realm=\"Cisco Web Services Realm\"")
    );

    let a = get(
        &s,
        "/cucm-uds/user/rado",
        &[("authorization", &basic("rado", "lab"))],
    )
    .await;
    assert_eq!(a.header("cache-control"), Some("no-store"));
    let doc = document(&a, "user");
    assert_eq!(doc.text_of("userName"), "rado");
    assert_eq!(doc.text_of("displayName"), "Rado");
    assert_eq!(
        doc.child("primaryExtension").text_of("directoryNumber"),
        "1010"
    );
    assert_eq!(doc.child("homeCluster").text, "true");
    assert_eq!(
        doc.child("devices").attr("uri"),
        Some("https://127.0.0.1:8443/cucm-uds/user/rado/devices")
    );
    assert!(uuid::Uuid::parse_str(doc.text_of("id")).is_ok());

    for (user, password) in [("rado", "wrong"), ("nobody", "lab"), ("mallory", "lab")] {
        let a = get(
            &s,
            "/cucm-uds/user/rado",
            &[("authorization", &basic(user, password))],
        )
        .await;
        assert_eq!(a.status, 401, "{user}:{password}");
    }

    // Bearer: a token of the cluster's, from the password grant and as `token issue` makes it.
    let grant = https(
        s.web(0),
        s.lab_ca().cert_pem(),
        http_request(
            "POST",
            "/ssosp/oauth/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            format!(
                "grant_type=password&username=rado&password=lab&client_id=C{}",
                "01".repeat(32)
            ),
        ),
    )
    .await;
    assert_eq!(grant.status, 200, "{}", grant.text());
    let granted = grant.json()["access_token"].as_str().unwrap().to_owned();
    for token in [granted, s.token("rado")] {
        let a = get(
            &s,
            "/cucm-uds/user/rado",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        document(&a, "user");
    }

    let a = get(
        &s,
        "/cucm-uds/user/rado",
        &[("authorization", "Bearer not.a.token")],
    )
    .await;
    assert_eq!(a.status, 401);
    let challenges: Vec<&str> = a
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        challenges
            .iter()
            .any(|c| c.starts_with("Bearer") && c.contains("invalid_token")),
        "{challenges:?}"
    );
    // An inactive user's token is refused like a bad one.
    let a = get(
        &s,
        "/cucm-uds/user/mallory",
        &[("authorization", &format!("Bearer {}", s.token("mallory")))],
    )
    .await;
    assert_eq!(a.status, 401);

    // A user reads only itself, whichever way it authenticates.
    for auth in [
        basic("rado", "lab"),
        format!("Bearer {}", s.token("rado")),
        format!("Bearer token=\"{}\"", s.token("rado")),
    ] {
        for path in ["/cucm-uds/user/alice", "/cucm-uds/user/alice/devices"] {
            let a = get(&s, path, &[("authorization", &auth)]).await;
            assert_eq!(a.status, 403, "{path}: {}", a.text());
        }
    }
}

#[tokio::test]
async fn devices_with_their_config_files() {
    let s = TestServer::lab().await;
    // The URLs name the ports the server bound (in tests, ephemeral ones).
    let port = |node: u16, web| {
        s.server()
            .web_addr(sip_oauth_registrar::cluster::NodeId(node), web)
            .unwrap()
            .port()
    };
    use sip_oauth_registrar::net::WebPort::{TftpHttp, TftpHttps};
    let (https1, http1, https2) = (port(0, TftpHttps), port(0, TftpHttp), port(1, TftpHttps));
    let a = get(
        &s,
        "/cucm-uds/user/rado/devices",
        &[("authorization", &format!("Bearer {}", s.token("rado")))],
    )
    .await;
    let doc = document(&a, "devices");
    let devices = doc.all("device");
    assert_eq!(devices.len(), 1);
    let d = devices[0];
    assert_eq!(d.text_of("name"), "CSFrado");
    assert_eq!(
        d.text_of("model"),
        "Cisco Unified Client Services Framework"
    );
    assert_eq!(d.text_of("modelNumber"), "503");
    assert_eq!(d.text_of("type"), "Phone");
    assert_eq!(d.text_of("protocol"), "SIP");
    assert_eq!(
        d.child("configFile").text_of("uri"),
        format!("https://127.0.0.1:{https1}/CSFrado.cnf.xml")
    );
    let id = d.text_of("id");
    assert_eq!(
        d.attr("uri").unwrap(),
        format!("https://127.0.0.1:8443/cucm-uds/user/rado/device/{id}")
    );

    let a = get(
        &s,
        "/cucm-uds/user/bob/devices",
        &[("authorization", &basic("bob", "lab"))],
    )
    .await;
    let doc = document(&a, "devices");
    let found: Vec<(&str, String)> = doc
        .all("device")
        .iter()
        .map(|d| {
            (
                d.text_of("name"),
                d.child("configFile").text_of("uri").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "SEP001122334455",
                format!("https://127.0.0.1:{https1}/SEP001122334455.cnf.xml")
            ),
            (
                "SEP0011223344AA",
                format!("http://127.0.0.1:{http1}/SEP0011223344AA.cnf.xml")
            ),
            (
                "SIPlegacy1",
                format!("http://127.0.0.1:{http1}/SIPlegacy1.cnf.xml")
            ),
        ]
    );
    let models: Vec<&str> = doc
        .all("device")
        .iter()
        .map(|d| d.text_of("model"))
        .collect();
    assert_eq!(
        models,
        [
            "Cisco 8861",
            "Cisco 8861",
            "Third-party SIP Device (Advanced)"
        ]
    );

    // Alice's device is in the SUB-first group: its file comes from the subscriber.
    let a = get(
        &s,
        "/cucm-uds/user/alice/devices",
        &[("authorization", &format!("Bearer {}", s.token("alice")))],
    )
    .await;
    let doc = document(&a, "devices");
    assert_eq!(
        doc.child("device").child("configFile").text_of("uri"),
        format!("https://127.0.0.2:{https2}/CSFalice.cnf.xml")
    );
}

#[tokio::test]
async fn other_resources_and_odd_input() {
    let s = TestServer::lab().await;
    for path in [
        "/cucm-uds/users?last=Smit",
        "/cucm-uds/options",
        "/cucm-uds/user/rado/speedDials",
        "/cucm-uds/user/rado/",
        "/cucm-uds",
        "/cucm-uds/version/",
    ] {
        let a = get(&s, path, &[]).await;
        assert_eq!(a.status, 404, "{path}");
        assert!(
            a.text().contains("GET /cucm-uds/version"),
            "{path}: {}",
            a.text()
        );
    }

    let a = https(
        s.web(0),
        s.lab_ca().cert_pem(),
        http_request("PUT", "/cucm-uds/user/rado", &[], "<user/>"),
    )
    .await;
    assert_eq!(a.status, 405);
    assert!(
        a.header("allow").is_some_and(|v| v.contains("GET")),
        "{:?}",
        a.headers
    );
    let a = https(
        s.web(0),
        s.lab_ca().cert_pem(),
        http_request("POST", "/cucm-uds/version", &[], ""),
    )
    .await;
    assert_eq!(a.status, 405);

    let rado = basic("rado", "lab");
    let long = "a".repeat(5000);
    for path in [
        format!("/cucm-uds/user/{long}"),
        format!("/cucm-uds/user/{long}/devices"),
        "/cucm-uds/user/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/cucm-uds/user/rado%2F..%2Falice/devices".to_owned(),
        "/cucm-uds/user/%00".to_owned(),
        "/cucm-uds/user/%FF%FE".to_owned(),
        "/cucm-uds/user/../../etc/passwd".to_owned(),
        format!("/cucm-uds/clusterUser?username={long}"),
        "/cucm-uds/clusterUser?username=%ZZ%00".to_owned(),
    ] {
        let a = get(&s, &path, &[("authorization", &rado)]).await;
        assert!(
            (400..500).contains(&a.status),
            "{path}: {} {}",
            a.status,
            a.text()
        );
    }
    // Credentials in odd shapes are refused, never a panic.
    for auth in [
        "Basic",
        "Basic !!!",
        "Bearer",
        "Negotiate abc",
        "basic cmFkbw==",
    ] {
        let a = get(&s, "/cucm-uds/user/rado", &[("authorization", auth)]).await;
        assert_eq!(a.status, 401, "{auth}");
    }
    // The server is still up.
    document(
        &get(&s, "/cucm-uds/version", &[]).await,
        "versionInformation",
    );
}
