//! The TFTP server's config files: `<device>.cnf.xml` rendered from the cluster model
//! ([`cnf`]), who may have which file ([`Provisioning`]), and their HTTP face on 6970 and
//! 6971 ([`http`]). A side listener: it reads the cluster and calls the daemon's
//! [`Authenticator`], and never touches the registrar.
//!
//! A device is **under OAuth** when the cluster's SIP OAuth mode is on and its profile enables
//! OAuth (the registrar's own rule, README "Port rules"). Its file is served only on HTTPS, to
//! its owner's bearer token; every other device's file is open (HTTP, HTTPS, and TFTP through
//! [`Provisioning::file`]).

pub mod cnf;
pub mod http;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::auth::Authenticator;
use crate::cluster::{Cluster, DeviceId, LiveMode, NodePorts};

/// Suffix of a config file name.
pub const CNF_SUFFIX: &str = ".cnf.xml";
/// Suffix of a signed config file name; on HTTPS it is answered with the unsigned file.
pub const SGN_SUFFIX: &str = ".cnf.xml.sgn";
/// Longest file name looked up (a device name is at most 50 characters on UCM; room to spare).
pub const MAX_FILE_NAME: usize = 128;

/// The config files' state: the cluster, the credential check, and the ports files publish.
pub struct Provisioning {
    /// Swapped whole by a configuration reload: a request loads it once and resolves and
    /// renders its file from that one model, so a device id never meets another model.
    model: ArcSwap<Model>,
    authenticator: Arc<dyn Authenticator>,
    /// The ports files publish, per node; set once the listeners are bound (see
    /// [`Self::publish_ports`]). Unset, files publish the configured ports.
    ports: ArcSwapOption<Vec<NodePorts>>,
    /// The cluster's SIP OAuth mode, live (`utils sipOAuth-mode`).
    mode: LiveMode,
}

/// What a file name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A device's file, open to anyone (not under OAuth).
    Open(DeviceId),
    /// A device's file under OAuth: HTTPS only, with its owner's token.
    OAuth(DeviceId),
    /// A well-formed name that names no device file we serve (unknown device, other file, or
    /// `.sgn` where it is not served).
    Unknown,
    /// Not a plausible file name (characters outside `[A-Za-z0-9._-]`, `..`, too long): never
    /// looked up.
    BadName,
}

/// A cluster model and its device-name index.
struct Model {
    cluster: Arc<Cluster>,
    /// Device names in ASCII lower case, for the case-insensitive second lookup (the
    /// configuration refuses two names that differ only in case).
    folded: HashMap<String, DeviceId>,
}

impl Model {
    fn new(cluster: Arc<Cluster>) -> Self {
        let mut folded = HashMap::with_capacity(cluster.devices.len());
        for (i, d) in cluster.devices.iter().enumerate() {
            folded
                .entry(d.name.to_ascii_lowercase())
                .or_insert(DeviceId(i as u32));
        }
        Self { cluster, folded }
    }

    /// The device named `name`: exact match first, then ASCII case-insensitive.
    fn device(&self, name: &str) -> Option<DeviceId> {
        self.cluster
            .device_by_name(name)
            .or_else(|| self.folded.get(&name.to_ascii_lowercase()).copied())
    }
}

impl Provisioning {
    pub fn new(cluster: Arc<Cluster>, authenticator: Arc<dyn Authenticator>) -> Self {
        Self {
            authenticator,
            ports: ArcSwapOption::empty(),
            mode: LiveMode::new(cluster.params.sip_oauth_mode),
            model: ArcSwap::from_pointee(Model::new(cluster)),
        }
    }

    /// Puts `cluster` in force (configuration reload): the next request finds its devices,
    /// owners and profiles.
    pub fn replace_cluster(&self, cluster: Arc<Cluster>) {
        self.model.store(Arc::new(Model::new(cluster)));
    }

    fn model(&self) -> Arc<Model> {
        self.model.load_full()
    }

    /// Follows `mode` instead of the configuration's fixed value.
    pub fn with_mode(mut self, mode: LiveMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the ports files publish, per node in `cluster.nodes` order: the server calls it
    /// once with the ports it bound, before serving. A daemon binds its configured ports, so
    /// this changes nothing there; a test server on port 0 thus publishes ports that work. A
    /// reload whose ports changed publishes them again.
    pub fn publish_ports(&self, ports: Vec<NodePorts>) {
        self.ports.store(Some(Arc::new(ports)));
    }

    /// The file for TFTP (or any unauthenticated channel): `<device>.cnf.xml` of a device
    /// **not** under OAuth, rendered; `None` for anything else (unknown names, `.sgn`, and
    /// devices under OAuth, whose file only HTTPS 6971 serves, to the owner's token). Device
    /// names match exactly first, then ASCII case-insensitively; so does the suffix.
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        let model = self.model();
        match self.lookup_in(&model, name, false) {
            Lookup::Open(device) => Some(self.render_in(&model.cluster, device)),
            _ => None,
        }
    }

    /// What `name` names. `.sgn` names count only when `signed` (HTTPS).
    pub fn lookup(&self, name: &str, signed: bool) -> Lookup {
        self.lookup_in(&self.model(), name, signed)
    }

    fn lookup_in(&self, model: &Model, name: &str, signed: bool) -> Lookup {
        if !plausible(name) {
            return Lookup::BadName;
        }
        let stem = match strip_suffix(name, SGN_SUFFIX) {
            Some(_) if !signed => return Lookup::Unknown,
            Some(stem) => stem,
            None => match strip_suffix(name, CNF_SUFFIX) {
                Some(stem) => stem,
                None => return Lookup::Unknown,
            },
        };
        let Some(device) = model.device(stem) else {
            return Lookup::Unknown;
        };
        if self.mode.get() && model.cluster.profile_of(device).oauth {
            Lookup::OAuth(device)
        } else {
            Lookup::Open(device)
        }
    }

    /// The device named `name`: exact match first, then ASCII case-insensitive.
    pub fn device(&self, name: &str) -> Option<DeviceId> {
        self.model().device(name)
    }

    /// The cluster's SIP OAuth mode now.
    pub fn oauth_mode(&self) -> bool {
        self.mode.get()
    }

    /// Whether `device`'s file needs its owner's token (and HTTPS).
    pub fn under_oauth(&self, device: DeviceId) -> bool {
        self.mode.get() && self.model().cluster.profile_of(device).oauth
    }

    /// The ports files and UDS publish, per node: the bound ones once published, else the
    /// configured ones.
    pub fn ports(&self) -> Vec<NodePorts> {
        match &*self.ports.load() {
            Some(ports) => Vec::clone(ports),
            None => self.model().cluster.nodes.iter().map(|n| n.ports).collect(),
        }
    }

    /// `device`'s file, publishing the bound ports.
    pub fn render(&self, device: DeviceId) -> Vec<u8> {
        self.render_in(&self.model().cluster, device)
    }

    /// `device`'s file in `cluster` (the model it was looked up in).
    fn render_in(&self, cluster: &Cluster, device: DeviceId) -> Vec<u8> {
        match &*self.ports.load() {
            Some(ports) => cnf::render_live(cluster, ports, device, self.mode.get()),
            None => {
                let ports: Vec<NodePorts> = cluster.nodes.iter().map(|n| n.ports).collect();
                cnf::render_live(cluster, &ports, device, self.mode.get())
            }
        }
    }

    /// The cluster model in force now.
    pub fn cluster(&self) -> Arc<Cluster> {
        self.model().cluster.clone()
    }

    pub fn authenticator(&self) -> &Arc<dyn Authenticator> {
        &self.authenticator
    }
}

/// `name` without `suffix`, compared ASCII case-insensitively; `None` when it does not end so or
/// nothing precedes it.
fn strip_suffix<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = name.len().checked_sub(suffix.len()).filter(|&c| c > 0)?;
    // `plausible` admitted ASCII only, so `cut` is a character boundary.
    let (stem, tail) = (name.get(..cut)?, name.get(cut..)?);
    tail.eq_ignore_ascii_case(suffix).then_some(stem)
}

/// A file name we look up at all: 1..=`MAX_FILE_NAME` characters of `[A-Za-z0-9._-]`, no `..`.
/// Nothing is ever joined to a file-system path; this only turns traversal attempts and
/// garbage into a `400` rather than a lookup.
fn plausible(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthError, Identity};
    use crate::config::{LAB_CONFIG, Settings};

    struct Nobody;

    impl Authenticator for Nobody {
        fn authenticate(&self, _: &str, _: u64) -> Result<Identity, AuthError> {
            Err(AuthError::Malformed)
        }
    }

    fn lab() -> Provisioning {
        let cluster = Settings::from_toml(LAB_CONFIG).unwrap().cluster;
        Provisioning::new(Arc::new(cluster), Arc::new(Nobody))
    }

    #[test]
    fn lookups() {
        let p = lab();
        let legacy = p.cluster().device_by_name("SIPlegacy1").unwrap();
        let rado = p.cluster().device_by_name("CSFrado").unwrap();
        assert_eq!(p.lookup("SIPlegacy1.cnf.xml", false), Lookup::Open(legacy));
        assert_eq!(p.lookup("siplegacy1.CNF.XML", false), Lookup::Open(legacy));
        assert_eq!(p.lookup("CSFrado.cnf.xml", false), Lookup::OAuth(rado));
        assert_eq!(p.lookup("CSFrado.cnf.xml.sgn", true), Lookup::OAuth(rado));
        assert_eq!(p.lookup("CSFrado.cnf.xml.sgn", false), Lookup::Unknown);
        assert_eq!(p.lookup("CSFnobody.cnf.xml", true), Lookup::Unknown);
        assert_eq!(p.lookup(".cnf.xml", true), Lookup::Unknown);
        assert_eq!(p.lookup("CSFrado.xml", true), Lookup::Unknown);
        assert_eq!(p.lookup("SPDefault.cnf.xml", true), Lookup::Unknown);
        for bad in [
            "",
            "../CSFrado.cnf.xml",
            "..",
            "a/b.cnf.xml",
            "a\\b.cnf.xml",
            "CSFrado.cnf.xml\0",
            "CSFrado%2ecnf.xml",
            "Ŝ.cnf.xml",
            &"A".repeat(MAX_FILE_NAME + 1),
        ] {
            assert_eq!(p.lookup(bad, true), Lookup::BadName, "{bad:?}");
        }
    }

    #[test]
    fn tftp_gets_open_files_only() {
        let p = lab();
        let file = p.file("SIPlegacy1.cnf.xml").unwrap();
        assert!(file.starts_with(b"<?xml"));
        assert!(p.file("CSFrado.cnf.xml").is_none());
        assert!(p.file("SEP001122334455.cnf.xml").is_none());
        assert!(p.file("SEP0011223344AA.cnf.xml").is_some());
        assert!(p.file("SIPlegacy1.cnf.xml.sgn").is_none());
        assert!(p.file("nothing").is_none());
    }

    #[test]
    fn mode_off_opens_every_file() {
        let toml = LAB_CONFIG.replace("sip_oauth_mode = true", "sip_oauth_mode = false");
        let cluster = Settings::from_toml(&toml).unwrap().cluster;
        let p = Provisioning::new(Arc::new(cluster), Arc::new(Nobody));
        assert!(p.file("CSFrado.cnf.xml").is_some());
    }

    #[test]
    fn published_ports_replace_configured_ones() {
        let p = lab();
        let rado = p.cluster().device_by_name("CSFrado").unwrap();
        let mut ports: Vec<NodePorts> = p.cluster().nodes.iter().map(|n| n.ports).collect();
        ports[0].sip_oauth = 40001;
        p.publish_ports(ports);
        let text = String::from_utf8(p.render(rado)).unwrap();
        assert!(
            text.contains("<sipOAuthPort>40001</sipOAuthPort>"),
            "{text}"
        );
    }
}
