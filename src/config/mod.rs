//! The TOML cluster configuration: serde structs that mirror the file, and their conversion
//! into the typed [`Settings`] the daemon runs on ("parse, don't validate").
//!
//! Every problem is reported with the key path it concerns, and all of them are reported at
//! once, so a user fixes a file in one pass.

mod raw;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::{
    AppUser, Cluster, Device, DeviceGroup, ExpresswayEntry, Line, MAX_GROUP_NODES, Node, NodeId,
    NodePorts, ProductType, Profile, SecurityMode, TransportType, User,
};

/// The lab cluster shipped in `config/lab.toml`, used when no `--config` is given.
pub const LAB_CONFIG: &str = include_str!("../../config/lab.toml");

/// Longest device name (UCM allows 15 for phones, 50 for other devices).
const MAX_DEVICE_NAME: usize = 64;

/// The device group of a cluster that configures none.
const DEFAULT_GROUP: &str = "Default";

/// OAuth ports must lie in UCM's allowed range (System > Cisco Unified CM).
const OAUTH_PORT_RANGE: std::ops::RangeInclusive<u16> = 1024..=49151;

/// Everything the daemon needs, checked and typed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster: Cluster,
    pub limits: Limits,
    pub tls: TlsFiles,
    pub tokens: TokenSettings,
    /// Outside issuers whose signed JWTs are accepted besides the cluster's own tokens;
    /// checked when loaded ([`crate::auth::external::ExternalIssuers::load`]).
    pub identity_providers: Vec<crate::auth::external::IssuerConfig>,
}

/// Limits on what one peer can make the daemon hold; see README "Limits".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_headers: usize,
    pub max_connections_per_listener: usize,
    /// Across every stream listener of the process; the file-descriptor limit is raised to
    /// fit it at start, or it is lowered to fit the limit.
    pub max_connections: usize,
    /// Open connections from one IP address, across every stream listener (SIP and HTTP);
    /// loopback included. Checked at accept, before any TLS work.
    pub max_connections_per_source: usize,
    pub tls_handshake_timeout: Duration,
    /// From the first byte of a message to its last; stops slow-loris senders holding a
    /// connection with a byte now and then.
    pub message_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_bindings: usize,
    /// Bindings one address-of-record may hold from non-Cisco clients (RFC 3261 §10.3 rules);
    /// a REGISTER that would exceed it is refused whole.
    pub max_bindings_per_aor: usize,
    /// `SO_RCVBUF` asked for on each SIP UDP socket: the queue a burst of datagrams waits in
    /// while the listener handles them one by one. The kernel caps it at
    /// `net.core.rmem_max` (logged at start).
    pub udp_recv_buffer_bytes: usize,
    /// `SO_SNDBUF` asked for on each SIP UDP socket (capped at `net.core.wmem_max`).
    pub udp_send_buffer_bytes: usize,
}

/// TLS material, as paths relative to the state directory unless absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub lab_pki: bool,
    pub tomcat_cert: PathBuf,
    pub tomcat_key: PathBuf,
    pub tomcat_trust: Vec<PathBuf>,
    pub callmanager_cert: PathBuf,
    pub callmanager_key: PathBuf,
    pub callmanager_trust: Vec<PathBuf>,
}

/// Access-token signing and validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    pub signing_key: PathBuf,
    /// 256-bit key (64 hex digits) encrypting the access tokens' inner JWE.
    pub encryption_key: PathBuf,
    /// Append-only log of issued refresh tokens and revocations.
    pub refresh_store: PathBuf,
    /// `redirect_uri`s the authorization endpoint sends tokens and codes to, besides loopback
    /// `http` URIs and private-use schemes (RFC 8252), which are always allowed.
    pub redirect_uris: Vec<String>,
    pub leeway_secs: u64,
    pub cache_entries: usize,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Syntax errors, unknown keys and wrong types; toml's message names the key and line.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    #[error("{}", format_problems(.0))]
    Invalid(Vec<Problem>),
}

/// One semantic problem, tied to the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn format_problems(problems: &[Problem]) -> String {
    let mut out = format!("{} configuration error(s):", problems.len());
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

impl Settings {
    /// Reads and checks a configuration file.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The embedded lab cluster.
    pub fn lab() -> Result<Self, ConfigError> {
        Self::from_toml(LAB_CONFIG)
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: raw::Config = toml::from_str(text)?;
        convert(raw)
    }

    /// Resolves a configured path against the state directory.
    pub fn resolve(state_dir: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            state_dir.join(path)
        }
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

fn convert(raw: raw::Config) -> Result<Settings, ConfigError> {
    let mut problems = Problems::default();
    let c = &raw.cluster;

    let uuid = match uuid::Uuid::parse_str(&c.uuid) {
        Ok(u) => u.hyphenated().to_string(),
        Err(e) => {
            problems.push("cluster.uuid", format!("not a UUID ({e})"));
            String::new()
        }
    };
    if c.security_mode > 1 {
        problems.push(
            "cluster.security_mode",
            "must be 0 (non-secure) or 1 (mixed)",
        );
    }
    range(
        &mut problems,
        "cluster.keepalive_interval_secs",
        c.keepalive_interval_secs,
        1,
        86_400,
    );
    range(
        &mut problems,
        "cluster.min_expires_secs",
        c.min_expires_secs,
        1,
        86_400,
    );
    range(
        &mut problems,
        "cluster.access_token_expiry_minutes",
        c.access_token_expiry_minutes,
        1,
        1440,
    );
    range(
        &mut problems,
        "cluster.jabber_refresh_token_expiry_days",
        c.jabber_refresh_token_expiry_days,
        1,
        365,
    );
    range(
        &mut problems,
        "cluster.phone_refresh_token_expiry_days",
        c.phone_refresh_token_expiry_days,
        1,
        365,
    );
    if c.sip_realm.is_empty() || c.sip_realm.contains(['"', '\\', '\r', '\n']) {
        problems.push(
            "cluster.sip_realm",
            "must be non-empty text without quotes or line breaks",
        );
    }
    if !is_header_safe(&c.name) || !is_header_safe(&c.server_version) {
        problems.push(
            "cluster",
            "name and server_version must be printable text without line breaks",
        );
    }

    let nodes = convert_nodes(&raw.nodes, &mut problems);
    let profiles = convert_profiles(&raw.profiles, &mut problems);
    let users = convert_users(&raw.users, &mut problems);
    let device_groups = convert_device_groups(&raw.device_groups, &nodes, &mut problems);
    let devices = convert_devices(
        &raw.devices,
        &profiles,
        &users,
        &device_groups,
        &mut problems,
    );
    let expressway = convert_expressway(&raw.expressway_c, &mut problems);
    let app_users = convert_app_users(&raw.app_users, &mut problems);

    let l = &raw.limits;
    range(
        &mut problems,
        "limits.max_message_bytes",
        l.max_message_bytes as u64,
        1024,
        16 << 20,
    );
    range(
        &mut problems,
        "limits.max_headers",
        l.max_headers as u64,
        8,
        10_000,
    );
    range(
        &mut problems,
        "limits.max_connections_per_listener",
        l.max_connections_per_listener as u64,
        1,
        1 << 20,
    );
    range(
        &mut problems,
        "limits.max_connections",
        l.max_connections as u64,
        1,
        1 << 20,
    );
    range(
        &mut problems,
        "limits.max_connections_per_source",
        l.max_connections_per_source as u64,
        1,
        1 << 20,
    );
    range(
        &mut problems,
        "limits.tls_handshake_timeout_ms",
        l.tls_handshake_timeout_ms,
        100,
        120_000,
    );
    range(
        &mut problems,
        "limits.message_timeout_ms",
        l.message_timeout_ms,
        100,
        600_000,
    );
    range(
        &mut problems,
        "limits.idle_timeout_secs",
        l.idle_timeout_secs,
        1,
        86_400,
    );
    range(
        &mut problems,
        "limits.max_bindings",
        l.max_bindings as u64,
        1,
        50_000_000,
    );
    range(
        &mut problems,
        "limits.max_bindings_per_aor",
        l.max_bindings_per_aor as u64,
        1,
        1_000,
    );
    // Below 16 KiB the kernel rounds up anyway; above 1 GiB is a typo.
    for (key, value) in [
        ("limits.udp_recv_buffer_bytes", l.udp_recv_buffer_bytes),
        ("limits.udp_send_buffer_bytes", l.udp_send_buffer_bytes),
    ] {
        range(&mut problems, key, value as u64, 16 << 10, 1 << 30);
    }
    if c.min_expires_secs > c.keepalive_interval_secs {
        problems.push(
            "cluster.min_expires_secs",
            format!(
                "must not exceed cluster.keepalive_interval_secs ({}), which every 200 grants",
                c.keepalive_interval_secs
            ),
        );
    }
    if l.idle_timeout_secs <= u64::from(c.keepalive_interval_secs) {
        problems.push(
            "limits.idle_timeout_secs",
            format!(
                "must exceed cluster.keepalive_interval_secs ({}), or registered clients lose their connection between refreshes",
                c.keepalive_interval_secs
            ),
        );
    }
    range(
        &mut problems,
        "tokens.cache_entries",
        raw.tokens.cache_entries as u64,
        1,
        50_000_000,
    );
    range(
        &mut problems,
        "tokens.leeway_secs",
        raw.tokens.leeway_secs,
        0,
        3600,
    );
    for (i, uri) in raw.tokens.redirect_uris.iter().enumerate() {
        if !crate::oauth::service::is_redirect_uri(uri) {
            problems.push(
                format!("tokens.redirect_uris[{i}]"),
                "must be an absolute URI without a fragment",
            );
        }
    }
    if raw.tls.tomcat_trust.is_empty() {
        problems.push(
            "tls.tomcat_trust",
            "needs at least one CA certificate file (port 5091 verifies Expressway-C against it)",
        );
    }

    if !problems.0.is_empty() {
        return Err(ConfigError::Invalid(problems.0));
    }

    let mut cluster = Cluster::new(
        crate::cluster::ClusterParams {
            name: c.name.clone(),
            uuid,
            sip_oauth_mode: c.sip_oauth_mode,
            security_mode: c.security_mode,
            server_version: c.server_version.clone(),
            keepalive_interval_secs: c.keepalive_interval_secs,
            min_expires_secs: c.min_expires_secs,
            sip_realm: c.sip_realm.clone(),
            access_token_expiry_minutes: c.access_token_expiry_minutes,
            jabber_refresh_token_expiry_days: c.jabber_refresh_token_expiry_days,
            phone_refresh_token_expiry_days: c.phone_refresh_token_expiry_days,
            oauth_refresh_login_flow: c.oauth_refresh_login_flow,
        },
        nodes,
        profiles,
        users,
        devices,
        expressway,
    );
    cluster.app_users = app_users;
    cluster.device_groups = device_groups;
    Ok(Settings {
        cluster,
        limits: Limits {
            max_message_bytes: l.max_message_bytes,
            max_headers: l.max_headers,
            max_connections_per_listener: l.max_connections_per_listener,
            max_connections: l.max_connections,
            max_connections_per_source: l.max_connections_per_source,
            tls_handshake_timeout: Duration::from_millis(l.tls_handshake_timeout_ms),
            message_timeout: Duration::from_millis(l.message_timeout_ms),
            idle_timeout: Duration::from_secs(l.idle_timeout_secs),
            max_bindings: l.max_bindings,
            max_bindings_per_aor: l.max_bindings_per_aor,
            udp_recv_buffer_bytes: l.udp_recv_buffer_bytes,
            udp_send_buffer_bytes: l.udp_send_buffer_bytes,
        },
        tls: TlsFiles {
            lab_pki: raw.tls.lab_pki,
            tomcat_cert: raw.tls.tomcat_cert,
            tomcat_key: raw.tls.tomcat_key,
            tomcat_trust: raw.tls.tomcat_trust,
            callmanager_cert: raw.tls.callmanager_cert,
            callmanager_key: raw.tls.callmanager_key,
            callmanager_trust: raw.tls.callmanager_trust,
        },
        tokens: TokenSettings {
            signing_key: raw.tokens.signing_key,
            encryption_key: raw.tokens.encryption_key,
            refresh_store: raw.tokens.refresh_store,
            redirect_uris: raw.tokens.redirect_uris,
            leeway_secs: raw.tokens.leeway_secs,
            cache_entries: raw.tokens.cache_entries,
        },
        identity_providers: raw.identity_providers,
    })
}

fn range<T: Into<u64>>(problems: &mut Problems, key: &str, value: T, min: u64, max: u64) {
    let v = value.into();
    if !(min..=max).contains(&v) {
        problems.push(key, format!("{v} is out of range {min}..={max}"));
    }
}

fn is_header_safe(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| !c.is_control())
}

/// Names that end up inside SIP header values or XML must not break them.
fn is_name_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| !c.is_control() && !matches!(c, '"' | '\\' | '<' | '>' | ','))
}

fn convert_nodes(raw: &[raw::Node], problems: &mut Problems) -> Vec<Node> {
    if raw.is_empty() {
        problems.push("nodes", "at least one node is needed");
    }
    let mut out: Vec<Node> = Vec::with_capacity(raw.len());
    for (i, n) in raw.iter().enumerate() {
        let key = format!("nodes[{i}]");
        if !is_name_safe(&n.name) || n.name.contains(' ') {
            problems.push(
                format!("{key}.name"),
                "must be a non-empty name without spaces, quotes or commas",
            );
        }
        // A placeholder keeps the node's other checks running: every problem is reported.
        let address: IpAddr = n.address.parse().unwrap_or_else(|_| {
            problems.push(
                format!("{key}.address"),
                format!("{:?} is not an IP address", n.address),
            );
            IpAddr::from([0, 0, 0, 0])
        });
        for (field, port) in [
            ("sip_oauth_port", n.sip_oauth_port),
            ("sip_mra_oauth_port", n.sip_mra_oauth_port),
        ] {
            if !OAUTH_PORT_RANGE.contains(&port) {
                problems.push(
                    format!("{key}.{field}"),
                    format!("{port} is outside the OAuth port range 1024..=49151"),
                );
            }
        }
        let ports = [
            n.sip_port,
            n.sip_secure_port,
            n.sip_oauth_port,
            n.sip_mra_oauth_port,
            n.https_port,
            n.tftp_http_port,
            n.tftp_https_port,
            n.tftp_port,
        ];
        for (a, pa) in ports.iter().enumerate() {
            if *pa == 0 {
                problems.push(key.clone(), "ports must not be 0");
            }
            if ports[a + 1..].contains(pa) {
                problems.push(key.clone(), format!("port {pa} is used for two listeners"));
            }
        }
        if out.iter().any(|o| o.name.eq_ignore_ascii_case(&n.name)) {
            problems.push(
                format!("{key}.name"),
                format!("duplicate node name {:?}", n.name),
            );
        }
        if !address.is_unspecified() && out.iter().any(|o| o.address == address) {
            problems.push(
                format!("{key}.address"),
                format!("duplicate node address {address}"),
            );
        }
        out.push(Node {
            name: n.name.as_str().into(),
            address,
            ports: NodePorts {
                ethernet_phone: n.ethernet_phone_port,
                sip: n.sip_port,
                sip_secure: n.sip_secure_port,
                sip_oauth: n.sip_oauth_port,
                sip_mra_oauth: n.sip_mra_oauth_port,
                https: n.https_port,
                tftp_http: n.tftp_http_port,
                tftp_https: n.tftp_https_port,
                tftp: n.tftp_port,
            },
        });
    }
    out
}

fn convert_profiles(raw: &[raw::Profile], problems: &mut Problems) -> Vec<Profile> {
    let mut out: Vec<Profile> = Vec::with_capacity(raw.len());
    for (i, p) in raw.iter().enumerate() {
        let key = format!("profiles[{i}]");
        if p.name.is_empty() {
            problems.push(format!("{key}.name"), "must not be empty");
        }
        if out.iter().any(|o| *o.name == *p.name) {
            problems.push(
                format!("{key}.name"),
                format!("duplicate profile name {:?}", p.name),
            );
        }
        let product_type = ProductType::from_name(&p.product_type);
        if p.enable_oauth_authentication {
            if !product_type.supports_oauth() {
                problems.push(
                    format!("{key}.product_type"),
                    format!(
                        "{:?} cannot carry an OAuth profile; allowed: {}",
                        p.product_type,
                        ProductType::OAUTH_CAPABLE.join(", ")
                    ),
                );
            }
            if p.device_security_mode != SecurityMode::Encrypted {
                problems.push(
                    format!("{key}.device_security_mode"),
                    "OAuth needs \"encrypted\"",
                );
            }
            if p.transport_type != TransportType::Tls {
                problems.push(format!("{key}.transport_type"), "OAuth needs \"tls\"");
            }
            if p.enable_digest_authentication {
                problems.push(
                    format!("{key}.enable_digest_authentication"),
                    "not supported together with enable_oauth_authentication",
                );
            }
            if p.tftp_encrypted_config {
                problems.push(
                    format!("{key}.tftp_encrypted_config"),
                    "not supported together with enable_oauth_authentication",
                );
            }
        }
        if p.device_security_mode != SecurityMode::NonSecure
            && p.transport_type != TransportType::Tls
        {
            problems.push(
                format!("{key}.transport_type"),
                "an authenticated or encrypted profile needs \"tls\"",
            );
        }
        out.push(Profile {
            name: p.name.as_str().into(),
            description: p.description.clone(),
            product_type,
            security_mode: p.device_security_mode,
            transport: p.transport_type,
            digest_authentication: p.enable_digest_authentication,
            tftp_encrypted_config: p.tftp_encrypted_config,
            oauth: p.enable_oauth_authentication,
        });
    }
    out
}

fn convert_users(raw: &[raw::User], problems: &mut Problems) -> Vec<User> {
    let mut out: Vec<User> = Vec::with_capacity(raw.len());
    // Sets, not scans: lab clusters for load tests have 100k+ users and devices.
    let mut seen: HashSet<&str> = HashSet::with_capacity(raw.len());
    for (i, u) in raw.iter().enumerate() {
        if !is_name_safe(&u.id) {
            problems.push(
                format!("users[{i}].id"),
                "must be a non-empty id without quotes, commas or angle brackets",
            );
        }
        if !seen.insert(&u.id) {
            problems.push(
                format!("users[{i}].id"),
                format!("duplicate user {:?}", u.id),
            );
        }
        if let Some(phc) = &u.password_hash
            && let Err(reason) = crate::oauth::password::check_phc(phc)
        {
            problems.push(format!("users[{i}].password_hash"), reason);
        }
        out.push(User {
            id: u.id.as_str().into(),
            active: u.active,
            password_hash: u.password_hash.as_deref().map(Into::into),
        });
    }
    out
}

fn convert_device_groups(
    raw: &[raw::DeviceGroup],
    nodes: &[Node],
    problems: &mut Problems,
) -> Vec<DeviceGroup> {
    if raw.is_empty() {
        return vec![DeviceGroup {
            name: DEFAULT_GROUP.into(),
            nodes: (0..nodes.len().min(MAX_GROUP_NODES))
                .map(|i| NodeId(i as u16))
                .collect(),
        }];
    }
    let mut out: Vec<DeviceGroup> = Vec::with_capacity(raw.len());
    for (i, g) in raw.iter().enumerate() {
        let key = format!("device_groups[{i}]");
        if !is_name_safe(&g.name) {
            problems.push(
                format!("{key}.name"),
                "must be a non-empty name without quotes",
            );
        }
        if out.iter().any(|o| *o.name == *g.name) {
            problems.push(
                format!("{key}.name"),
                format!("duplicate device group {:?}", g.name),
            );
        }
        if g.nodes.is_empty() || g.nodes.len() > MAX_GROUP_NODES {
            problems.push(
                format!("{key}.nodes"),
                format!("lists 1 to {MAX_GROUP_NODES} nodes (a CallManager group's limit)"),
            );
        }
        let mut ids: Vec<NodeId> = Vec::with_capacity(g.nodes.len());
        for (j, name) in g.nodes.iter().enumerate() {
            match nodes.iter().position(|n| n.name.eq_ignore_ascii_case(name)) {
                Some(n) if ids.contains(&NodeId(n as u16)) => problems.push(
                    format!("{key}.nodes[{j}]"),
                    format!("node {name:?} is listed twice"),
                ),
                Some(n) => ids.push(NodeId(n as u16)),
                None => problems.push(format!("{key}.nodes[{j}]"), format!("no node {name:?}")),
            }
        }
        out.push(DeviceGroup {
            name: g.name.as_str().into(),
            nodes: ids,
        });
    }
    out
}

fn convert_devices(
    raw: &[raw::Device],
    profiles: &[Profile],
    users: &[User],
    groups: &[DeviceGroup],
    problems: &mut Problems,
) -> Vec<Device> {
    let mut out: Vec<Device> = Vec::with_capacity(raw.len());
    let user_ids: HashSet<&str> = users.iter().map(|u| &*u.id).collect();
    // The first profile of a name wins, as a scan would find it (duplicates are reported).
    let mut profile_index: HashMap<&str, usize> = HashMap::with_capacity(profiles.len());
    for (i, p) in profiles.iter().enumerate() {
        profile_index.entry(&p.name).or_insert(i);
    }
    let mut seen: HashSet<String> = HashSet::with_capacity(raw.len());
    for (i, d) in raw.iter().enumerate() {
        let key = format!("devices[{i}]");
        // The name is also a file name (`<name>.cnf.xml` on 6970/6971 and TFTP) and a URL
        // segment: UCM's device-name alphabet, which needs no escaping anywhere.
        let file_safe = d.name.len() <= MAX_DEVICE_NAME
            && !d.name.contains("..")
            && d.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if d.name.is_empty() || !file_safe {
            problems.push(
                format!("{key}.name"),
                format!(
                    "must be 1 to {MAX_DEVICE_NAME} letters, digits, '.', '_' or '-' (no \"..\"): \
                     it names the device's config file"
                ),
            );
        }
        if !seen.insert(d.name.to_ascii_lowercase()) {
            problems.push(
                format!("{key}.name"),
                format!("duplicate device {:?}", d.name),
            );
        }
        let profile = profile_index.get(d.profile.as_str()).copied();
        if profile.is_none() {
            problems.push(
                format!("{key}.profile"),
                format!("no profile named {:?}", d.profile),
            );
        }
        let product_type = ProductType::from_name(&d.product_type);
        let profile_type = profile.map(|p| &profiles[p].product_type);
        if let Some(profile_type) = profile_type
            && *profile_type != product_type
            && *profile_type != ProductType::UniversalDeviceTemplate
        {
            problems.push(
                format!("{key}.profile"),
                format!(
                    "profile is for {:?}, the device is a {:?} (only a Universal Device Template profile fits any product)",
                    profile_type.name(),
                    d.product_type
                ),
            );
        }
        if !user_ids.contains(d.owner.as_str()) {
            problems.push(format!("{key}.owner"), format!("no user {:?}", d.owner));
        }
        if d.lines.is_empty() {
            problems.push(format!("{key}.lines"), "a device needs at least one line");
        }
        let mut lines = Vec::with_capacity(d.lines.len());
        for (j, l) in d.lines.iter().enumerate() {
            let lkey = format!("{key}.lines[{j}]");
            if l.dn.is_empty()
                || !l
                    .dn
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+*#-_.".contains(&b))
            {
                problems.push(
                    format!("{lkey}.dn"),
                    "must be a directory number (digits, letters, + * # - _ .)",
                );
            }
            // Stored hyphenated and lower-case, as Jabber writes it in the Contact user part.
            let contact = match uuid::Uuid::parse_str(&l.contact) {
                Ok(u) => u.hyphenated().to_string(),
                Err(_) => {
                    problems.push(
                        format!("{lkey}.contact"),
                        "must be a UUID (the line's Contact user part)",
                    );
                    String::new()
                }
            };
            if lines.iter().any(|o: &Line| *o.dn == *l.dn) {
                problems.push(
                    format!("{lkey}.dn"),
                    format!("line {:?} appears twice on the device", l.dn),
                );
            }
            lines.push(Line {
                dn: l.dn.as_str().into(),
                display_name: l.display_name.clone(),
                contact,
            });
        }
        // Without a `device_group` a device is in the first group (the default one when none
        // are configured).
        let group = match &d.device_group {
            None => 0,
            Some(name) => groups
                .iter()
                .position(|g| *g.name == **name)
                .unwrap_or_else(|| {
                    problems.push(
                        format!("{key}.device_group"),
                        format!("no device group {name:?}"),
                    );
                    0
                }),
        };
        out.push(Device {
            name: d.name.as_str().into(),
            group,
            product_type,
            owner: d.owner.as_str().into(),
            // Only read when the whole configuration is valid, so the profile exists.
            profile: profile.unwrap_or(0),
            lines,
        });
    }
    out
}

fn convert_app_users(raw: &[raw::AppUser], problems: &mut Problems) -> Vec<AppUser> {
    let mut out: Vec<AppUser> = Vec::with_capacity(raw.len());
    for (i, u) in raw.iter().enumerate() {
        if !is_name_safe(&u.id) {
            problems.push(
                format!("app_users[{i}].id"),
                "must be a non-empty id without quotes, commas or angle brackets",
            );
        }
        if out.iter().any(|o| *o.id == *u.id) {
            problems.push(
                format!("app_users[{i}].id"),
                format!("duplicate application user {:?}", u.id),
            );
        }
        if let Err(reason) = crate::oauth::password::check_phc(&u.password_hash) {
            problems.push(format!("app_users[{i}].password_hash"), reason);
        }
        out.push(AppUser {
            id: u.id.as_str().into(),
            password_hash: u.password_hash.as_str().into(),
        });
    }
    out
}

fn convert_expressway(raw: &[raw::Expressway], problems: &mut Problems) -> Vec<ExpresswayEntry> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, e) in raw.iter().enumerate() {
        if e.host.is_empty() {
            problems.push(format!("expressway_c[{i}].host"), "must not be empty");
        }
        if e.subject_names.is_empty() || e.subject_names.iter().any(|n| n.trim().is_empty()) {
            problems.push(
                format!("expressway_c[{i}].subject_names"),
                "needs at least one non-empty certificate CN or SAN",
            );
        }
        out.push(ExpresswayEntry {
            host: e.host.clone(),
            description: e.description.clone(),
            subject_names: e
                .subject_names
                .iter()
                .map(|n| n.trim().to_ascii_lowercase())
                .collect(),
        });
    }
    out
}
