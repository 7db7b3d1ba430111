//! `<device>.cnf.xml`: the configuration file UCM's TFTP server hands a device, rendered from the
//! cluster model with quick-xml's [`Writer`] (text and attributes are escaped by the writer,
//! never pasted). Pure: no I/O, no clock, so the same device always gets the same bytes.
//!
//! Element names and order are UCM's (docs/ucm.md §6): the root `<device xsi:type="axl:XIPPhone">`
//! (UCM declares neither the `xsi` nor the `axl` prefix, and neither do we: parse the file
//! without namespace processing, as phones do), `fullConfig`, `deviceProtocol`, the
//! `devicePool` with its `callManagerGroup` (one `member` per node of the device's group, in
//! priority order), `sipProfile`/`sipLines`, then `deviceSecurityMode`,
//! `transportLayerProtocol`, `encrConfig`, `sipOAuthMode`, `userId`, `ownerId`.
//!
//! Values UCM computes and does not document, **our choices**:
//! - `ctiid` is the device's position in the configuration, from 1.
//! - `uuid` (device) and the device pool's `uuid` are name-based UUIDs, so they are stable
//!   across restarts and differ between clusters: the first 16 bytes of
//!   SHA-256(`<cluster uuid>/<kind>/<name>`) with the RFC 9562 version 5 and variant bits set
//!   ([`name_uuid`]), written `{…}` in lower case as UCM does. `kind` is `device` or
//!   `devicePool` (named after the device group).
//! - `sipOAuthMode` is `1` only when the cluster's SIP OAuth mode is on **and** the device's
//!   profile enables OAuth, i.e. exactly when the registrar accepts the device on the OAuth
//!   ports only (README "Port rules"). UCM publishes the cluster mode; but Jabber reading `1`
//!   opens TLS to `sipOAuthPort`, so a non-OAuth device told `1` would meet the port mismatch.
//! - `mgcpPorts` are UCM's defaults, [`MGCP_LISTEN_PORT`] and [`MGCP_KEEPALIVE_PORT`]: nothing
//!   here speaks MGCP, and no client reads them to register.
//!
//! The ports come from a per-node [`NodePorts`] list in `cluster.nodes` order (see
//! [`render_with_ports`]): a running daemon publishes its configured ports, which are the ones
//! it binds; a test server on port 0 publishes the ports it actually bound, so a client can
//! follow its file to the listeners.

use std::io;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use crate::cluster::{Cluster, DeviceId, NodePorts};

/// UCM's default "MGCP Listen Port", published in `<mgcpPorts><listen>`.
pub const MGCP_LISTEN_PORT: u16 = 2427;
/// UCM's default "MGCP Keep-alive Port", published in `<mgcpPorts><keepAlive>`.
pub const MGCP_KEEPALIVE_PORT: u16 = 2428;
/// The service profile file every `userId`/`ownerId` names (UCM's default service profile).
pub const SERVICE_PROFILE_FILE: &str = "SPDefault.cnf.xml";

/// `device`'s config file with every node's configured ports.
pub fn render(cluster: &Cluster, device: DeviceId) -> Vec<u8> {
    let ports: Vec<NodePorts> = cluster.nodes.iter().map(|n| n.ports).collect();
    render_with_ports(cluster, &ports, device)
}

/// `device`'s config file publishing `ports[i]` for node `i` (a node missing from `ports`
/// publishes its configured ports).
pub fn render_with_ports(cluster: &Cluster, ports: &[NodePorts], device: DeviceId) -> Vec<u8> {
    render_live(cluster, ports, device, cluster.params.sip_oauth_mode)
}

/// [`render_with_ports`] with the cluster's SIP OAuth mode as it is now (`utils
/// sipOAuth-mode` changes it without a new cluster model).
pub fn render_live(
    cluster: &Cluster,
    ports: &[NodePorts],
    device: DeviceId,
    sip_oauth_mode: bool,
) -> Vec<u8> {
    let mut writer = Writer::new_with_indent(Vec::with_capacity(2048), b' ', 1);
    match write_device(&mut writer, cluster, ports, device, sip_oauth_mode) {
        Ok(()) => writer.into_inner(),
        // Unreachable: writing to a `Vec` cannot fail. An empty answer beats a panic on the
        // network path if that ever changes.
        Err(error) => {
            tracing::error!(%error, "config file rendering failed");
            Vec::new()
        }
    }
}

/// A device's or device pool's UUID: [`crate::cluster::pkid`], the one UDS gives too.
pub fn name_uuid(cluster_uuid: &str, kind: &str, name: &str) -> String {
    crate::cluster::pkid(cluster_uuid, kind, name)
}

type W = Writer<Vec<u8>>;

fn write_device(
    w: &mut W,
    cluster: &Cluster,
    ports: &[NodePorts],
    id: DeviceId,
    sip_oauth_mode: bool,
) -> io::Result<()> {
    let device = cluster.device(id);
    let profile = cluster.profile_of(id);
    let cluster_uuid = &cluster.params.uuid;
    let group_name = cluster
        .device_groups
        .get(device.group)
        .map_or("Default", |g| &g.name);
    let ctiid = (id.0 + 1).to_string();
    let uuid = braced(&name_uuid(cluster_uuid, "device", &device.name));
    let pool_uuid = braced(&name_uuid(cluster_uuid, "devicePool", group_name));
    let oauth_mode = sip_oauth_mode && profile.oauth;

    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("device")
        .with_attribute(("xsi:type", "axl:XIPPhone"))
        .with_attribute(("ctiid", ctiid.as_str()))
        .with_attribute(("uuid", uuid.as_str()))
        .write_inner_content(|w| {
            text(w, "fullConfig", "true")?;
            text(w, "deviceProtocol", "SIP")?;
            w.create_element("devicePool")
                .with_attribute(("uuid", pool_uuid.as_str()))
                .write_inner_content(|w| {
                    text(w, "name", group_name)?;
                    w.create_element("callManagerGroup")
                        .write_inner_content(|w| {
                            text(w, "name", group_name)?;
                            w.create_element("members").write_inner_content(|w| {
                                for (priority, &node) in cluster.nodes_of(id).iter().enumerate() {
                                    let n = cluster.node(node);
                                    let p = ports.get(usize::from(node.0)).unwrap_or(&n.ports);
                                    member(w, priority, &n.address.to_string(), &n.name, p)?;
                                }
                                Ok(())
                            })?;
                            Ok(())
                        })?;
                    Ok(())
                })?;
            w.create_element("sipProfile").write_inner_content(|w| {
                w.create_element("sipLines").write_inner_content(|w| {
                    for (i, line) in device.lines.iter().enumerate() {
                        let index = (i + 1).to_string();
                        w.create_element("line")
                            .with_attribute(("button", index.as_str()))
                            .with_attribute(("lineIndex", index.as_str()))
                            .write_inner_content(|w| {
                                text(w, "name", &line.dn)?;
                                text(w, "displayName", &line.display_name)?;
                                text(w, "contact", &line.contact)
                            })?;
                    }
                    Ok(())
                })?;
                Ok(())
            })?;
            text(
                w,
                "deviceSecurityMode",
                &profile.security_mode.code().to_string(),
            )?;
            text(
                w,
                "transportLayerProtocol",
                &profile.transport.code().to_string(),
            )?;
            text(
                w,
                "encrConfig",
                if profile.tftp_encrypted_config {
                    "true"
                } else {
                    "false"
                },
            )?;
            text(w, "sipOAuthMode", if oauth_mode { "1" } else { "0" })?;
            for element in ["userId", "ownerId"] {
                w.create_element(element)
                    .with_attribute(("serviceProfileFile", SERVICE_PROFILE_FILE))
                    .write_text_content(BytesText::new(&device.owner))?;
            }
            Ok(())
        })?;
    Ok(())
}

fn member(w: &mut W, priority: usize, address: &str, name: &str, p: &NodePorts) -> io::Result<()> {
    let priority = priority.to_string();
    w.create_element("member")
        .with_attribute(("priority", priority.as_str()))
        .write_inner_content(|w| {
            w.create_element("callManager").write_inner_content(|w| {
                text(w, "name", address)?;
                text(w, "description", name)?;
                w.create_element("ports").write_inner_content(|w| {
                    text(w, "ethernetPhonePort", &p.ethernet_phone.to_string())?;
                    text(w, "sipPort", &p.sip.to_string())?;
                    text(w, "securedSipPort", &p.sip_secure.to_string())?;
                    text(w, "sipOAuthPort", &p.sip_oauth.to_string())?;
                    text(w, "sipMRAOAuthPort", &p.sip_mra_oauth.to_string())?;
                    w.create_element("mgcpPorts").write_inner_content(|w| {
                        text(w, "listen", &MGCP_LISTEN_PORT.to_string())?;
                        text(w, "keepAlive", &MGCP_KEEPALIVE_PORT.to_string())
                    })?;
                    Ok(())
                })?;
                text(w, "processNodeName", address)
            })?;
            Ok(())
        })?;
    Ok(())
}

/// `<name>value</name>`, the value escaped.
fn text(w: &mut W, name: &str, value: &str) -> io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

fn braced(uuid: &str) -> String {
    format!("{{{uuid}}}")
}

#[cfg(test)]
mod tests;
