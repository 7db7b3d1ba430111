//! The UDS documents, written with quick-xml's [`Writer`] (never by pasting strings): pure
//! functions from the cluster model to bytes, so every shape is unit-testable without HTTP.
//! Element names and order follow Cisco's published examples; see the module docs of
//! [`super`] for which parts are documented and which are ours.

use std::io;
use std::net::{IpAddr, SocketAddr};

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use crate::cluster::{Cluster, Device, DeviceId, Node, NodeId, NodePorts, ProductType, User};

type W = Writer<Vec<u8>>;

/// Where the documents point: the publisher's UDS base URL (`https://<address>:<https port>`)
/// and the `version` attribute every document carries.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    pub(crate) base: String,
    pub(crate) version: String,
}

impl Site {
    pub(crate) fn new(cluster: &Cluster, version: String) -> Self {
        let base = cluster.nodes.first().map_or_else(
            || "https://localhost:8443".to_owned(),
            |n| format!("https://{}", SocketAddr::new(n.address, n.ports.https)),
        );
        Self { base, version }
    }

    fn uri(&self, path: &str) -> String {
        format!("{}/cucm-uds/{path}", self.base)
    }
}

/// `GET /cucm-uds/version`.
pub(crate) fn version(site: &Site) -> io::Result<Vec<u8>> {
    document(|w| {
        w.create_element("versionInformation")
            .with_attribute(("uri", site.uri("version").as_str()))
            .with_attribute(("version", site.version.as_str()))
            .write_inner_content(|w| text(w, "version", &site.version))?;
        Ok(())
    })
}

/// `GET /cucm-uds/servers`: every node, publisher first.
pub(crate) fn servers(site: &Site, cluster: &Cluster) -> io::Result<Vec<u8>> {
    document(|w| {
        w.create_element("servers")
            .with_attribute(("version", site.version.as_str()))
            .with_attribute(("uri", site.uri("servers").as_str()))
            .write_inner_content(|w| {
                for node in &cluster.nodes {
                    text(w, "server", &server_name(node))?;
                }
                Ok(())
            })?;
        Ok(())
    })
}

/// `GET /cucm-uds/clusterUser?...`: `user` is the user found, if any; `query` is the request's
/// query string as the `uri` attribute repeats it.
pub(crate) fn cluster_user(
    site: &Site,
    cluster: &Cluster,
    query: &str,
    user: Option<&User>,
) -> io::Result<Vec<u8>> {
    let self_uri = format!("{}?{query}", site.uri("clusterUser"));
    document(|w| {
        w.create_element("clusterUser")
            .with_attribute(("version", site.version.as_str()))
            .with_attribute(("uri", self_uri.as_str()))
            .write_inner_content(|w| {
                let Some(user) = user else {
                    w.create_element("result")
                        .with_attribute(("found", "false"))
                        .write_empty()?;
                    return Ok(());
                };
                let user_uri = site.uri(&format!("user/{}", encode_segment(&user.id)));
                w.create_element("result")
                    .with_attribute(("found", "true"))
                    .with_attribute(("uri", user_uri.as_str()))
                    .with_attribute(("version", site.version.as_str()))
                    .write_empty()?;
                let publisher = cluster.nodes.first().map(server_name).unwrap_or_default();
                w.create_element("homeCluster")
                    .with_attribute(("serversUri", site.uri("servers").as_str()))
                    .write_text_content(BytesText::new(&publisher))?;
                w.create_element("homeClusterDetails")
                    .write_inner_content(|w| {
                        text(w, "selfProvisioningSecureMode", "false")?;
                        text(w, "adminProvisionMode", "false")
                    })?;
                Ok(())
            })?;
        Ok(())
    })
}

/// `GET /cucm-uds/user/<id>`: the documented elements the model can fill, in the documented
/// order; personal data the model does not hold is present and empty.
pub(crate) fn user(site: &Site, cluster: &Cluster, user: &User) -> io::Result<Vec<u8>> {
    let id = encode_segment(&user.id);
    let owned: Vec<&Device> = cluster
        .devices
        .iter()
        .filter(|d| d.owner == user.id)
        .collect();
    let primary = owned.iter().find_map(|d| d.lines.first());
    let display_name = primary.map_or(&*user.id, |l| l.display_name.as_str());
    let dn = primary.map_or("", |l| &*l.dn);
    let service_profile = cluster.nodes.first().map(|n| {
        format!(
            "http://{}/SPDefault.cnf.xml",
            SocketAddr::new(n.address, n.ports.tftp_http)
        )
    });
    document(|w| {
        w.create_element("user")
            .with_attribute(("version", site.version.as_str()))
            .with_attribute(("uri", site.uri(&format!("user/{id}")).as_str()))
            .write_inner_content(|w| {
                text(w, "id", &pkid(cluster, "user", &user.id))?;
                text(w, "userName", &user.id)?;
                for empty in ["firstName", "lastName", "middleName", "nickName"] {
                    text(w, empty, "")?;
                }
                text(w, "displayName", display_name)?;
                text(w, "phoneNumber", dn)?;
                text(w, "homeNumber", "")?;
                text(w, "mobileNumber", "")?;
                text(w, "mobileConnect", "false")?;
                for empty in [
                    "email",
                    "directoryUri",
                    "msUri",
                    "department",
                    "manager",
                    "title",
                    "pager",
                ] {
                    text(w, empty, "")?;
                }
                w.create_element("accountType")
                    .with_attribute(("useLdapAuth", "false"))
                    .write_text_content(BytesText::new("local"))?;
                w.create_element("homeCluster")
                    .with_attribute(("enableImAndPresence", "false"))
                    .with_attribute(("enableCalendarPresence", "false"))
                    .write_text_content(BytesText::new("true"))?;
                if let Some(line) = primary {
                    w.create_element("primaryExtension")
                        .write_inner_content(|w| {
                            text(w, "description", &line.display_name)?;
                            text(w, "directoryNumber", &line.dn)
                        })?;
                }
                w.create_element("devices")
                    .with_attribute(("uri", site.uri(&format!("user/{id}/devices")).as_str()))
                    .write_empty()?;
                if let Some(uri) = &service_profile {
                    w.create_element("serviceProfile")
                        .write_inner_content(|w| text(w, "uri", uri))?;
                }
                Ok(())
            })?;
        Ok(())
    })
}

/// `GET /cucm-uds/user/<id>/devices`: the devices `user` owns, in configuration order.
pub(crate) fn devices(
    site: &Site,
    cluster: &Cluster,
    ports: &[NodePorts],
    oauth_mode: bool,
    user: &User,
) -> io::Result<Vec<u8>> {
    let id = encode_segment(&user.id);
    document(|w| {
        w.create_element("devices")
            .with_attribute(("uri", site.uri(&format!("user/{id}/devices")).as_str()))
            .with_attribute(("version", site.version.as_str()))
            .write_inner_content(|w| {
                for (i, d) in cluster.devices.iter().enumerate() {
                    if d.owner != user.id {
                        continue;
                    }
                    device(w, site, cluster, ports, oauth_mode, &id, DeviceId(i as u32))?;
                }
                Ok(())
            })?;
        Ok(())
    })
}

fn device(
    w: &mut W,
    site: &Site,
    cluster: &Cluster,
    ports: &[NodePorts],
    oauth_mode: bool,
    user: &str,
    id: DeviceId,
) -> io::Result<()> {
    let d = cluster.device(id);
    let pkid = pkid(cluster, "device", &d.name);
    let uri = site.uri(&format!("user/{user}/device/{pkid}"));
    w.create_element("device")
        .with_attribute(("uri", uri.as_str()))
        .write_inner_content(|w| {
            text(w, "id", &pkid)?;
            text(w, "name", &d.name)?;
            text(w, "type", "Phone")?;
            text(w, "model", d.product_type.name())?;
            if let Some(n) = model_number(&d.product_type) {
                text(w, "modelNumber", &n.to_string())?;
            }
            w.create_element("description")
                .with_attribute(("editable", "true"))
                .write_text_content(BytesText::new(&d.name))?;
            text(w, "protocol", "SIP")?;
            if let Some(url) = config_file_url(cluster, ports, oauth_mode, id) {
                w.create_element("configFile")
                    .write_inner_content(|w| text(w, "uri", &url))?;
            }
            Ok(())
        })?;
    Ok(())
}

/// Where `device` downloads its configuration file: HTTPS (the TFTP server's 6971) for a
/// device with an OAuth profile while the cluster is in SIP OAuth mode, HTTP (6970)
/// otherwise; from the first node of the device's group.
///
/// `ports` are the ports the nodes publish, in `cluster.nodes` order
/// ([`crate::provisioning::Provisioning::ports`]: the bound ones); `oauth_mode` is the
/// cluster's mode now (`utils sipOAuth-mode` changes it at run time).
pub fn config_file_url(
    cluster: &Cluster,
    ports: &[NodePorts],
    oauth_mode: bool,
    device: DeviceId,
) -> Option<String> {
    let id = cluster
        .nodes_of(device)
        .first()
        .copied()
        .or_else(|| (!cluster.nodes.is_empty()).then_some(NodeId(0)))?;
    let node = cluster.node(id);
    let published = ports.get(usize::from(id.0)).unwrap_or(&node.ports);
    let name = &cluster.device(device).name;
    let oauth = oauth_mode && cluster.profile_of(device).oauth;
    Some(if oauth {
        format!(
            "https://{}/{name}.cnf.xml",
            SocketAddr::new(node.address, published.tftp_https)
        )
    } else {
        format!(
            "http://{}/{name}.cnf.xml",
            SocketAddr::new(node.address, published.tftp_http)
        )
    })
}

/// UCM's model number (`typemodel` enum) for the product types whose number we know; Jabber
/// sends the same number in `+u.sip!model.ccm.cisco.com` (503 for CSF).
pub fn model_number(product: &ProductType) -> Option<u32> {
    Some(match product.name() {
        "Cisco Unified Client Services Framework" => 503,
        "Cisco Dual Mode for iPhone" => 562,
        "Cisco Dual Mode for Android" => 575,
        "Cisco Jabber for Tablet" => 652,
        "Cisco 7821" => 621,
        "Cisco 7841" => 622,
        "Cisco 7861" => 623,
        "Cisco 8811" => 36213,
        "Cisco 8841" => 36214,
        "Cisco 8851" => 36215,
        "Cisco 8861" => 36216,
        "Cisco 8845" => 36224,
        "Cisco 8865" => 36225,
        "Third-party SIP Device (Basic)" => 336,
        "Third-party SIP Device (Advanced)" => 374,
        _ => return None,
    })
}

/// A node as `<server>` and `<homeCluster>` name it: its address, with the HTTPS port when it
/// is not UCM's fixed 8443 (clients assume 8443).
fn server_name(node: &Node) -> String {
    let host = match node.address {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    if node.ports.https == 8443 {
        host
    } else {
        format!("{host}:{}", node.ports.https)
    }
}

/// The pkid config files give the same thing ([`crate::cluster::pkid`]).
fn pkid(cluster: &Cluster, kind: &str, name: &str) -> String {
    crate::cluster::pkid(&cluster.params.uuid, kind, name)
}

/// Percent-encodes one URL path segment (RFC 3986 unreserved characters pass).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn document(body: impl FnOnce(&mut W) -> io::Result<()>) -> io::Result<Vec<u8>> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    body(&mut w)?;
    let mut bytes = w.into_inner();
    bytes.push(b'\n');
    Ok(bytes)
}

/// `<name>value</name>`, or `<name/>` when `value` is empty.
fn text(w: &mut W, name: &str, value: &str) -> io::Result<()> {
    let element = w.create_element(name);
    if value.is_empty() {
        element.write_empty()?;
    } else {
        element.write_text_content(BytesText::new(value))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{LAB_CONFIG, Settings};

    fn lab() -> (Cluster, Site) {
        let cluster = Settings::from_toml(LAB_CONFIG).unwrap().cluster;
        let site = Site::new(&cluster, "12.5.1".into());
        (cluster, site)
    }

    fn string(bytes: io::Result<Vec<u8>>) -> String {
        String::from_utf8(bytes.unwrap()).unwrap()
    }

    #[test]
    fn version_document() {
        let (_, site) = lab();
        let doc = string(version(&site));
        assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        assert!(doc.contains(
            "<versionInformation uri=\"https://127.0.0.1:8443/cucm-uds/version\" \
             version=\"12.5.1\">"
        ));
        assert!(doc.contains("<version>12.5.1</version>"));
    }

    #[test]
    fn servers_and_ports() {
        let (mut cluster, site) = lab();
        let doc = string(servers(&site, &cluster));
        assert!(doc.contains("<server>127.0.0.1</server>"));
        assert!(doc.contains("<server>127.0.0.2</server>"));
        cluster.nodes[1].ports.https = 9443;
        cluster.nodes[1].address = "::1".parse().unwrap();
        let doc = string(servers(&site, &cluster));
        assert!(doc.contains("<server>[::1]:9443</server>"), "{doc}");
    }

    #[test]
    fn text_is_escaped() {
        let (cluster, site) = lab();
        let doc = string(cluster_user(&site, &cluster, "username=a<b&c", None));
        assert!(doc.contains("username=a&lt;b&amp;c"), "{doc}");
        assert!(doc.contains("<result found=\"false\"/>"));
    }

    #[test]
    fn config_urls() {
        let (cluster, _) = lab();
        let ports: Vec<NodePorts> = cluster.nodes.iter().map(|n| n.ports).collect();
        let url = |name| {
            config_file_url(
                &cluster,
                &ports,
                cluster.params.sip_oauth_mode,
                cluster.device_by_name(name).unwrap(),
            )
        };
        assert_eq!(
            url("CSFrado").as_deref(),
            Some("https://127.0.0.1:6971/CSFrado.cnf.xml")
        );
        assert_eq!(
            url("CSFalice").as_deref(),
            Some("https://127.0.0.2:6971/CSFalice.cnf.xml")
        );
        assert_eq!(
            url("SIPlegacy1").as_deref(),
            Some("http://127.0.0.1:6970/SIPlegacy1.cnf.xml")
        );
        assert_eq!(
            url("SEP0011223344AA").as_deref(),
            Some("http://127.0.0.1:6970/SEP0011223344AA.cnf.xml")
        );
    }

    #[test]
    fn oauth_mode_off_means_http() {
        let (mut cluster, _) = lab();
        cluster.params.sip_oauth_mode = false;
        let id = cluster.device_by_name("CSFrado").unwrap();
        let ports: Vec<NodePorts> = cluster.nodes.iter().map(|n| n.ports).collect();
        assert_eq!(
            config_file_url(&cluster, &ports, cluster.params.sip_oauth_mode, id).as_deref(),
            Some("http://127.0.0.1:6970/CSFrado.cnf.xml")
        );
    }

    #[test]
    fn pkids_are_stable_uuids() {
        let (cluster, _) = lab();
        let a = pkid(&cluster, "user", "rado");
        assert_eq!(a, pkid(&cluster, "user", "rado"));
        assert_ne!(a, pkid(&cluster, "device", "rado"));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }

    #[test]
    fn segments() {
        assert_eq!(encode_segment("rado"), "rado");
        assert_eq!(encode_segment("a b/é"), "a%20b%2F%C3%A9");
    }
}
