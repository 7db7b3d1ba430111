//! The OAuth registration flow on 5090: 407 challenge, token, 200, refresh, un-register,
//! duplicate device, token rejections, and what the store holds.

use sip_oauth_registrar::net::ListenerKind::OAuth;
use sip_oauth_registrar::net::Transport::Tls;
use tokio::time::Instant;

use crate::harness::*;

async fn oauth_client(s: &TestServer) -> Client {
    let ca = s.lab_ca();
    Client::tls(s.addr(0, OAuth, Tls), ca.cert_pem(), None).await
}

fn device(s: &TestServer, name: &str) -> sip_oauth_registrar::cluster::DeviceId {
    s.settings.cluster.device_by_name(name).unwrap()
}

#[tokio::test]
async fn challenge_then_token_then_200_with_ucm_shape() {
    let s = TestServer::lab().await;
    let mut c = oauth_client(&s).await;
    let first = Register::jabber("CSFrado", "1010");

    let r = c.register(&first).await;
    assert_eq!(r.status, 407, "{}", r.raw);
    assert!(
        r.raw
            .starts_with("SIP/2.0 407 Proxy Authentication Required\r\n")
    );
    assert_eq!(
        r.names(),
        [
            "Via",
            "From",
            "To",
            "Date",
            "Call-ID",
            "Server",
            "CSeq",
            "Proxy-Authenticate",
            "Content-Length"
        ]
    );
    assert_eq!(
        r.header("Proxy-Authenticate"),
        Some("Bearer realm=\"ccmsipline\"")
    );
    assert_eq!(r.header("Server"), Some("Cisco-CUCM12.5"));
    assert_eq!(r.header("CSeq"), Some("2270 REGISTER"));
    assert_eq!(r.header("Call-ID"), Some(first.call_id.as_str()));
    assert_eq!(
        r.header("From"),
        Some("<sip:1010@10.10.10.1>;tag=882323451234089000003bdd-00005eff")
    );
    let to_tag_407 = r
        .header("To")
        .unwrap()
        .strip_prefix("<sip:1010@10.10.10.1>;tag=")
        .unwrap()
        .to_owned();
    assert!(to_tag_407.parse::<u32>().is_ok(), "decimal tag like UCM's");
    assert_eq!(r.header("Content-Length"), Some("0"));
    assert!(httpdate::parse_http_date(r.header("Date").unwrap()).is_ok());
    assert!(s.server().registrar().store().is_empty());

    let token = s.token("rado");
    let second = first.next().bearer(&token);
    let r = c.register(&second).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(
        r.names(),
        [
            "Via",
            "From",
            "To",
            "Date",
            "Call-ID",
            "Server",
            "CSeq",
            "Expires",
            "Contact",
            "Supported",
            "Content-Length"
        ]
    );
    assert_eq!(r.header("CSeq"), Some("2271 REGISTER"));
    assert_eq!(
        r.header("Expires"),
        Some("120"),
        "the keepalive interval, not the 3600 asked"
    );
    assert_eq!(
        r.header("Contact"),
        Some(format!("{};x-cisco-newreg", first.contact_value()).as_str())
    );
    assert_eq!(
        r.header("Supported"),
        Some("X-cisco-srtp-fallback,X-cisco-sis-9.1.0")
    );
    let to_tag_200 = r.header("To").unwrap().rsplit("tag=").next().unwrap();
    assert_ne!(to_tag_200, to_tag_407, "a new To tag per response");

    let b = s
        .server()
        .registrar()
        .store()
        .lookup(device(&s, "CSFrado"), Instant::now())
        .unwrap();
    assert_eq!(
        &*b.contact_uri,
        "sip:a8ae9f92-4b07-a0d7-d701-29320aed1e2e@10.10.10.10:62162;transport=tls"
    );
    assert_eq!(
        b.instance.as_deref(),
        Some("<urn:uuid:00000000-0000-0000-0000-882323451234>")
    );
    assert_eq!(b.user.as_deref(), Some("rado"));
    assert_eq!(b.cseq, 2271);

    // A refresh echoes the Contact without ;x-cisco-newreg.
    let r = c.register(&second.next().bearer(&token)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Contact"), Some(first.contact_value().as_str()));
    assert_eq!(s.server().registrar().store().len(), 1);
}

#[tokio::test]
async fn both_bearer_forms_in_both_headers() {
    let s = TestServer::lab().await;
    let token = s.token("rado");
    for (i, header) in [
        format!("Proxy-Authorization: Bearer token=\"{token}\""),
        format!("Proxy-Authorization: Bearer {token}"),
        format!("Authorization: Bearer token=\"{token}\""),
        format!("Authorization: Bearer {token}"),
        format!("Proxy-Authorization: Bearer realm=\"ccmsipline\", token=\"{token}\""),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = oauth_client(&s).await;
        let mut reg = Register::jabber("CSFrado", "1010");
        reg.call_id = format!("form-{i}");
        reg.cseq = 1 + i as u32;
        let r = c.register(&reg.header(header.clone())).await;
        assert_eq!(r.status, 200, "{header}: {}", r.raw);
    }
}

#[tokio::test]
async fn bad_expired_or_foreign_tokens_are_rechallenged() {
    let s = TestServer::lab().await;
    let mut c = oauth_client(&s).await;
    let expired = s.token_at("rado", 60, unix_now() - 3600);
    let other_cluster = {
        // Signed by a key the cluster does not know.
        let key = sip_oauth_registrar::pki::generate_rsa_signing_key_pem().unwrap();
        let other = sip_oauth_registrar::auth::TokenAuthority::new(
            &s.settings.cluster.params.uuid,
            &key,
            &sip_oauth_registrar::auth::generate_encryption_key(),
            sip_oauth_registrar::auth::AuthOptions {
                leeway_secs: 0,
                cache_capacity: 1,
            },
        )
        .unwrap();
        other.issue("rado", "Cx", 3600, unix_now()).unwrap().token
    };
    let mut reg = Register::jabber("CSFrado", "1010");
    for bad in [
        "Proxy-Authorization: Bearer token=\"not-a-jwt\"".to_owned(),
        format!("Proxy-Authorization: Bearer token=\"{expired}\""),
        format!("Proxy-Authorization: Bearer token=\"{other_cluster}\""),
        "Proxy-Authorization: Digest username=\"rado\", realm=\"ccmsipline\"".to_owned(),
    ] {
        reg = reg.next();
        let r = c.register(&reg.clone().header(bad.clone())).await;
        assert_eq!(r.status, 407, "{bad}");
        assert_eq!(
            r.header("Proxy-Authenticate"),
            Some("Bearer realm=\"ccmsipline\"")
        );
    }
    assert!(s.server().registrar().store().is_empty());
}

#[tokio::test]
async fn token_of_another_user_or_an_inactive_owner_is_forbidden() {
    let s = TestServer::lab().await;
    let node = s.node_name(0);
    let mut c = oauth_client(&s).await;
    let r = c
        .register(&Register::jabber("CSFrado", "1010").bearer(&s.token("alice")))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.warning(),
        Some(format!("399 {node} \"Token user is not the device owner\"").as_str())
    );

    let r = c
        .register(&Register::jabber("CSFmallory", "2099").bearer(&s.token("mallory")))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.warning(),
        Some(format!("399 {node} \"User is not active\"").as_str())
    );
    assert!(s.server().registrar().store().is_empty());
}

#[tokio::test]
async fn remotecc_multipart_gets_the_remotecc_response_body() {
    let s = TestServer::lab().await;
    let mut c = oauth_client(&s).await;
    let body = "--uniqueBoundary\r\nContent-Type: application/x-cisco-remotecc-request+xml\r\n\r\n\
                <x-cisco-remotecc-request><bulkregisterreq><contact all=\"true\"><register></register></contact></bulkregisterreq></x-cisco-remotecc-request>\r\n\
                --uniqueBoundary\r\nContent-Type: application/x-cisco-remotecc-request+xml\r\n\r\n\
                <x-cisco-remotecc-request><optionsind><combine max=\"6\"></combine></optionsind></x-cisco-remotecc-request>\r\n\
                --uniqueBoundary--\r\n";
    let mut reg = Register::jabber("CSFrado", "1010")
        .bearer(&s.token("rado"))
        .header("Reason: SIP;cause=200;text=\"cisco-alarm:111 Name=CSFrado ActiveLoad=Jabber_for_Windows-12.8.0.51973 InactiveLoad=Jabber_for_Windows-12.8.0.51973 Last=Application-Requested-Destroy\"")
        .header("Mime-Version: 1.0");
    reg.body = Some((
        "multipart/mixed; boundary=uniqueBoundary".into(),
        body.into(),
    ));
    let r = c.register(&reg).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(
        r.header("Content-Type"),
        Some("application/x-cisco-remotecc-response+xml")
    );
    assert!(r.body.starts_with("<x-cisco-remotecc-response>\n<response>\n<code>200</code>\n<optionsind>\n<combine max=\"6\">"));
    assert!(
        r.body
            .contains("<presence usage=\"blf speed dial\"><unot/></presence>\n<joinreq></joinreq>")
    );
    assert_eq!(
        r.header("Content-Length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        r.body.len()
    );
}

#[tokio::test]
async fn unregister_with_expires_zero_and_with_star() {
    let s = TestServer::lab().await;
    let token = s.token("rado");
    let store = s.server().registrar().store().clone();
    let mut c = oauth_client(&s).await;
    let reg = Register::jabber("CSFrado", "1010").bearer(&token);
    assert_eq!(c.register(&reg).await.status, 200);
    assert_eq!(store.len(), 1);

    let mut off = reg.next().bearer(&token);
    off.expires = Some("0".into());
    let r = c.register(&off).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Contact"), None, "no bindings remain");
    assert!(store.is_empty());

    let mut again = off.next().bearer(&token);
    again.expires = Some("3600".into());
    assert_eq!(c.register(&again).await.status, 200);
    let star = |base: &Register, expires: &str| {
        let mut r = base.next().bearer(&token);
        r.contact = Some("*".into());
        r.expires = Some(expires.into());
        r
    };
    let bad_star = star(&again, "3600");
    assert_eq!(
        c.register(&bad_star).await.status,
        400,
        "Contact: * needs Expires: 0"
    );
    let star = star(&bad_star, "0");
    let r = c.register(&star).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(store.is_empty());

    // Un-registering needs the token too: nobody else can knock a device off.
    let mut anon = star.next();
    anon.contact = Some("*".into());
    anon.expires = Some("0".into());
    assert_eq!(c.register(&anon).await.status, 407);
}

#[tokio::test]
async fn duplicate_device_is_refused_unless_jabber_forces_it() {
    let s = TestServer::lab().await;
    let node = s.node_name(0);
    let token = s.token("rado");
    let store = s.server().registrar().store().clone();
    let id = device(&s, "CSFrado");

    let mut a = oauth_client(&s).await;
    assert_eq!(
        a.register(&Register::jabber("CSFrado", "1010").bearer(&token))
            .await
            .status,
        200
    );

    let mut other = Register::jabber("CSFrado", "1010");
    other.instance = Some("<urn:uuid:00000000-0000-0000-0000-000000000002>".into());
    let mut b = oauth_client(&s).await;
    let r = b.register(&other.clone().bearer(&token)).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.warning(),
        Some(format!("399 {node} \"Registration is active for another client\"").as_str())
    );
    assert_eq!(
        store
            .lookup(id, Instant::now())
            .unwrap()
            .instance
            .as_deref(),
        Some("<urn:uuid:00000000-0000-0000-0000-882323451234>")
    );

    let forced = other
        .next()
        .bearer(&token)
        .header("Reason: SIP;cause=200;text=\"cisco-alarm:111 Name=CSFrado Last=Application-Requested-Destroy\"");
    let r = b.register(&forced).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(
        r.header("Contact"),
        Some(other.contact_value().as_str()),
        "a takeover is not a first registration"
    );
    assert_eq!(
        store
            .lookup(id, Instant::now())
            .unwrap()
            .instance
            .as_deref(),
        Some("<urn:uuid:00000000-0000-0000-0000-000000000002>")
    );
}

#[tokio::test]
async fn bindings_expire_after_the_keepalive_interval() {
    // Real time with a 1 s interval: the paused-time variants live in registrar::store.
    let s = TestServer::start(&lab_with(&[
        (
            "keepalive_interval_secs = 120",
            "keepalive_interval_secs = 1",
        ),
        ("min_expires_secs = 60", "min_expires_secs = 1"),
    ]))
    .await;
    let store = s.server().registrar().store().clone();
    let mut c = oauth_client(&s).await;
    let token = s.token("rado");
    let reg = Register::jabber("CSFrado", "1010").bearer(&token);
    let r = c.register(&reg).await;
    assert_eq!(r.header("Expires"), Some("1"));
    assert_eq!(store.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(store.len(), 0, "purged without any further request");
    // Registering again after expiry is not the first registration since start.
    let r = c.register(&reg.next().bearer(&token)).await;
    assert_eq!(r.status, 200);
    assert!(!r.header("Contact").unwrap().ends_with(";x-cisco-newreg"));
}

#[tokio::test]
async fn contact_expires_parameter_is_not_echoed_against_the_granted_expires() {
    let s = TestServer::lab().await;
    let mut c = oauth_client(&s).await;
    let mut reg = Register::jabber("CSFrado", "1010").bearer(&s.token("rado"));
    reg.contact = Some(
        "<sip:a8ae9f92-4b07-a0d7-d701-29320aed1e2e@10.10.10.10:62162;transport=tls>;expires=3600;\
         +sip.instance=\"<urn:uuid:00000000-0000-0000-0000-882323451234>\";\
         +u.sip!devicename.ccm.cisco.com=\"CSFrado\""
            .into(),
    );
    reg.expires = None;
    let r = c.register(&reg).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.header("Expires"), Some("120"));
    assert_eq!(
        r.header("Contact"),
        Some(
            "<sip:a8ae9f92-4b07-a0d7-d701-29320aed1e2e@10.10.10.10:62162;transport=tls>;\
             +sip.instance=\"<urn:uuid:00000000-0000-0000-0000-882323451234>\";\
             +u.sip!devicename.ccm.cisco.com=\"CSFrado\";x-cisco-newreg"
        )
    );
}

#[tokio::test]
async fn only_cisco_alarm_111_forces_a_takeover() {
    let s = TestServer::lab().await;
    let token = s.token("rado");
    let mut a = oauth_client(&s).await;
    assert_eq!(
        a.register(&Register::jabber("CSFrado", "1010").bearer(&token))
            .await
            .status,
        200
    );
    let mut other = Register::jabber("CSFrado", "1010");
    other.instance = Some("<urn:uuid:00000000-0000-0000-0000-000000000002>".into());
    let r = a
        .register(
            &other
                .bearer(&token)
                .header("Reason: SIP;cause=200;text=\"cisco-alarm:1110\""),
        )
        .await;
    assert_eq!(r.status, 403, "cisco-alarm:1110 is another alarm");
}

#[tokio::test]
async fn register_without_contact_queries_the_binding() {
    let s = TestServer::lab().await;
    let token = s.token("rado");
    let mut c = oauth_client(&s).await;
    let reg = Register::plain("1010").bearer(&token);
    let mut query = reg.clone();
    query.contact = Some(String::new());
    let no_contact = |r: &Register| {
        String::from_utf8(r.bytes())
            .unwrap()
            .replace("Contact: \r\n", "")
            .into_bytes()
    };
    let r = c.request(&no_contact(&query)).await;
    assert_eq!(
        (r.status, r.header("Contact")),
        (200, None),
        "nothing bound yet"
    );

    let mut jabber = Register::jabber("CSFrado", "1010").bearer(&token);
    jabber.call_id = reg.call_id.clone();
    jabber.cseq = reg.cseq + 1;
    assert_eq!(c.register(&jabber).await.status, 200);
    let mut query = jabber.next().bearer(&token);
    query.contact = Some(String::new());
    let r = c.request(&no_contact(&query)).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let contact = r.header("Contact").unwrap();
    let left: u64 = contact
        .strip_prefix(
            "<sip:a8ae9f92-4b07-a0d7-d701-29320aed1e2e@10.10.10.10:62162;transport=tls>;expires=",
        )
        .unwrap()
        .parse()
        .unwrap();
    assert!((100..=120).contains(&left), "{left}");
    assert_eq!(
        s.server().registrar().store().len(),
        1,
        "a query changes nothing"
    );
}

#[tokio::test]
async fn star_removal_on_a_shared_line_finds_the_clients_own_device() {
    // A desk phone listed before CSFrado shares its line 1010.
    let s = TestServer::start(&lab_with(&[(
        "[[devices]]\nname = \"CSFrado\"",
        "[[devices]]\nname = \"SEPDESK001010\"\nproduct_type = \"Cisco 8861\"\nowner = \"rado\"\n\
         profile = \"Cisco 8861 - Secure OAuth\"\n\
         lines = [{ dn = \"1010\", display_name = \"Rado desk\", contact = \"11111111-2222-4333-8444-555555555555\" }]\n\n\
         [[devices]]\nname = \"CSFrado\"",
    )]))
    .await;
    let store = s.server().registrar().store().clone();
    let token = s.token("rado");
    let mut c = oauth_client(&s).await;
    let reg = Register::jabber("CSFrado", "1010").bearer(&token);
    assert_eq!(c.register(&reg).await.status, 200);
    assert!(
        store
            .lookup(device(&s, "CSFrado"), Instant::now())
            .is_some()
    );

    let mut star = reg.next().bearer(&token);
    star.contact = Some("*".into());
    star.expires = Some("0".into());
    assert_eq!(c.register(&star).await.status, 200);
    assert!(store.is_empty(), "Jabber's own binding was removed");
}
