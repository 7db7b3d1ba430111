//! Renders lab devices and reads them back with quick-xml's reader into a small tree: structure,
//! order, escaping, members per device group, stable UUIDs.

use quick_xml::Reader;
use quick_xml::events::Event;

use super::*;
use crate::config::{LAB_CONFIG, Settings};

/// An element: name, attributes in order, child elements in order, text.
#[derive(Debug, Default)]
struct El {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Self>,
    text: String,
}

impl El {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn child(&self, name: &str) -> &Self {
        self.children
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("<{}> has no <{name}>", self.name))
    }

    fn path(&self, path: &str) -> &Self {
        path.split('/').fold(self, |e, n| e.child(n))
    }

    fn names(&self) -> Vec<&str> {
        self.children.iter().map(|c| c.name.as_str()).collect()
    }
}

/// Parses `xml` (no namespace processing, as UCM's files need) into its root element.
fn parse(xml: &[u8]) -> El {
    // No trimming: it would cut the spaces around entity references; the indentation between
    // child elements is dropped at their parent's end instead.
    let mut reader = Reader::from_reader(xml);
    let mut stack: Vec<El> = vec![El::default()];
    let mut saw_decl = false;
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Decl(d) => {
                assert_eq!(&*d.version().unwrap(), b"1.0");
                assert_eq!(&*d.encoding().unwrap().unwrap(), b"UTF-8");
                saw_decl = true;
            }
            Event::Start(s) => stack.push(element(&s)),
            Event::Empty(s) => stack.last_mut().unwrap().children.push(element(&s)),
            Event::Text(t) => stack.last_mut().unwrap().text += &t.decode().unwrap(),
            Event::GeneralRef(r) => {
                let name = r.decode().unwrap();
                let c = match &*name {
                    "lt" => "<",
                    "gt" => ">",
                    "amp" => "&",
                    "quot" => "\"",
                    "apos" => "'",
                    other => panic!("entity {other}"),
                };
                stack.last_mut().unwrap().text += c;
            }
            Event::End(_) => {
                let mut done = stack.pop().unwrap();
                if !done.children.is_empty() {
                    done.text.clear();
                }
                stack.last_mut().unwrap().children.push(done);
            }
            Event::Eof => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_decl, "XML declaration first");
    let mut top = stack.pop().unwrap();
    assert!(stack.is_empty());
    assert_eq!(top.children.len(), 1, "one root");
    top.children.pop().unwrap()
}

fn element(s: &quick_xml::events::BytesStart<'_>) -> El {
    El {
        name: String::from_utf8(s.name().as_ref().to_vec()).unwrap(),
        attrs: s
            .attributes()
            .map(|a| {
                let a = a.unwrap();
                (
                    String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                    a.unescape_value().unwrap().into_owned(),
                )
            })
            .collect(),
        ..El::default()
    }
}

fn lab() -> Cluster {
    Settings::from_toml(LAB_CONFIG).unwrap().cluster
}

fn device(c: &Cluster, name: &str) -> DeviceId {
    c.device_by_name(name).unwrap()
}

#[test]
fn rado_has_ucms_skeleton_in_order() {
    let c = lab();
    let xml = render(&c, device(&c, "CSFrado"));
    assert!(xml.starts_with(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
    let root = parse(&xml);
    assert_eq!(root.name, "device");
    assert_eq!(
        root.attrs
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["xsi:type", "ctiid", "uuid"]
    );
    assert_eq!(root.attr("xsi:type"), Some("axl:XIPPhone"));
    assert_eq!(root.attr("ctiid"), Some("1"));
    assert_eq!(
        root.names(),
        [
            "fullConfig",
            "deviceProtocol",
            "devicePool",
            "sipProfile",
            "deviceSecurityMode",
            "transportLayerProtocol",
            "encrConfig",
            "sipOAuthMode",
            "userId",
            "ownerId",
        ]
    );
    assert_eq!(root.child("fullConfig").text, "true");
    assert_eq!(root.child("deviceProtocol").text, "SIP");
    let pool = root.child("devicePool");
    assert_eq!(pool.names(), ["name", "callManagerGroup"]);
    assert_eq!(pool.child("name").text, "Default");
    let group = pool.child("callManagerGroup");
    assert_eq!(group.names(), ["name", "members"]);
    assert_eq!(group.child("name").text, "Default");
    let members = &group.child("members").children;
    assert_eq!(members.len(), 2);
    let m = &members[0];
    assert_eq!(m.attr("priority"), Some("0"));
    let cm = m.child("callManager");
    assert_eq!(
        cm.names(),
        ["name", "description", "ports", "processNodeName"]
    );
    assert_eq!(cm.child("name").text, "127.0.0.1");
    assert_eq!(cm.child("description").text, "UCM-PUB");
    assert_eq!(cm.child("processNodeName").text, "127.0.0.1");
    let ports = cm.child("ports");
    assert_eq!(
        ports.names(),
        [
            "ethernetPhonePort",
            "sipPort",
            "securedSipPort",
            "sipOAuthPort",
            "sipMRAOAuthPort",
            "mgcpPorts"
        ]
    );
    let values: Vec<&str> = ports.children[..5]
        .iter()
        .map(|p| p.text.as_str())
        .collect();
    assert_eq!(values, ["2000", "5060", "5061", "5090", "5091"]);
    assert_eq!(ports.path("mgcpPorts/listen").text, "2427");
    assert_eq!(ports.path("mgcpPorts/keepAlive").text, "2428");
    let line = root.path("sipProfile/sipLines/line");
    assert_eq!(line.attr("button"), Some("1"));
    assert_eq!(line.attr("lineIndex"), Some("1"));
    assert_eq!(line.names(), ["name", "displayName", "contact"]);
    assert_eq!(line.child("name").text, "1010");
    assert_eq!(line.child("displayName").text, "Rado");
    assert_eq!(
        line.child("contact").text,
        "a8ae9f92-4b07-a0d7-d701-29320aed1e2e"
    );
    assert_eq!(root.child("deviceSecurityMode").text, "3");
    assert_eq!(root.child("transportLayerProtocol").text, "3");
    assert_eq!(root.child("encrConfig").text, "false");
    assert_eq!(root.child("sipOAuthMode").text, "1");
    for id in ["userId", "ownerId"] {
        assert_eq!(root.child(id).text, "rado");
        assert_eq!(
            root.child(id).attr("serviceProfileFile"),
            Some("SPDefault.cnf.xml")
        );
    }
}

#[test]
fn members_follow_the_device_group() {
    let c = lab();
    let order = |name: &str| -> Vec<(String, String, String)> {
        let root = parse(&render(&c, device(&c, name)));
        assert_eq!(
            root.path("devicePool/name").text,
            root.path("devicePool/callManagerGroup/name").text
        );
        root.path("devicePool/callManagerGroup/members")
            .children
            .iter()
            .map(|m| {
                (
                    m.attr("priority").unwrap().to_owned(),
                    m.path("callManager/name").text.clone(),
                    m.path("callManager/description").text.clone(),
                )
            })
            .collect()
    };
    let s = |a: &str, b: &str, d: &str| (a.to_owned(), b.to_owned(), d.to_owned());
    assert_eq!(
        order("CSFalice"),
        [
            s("0", "127.0.0.2", "UCM-SUB1"),
            s("1", "127.0.0.1", "UCM-PUB")
        ]
    );
    assert_eq!(
        order("CSFrado"),
        [
            s("0", "127.0.0.1", "UCM-PUB"),
            s("1", "127.0.0.2", "UCM-SUB1")
        ]
    );
    let alice = parse(&render(&c, device(&c, "CSFalice")));
    assert_eq!(alice.path("devicePool/name").text, "SUB-first");
}

#[test]
fn published_ports_come_from_the_port_map() {
    let c = lab();
    let mut ports: Vec<NodePorts> = c.nodes.iter().map(|n| n.ports).collect();
    ports[1].sip_oauth = 41234;
    ports[1].sip = 41000;
    let root = parse(&render_with_ports(&c, &ports, device(&c, "CSFalice")));
    let first = &root.path("devicePool/callManagerGroup/members").children[0];
    assert_eq!(first.path("callManager/ports/sipOAuthPort").text, "41234");
    assert_eq!(first.path("callManager/ports/sipPort").text, "41000");
    // A short map: missing nodes publish their configured ports.
    let root = parse(&render_with_ports(&c, &ports[..1], device(&c, "CSFalice")));
    let first = &root.path("devicePool/callManagerGroup/members").children[0];
    assert_eq!(first.path("callManager/ports/sipOAuthPort").text, "5090");
}

#[test]
fn legacy_and_mode_off_devices_get_sip_oauth_mode_0() {
    let c = lab();
    let legacy = parse(&render(&c, device(&c, "SIPlegacy1")));
    assert_eq!(legacy.child("sipOAuthMode").text, "0");
    assert_eq!(legacy.child("deviceSecurityMode").text, "1");
    assert_eq!(legacy.child("transportLayerProtocol").text, "4");
    assert_eq!(legacy.child("userId").text, "bob");
    let secure = parse(&render(&c, device(&c, "SEP0011223344AA")));
    assert_eq!(secure.child("sipOAuthMode").text, "0");
    assert_eq!(secure.child("deviceSecurityMode").text, "3");

    let toml = LAB_CONFIG.replace("sip_oauth_mode = true", "sip_oauth_mode = false");
    let off = Settings::from_toml(&toml).unwrap().cluster;
    let rado = parse(&render(&off, device(&off, "CSFrado")));
    assert_eq!(rado.child("sipOAuthMode").text, "0");
}

#[test]
fn odd_display_names_are_escaped_and_read_back() {
    let odd = r#"Rado <"boss"> & 'co'"#;
    let toml = LAB_CONFIG.replace(
        r#"display_name = "Rado""#,
        r#"display_name = "Rado <\"boss\"> & 'co'""#,
    );
    let c = Settings::from_toml(&toml).unwrap().cluster;
    let xml = render(&c, device(&c, "CSFrado"));
    let text = String::from_utf8(xml.clone()).unwrap();
    assert!(text.contains("Rado &lt;"), "{text}");
    assert!(text.contains("&amp;"), "{text}");
    let root = parse(&xml);
    assert_eq!(root.path("sipProfile/sipLines/line/displayName").text, odd);
}

#[test]
fn several_lines_are_numbered_from_1() {
    let toml = LAB_CONFIG.replace(
        r#"lines = [{ dn = "1010", display_name = "Rado", contact = "a8ae9f92-4b07-a0d7-d701-29320aed1e2e" }]"#,
        r#"lines = [{ dn = "1010", display_name = "Rado", contact = "a8ae9f92-4b07-a0d7-d701-29320aed1e2e" }, { dn = "1011", display_name = "Rado 2", contact = "a8ae9f92-4b07-a0d7-d701-29320aed1e2f" }]"#,
    );
    let c = Settings::from_toml(&toml).unwrap().cluster;
    let root = parse(&render(&c, device(&c, "CSFrado")));
    let lines = &root.path("sipProfile/sipLines").children;
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1].attr("button"), Some("2"));
    assert_eq!(lines[1].attr("lineIndex"), Some("2"));
    assert_eq!(lines[1].child("name").text, "1011");
}

#[test]
fn uuids_are_stable_name_based_and_distinct() {
    let c = lab();
    let a = parse(&render(&c, device(&c, "CSFrado")));
    let b = parse(&render(&c, device(&c, "CSFrado")));
    assert_eq!(a.attr("uuid"), b.attr("uuid"));
    let uuid = a.attr("uuid").unwrap();
    assert!(uuid.starts_with('{') && uuid.ends_with('}'), "{uuid}");
    let parsed = uuid::Uuid::parse_str(&uuid[1..uuid.len() - 1]).unwrap();
    assert_eq!(
        parsed.get_version_num(),
        8,
        "SHA-256-based: RFC 9562's custom version"
    );
    assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
    let alice = parse(&render(&c, device(&c, "CSFalice")));
    assert_ne!(alice.attr("uuid"), a.attr("uuid"));
    assert_ne!(
        alice.child("devicePool").attr("uuid"),
        a.child("devicePool").attr("uuid")
    );
    assert_ne!(
        name_uuid("cluster-a", "device", "CSFrado"),
        name_uuid("cluster-b", "device", "CSFrado")
    );
    assert_eq!(name_uuid("c", "device", "x"), name_uuid("c", "device", "x"));
}
