//! The configuration file as written: serde structs with defaults and no unknown keys.

use std::path::PathBuf;

use serde::Deserialize;

use crate::cluster::{SecurityMode, TransportType};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    pub(super) cluster: Cluster,
    #[serde(default)]
    pub(super) limits: Limits,
    #[serde(default)]
    pub(super) tls: Tls,
    #[serde(default)]
    pub(super) tokens: Tokens,
    #[serde(default)]
    pub(super) nodes: Vec<Node>,
    #[serde(default)]
    pub(super) profiles: Vec<Profile>,
    #[serde(default)]
    pub(super) users: Vec<User>,
    #[serde(default)]
    pub(super) devices: Vec<Device>,
    #[serde(default)]
    pub(super) expressway_c: Vec<Expressway>,
    #[serde(default)]
    pub(super) app_users: Vec<AppUser>,
    #[serde(default)]
    pub(super) device_groups: Vec<DeviceGroup>,
    #[serde(default)]
    pub(super) identity_providers: Vec<crate::auth::external::IssuerConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Cluster {
    pub(super) name: String,
    pub(super) uuid: String,
    #[serde(default)]
    pub(super) sip_oauth_mode: bool,
    #[serde(default)]
    pub(super) security_mode: u8,
    #[serde(default = "default_server_version")]
    pub(super) server_version: String,
    #[serde(default = "default_keepalive")]
    pub(super) keepalive_interval_secs: u32,
    #[serde(default = "default_min_expires")]
    pub(super) min_expires_secs: u32,
    #[serde(default = "default_realm")]
    pub(super) sip_realm: String,
    #[serde(default = "default_access_minutes")]
    pub(super) access_token_expiry_minutes: u32,
    #[serde(default = "default_refresh_days")]
    pub(super) jabber_refresh_token_expiry_days: u32,
    #[serde(default = "default_refresh_days")]
    pub(super) phone_refresh_token_expiry_days: u32,
    #[serde(default)]
    pub(super) oauth_refresh_login_flow: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Limits {
    pub(super) max_message_bytes: usize,
    pub(super) max_headers: usize,
    pub(super) max_connections_per_listener: usize,
    pub(super) max_connections: usize,
    pub(super) max_connections_per_source: usize,
    pub(super) tls_handshake_timeout_ms: u64,
    pub(super) message_timeout_ms: u64,
    pub(super) idle_timeout_secs: u64,
    pub(super) max_bindings: usize,
    pub(super) max_bindings_per_aor: usize,
    pub(super) udp_recv_buffer_bytes: usize,
    pub(super) udp_send_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 65536,
            max_headers: 64,
            max_connections_per_listener: 10_000,
            max_connections: 20_000,
            max_connections_per_source: 256,
            tls_handshake_timeout_ms: 5_000,
            message_timeout_ms: 10_000,
            idle_timeout_secs: 300,
            max_bindings: 200_000,
            max_bindings_per_aor: 10,
            udp_recv_buffer_bytes: 4 << 20,
            udp_send_buffer_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Tls {
    pub(super) lab_pki: bool,
    pub(super) tomcat_cert: PathBuf,
    pub(super) tomcat_key: PathBuf,
    pub(super) tomcat_trust: Vec<PathBuf>,
    pub(super) callmanager_cert: PathBuf,
    pub(super) callmanager_key: PathBuf,
    pub(super) callmanager_trust: Vec<PathBuf>,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            lab_pki: true,
            tomcat_cert: "certs/tomcat.pem".into(),
            tomcat_key: "certs/tomcat-key.pem".into(),
            tomcat_trust: vec!["certs/lab-ca.pem".into()],
            callmanager_cert: "certs/callmanager.pem".into(),
            callmanager_key: "certs/callmanager-key.pem".into(),
            callmanager_trust: vec!["certs/lab-ca.pem".into()],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Tokens {
    pub(super) signing_key: PathBuf,
    pub(super) encryption_key: PathBuf,
    pub(super) refresh_store: PathBuf,
    pub(super) redirect_uris: Vec<String>,
    pub(super) leeway_secs: u64,
    pub(super) cache_entries: usize,
}

impl Default for Tokens {
    fn default() -> Self {
        Self {
            signing_key: "keys/authz-signing.pem".into(),
            encryption_key: "keys/authz-encryption.key".into(),
            refresh_store: "tokens/refresh-tokens.jsonl".into(),
            redirect_uris: Vec::new(),
            leeway_secs: 5,
            cache_entries: 100_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) address: String,
    #[serde(default = "default_ethernet_port")]
    pub(super) ethernet_phone_port: u16,
    #[serde(default = "default_sip_port")]
    pub(super) sip_port: u16,
    #[serde(default = "default_secure_port")]
    pub(super) sip_secure_port: u16,
    #[serde(default = "default_oauth_port")]
    pub(super) sip_oauth_port: u16,
    #[serde(default = "default_mra_port")]
    pub(super) sip_mra_oauth_port: u16,
    #[serde(default = "default_https_port")]
    pub(super) https_port: u16,
    #[serde(default = "default_tftp_http_port")]
    pub(super) tftp_http_port: u16,
    #[serde(default = "default_tftp_https_port")]
    pub(super) tftp_https_port: u16,
    #[serde(default = "default_tftp_port")]
    pub(super) tftp_port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeviceGroup {
    pub(super) name: String,
    pub(super) nodes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Profile {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: String,
    pub(super) product_type: String,
    pub(super) device_security_mode: SecurityMode,
    pub(super) transport_type: TransportType,
    #[serde(default)]
    pub(super) enable_digest_authentication: bool,
    #[serde(default)]
    pub(super) tftp_encrypted_config: bool,
    #[serde(default)]
    pub(super) enable_oauth_authentication: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct User {
    pub(super) id: String,
    #[serde(default = "default_true")]
    pub(super) active: bool,
    #[serde(default)]
    pub(super) password_hash: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AppUser {
    pub(super) id: String,
    pub(super) password_hash: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Device {
    pub(super) name: String,
    pub(super) product_type: String,
    pub(super) owner: String,
    pub(super) profile: String,
    #[serde(default)]
    pub(super) device_group: Option<String>,
    pub(super) lines: Vec<Line>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Line {
    pub(super) dn: String,
    #[serde(default)]
    pub(super) display_name: String,
    pub(super) contact: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Expressway {
    pub(super) host: String,
    #[serde(default)]
    pub(super) description: String,
    pub(super) subject_names: Vec<String>,
}

fn default_server_version() -> String {
    "12.5".into()
}
fn default_keepalive() -> u32 {
    120
}
fn default_min_expires() -> u32 {
    60
}
fn default_realm() -> String {
    "ccmsipline".into()
}
fn default_access_minutes() -> u32 {
    60
}
fn default_refresh_days() -> u32 {
    60
}
fn default_true() -> bool {
    true
}
fn default_ethernet_port() -> u16 {
    2000
}
fn default_sip_port() -> u16 {
    5060
}
fn default_secure_port() -> u16 {
    5061
}
fn default_oauth_port() -> u16 {
    5090
}
fn default_mra_port() -> u16 {
    5091
}
fn default_https_port() -> u16 {
    8443
}
fn default_tftp_http_port() -> u16 {
    6970
}
fn default_tftp_https_port() -> u16 {
    6971
}
fn default_tftp_port() -> u16 {
    6969
}
