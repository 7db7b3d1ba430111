//! The cluster model: nodes and their ports, security profiles, users, devices and lines,
//! Expressway-C entries. Built once from the configuration and read-only afterwards, so the
//! SIP path and side listeners (config files, admin) share it without locks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;

pub mod mode;
pub use mode::LiveMode;

/// Cluster-wide parameters (UCM enterprise and service parameters).
#[derive(Debug, Clone)]
pub struct ClusterParams {
    pub name: String,
    pub uuid: String,
    pub sip_oauth_mode: bool,
    pub security_mode: u8,
    pub server_version: String,
    pub keepalive_interval_secs: u32,
    pub min_expires_secs: u32,
    pub sip_realm: String,
    pub access_token_expiry_minutes: u32,
    pub jabber_refresh_token_expiry_days: u32,
    pub phone_refresh_token_expiry_days: u32,
    /// Enterprise parameter "OAuth with Refresh Login Flow": the authorization code grant and
    /// refresh tokens. Off, `/ssosp/oauth/authorize` only serves the implicit grant.
    pub oauth_refresh_login_flow: bool,
}

/// The whole cluster, with lookup indexes.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub params: ClusterParams,
    pub nodes: Vec<Node>,
    pub profiles: Vec<Profile>,
    pub users: Vec<User>,
    pub devices: Vec<Device>,
    pub expressway: Vec<ExpresswayEntry>,
    pub app_users: Vec<AppUser>,
    /// Never empty once loaded: without `[[device_groups]]` there is one group, `Default`, of
    /// the first three nodes.
    pub device_groups: Vec<DeviceGroup>,
    /// `Server:` header value, built once: `Cisco-CUCM<version>`.
    pub server_header: Arc<str>,
    device_index: HashMap<Arc<str>, DeviceId>,
    dn_index: HashMap<Arc<str>, Vec<DeviceId>>,
    user_index: HashMap<Arc<str>, usize>,
}

/// Index of a device in [`Cluster::devices`]; stable for the life of a loaded configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u32);

/// Index of a node in [`Cluster::nodes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub u16);

/// The cluster model as the services that follow a configuration reload read it: one
/// `load` per request, swapped whole by the reload.
pub type SharedCluster = Arc<arc_swap::ArcSwap<Cluster>>;

#[derive(Debug, Clone)]
pub struct Node {
    pub name: Arc<str>,
    pub address: IpAddr,
    pub ports: NodePorts,
}

/// A node's TCP port settings. The ethernet phone (SCCP) port is only published, never bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePorts {
    pub ethernet_phone: u16,
    pub sip: u16,
    pub sip_secure: u16,
    pub sip_oauth: u16,
    pub sip_mra_oauth: u16,
    /// HTTPS with the tomcat certificate (UCM's 8443): the OAuth endpoints.
    pub https: u16,
    /// The TFTP server's HTTP port (UCM's 6970): config files for non-OAuth devices.
    pub tftp_http: u16,
    /// The TFTP server's HTTPS port (UCM's 6971, tomcat certificate): config files, with a
    /// token under SIP OAuth.
    pub tftp_https: u16,
    /// TFTP itself (UDP; UCM's 69, which needs privileges: the lab uses 6969).
    pub tftp: u16,
}

/// A phone security profile (docs/ucm.md §2).
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: Arc<str>,
    pub description: String,
    pub product_type: ProductType,
    pub security_mode: SecurityMode,
    pub transport: TransportType,
    pub digest_authentication: bool,
    pub tftp_encrypted_config: bool,
    pub oauth: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    NonSecure,
    Authenticated,
    Encrypted,
}

impl SecurityMode {
    /// The `<deviceSecurityMode>` value of config files.
    pub fn code(self) -> u8 {
        match self {
            Self::NonSecure => 1,
            Self::Authenticated => 2,
            Self::Encrypted => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportType {
    TcpUdp,
    Tcp,
    Udp,
    Tls,
}

impl TransportType {
    /// The `<transportLayerProtocol>` value of config files.
    pub fn code(self) -> u8 {
        match self {
            Self::Tcp => 1,
            Self::Udp => 2,
            Self::Tls => 3,
            Self::TcpUdp => 4,
        }
    }
}

/// A UCM product type. Only the listed Cisco types may carry an OAuth profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductType {
    /// One of [`ProductType::OAUTH_CAPABLE`], by its index there.
    OAuthCapable(usize),
    UniversalDeviceTemplate,
    Other(String),
}

impl ProductType {
    /// Product types that may carry a profile with OAuth enabled (docs/ucm.md §2).
    pub const OAUTH_CAPABLE: &'static [&'static str] = &[
        "Cisco Dual Mode for iPhone",
        "Cisco Dual Mode for Android",
        "Cisco Unified Client Services Framework",
        "Cisco Jabber for Tablet",
        "Universal Device Template",
        "Cisco 8811",
        "Cisco 8841",
        "Cisco 8851",
        "Cisco 8851NR",
        "Cisco 8861",
        "Cisco 7811",
        "Cisco 7821",
        "Cisco 7841",
        "Cisco 7861",
        "Cisco 8845",
        "Cisco 8865",
        "Cisco 8865NR",
        "Cisco 7832",
        "Cisco 8832",
        "Cisco 8832NR",
    ];

    pub fn from_name(name: &str) -> Self {
        if name == "Universal Device Template" {
            return Self::UniversalDeviceTemplate;
        }
        match Self::OAUTH_CAPABLE.iter().position(|t| *t == name) {
            Some(i) => Self::OAuthCapable(i),
            None => Self::Other(name.to_owned()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::OAuthCapable(i) => Self::OAUTH_CAPABLE[*i],
            Self::UniversalDeviceTemplate => "Universal Device Template",
            Self::Other(s) => s,
        }
    }

    pub fn supports_oauth(&self) -> bool {
        !matches!(self, Self::Other(_))
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: Arc<str>,
    pub active: bool,
    /// PHC string (argon2) of the user's password; `None`: the user cannot log in to the token
    /// service with a password.
    pub password_hash: Option<Arc<str>>,
}

/// A UCM application user: authenticates administrative HTTP APIs (token revocation, later
/// AXL) with HTTP Basic.
#[derive(Debug, Clone)]
pub struct AppUser {
    pub id: Arc<str>,
    /// PHC string (argon2).
    pub password_hash: Arc<str>,
}

#[derive(Debug, Clone)]
pub struct Device {
    pub name: Arc<str>,
    pub product_type: ProductType,
    pub owner: Arc<str>,
    /// Index into [`Cluster::profiles`].
    pub profile: usize,
    /// Index into [`Cluster::device_groups`]: the nodes its config file lists, in order.
    pub group: usize,
    pub lines: Vec<Line>,
}

/// A device pool's CallManager group: which nodes a device's config file lists, in priority
/// order (UCM allows at most three).
#[derive(Debug, Clone)]
pub struct DeviceGroup {
    pub name: Arc<str>,
    pub nodes: Vec<NodeId>,
}

/// Nodes a CallManager group may list.
pub const MAX_GROUP_NODES: usize = 3;

#[derive(Debug, Clone)]
pub struct Line {
    pub dn: Arc<str>,
    pub display_name: String,
    /// The line's contact UUID: Jabber puts it in the Contact user part.
    pub contact: String,
}

/// A row of UCM's `expresswaycconfiguration` table: an Expressway-C allowed on the MRA port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpresswayEntry {
    pub host: String,
    pub description: String,
    /// Certificate CNs/SANs, lower-cased for case-insensitive matching.
    pub subject_names: Vec<String>,
}

impl Cluster {
    /// Builds the indexes. Callers have already validated names (see `config`).
    pub fn new(
        params: ClusterParams,
        nodes: Vec<Node>,
        profiles: Vec<Profile>,
        users: Vec<User>,
        devices: Vec<Device>,
        expressway: Vec<ExpresswayEntry>,
    ) -> Self {
        let device_index = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), DeviceId(i as u32)))
            .collect();
        // A DN shared by several devices (shared line) names the first device that has it,
        // in configuration order; a client naming its device in the Contact is never ambiguous.
        let mut dn_index: HashMap<Arc<str>, Vec<DeviceId>> = HashMap::new();
        for (i, d) in devices.iter().enumerate() {
            for l in &d.lines {
                dn_index
                    .entry(l.dn.clone())
                    .or_default()
                    .push(DeviceId(i as u32));
            }
        }
        let user_index = users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.id.clone(), i))
            .collect();
        let server_header = format!("Cisco-CUCM{}", params.server_version).into();
        Self {
            params,
            nodes,
            profiles,
            users,
            devices,
            expressway,
            app_users: Vec::new(),
            device_groups: Vec::new(),
            server_header,
            device_index,
            dn_index,
            user_index,
        }
    }

    pub fn device_by_name(&self, name: &str) -> Option<DeviceId> {
        self.device_index.get(name).copied()
    }

    /// The device owning a directory number, for clients that do not name their device.
    pub fn device_by_dn(&self, dn: &str) -> Option<DeviceId> {
        self.devices_by_dn(dn).first().copied()
    }

    /// Every device with a line on this directory number, in configuration order.
    pub fn devices_by_dn(&self, dn: &str) -> &[DeviceId] {
        self.dn_index.get(dn).map_or(&[], Vec::as_slice)
    }

    pub fn device(&self, id: DeviceId) -> &Device {
        &self.devices[id.0 as usize]
    }

    pub fn profile_of(&self, id: DeviceId) -> &Profile {
        &self.profiles[self.device(id).profile]
    }

    pub fn user(&self, id: &str) -> Option<&User> {
        self.user_index.get(id).map(|&i| &self.users[i])
    }

    /// The nodes `device`'s config file lists, in priority order.
    pub fn nodes_of(&self, device: DeviceId) -> &[NodeId] {
        self.device_groups
            .get(self.device(device).group)
            .map_or(&[][..], |g| &g.nodes)
    }

    pub fn app_user(&self, id: &str) -> Option<&AppUser> {
        self.app_users.iter().find(|u| *u.id == *id)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[usize::from(id.0)]
    }

    /// The node with this name, as `--node` and the CLI name it.
    pub fn node_by_name(&self, name: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.name.eq_ignore_ascii_case(name))
            .map(|i| NodeId(i as u16))
    }
}

/// A stable stand-in for a UCM pkid of a named thing (`kind` "device", "user",
/// "devicePool"…): a UUID in RFC 9562's version 8 (custom) layout from the first 16 bytes of
/// SHA-256(`<cluster uuid>/<kind>/<name>`). It survives restarts and differs between clusters;
/// config files and UDS name a device by the same one.
pub fn pkid(cluster_uuid: &str, kind: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(cluster_uuid.as_bytes())
        .chain_update(b"/")
        .chain_update(kind.as_bytes())
        .chain_update(b"/")
        .chain_update(name.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}
