//! Tests for [`parse`] (rsip → [`Request`], compact forms, the 400 salvage path) and
//! [`response::encode`] (UCM's header order), on the messages of docs/ucm.md §4 and §5.

use super::response::{Reply, encode, new_tag};
use super::*;

// ---------------------------------------------------------------------------------------------
// Messages from docs/ucm.md
// ---------------------------------------------------------------------------------------------

const VIA_1: &str = "SIP/2.0/TLS 10.10.10.10:62162;branch=z9hG4bK00001188";
const VIA_2: &str = "SIP/2.0/TLS 10.10.10.10:62162;branch=z9hG4bK00004a82";
/// The source address of the Jabber requests of docs/ucm.md §4: the one their Via names, so responses to
/// them echo the Via unchanged.
const JABBER: std::net::SocketAddr = std::net::SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 10, 10, 10)),
    62162,
);
const FROM: &str = "<sip:1010@10.10.10.1>;tag=882323451234089000003bdd-00005eff";
const TO: &str = "<sip:1010@10.10.10.1>";
const CALL_ID: &str = "88232345-12340017-00001c0b-00000cfa@10.10.10.10";
const CONTACT: &str = "<sip:a8ae9f92-4b07-a0d7-d701-29320aed1e2e@10.10.10.10:62162;transport=tls>;\
+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-882323451234>\";\
+u.sip!devicename.ccm.cisco.com=\"CSFrado\";+u.sip!model.ccm.cisco.com=\"503\";video";
const SUPPORTED: &str = "replaces,join,sdp-anat,norefersub,resource-priority,extended-refer,\
X-cisco-callinfo,X-cisco-serviceuri,X-cisco-escapecodes,X-cisco-service-control,\
X-cisco-srtp-fallback,X-cisco-monrec,X-cisco-config,X-cisco-sis-7.0.0,X-cisco-xsi-8.5.1,\
X-cisco-graceful-reg,X-cisco-duplicate-reg";
const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6IjhkMGQ1MzI0LWY0ZjAtNGIwYi04MTFl\
LTRhNTlmZGI2YjcyMjo0MmFiIn0.eyJwcml2YXRlIjoiZXlKaGJHY2lPaUprYVhJaUxDSmpkSGtpT2lKS1YxUWlmUSJ9.\
c2lnbmF0dXJlLW9mLXRoZS1jbHVzdGVyLXNpZ25pbmcta2V5";
const REASON: &str = "SIP;cause=200;text=\"cisco-alarm:111 Name=CSFrado \
ActiveLoad=Jabber_for_Windows-12.8.0.51973 InactiveLoad=Jabber_for_Windows-12.8.0.51973 \
Last=Application-Requested-Destroy\"";
const MULTIPART: &str = "multipart/mixed; boundary=uniqueBoundary";

/// The two remotecc parts Jabber sends with its authenticated REGISTER (docs/ucm.md §4).
const REMOTECC_BODY: &str = "--uniqueBoundary\r\n\
Content-Type: application/x-cisco-remotecc-request+xml\r\n\
Content-Disposition: session;handling=required\r\n\
\r\n\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<x-cisco-remotecc-request>\r\n\
<bulkregisterreq>\r\n\
<contact all=\"true\">\r\n\
<register></register>\r\n\
</contact>\r\n\
</bulkregisterreq>\r\n\
</x-cisco-remotecc-request>\r\n\
\r\n\
--uniqueBoundary\r\n\
Content-Type: application/x-cisco-remotecc-request+xml\r\n\
Content-Disposition: session;handling=required\r\n\
\r\n\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<x-cisco-remotecc-request>\r\n\
<optionsind>\r\n\
<combine max=\"6\">\r\n\
<remotecc><status/></remotecc>\r\n\
<service-control/>\r\n\
</combine>\r\n\
<dialog usage=\"hook status\"><unot/></dialog>\r\n\
<dialog usage=\"shared line\"><unot/></dialog>\r\n\
<presence usage=\"blf speed dial\"><unot/></presence>\r\n\
<joinreq></joinreq>\r\n\
</optionsind>\r\n\
</x-cisco-remotecc-request>\r\n\
\r\n\
--uniqueBoundary--\r\n";

/// A SIP message as lines of its header section plus a body, easy to vary per test.
#[derive(Clone)]
struct Msg {
    lines: Vec<String>,
    body: Vec<u8>,
}

impl Msg {
    fn new(lines: &[&str], body: &[u8]) -> Self {
        Self {
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
            body: body.to_vec(),
        }
    }

    /// Spec §4, first REGISTER (no credentials), with `Content-Length: 0`.
    fn register_1() -> Self {
        Self::new(
            &[
                "REGISTER sip:10.10.10.1 SIP/2.0",
                &format!("Via: {VIA_1}"),
                &format!("From: {FROM}"),
                &format!("To: {TO}"),
                &format!("Call-ID: {CALL_ID}"),
                "Max-Forwards: 70",
                "Date: Mon, 30 Mar 2020 11:03:19 GMT",
                "CSeq: 2270 REGISTER",
                "User-Agent: Cisco-CSF",
                &format!("Contact: {CONTACT}"),
                &format!("Supported: {SUPPORTED}"),
                "Content-Length: 0",
            ],
            b"",
        )
    }

    /// Spec §4, second REGISTER: same Call-ID and From tag, CSeq+1, new branch, bearer token,
    /// cisco-alarm Reason and the remotecc multipart body.
    fn register_2() -> Self {
        Self::new(
            &[
                "REGISTER sip:10.10.10.1 SIP/2.0",
                &format!("Via: {VIA_2}"),
                &format!("From: {FROM}"),
                &format!("To: {TO}"),
                &format!("Call-ID: {CALL_ID}"),
                "Max-Forwards: 70",
                "Date: Mon, 30 Mar 2020 11:03:31 GMT",
                "CSeq: 2271 REGISTER",
                "User-Agent: Cisco-CSF",
                &format!("Contact: {CONTACT}"),
                &format!("Supported: {SUPPORTED}"),
                &format!("Proxy-Authorization: Bearer token=\"{TOKEN}\""),
                &format!("Reason: {REASON}"),
                "Expires: 3600",
                &format!("Content-Type: {MULTIPART}"),
                "Mime-Version: 1.0",
                &format!("Content-Length: {}", REMOTECC_BODY.len()),
            ],
            REMOTECC_BODY.as_bytes(),
        )
    }

    fn name_of(line: &str) -> Option<&str> {
        line.split_once(':').map(|(n, _)| n.trim())
    }

    /// Drops every header line with this name (case-insensitive; not the request line).
    fn without(mut self, name: &str) -> Self {
        let before = self.lines.len();
        let first = self.lines.remove(0);
        self.lines
            .retain(|l| !Self::name_of(l).is_some_and(|n| n.eq_ignore_ascii_case(name)));
        self.lines.insert(0, first);
        assert!(self.lines.len() < before, "no {name} header to drop");
        self
    }

    /// Replaces the first header line with this name by `line`.
    fn set(mut self, name: &str, line: &str) -> Self {
        let i = self
            .lines
            .iter()
            .skip(1)
            .position(|l| Self::name_of(l).is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .unwrap_or_else(|| panic!("no {name} header to set"))
            + 1;
        self.lines[i] = line.to_owned();
        self
    }

    /// Replaces the request line.
    fn request_line(mut self, line: &str) -> Self {
        self.lines[0] = line.to_owned();
        self
    }

    /// Adds a header line before the last one (Content-Length stays last).
    fn with(mut self, line: &str) -> Self {
        let at = self.lines.len() - 1;
        self.lines.insert(at, line.to_owned());
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.lines.join("\r\n").into_bytes();
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    fn parse(&self) -> Result<Request, ParseError> {
        parse(&self.bytes())
    }
}

fn ok(msg: &Msg) -> Request {
    msg.parse()
        .unwrap_or_else(|e| panic!("expected a request, got {e:?}"))
}

fn parse_err(bytes: &[u8]) -> ParseError {
    match parse(bytes) {
        Ok(req) => panic!("expected an error, got {req:?}"),
        Err(e) => e,
    }
}

fn bad_request(bytes: &[u8]) -> (Echo, &'static str) {
    match parse(bytes) {
        Err(ParseError::BadRequest { echo, reason }) => (*echo, reason),
        other => panic!("expected BadRequest, got {other:?}"),
    }
}

fn spec_echo(via: &str, cseq: &str) -> Echo {
    Echo {
        vias: vec![via.to_owned()],
        from: FROM.into(),
        to: TO.into(),
        call_id: CALL_ID.into(),
        cseq: cseq.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// parse: the REGISTERs of docs/ucm.md §4
// ---------------------------------------------------------------------------------------------

#[test]
fn spec_first_register() {
    let req = ok(&Msg::register_1());
    assert_eq!(req.method, Method::Register);
    assert_eq!(req.method_name, "REGISTER");
    assert_eq!(req.uri, "sip:10.10.10.1");
    assert_eq!(req.echo, spec_echo(VIA_1, "2270 REGISTER"));
    assert_eq!(req.cseq_number, 2270);
    assert_eq!(req.contacts, [CONTACT]);
    assert_eq!(req.expires, None);
    assert_eq!(req.proxy_authorization, None);
    assert_eq!(req.authorization, None);
    assert_eq!(req.credential_header(), None);
    assert_eq!(req.content_type, None);
    assert_eq!(req.reason, None);
    assert!(req.body.is_empty());
    assert!(!req.has_remotecc());
}

#[test]
fn spec_first_register_contact_names_the_device() {
    // The Contact text is kept byte for byte, so the grammar adapter finds Jabber's feature tags.
    let req = ok(&Msg::register_1());
    let grammar::ContactList::Entries(entries) =
        grammar::parse_contact_list(&req.contacts[0]).unwrap()
    else {
        panic!("not a contact list");
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].param("+u.sip!devicename.ccm.cisco.com"),
        Some(Some("CSFrado"))
    );
    assert_eq!(
        entries[0].param("+u.sip!model.ccm.cisco.com"),
        Some(Some("503"))
    );
    assert_eq!(
        entries[0].sip_uri().unwrap().user,
        Some("a8ae9f92-4b07-a0d7-d701-29320aed1e2e")
    );
}

#[test]
fn spec_second_register_with_token_reason_and_remotecc() {
    let msg = Msg::register_2();
    // The message is self-consistent: Content-Length is the body's byte count.
    assert!(
        msg.lines
            .contains(&format!("Content-Length: {}", msg.body.len()))
    );

    let req = ok(&msg);
    assert_eq!(req.method, Method::Register);
    assert_eq!(req.echo, spec_echo(VIA_2, "2271 REGISTER"));
    assert_eq!(req.cseq_number, 2271);
    assert_eq!(req.contacts, [CONTACT]);
    let credential = format!("Bearer token=\"{TOKEN}\"");
    assert_eq!(
        req.proxy_authorization.as_deref(),
        Some(credential.as_str())
    );
    assert_eq!(req.authorization, None);
    assert_eq!(req.credential_header(), Some(credential.as_str()));
    assert_eq!(req.reason.as_deref(), Some(REASON));
    assert_eq!(req.expires.as_deref(), Some("3600"));
    assert_eq!(req.content_type.as_deref(), Some(MULTIPART));
    assert_eq!(req.body, REMOTECC_BODY.as_bytes());
    assert!(req.has_remotecc());

    // The token is Cisco's auth-param form, which the grammar adapter extracts.
    assert_eq!(
        grammar::parse_bearer_credential(req.credential_header().unwrap()).unwrap(),
        grammar::Credential::CiscoToken(TOKEN.into())
    );
}

#[test]
fn authorization_is_used_when_proxy_authorization_is_absent() {
    let msg = Msg::register_2().set(
        "Proxy-Authorization",
        &format!("Authorization: Bearer {TOKEN}"),
    );
    let req = ok(&msg);
    assert_eq!(req.proxy_authorization, None);
    let want = format!("Bearer {TOKEN}");
    assert_eq!(req.authorization.as_deref(), Some(want.as_str()));
    assert_eq!(req.credential_header(), Some(want.as_str()));

    // With both, Proxy-Authorization wins (it is what the 407 asked for).
    let both = Msg::register_2().with("Authorization: Bearer other");
    let req = ok(&both);
    assert_eq!(req.authorization.as_deref(), Some("Bearer other"));
    assert_eq!(
        req.credential_header(),
        Some(format!("Bearer token=\"{TOKEN}\"").as_str())
    );
}

#[test]
fn header_names_are_case_insensitive() {
    let msg = Msg::new(
        &[
            "REGISTER sip:10.10.10.1 SIP/2.0",
            &format!("VIA: {VIA_1}"),
            &format!("from: {FROM}"),
            &format!("tO: {TO}"),
            &format!("call-id: {CALL_ID}"),
            "cseq: 2270 REGISTER",
            &format!("CONTACT: {CONTACT}"),
            &format!("proxy-authorization: Bearer token=\"{TOKEN}\""),
            &format!("REASON: {REASON}"),
            "expires: 60",
            &format!("content-type: {MULTIPART}"),
            &format!("content-length: {}", REMOTECC_BODY.len()),
        ],
        REMOTECC_BODY.as_bytes(),
    );
    let req = ok(&msg);
    assert_eq!(req.echo, spec_echo(VIA_1, "2270 REGISTER"));
    assert_eq!(req.contacts, [CONTACT]);
    assert!(req.credential_header().unwrap().contains(TOKEN));
    assert_eq!(req.reason.as_deref(), Some(REASON));
    assert_eq!(req.expires.as_deref(), Some("60"));
    assert!(req.has_remotecc());
}

#[test]
fn has_remotecc_needs_multipart_and_a_remotecc_part() {
    let sdp_part = "--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b--\r\n";
    // (content type, body, expected)
    let cases: &[(Option<&str>, &str, bool)] = &[
        (Some(MULTIPART), REMOTECC_BODY, true),
        (
            Some("Multipart/Mixed;boundary=uniqueBoundary"),
            REMOTECC_BODY,
            true,
        ),
        (
            Some("  multipart/mixed; boundary=uniqueBoundary"),
            REMOTECC_BODY,
            true,
        ),
        (Some("multipart/mixed; boundary=b"), sdp_part, false),
        (
            Some("application/x-cisco-remotecc-request+xml"),
            REMOTECC_BODY,
            false,
        ),
        (
            Some("multipart/alternative; boundary=uniqueBoundary"),
            REMOTECC_BODY,
            false,
        ),
        (None, REMOTECC_BODY, false),
        (Some(MULTIPART), "", false),
    ];
    for (content_type, body, want) in cases {
        let mut msg =
            Msg::register_1().set("Content-Length", &format!("Content-Length: {}", body.len()));
        msg.body = body.as_bytes().to_vec();
        if let Some(ct) = content_type {
            msg = msg.with(&format!("Content-Type: {ct}"));
        }
        let req = ok(&msg);
        assert_eq!(
            req.has_remotecc(),
            *want,
            "content type {content_type:?}, body {:?}",
            &body[..body.len().min(40)]
        );
    }
}

#[test]
fn a_binary_body_is_kept_as_bytes() {
    let body = [0u8, 0xff, 0xfe, b'\r', b'\n', b'\r', b'\n', 0x80];
    let mut msg = Msg::register_1().set("Content-Length", "Content-Length: 8");
    msg.body = body.to_vec();
    assert_eq!(ok(&msg).body, body);
}

#[test]
fn other_methods() {
    // (request line, CSeq, method, method name)
    let cases = [
        (
            "OPTIONS sip:10.10.10.1 SIP/2.0",
            "7 OPTIONS",
            Method::Options,
            "OPTIONS",
        ),
        ("ACK sip:10.10.10.1 SIP/2.0", "7 ACK", Method::Ack, "ACK"),
        (
            "INVITE sip:2001@10.10.10.1 SIP/2.0",
            "7 INVITE",
            Method::Other,
            "INVITE",
        ),
        (
            "SUBSCRIBE sip:2001@10.10.10.1 SIP/2.0",
            "7 SUBSCRIBE",
            Method::Other,
            "SUBSCRIBE",
        ),
    ];
    for (line, cseq, method, name) in cases {
        let msg = Msg::register_1()
            .request_line(line)
            .set("CSeq", &format!("CSeq: {cseq}"));
        let req = ok(&msg);
        assert_eq!(req.method, method, "{line}");
        assert_eq!(req.method_name, name, "{line}");
        assert_eq!(req.cseq_number, 7, "{line}");
        assert_eq!(req.echo.cseq, cseq, "{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// parse: compact forms and repeated headers
// ---------------------------------------------------------------------------------------------

#[test]
fn compact_header_forms() {
    for upper in [false, true] {
        let c = |name: &str| {
            if upper {
                name.to_ascii_uppercase()
            } else {
                name.to_owned()
            }
        };
        let lines = [
            "REGISTER sip:10.10.10.1 SIP/2.0".to_owned(),
            format!("{}: {VIA_2}", c("v")),
            format!("{}: {FROM}", c("f")),
            format!("{}: {TO}", c("t")),
            format!("{}: {CALL_ID}", c("i")),
            "CSeq: 2271 REGISTER".to_owned(),
            format!("{}: {CONTACT}", c("m")),
            format!("Proxy-Authorization: Bearer token=\"{TOKEN}\""),
            format!("{}: {MULTIPART}", c("c")),
            format!("{}: {}", c("l"), REMOTECC_BODY.len()),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let req = ok(&Msg::new(&lines, REMOTECC_BODY.as_bytes()));
        assert_eq!(req.echo, spec_echo(VIA_2, "2271 REGISTER"), "upper={upper}");
        assert_eq!(req.cseq_number, 2271);
        assert_eq!(req.contacts, [CONTACT], "upper={upper}");
        assert_eq!(
            req.content_type.as_deref(),
            Some(MULTIPART),
            "upper={upper}"
        );
        assert_eq!(req.body, REMOTECC_BODY.as_bytes(), "upper={upper}");
        assert!(req.has_remotecc(), "upper={upper}");
    }
}

#[test]
fn vias_and_contacts_keep_their_order_across_full_and_compact_forms() {
    let proxy = "SIP/2.0/TLS 192.0.2.20:5061;branch=z9hG4bKexpc1";
    let edge = "SIP/2.0/TCP 192.0.2.30:5060;branch=z9hG4bKedge1;received=192.0.2.31";
    let second_contact = "<sip:a8ae9f92@10.10.10.11:5060>;expires=0";
    let msg = Msg::new(
        &[
            "REGISTER sip:10.10.10.1 SIP/2.0",
            &format!("Via: {proxy}"),
            &format!("v: {edge}"),
            &format!("Via: {VIA_1}"),
            &format!("From: {FROM}"),
            &format!("To: {TO}"),
            &format!("Call-ID: {CALL_ID}"),
            "CSeq: 2270 REGISTER",
            &format!("Contact: {CONTACT}"),
            &format!("m: {second_contact}"),
            "Content-Length: 0",
        ],
        b"",
    );
    let req = ok(&msg);
    assert_eq!(req.echo.vias, [proxy, edge, VIA_1]);
    assert_eq!(req.contacts, [CONTACT, second_contact]);
}

#[test]
fn repeated_dialog_headers_are_refused() {
    // (extra line, description)
    let cases = [
        (format!("Call-ID: {CALL_ID}"), "Call-ID twice, same value"),
        ("Call-ID: other@10.10.10.10".to_owned(), "Call-ID twice"),
        ("i: other@10.10.10.10".to_owned(), "Call-ID and compact i"),
        ("From: <sip:2001@10.10.10.1>;tag=x".to_owned(), "From twice"),
        (
            "f: <sip:2001@10.10.10.1>;tag=x".to_owned(),
            "From and compact f",
        ),
        ("To: <sip:2001@10.10.10.1>".to_owned(), "To twice"),
        ("t: <sip:2001@10.10.10.1>".to_owned(), "To and compact t"),
        ("CSeq: 2271 REGISTER".to_owned(), "CSeq twice"),
    ];
    for (extra, name) in cases {
        let (echo, reason) = bad_request(&Msg::register_1().with(&extra).bytes());
        assert_eq!(
            reason, "Duplicate From, To, Call-ID or CSeq header",
            "{name}"
        );
        // The first occurrence is what a 400 echoes.
        assert_eq!(echo, spec_echo(VIA_1, "2270 REGISTER"), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// parse: missing and malformed headers
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_dialog_headers_are_bad_requests_that_keep_the_via() {
    let cases = [
        ("Call-ID", "Missing Call-ID header"),
        ("CSeq", "Missing CSeq header"),
        ("From", "Missing From header"),
        ("To", "Missing To header"),
    ];
    for (header, want) in cases {
        let (echo, reason) = bad_request(&Msg::register_1().without(header).bytes());
        assert_eq!(reason, want, "without {header}");
        assert_eq!(echo.vias, [VIA_1], "without {header}");
        // The headers that are there are echoed as received.
        let mut expected = spec_echo(VIA_1, "2270 REGISTER");
        match header {
            "Call-ID" => expected.call_id.clear(),
            "CSeq" => expected.cseq.clear(),
            "From" => expected.from.clear(),
            _ => expected.to.clear(),
        }
        assert_eq!(echo, expected, "without {header}");
    }
}

#[test]
fn the_first_missing_header_is_the_one_reported() {
    let msg = Msg::register_1().without("To").without("CSeq");
    let (_, reason) = bad_request(&msg.bytes());
    assert_eq!(reason, "Missing To header");
}

#[test]
fn without_a_via_nothing_is_answered() {
    assert_eq!(
        Msg::register_1().without("Via").parse().unwrap_err(),
        ParseError::NotARequest
    );
    // Even when other headers are missing too.
    assert_eq!(
        Msg::register_1()
            .without("Via")
            .without("Call-ID")
            .parse()
            .unwrap_err(),
        ParseError::NotARequest
    );
}

#[test]
fn malformed_cseq_is_a_bad_request() {
    let cases = [
        ("2270 OPTIONS", "method does not match the request line"),
        (
            "2270 register",
            "method case differs (methods are case-sensitive)",
        ),
        ("2270", "no method"),
        ("REGISTER", "no number"),
        ("abc REGISTER", "number not decimal"),
        ("-1 REGISTER", "negative"),
        ("4294967296 REGISTER", "beyond 32 bits"),
        ("2270 REGISTER extra", "three parts"),
    ];
    for (cseq, name) in cases {
        let msg = Msg::register_1().set("CSeq", &format!("CSeq: {cseq}"));
        let (echo, reason) = bad_request(&msg.bytes());
        assert_eq!(reason, "Malformed CSeq header", "{name}");
        assert_eq!(echo.vias, [VIA_1], "{name}");
        assert_eq!(echo.cseq, cseq, "{name}: the CSeq is echoed as received");
    }
}

#[test]
fn cseq_tolerates_extra_whitespace() {
    let req = ok(&Msg::register_1().set("CSeq", "CSeq:   2270 \t REGISTER"));
    assert_eq!(req.cseq_number, 2270);
    assert_eq!(req.method, Method::Register);
}

// ---------------------------------------------------------------------------------------------
// parse: what is not a request
// ---------------------------------------------------------------------------------------------

#[test]
fn responses_are_not_requests() {
    let responses = [
        format!(
            "SIP/2.0 200 OK\r\nVia: {VIA_2}\r\nFrom: {FROM}\r\nTo: {TO};tag=1915868308\r\n\
             Call-ID: {CALL_ID}\r\nCSeq: 2271 REGISTER\r\nContent-Length: 0\r\n\r\n"
        ),
        format!(
            "SIP/2.0 407 Proxy Authentication Required\r\nVia: {VIA_1}\r\nFrom: {FROM}\r\n\
             To: {TO};tag=441122775\r\nCall-ID: {CALL_ID}\r\nCSeq: 2270 REGISTER\r\n\
             Proxy-Authenticate: Bearer realm=\"ccmsipline\"\r\nContent-Length: 0\r\n\r\n"
        ),
        // A response we wrote ourselves, reflected back.
        String::from_utf8(encode(
            &spec_echo(VIA_1, "2270 REGISTER"),
            &Reply::new(400, "Bad Request"),
            "Cisco-CUCM12.5",
            7,
            JABBER,
        ))
        .unwrap(),
        "SIP/2.0 100 Trying\r\n\r\n".to_owned(),
    ];
    for r in &responses {
        assert_eq!(
            parse(r.as_bytes()).unwrap_err(),
            ParseError::NotARequest,
            "{r}"
        );
    }
}

#[test]
fn garbage_is_not_a_request() {
    let big = vec![b'A'; 70_000];
    let cases: &[(&str, &[u8])] = &[
        ("empty", b""),
        ("CRLF keepalive", b"\r\n"),
        ("double CRLF keepalive", b"\r\n\r\n"),
        ("text", b"hello world"),
        ("NULs", b"\0\0\0\0"),
        ("binary", b"\x00\x01\x02\xff\xfe\x80\r\n\r\n\xc3\x28"),
        (
            "TLS ClientHello on a TCP port",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ),
        (
            "HTTP",
            b"GET / HTTP/1.1\r\nHost: 10.10.10.1\r\nVia: 1.1 proxy\r\n\r\n",
        ),
        (
            "request line only, no CRLF",
            b"REGISTER sip:10.10.10.1 SIP/2.0",
        ),
        (
            "request line only",
            b"REGISTER sip:10.10.10.1 SIP/2.0\r\n\r\n",
        ),
        ("method only", b"REGISTER\r\n\r\n"),
        (
            "LF line endings",
            b"REGISTER sip:10.10.10.1 SIP/2.0\nVia: SIP/2.0/UDP h\n\n",
        ),
        // (A wrong SIP version with a Via is answered 505: see request_line_refusals_...)
        ("70 kB of A", &big),
    ];
    for (name, bytes) in cases {
        assert_eq!(parse_err(bytes), ParseError::NotARequest, "{name}");
    }
}

/// Whatever the input, parse returns, and it never asks for an answer without a Via to send it
/// on.
fn check_invariants(bytes: &[u8]) {
    match parse(bytes) {
        Ok(req) => {
            assert!(!req.echo.vias.is_empty());
            assert!(!req.echo.call_id.is_empty());
            assert_eq!(
                req.echo.cseq.split_ascii_whitespace().nth(1),
                Some(req.method_name),
                "{:?} / {:?} in {:?}",
                req.echo.cseq,
                req.method_name,
                String::from_utf8_lossy(bytes)
            );
        }
        Err(ParseError::BadRequest { echo, .. } | ParseError::Refused { echo, .. }) => {
            assert!(!echo.vias.is_empty())
        }
        Err(ParseError::NotARequest) => {}
    }
}

#[test]
fn no_panic_on_prefixes_of_the_spec_register() {
    let bytes = Msg::register_2().bytes();
    for end in 0..=bytes.len() {
        check_invariants(&bytes[..end]);
    }
}

#[test]
fn no_panic_on_mutated_registers() {
    let mut rng = fastrand::Rng::with_seed(0x5190_a07e);
    let seeds = [Msg::register_1().bytes(), Msg::register_2().bytes()];
    let interesting = b"\r\n:;<>\"\\ \t\0\xff\xc3,=@";
    for i in 0..3000 {
        let mut bytes = seeds[i % 2].clone();
        for _ in 0..rng.usize(1..6) {
            let at = rng.usize(..bytes.len());
            match rng.u8(..4) {
                0 => bytes[at] = interesting[rng.usize(..interesting.len())],
                1 => bytes[at] = rng.u8(..),
                2 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, interesting[rng.usize(..interesting.len())]),
            }
        }
        check_invariants(&bytes);
    }
}

/// RFC 4475's messages (`tests/data/rfc4475/`), whole and mutated: the parser's hardest valid
/// and invalid inputs as seeds.
#[test]
fn no_panic_on_mutated_torture_messages() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(seeds.len(), 49);
    seeds.sort();
    let mut rng = fastrand::Rng::with_seed(0x4475);
    let interesting = b"\r\n:;,<>\"\\ \t\0@?/=";
    for bytes in &seeds {
        check_invariants(bytes);
        for _ in 0..200 {
            let mut bytes = bytes.clone();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..bytes.len());
                match rng.u8(..3) {
                    0 => bytes[at] = interesting[rng.usize(..interesting.len())],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, interesting[rng.usize(..interesting.len())]),
                }
            }
            check_invariants(&bytes);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// parse: the salvage path (the request cannot be parsed, a line scan still answers 400)
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_request_uris_with_a_via_get_a_400() {
    let cases = [
        ("REGISTER sip:10.10.10.1:99999 SIP/2.0", "port beyond u16"),
        ("REGISTER sip:@ SIP/2.0", "no host"),
        (
            "REGISTER <sip:10.10.10.1> SIP/2.0",
            "name-addr as Request-URI",
        ),
        ("REGISTER sip:[::1 SIP/2.0", "unclosed IPv6 reference"),
        ("REGISTER 10.10.10.1 SIP/2.0", "no scheme"),
        (
            "REGISTER 1sip:10.10.10.1 SIP/2.0",
            "scheme not starting with a letter",
        ),
    ];
    for (line, name) in cases {
        let bytes = Msg::register_1().request_line(line).bytes();
        let (echo, reason) = bad_request(&bytes);
        assert_eq!(reason, "Malformed Request-URI", "{name}");
        assert_eq!(echo, spec_echo(VIA_1, "2270 REGISTER"), "{name}");
    }
    let bytes = Msg::register_1()
        .request_line("REGISTER sip:10.10.10.1?Route=%3Csip:x%3E SIP/2.0")
        .bytes();
    assert_eq!(bad_request(&bytes).1, "Headers in the Request-URI");
}

#[test]
fn request_uris_of_other_schemes_parse_and_are_marked() {
    for (uri, is_sip) in [
        ("sip:10.10.10.1", true),
        ("SIPS:10.10.10.1", true),
        // The user part may hold `?` and `;` (RFC 4475 §3.1.1.2, §3.1.1.9).
        ("sip:user;par=u%40example.net@example.com", true),
        ("sip:a?b@example.com", true),
        ("tel:+1-201-555-0123", false),
        ("soap.beep://192.0.2.103:3002", false),
        ("nobodyknowsthisscheme:totallyopaquecontent", false),
    ] {
        let req = ok(&Msg::register_1().request_line(&format!("REGISTER {uri} SIP/2.0")));
        assert_eq!((req.uri.as_str(), req.request_uri_is_sip), (uri, is_sip));
    }
}

#[test]
fn request_lines_with_extra_spaces_get_a_400() {
    for line in [
        "REGISTER  sip:10.10.10.1 SIP/2.0",
        "REGISTER sip:10.10.10.1  SIP/2.0",
        "REGISTER sip:10.10.10.1 SIP/2.0 ",
        "REGISTER sip:10.10.10.1; lr SIP/2.0",
    ] {
        let bytes = Msg::register_1().request_line(line).bytes();
        assert_eq!(bad_request(&bytes).1, "Malformed Request-Line", "{line:?}");
    }
}

#[test]
fn require_option_tags_are_collected_from_every_require_header() {
    let req = ok(&Msg::register_1()
        .with("Require: foo ,bar")
        .with("require:baz")
        .with("Proxy-Require: not-ours"));
    assert_eq!(req.require, ["foo", "bar", "baz"]);
    assert!(ok(&Msg::register_1()).require.is_empty());
}

#[test]
fn malformed_via_from_and_to_get_a_400() {
    let via = |v: &str| Msg::register_1().set("Via", &format!("Via: {v}"));
    for v in [
        "SIP/2.0/UDP 192.0.2.15;;,;,,",
        "SIP/2.0/UDP 192.0.2.15;branch=a,",
        "SIP/2.0 192.0.2.15",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP 192.0.2.15:99999",
        "SIP/2.0/UDP [2001:db8::1",
    ] {
        assert_eq!(
            bad_request(&via(v).bytes()).1,
            "Malformed Via header",
            "{v}"
        );
    }
    for v in [
        "SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw",
        "SIP / 2.0 / TCP spindle.example.com ; branch = z9hG4bK9ikj8 , SIP/2.0/UDP 192.168.255.111 ; branch= z9hG4bK30239",
        "SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bKas3;received=2001:db8::9:255",
        "SIP/2.0/TLS 10.10.10.10 : 62162;rport;branch=z9hG4bK1",
    ] {
        assert_eq!(ok(&via(v)).echo.vias, [v], "{v}");
    }
    let to = |v: &str| Msg::register_1().set("To", &format!("To: {v}"));
    for (v, reason) in [
        (
            "\"Mr. J. User <sip:j.user@example.com>",
            "Malformed To header",
        ),
        (
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "Malformed To header",
        ),
        (
            "Watson, Thomas <sip:t.watson@example.org>",
            "Malformed To header",
        ),
    ] {
        assert_eq!(bad_request(&to(v).bytes()).1, reason, "{v}");
    }
    let from = Msg::register_1().set("From", "From: Bell, Alexander <sip:a@example.com>;tag=4");
    assert_eq!(bad_request(&from.bytes()).1, "Malformed From header");
}

#[test]
fn salvage_after_a_malformed_header_line() {
    let bytes = Msg::register_2().with("X-Bad Header: 1").bytes();
    let (echo, reason) = bad_request(&bytes);
    assert_eq!(reason, "Malformed header line");
    assert_eq!(echo, spec_echo(VIA_2, "2271 REGISTER"));
    let bytes = Msg::register_2().with("No colon here").bytes();
    let (echo, reason) = bad_request(&bytes);
    assert_eq!(reason, "Malformed header line");
    assert_eq!(echo, spec_echo(VIA_2, "2271 REGISTER"));
}

#[test]
fn salvage_understands_compact_forms_and_keeps_via_order() {
    let second = "SIP/2.0/TLS 10.10.10.10:62162;branch=z9hG4bK2";
    let msg = Msg::new(
        &[
            "REGISTER sip:10.10.10.1:99999 SIP/2.0",
            &format!("v: {VIA_1}"),
            &format!("Via:{second}"),
            &format!("f: {FROM}"),
            &format!("t:  {TO}  "),
            &format!("i: {CALL_ID}"),
            "cseq: 2270 REGISTER",
            "l: 0",
        ],
        b"",
    );
    let (echo, reason) = bad_request(&msg.bytes());
    assert_eq!(reason, "Malformed Request-URI");
    assert_eq!(echo.vias, [VIA_1, second]);
    assert_eq!(echo.from, FROM);
    assert_eq!(echo.to, TO, "values are trimmed");
    assert_eq!(echo.call_id, CALL_ID);
    assert_eq!(echo.cseq, "2270 REGISTER");
}

#[test]
fn salvage_ignores_the_body() {
    // The body is not UTF-8 and contains header-like lines; only the header section counts.
    let body = b"\xff\xfe\r\nVia: SIP/2.0/UDP evil:5060\r\n\r\n\xc3";
    let mut msg = Msg::register_1()
        .request_line("REGISTER sip:@ SIP/2.0")
        .set("Content-Length", &format!("Content-Length: {}", body.len()));
    msg.body = body.to_vec();
    let (echo, _) = bad_request(&msg.bytes());
    assert_eq!(echo.vias, [VIA_1]);
}

#[test]
fn salvage_without_a_via_answers_nothing() {
    let bytes = Msg::register_1()
        .request_line("REGISTER sip:@ SIP/2.0")
        .without("Via")
        .bytes();
    assert_eq!(parse_err(&bytes), ParseError::NotARequest);
}

#[test]
fn salvage_needs_a_sip_request_line() {
    // A token first and a SIP version last, with something between (RFC 4475 §3.1.2.8: LWS in
    // the URI is answered with 400); anything else is not a request to answer.
    for line in [
        "REGISTER sip:a SIP",
        "REGISTER SIP/2.0",
        "REG<ISTER sip:a SIP/2.0",
        "",
    ] {
        let bytes = Msg::register_1().request_line(line).bytes();
        assert_eq!(parse_err(&bytes), ParseError::NotARequest, "{line:?}");
    }
    let bytes = Msg::register_1()
        .request_line("REGISTER sip:a b SIP/2.0")
        .bytes();
    assert_eq!(bad_request(&bytes).1, "Malformed Request-Line");
}

#[test]
fn non_utf8_header_value_still_gets_an_answer() {
    let mut bytes = Msg::register_1().without("From").bytes();
    let at = bytes.windows(4).position(|w| w == b"To: ").unwrap();
    let from = b"From: \"Ren\xe9\" <sip:1010@10.10.10.1>;tag=882323451234089000003bdd-00005eff\r\n";
    bytes.splice(at..at, from.iter().copied());
    match parse(&bytes) {
        Err(ParseError::BadRequest { echo, .. }) => assert_eq!(echo.vias, [VIA_1]),
        Ok(req) => assert_eq!(req.echo.vias, [VIA_1]),
        Err(e) => panic!("not answered with 400: {e:?}"),
    }
}

#[test]
fn folded_header_lines_are_accepted() {
    let msg = Msg::register_1()
        .set(
            "Supported",
            "Supported: replaces,join,\r\n sdp-anat,norefersub",
        )
        .set(
            "Via",
            "Via: SIP/2.0/TLS 10.10.10.10:62162\r\n\t;branch=z9hG4bK00001188",
        );
    let req = ok(&msg);
    assert_eq!(req.echo.vias.len(), 1);
    assert!(req.echo.vias[0].contains("branch=z9hG4bK00001188"));
}

#[test]
fn bare_lf_in_an_echoed_header_is_not_reflected() {
    let msg = Msg::register_1().set("Call-ID", &format!("Call-ID: {CALL_ID}\nX-Injected: 1"));
    // A lone LF would become a line break of its own in any reply that echoes the header:
    // the message is dropped, never answered.
    assert_eq!(msg.parse().unwrap_err(), ParseError::NotARequest);
    let cr = Msg::register_1().set("Call-ID", &format!("Call-ID: {CALL_ID}\rX-Injected: 1"));
    assert_eq!(cr.parse().unwrap_err(), ParseError::NotARequest);
}

#[test]
fn an_unframed_datagram_with_a_lone_lf_is_not_answered() {
    // The transport could not frame it (Content-Length beyond the datagram), so the parser
    // never checked its lines: the salvage for a 400 must not echo the injected line.
    let msg = "OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\nX-Evil: 1\r\n\
         To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 500\r\n\r\n";
    assert_eq!(
        unframed(msg.as_bytes(), "Content-Length beyond the datagram"),
        ParseError::NotARequest
    );
    // Without the lone LF the same datagram gets its 400.
    let clean = msg.replace(";tag=1\nX-Evil: 1", ";tag=1");
    assert!(matches!(
        unframed(clean.as_bytes(), "Content-Length beyond the datagram"),
        ParseError::BadRequest { .. }
    ));
}

#[test]
fn control_characters_in_echoed_headers_are_never_answered() {
    for bad in ["\u{1b}[2J", "\u{0}", "\u{7f}", "\u{b}"] {
        let msg = Msg::register_1().set("Call-ID", &format!("Call-ID: {CALL_ID}{bad}"));
        assert_eq!(msg.parse().unwrap_err(), ParseError::NotARequest, "{bad:?}");
    }
}

/// Found by the `sip_handle` fuzz target: NULs in the Contact's user part were echoed in the
/// 200 (the transports drop such a message earlier; the parser must not rely on that).
#[test]
fn control_characters_in_a_contact_are_a_bad_request() {
    let contact = CONTACT.replacen("@10.10.10.10", "\u{0}\u{0}@10.10.10.10", 1);
    let msg = Msg::register_1().set("Contact", &format!("Contact: {contact}"));
    assert_eq!(bad_request(&msg.bytes()).1, "Malformed Contact header");
}

#[test]
fn headers_after_the_first_at_of_a_request_uri_are_refused() {
    // `parse_sip_uri` ends the userinfo at the first `@`: `x=a@b` is a header.
    let msg = Msg::register_1().request_line("REGISTER sip:u@h?x=a@b SIP/2.0");
    assert_eq!(bad_request(&msg.bytes()).1, "Headers in the Request-URI");
}

#[test]
fn the_sip_version_is_case_insensitive() {
    ok(&Msg::register_1().request_line("REGISTER sip:10.10.10.1 sip/2.0"));
}

#[test]
fn require_tags_are_tokens_kept_once() {
    let msg = Msg::register_1().with("Require: foo, FOO,foo , bar, b@d");
    assert_eq!(ok(&msg).require, ["foo", "bar"]);
}

// ---------------------------------------------------------------------------------------------
// response::encode
// ---------------------------------------------------------------------------------------------

/// Checks an RFC 1123 (IMF-fixdate) date such as `Mon, 30 Mar 2020 11:03:31 GMT`.
fn assert_rfc1123(date: &str) {
    assert_eq!(date.len(), 29, "{date:?}");
    let days = [
        "Mon, ", "Tue, ", "Wed, ", "Thu, ", "Fri, ", "Sat, ", "Sun, ",
    ];
    assert!(days.iter().any(|d| date.starts_with(d)), "{date:?}");
    assert!(date.ends_with(" GMT"), "{date:?}");
    let t = httpdate::parse_http_date(date).unwrap_or_else(|e| panic!("{date:?}: {e}"));
    assert_eq!(httpdate::fmt_http_date(t), date, "canonical form");
}

/// Splits an encoded response into header lines (CRLF-separated, no bare LF) and body; checks
/// that the header section ends with an empty line.
fn split_response(bytes: &[u8]) -> (Vec<String>, Vec<u8>) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header section ends with CRLF CRLF");
    let head = std::str::from_utf8(&bytes[..end]).unwrap();
    assert!(
        !head.replace("\r\n", "").contains(['\r', '\n']),
        "bare CR/LF"
    );
    let lines = head.split("\r\n").map(str::to_owned).collect();
    (lines, bytes[end + 4..].to_vec())
}

/// Compares line by line; a `Date: ` line matches any RFC 1123 date.
fn assert_lines(got: &[String], want: &[&str]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if w.starts_with("Date: ") {
            let date = g.strip_prefix("Date: ").unwrap_or_else(|| {
                panic!("line {i}: want a Date line, got {g:?}");
            });
            assert_rfc1123(date);
        } else {
            assert_eq!(g, w, "line {i}");
        }
    }
    assert_eq!(got.len(), want.len(), "line count; got {got:#?}");
}

/// Spec §4, the 407 challenge, as UCM sends it.
const SPEC_407: &[&str] = &[
    "SIP/2.0 407 Proxy Authentication Required",
    "Via: SIP/2.0/TLS 10.10.10.10:62162;branch=z9hG4bK00001188",
    "From: <sip:1010@10.10.10.1>;tag=882323451234089000003bdd-00005eff",
    "To: <sip:1010@10.10.10.1>;tag=441122775",
    "Date: Mon, 30 Mar 2020 11:03:31 GMT",
    "Call-ID: 88232345-12340017-00001c0b-00000cfa@10.10.10.10",
    "Server: Cisco-CUCM12.5",
    "CSeq: 2270 REGISTER",
    "Proxy-Authenticate: Bearer realm=\"ccmsipline\"",
    "Content-Length: 0",
];

#[test]
fn the_407_for_the_spec_register_matches_ucm_line_by_line() {
    let req = ok(&Msg::register_1());
    let reply = Reply::new(407, "Proxy Authentication Required")
        .header("Proxy-Authenticate", "Bearer realm=\"ccmsipline\"");
    let out = encode(&req.echo, &reply, "Cisco-CUCM12.5", 441_122_775, JABBER);
    let (lines, body) = split_response(&out);
    assert_lines(&lines, SPEC_407);
    assert!(body.is_empty());
    assert!(out.ends_with(b"Content-Length: 0\r\n\r\n"));
}

#[test]
fn the_200_for_the_spec_register_matches_ucm_line_by_line() {
    const BODY: &[u8] = b"<x-cisco-remotecc-response>\n<response>\n<code>200</code>\n\
<optionsind>\n<combine max=\"6\">\n<remotecc><status/></remotecc>\n<service-control/>\n\
</combine>\n<dialog usage=\"hook status\"><unot/></dialog>\n\
<dialog usage=\"shared line\"><unot/></dialog>\n\
<presence usage=\"blf speed dial\"><unot/></presence>\n<joinreq></joinreq>\n</optionsind>\n\
</response>\n</x-cisco-remotecc-response>\n";
    let req = ok(&Msg::register_2());
    let contact = format!("{CONTACT};x-cisco-newreg");
    let reply = Reply {
        body: Some(("application/x-cisco-remotecc-response+xml", BODY)),
        ..Reply::new(200, "OK")
            .header("Expires", "120")
            .header("Contact", contact.clone())
            .header("Supported", "X-cisco-srtp-fallback,X-cisco-sis-9.1.0")
    };
    let out = encode(&req.echo, &reply, "Cisco-CUCM12.5", 1_915_868_308, JABBER);
    let (lines, body) = split_response(&out);
    let content_length = format!("Content-Length: {}", BODY.len());
    let contact_line = format!("Contact: {contact}");
    assert_lines(
        &lines,
        &[
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/TLS 10.10.10.10:62162;branch=z9hG4bK00004a82",
            "From: <sip:1010@10.10.10.1>;tag=882323451234089000003bdd-00005eff",
            "To: <sip:1010@10.10.10.1>;tag=1915868308",
            "Date: Mon, 30 Mar 2020 11:03:31 GMT",
            "Call-ID: 88232345-12340017-00001c0b-00000cfa@10.10.10.10",
            "Server: Cisco-CUCM12.5",
            "CSeq: 2271 REGISTER",
            "Expires: 120",
            &contact_line,
            "Supported: X-cisco-srtp-fallback,X-cisco-sis-9.1.0",
            "Content-Type: application/x-cisco-remotecc-response+xml",
            &content_length,
        ],
    );
    assert_eq!(body, BODY);
}

#[test]
fn the_port_mismatch_403_matches_ucm_line_by_line() {
    // Spec §5.
    let echo = Echo {
        vias: vec!["SIP/2.0/TLS 10.5.10.121:50347;branch=z9hG4bK00005163".into()],
        from: "<sip:2000@UCM2-PUB>;tag=005056867e66010a00006698-00002a32".into(),
        to: "<sip:2000@UCM2-PUB>".into(),
        call_id: "00505686-7e660005-0000216b-0000366f@10.5.10.121".into(),
        cseq: "363 REGISTER".into(),
    };
    let reply = Reply::new(403, "Forbidden")
        .header("Retry-After", "35")
        .header(
            "Warning",
            "399 UCM2-PUB \"SIP OAuth Registration port Mismatch\"",
        );
    let source = "10.5.10.121:50347".parse().unwrap();
    let out = encode(&echo, &reply, "Cisco-CUCM12.5", 1_946_377_502, source);
    let (lines, body) = split_response(&out);
    assert_lines(
        &lines,
        &[
            "SIP/2.0 403 Forbidden",
            "Via: SIP/2.0/TLS 10.5.10.121:50347;branch=z9hG4bK00005163",
            "From: <sip:2000@UCM2-PUB>;tag=005056867e66010a00006698-00002a32",
            "To: <sip:2000@UCM2-PUB>;tag=1946377502",
            "Date: Fri, 03 Aug 2018 05:00:18 GMT",
            "Call-ID: 00505686-7e660005-0000216b-0000366f@10.5.10.121",
            "Server: Cisco-CUCM12.5",
            "CSeq: 363 REGISTER",
            "Retry-After: 35",
            "Warning: 399 UCM2-PUB \"SIP OAuth Registration port Mismatch\"",
            "Content-Length: 0",
        ],
    );
    assert!(body.is_empty());
}

fn to_line(to: &str, tag: u32) -> String {
    let echo = Echo {
        to: to.into(),
        ..spec_echo(VIA_1, "2270 REGISTER")
    };
    let out = encode(&echo, &Reply::new(200, "OK"), "Cisco-CUCM12.5", tag, JABBER);
    let (lines, _) = split_response(&out);
    let to_lines: Vec<&String> = lines.iter().filter(|l| l.starts_with("To: ")).collect();
    assert_eq!(to_lines.len(), 1);
    to_lines[0].clone()
}

#[test]
fn an_existing_to_tag_is_kept_and_no_second_one_is_added() {
    let cases = [
        (
            "<sip:1010@10.10.10.1>;tag=441122775",
            "To: <sip:1010@10.10.10.1>;tag=441122775",
        ),
        (
            "<sip:1010@10.10.10.1>; TAG=abc",
            "To: <sip:1010@10.10.10.1>; TAG=abc",
        ),
        (
            "\"Rado\" <sip:1010@10.10.10.1>;tag=x;foo",
            "To: \"Rado\" <sip:1010@10.10.10.1>;tag=x;foo",
        ),
        ("sip:1010@10.10.10.1;tag=x", "To: sip:1010@10.10.10.1;tag=x"),
    ];
    for (to, want) in cases {
        let got = to_line(to, 99);
        assert_eq!(got, want);
        assert_eq!(got.to_ascii_lowercase().matches("tag=").count(), 1, "{got}");
    }
}

#[test]
fn a_to_without_a_tag_gets_the_given_one() {
    let cases = [
        (
            "<sip:1010@10.10.10.1>",
            "To: <sip:1010@10.10.10.1>;tag=1915868308",
        ),
        // A `tag` URI parameter inside <...> is not the header's tag.
        (
            "<sip:1010@10.10.10.1;tag=uri>",
            "To: <sip:1010@10.10.10.1;tag=uri>;tag=1915868308",
        ),
        (
            "\"Rado\" <sip:1010@10.10.10.1>",
            "To: \"Rado\" <sip:1010@10.10.10.1>;tag=1915868308",
        ),
        // A parameter whose name merely starts with "tag" is not a tag.
        (
            "<sip:1010@10.10.10.1>;tagged=1",
            "To: <sip:1010@10.10.10.1>;tagged=1;tag=1915868308",
        ),
    ];
    for (to, want) in cases {
        assert_eq!(to_line(to, 1_915_868_308), want);
    }
}

#[test]
fn a_body_gets_content_type_and_its_byte_length() {
    // Not ASCII, so a char count would differ from the byte count.
    const BODY: &[u8] = "<r>Radoslav Š.</r>\r\n".as_bytes();
    let reply = Reply {
        body: Some(("application/xml", BODY)),
        ..Reply::new(200, "OK")
    };
    let out = encode(
        &spec_echo(VIA_1, "2270 REGISTER"),
        &reply,
        "Cisco-CUCM12.5",
        1,
        JABBER,
    );
    let (lines, body) = split_response(&out);
    let n = lines.len();
    assert_eq!(lines[n - 2], "Content-Type: application/xml");
    assert_eq!(lines[n - 1], format!("Content-Length: {}", BODY.len()));
    assert_eq!(BODY.len(), 21);
    assert_eq!(body, BODY);

    // Without a body: no Content-Type, Content-Length 0, last.
    let out = encode(
        &spec_echo(VIA_1, "2270 REGISTER"),
        &Reply::new(200, "OK"),
        "Cisco-CUCM12.5",
        1,
        JABBER,
    );
    let (lines, body) = split_response(&out);
    assert!(!lines.iter().any(|l| l.starts_with("Content-Type")));
    assert_eq!(lines.last().unwrap(), "Content-Length: 0");
    assert!(body.is_empty());
}

#[test]
fn all_vias_are_echoed_in_order_before_from() {
    let vias = [
        "SIP/2.0/TLS 192.0.2.20:5061;branch=z9hG4bKexpc1",
        "SIP/2.0/TCP 192.0.2.30:5060;branch=z9hG4bKedge1;received=192.0.2.31",
        VIA_1,
    ];
    let echo = Echo {
        vias: vias.iter().map(|v| (*v).to_owned()).collect(),
        ..spec_echo(VIA_1, "2270 REGISTER")
    };
    // From the proxy that wrote the top Via: nothing to add to it.
    let proxy = "192.0.2.20:5061".parse().unwrap();
    let out = encode(
        &echo,
        &Reply::new(400, "Bad Request"),
        "Cisco-CUCM12.5",
        5,
        proxy,
    );
    let (lines, _) = split_response(&out);
    assert_eq!(lines[0], "SIP/2.0 400 Bad Request");
    for (i, via) in vias.iter().enumerate() {
        assert_eq!(lines[1 + i], format!("Via: {via}"));
    }
    assert!(lines[4].starts_with("From: "));
}

#[test]
fn a_request_with_several_vias_gets_them_all_back() {
    let proxy = "SIP/2.0/TLS 192.0.2.20:5061;branch=z9hG4bKexpc1";
    let msg = Msg::register_1().set("Via", &format!("Via: {proxy}\r\nv: {VIA_1}"));
    let req = ok(&msg);
    let out = encode(
        &req.echo,
        &Reply::new(407, "Proxy Authentication Required"),
        "Cisco-CUCM12.5",
        5,
        "192.0.2.20:5061".parse().unwrap(),
    );
    let (lines, _) = split_response(&out);
    assert_eq!(lines[1], format!("Via: {proxy}"));
    assert_eq!(lines[2], format!("Via: {VIA_1}"));
}

#[test]
fn responses_are_well_formed_for_rsip() {
    let req = ok(&Msg::register_2());
    let reply = Reply {
        body: Some(("application/x-cisco-remotecc-response+xml", &b"<x/>"[..])),
        ..Reply::new(200, "OK").header("Expires", "120")
    };
    let out = encode(&req.echo, &reply, "Cisco-CUCM12.5", new_tag(), JABBER);
    let resp = rsip::Response::try_from(out.as_slice()).unwrap();
    assert_eq!(u16::from(resp.status_code), 200);
    assert_eq!(resp.body, b"<x/>");
    // And parse refuses it as a request.
    assert_eq!(parse_err(&out), ParseError::NotARequest);
}

#[test]
fn new_tags_are_decimal_numbers_of_seven_digits_or_more() {
    for _ in 0..100 {
        let tag = new_tag();
        assert!(tag >= 1_000_000, "{tag}");
        assert!(to_line(TO, tag).ends_with(&format!(";tag={tag}")));
    }
}

#[test]
fn request_line_refusals_are_answered_with_their_status() {
    let msg = |line: &str| {
        format!(
            "{line}\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
             To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 FOO\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let long = format!("REGISTER sip:{} SIP/2.0", "a;x".repeat(2000));
    for (line, status) in [
        (long.as_str(), 414),
        ("REGISTER sip:10.0.0.1 SIP/3.0", 505),
        ("FOO sip:10.0.0.1 SIP/2.0", 501),
    ] {
        match parse(msg(line).as_bytes()) {
            Err(ParseError::Refused {
                status: got, echo, ..
            }) => {
                assert_eq!(got, status, "{}", &line[..20]);
                assert_eq!(echo.vias, ["SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1"]);
            }
            other => panic!("{}: {other:?}", &line[..20]),
        }
    }
}

#[test]
fn folding_stops_at_the_blank_line() {
    let msg = "REGISTER sip:10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060\r\n\t;branch=z9hG4bK1\r\n\
               From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\
               Content-Type: text/plain\r\nContent-Length: 6\r\n\r\n  body";
    let req = parse(msg.as_bytes()).unwrap();
    assert_eq!(
        req.echo.vias,
        ["SIP/2.0/UDP 10.0.0.1:5060 ;branch=z9hG4bK1"]
    );
    assert_eq!(req.body, b"  body");
}

#[test]
fn cseq_at_or_above_two_to_the_31_is_malformed() {
    let msg = |n: u64| {
        format!(
            "REGISTER sip:10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
             From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: {n} REGISTER\r\n\
             Content-Length: 0\r\n\r\n"
        )
    };
    assert_eq!(
        parse(msg((1 << 31) - 1).as_bytes()).unwrap().cseq_number,
        (1 << 31) - 1
    );
    assert!(matches!(
        parse(msg(1 << 31).as_bytes()),
        Err(ParseError::BadRequest {
            reason: "Malformed CSeq header",
            ..
        })
    ));
}

#[test]
fn methods_are_case_sensitive_and_cseq_numbers_are_digits() {
    let msg = |line: &str, cseq: &str| {
        format!(
            "{line}\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
             To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    for (line, cseq) in [
        ("register sip:10.0.0.1 SIP/2.0", "1 register"),
        ("register sip:10.0.0.1 SIP/2.0", "1 UNKNOWN"),
        ("Register sip:10.0.0.1 SIP/2.0", "1 Register"),
    ] {
        assert!(
            matches!(
                parse(msg(line, cseq).as_bytes()),
                Err(ParseError::Refused { status: 501, .. })
            ),
            "{line}"
        );
    }
    assert!(matches!(
        parse(msg("REGISTER sip:10.0.0.1 SIP/2.0", "+5 REGISTER").as_bytes()),
        Err(ParseError::BadRequest {
            reason: "Malformed CSeq header",
            ..
        })
    ));
}
