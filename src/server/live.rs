//! What changes while the daemon runs, and the admin commands that change it: the SIP OAuth
//! mode (`utils sipOAuth-mode`), the tomcat certificate (`set cert regen tomcat`) and the
//! whole configuration (`utils reload config`, SIGHUP).
//!
//! Every change is checked in full before anything is applied: a refused reload names every
//! problem found and leaves the running configuration, listeners and registrations as they
//! were. Changes are serialized (`changing`): the admin interface runs one command at a time,
//! but SIGHUP may arrive during one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::listeners::{Entry, StreamSet};
use super::{BindOptions, BoundListener, LAB_PKI_DIR};
use crate::admin::ports::{OpenSocket, Protocol};
use crate::cluster::{Cluster, LiveMode, NodeId, NodePorts, mode};
use crate::config::{ConfigError, Settings};
use crate::expressway::ExpresswayStore;
use crate::net::{ListenerKind, Service, Transport, WebPort};
use crate::oauth::TokenService;
use crate::pki::regen::{self, TomcatFiles};
use crate::provisioning::Provisioning;
use crate::registrar::Registrar;
use crate::tls::{TlsConfigs, TlsSlots};

/// Where a reload reads the configuration from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A TOML file (`--config`).
    File(PathBuf),
    /// The embedded lab configuration (no `--config`).
    Lab,
}

pub(super) struct Live {
    pub(super) state_dir: PathBuf,
    pub(super) bind: BindOptions,
    pub(super) source: Mutex<Option<ConfigSource>>,
    /// The configuration in force.
    pub(super) settings: Mutex<Settings>,
    /// The configuration the daemon started with: what the settings only a start applies
    /// are compared with, so every reload until the restart repeats their warning.
    pub(super) started: Settings,
    pub(super) tokens: Arc<TokenService>,
    pub(super) expressway: Arc<ExpresswayStore>,
    pub(super) provisioning: Arc<Provisioning>,
    pub(super) mode: LiveMode,
    pub(super) registrar: Registrar,
    pub(super) tls: TlsSlots,
    pub(super) streams: StreamSet,
    /// UDP listeners (SIP 5060, TFTP): bound for the daemon's life.
    pub(super) udp: Vec<BoundListener>,
    pub(super) changing: Mutex<()>,
}

/// Whether a listener serves the OAuth ports that the mode opens and closes.
pub(super) fn is_oauth(e: &Entry) -> bool {
    matches!(e.service(), Service::Sip(k) if k.is_oauth())
}

impl Live {
    /// Every listener, with whether it is open.
    pub(super) fn listeners(&self) -> Vec<(BoundListener, bool)> {
        let mut all: Vec<(BoundListener, bool)> =
            self.udp.iter().map(|l| (l.clone(), true)).collect();
        all.extend(self.streams.all());
        all
    }

    /// The ports config files publish: each node's configured ports, overwritten by those
    /// bound (they differ on port 0).
    pub(super) fn bound_ports(&self, cluster: &Cluster) -> Vec<NodePorts> {
        let listed: Vec<BoundListener> = self.listeners().into_iter().map(|(l, _)| l).collect();
        super::bound_ports(cluster, &listed)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Opens 5090/5091 of every node; if one cannot listen, closes again those it opened
    /// (when the mode was off, `was_on`) and names the failures.
    fn open_oauth(&self, was_on: bool) -> Result<(), Vec<String>> {
        let errors = self.streams.open(is_oauth);
        if errors.is_empty() {
            return Ok(());
        }
        if !was_on {
            self.streams.close(is_oauth);
        }
        Err(errors.iter().map(ToString::to_string).collect())
    }

    /// Applies `on` to the listeners and the port rule: the listeners open before the rule
    /// applies, and close after it stops applying. On error nothing changed. Blocks.
    fn apply_mode(&self, on: bool) -> Result<(), Vec<String>> {
        if on {
            self.open_oauth(self.mode.get())?;
            self.mode.set(true);
        } else {
            self.mode.set(false);
            self.streams.close(is_oauth);
        }
        Ok(())
    }

    /// `utils sipOAuth-mode enable|disable`: all or nothing. Enabling opens the listeners
    /// first, then saves the mode, then applies the port rule; a listener that cannot open
    /// or a file that cannot be written leaves the mode, the file and the listeners as they
    /// were.
    pub(super) fn set_mode(&self, on: bool) -> Result<(), String> {
        let _changing = self.lock();
        let was_on = self.mode.get();
        if on {
            self.open_oauth(was_on).map_err(|e| e.join("\n"))?;
            if let Err(e) = mode::persist(&self.state_dir, true) {
                if !was_on {
                    self.streams.close(is_oauth);
                }
                return Err(e.to_string());
            }
            self.mode.set(true);
        } else {
            mode::persist(&self.state_dir, false).map_err(|e| e.to_string())?;
            self.apply_mode(false).map_err(|e| e.join("\n"))?;
        }
        tracing::info!(sip_oauth_mode = on, "cluster SIP OAuth mode changed");
        Ok(())
    }

    pub(super) fn new_tomcat(&self) -> Result<String, String> {
        let _changing = self.lock();
        let settings = self.settings();
        if !settings.tls.lab_pki {
            return Err(
                "tls.lab_pki is off: the tomcat certificate is not the lab CA's to \
                        regenerate; replace its files and run utils reload config"
                    .into(),
            );
        }
        let lab = crate::pki::LabPkiFiles::in_dir(&self.state_dir.join(LAB_PKI_DIR));
        let files = TomcatFiles {
            ca_cert: lab.ca_cert,
            ca_key: lab.ca_key,
            cert: Settings::resolve(&self.state_dir, &settings.tls.tomcat_cert),
            key: Settings::resolve(&self.state_dir, &settings.tls.tomcat_key),
        };
        // Issued and checked with every other current TLS file in memory first: a bad file
        // elsewhere refuses the command before the old pair is overwritten, so the daemon
        // and `show cert list own` (which reads the files) keep agreeing.
        let issued = regen::issue_tomcat(&files).map_err(|e| error_chain(&e))?;
        let configs = TlsConfigs::load_with_tomcat(
            &settings,
            &self.state_dir,
            self.expressway.table(),
            (&issued.cert_pem, &issued.key_pem),
        )
        .map_err(|e| error_chain(&e))?;
        regen::write_tomcat(&files, &issued).map_err(|e| error_chain(&e))?;
        self.tls.swap(configs);
        let made = issued.summary;
        tracing::info!(serial = %made.serial, "tomcat certificate regenerated and in force");
        Ok(cert_line("tomcat", &files.cert, &made))
    }

    pub(super) fn certificates(&self) -> Result<String, String> {
        let settings = self.settings();
        let mut out = String::new();
        for (unit, path) in [
            ("tomcat", &settings.tls.tomcat_cert),
            ("CallManager", &settings.tls.callmanager_cert),
        ] {
            let path = Settings::resolve(&self.state_dir, path);
            let summary = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|pem| {
                    use rustls::pki_types::pem::PemObject;
                    rustls::pki_types::CertificateDer::from_pem_slice(&pem)
                        .map_err(|e| e.to_string())
                })
                .and_then(|der| regen::describe(&der))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            out.push_str(&cert_line(unit, &path, &summary));
            out.push('\n');
        }
        Ok(out)
    }

    /// New reserved sockets for the listeners `moved` names, on the same address (port 0
    /// again on ephemeral ports); every failure named.
    fn bind_moved(&self, moved: &[(NodeId, Service, u16)]) -> Result<Vec<Entry>, Vec<String>> {
        let current = self.streams.all();
        let mut fresh = Vec::new();
        let mut errors = Vec::new();
        for &(node, service, port) in moved {
            let Some((l, _)) = current
                .iter()
                .find(|(l, _)| l.node == node && l.service == service)
            else {
                continue;
            };
            let Some(app) = self.streams.app_of(node, service) else {
                continue;
            };
            let port = if self.bind.ephemeral_ports { 0 } else { port };
            let addr = SocketAddr::new(l.addr.ip(), port);
            let tls = self.streams.tls_of(node, service);
            match Entry::bind(node, l.node_name.clone(), app, tls, addr) {
                Ok(e) => fresh.push(e),
                Err(e) => errors.push(format!(
                    "cannot bind the {} listener of node {} on {addr}: {e}",
                    service.name(),
                    l.node_name
                )),
            }
        }
        if errors.is_empty() {
            Ok(fresh)
        } else {
            Err(errors)
        }
    }

    pub(super) fn sockets(&self) -> Vec<OpenSocket> {
        self.listeners()
            .into_iter()
            .filter(|(_, open)| *open)
            .map(|(l, _)| OpenSocket {
                protocol: match l.transport {
                    Transport::Udp => Protocol::Udp,
                    Transport::Tcp | Transport::Tls => Protocol::Tcp,
                },
                addr: l.addr,
            })
            .collect()
    }

    /// Reloads the configuration from its source; see the module documentation. The outcome
    /// is logged too (SIGHUP has no one else to tell).
    pub(super) fn reload_config(&self) -> Result<String, Vec<String>> {
        let _changing = self.lock();
        let outcome = self.reload_locked();
        match &outcome {
            Ok(report) => {
                for line in report.lines() {
                    tracing::info!("reload: {line}");
                }
            }
            Err(errors) => {
                tracing::error!(errors = errors.len(), "configuration reload refused");
                for e in errors {
                    tracing::error!("reload: {e}");
                }
            }
        }
        outcome
    }

    fn reload_locked(&self) -> Result<String, Vec<String>> {
        let source = self
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let new = match &source {
            Some(ConfigSource::File(path)) => Settings::read(path),
            Some(ConfigSource::Lab) => Settings::lab(),
            None => {
                return Err(vec![
                    "no configuration source: the daemon was started from settings in memory"
                        .into(),
                ]);
            }
        }
        .map_err(config_errors)?;
        let old = self.settings();

        // Every check runs, whatever fails before it, so the answer names every problem.
        let mut errors = Vec::new();
        if new.cluster.params.uuid != old.cluster.params.uuid {
            // Every pkid (AXL, UDS, Expressway-C rows) and the token store derive from it.
            errors.push(
                "cluster.uuid: changing the cluster UUID needs a restart (pkids derive from it)"
                    .into(),
            );
        }
        let moved = collect(moved_listeners(&old.cluster, &new.cluster), &mut errors);
        let configs = collect(
            TlsConfigs::load(&new, &self.state_dir, self.expressway.table())
                .map_err(|e| e.into_list().iter().map(|e| error_chain(e)).collect()),
            &mut errors,
        );
        // Checked here; swapped below by re-reading under the table's own lock, so that an
        // AXL or admin edit made meanwhile (they do not take `changing`) is kept.
        let expressway_ok = collect(
            ExpresswayStore::open(
                &self.state_dir.join(crate::expressway::FILE),
                &new.cluster.params.uuid,
                &new.cluster.expressway,
            )
            .map(|_| ())
            .map_err(|e| vec![format!("Expressway-C table: {}", error_chain(&e))]),
            &mut errors,
        );
        let mode_on = collect(
            mode::effective(&self.state_dir, new.cluster.params.sip_oauth_mode)
                .map_err(|e| vec![e.to_string()]),
            &mut errors,
        );
        // New sockets for moved listeners are bound before anything changes: a port in use
        // refuses the reload.
        let moved = moved.unwrap_or_default();
        let fresh = collect(self.bind_moved(&moved), &mut errors);
        let (Some(configs), Some(()), Some(mode_on), Some(fresh), true) =
            (configs, expressway_ok, mode_on, fresh, errors.is_empty())
        else {
            return Err(errors);
        };

        // Apply. Nothing below can be refused.
        self.tls.swap(configs);
        let mut problems = Vec::new();
        if let Err(e) = self
            .expressway
            .reload(&new.cluster.params.uuid, &new.cluster.expressway)
        {
            // Read fine moments ago: the file changed underneath; the table in memory stays.
            problems.push(format!("Expressway-C table kept: {}", error_chain(&e)));
        }
        let cluster = Arc::new(new.cluster.clone());
        let rekeyed = self.registrar.replace_cluster(cluster.clone());
        // The token service (and UDS, which reads through its handle) and the config files
        // follow the same model: users, passwords, active flags, devices and profiles.
        self.tokens.replace_cluster(cluster.clone());
        self.provisioning.replace_cluster(cluster.clone());
        let mut report = vec![
            format!(
                "Configuration reloaded: {} device(s), {} user(s), {} Expressway-C entr(ies).",
                cluster.devices.len(),
                cluster.users.len(),
                self.expressway.list().len()
            ),
            format!(
                "Registrations kept: {}; dropped with their device: {}.",
                rekeyed.kept, rekeyed.dropped
            ),
            "Certificates and trust stores reloaded: new TLS handshakes use them.".into(),
        ];
        if !fresh.is_empty() {
            let errs = self.streams.replace(
                |e| {
                    moved
                        .iter()
                        .any(|&(n, s, _)| e.node == n && e.service() == s)
                },
                fresh,
                |e| mode_on || !is_oauth(e),
            );
            problems.extend(errs.iter().map(ToString::to_string));
            for (l, _) in self.streams.all() {
                if moved.iter().any(|&(n, s, _)| l.node == n && l.service == s) {
                    report.push(format!(
                        "Listener {} of node {} moved to {}.",
                        l.service.name(),
                        l.node_name,
                        l.addr
                    ));
                }
            }
        }
        if mode_on != self.mode.get() {
            report.push(format!(
                "SIP OAuth mode {}.",
                if mode_on { "enabled" } else { "disabled" }
            ));
        }
        if let Err(e) = self.apply_mode(mode_on) {
            problems.extend(e);
        }
        self.provisioning.publish_ports(self.bound_ports(&cluster));
        problems.extend(
            restart_only(&self.started, &new)
                .into_iter()
                .map(|key| format!("{key} changed; takes effect at the next start")),
        );
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = new;
        report.extend(problems.iter().map(|p| format!("Warning: {p}")));
        Ok(report.join("\n") + "\n")
    }
}

/// The settings a reload takes but that only the next start applies (read once when the
/// daemon starts: the token signer, limits sized into the listeners, the issuers' key sets,
/// the UDS site), by their configuration key.
fn restart_only(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.tokens != new.tokens {
        changed.push("[tokens]");
    }
    if old.limits != new.limits {
        changed.push("[limits]");
    }
    // IssuerConfig has no equality; its Debug form shows every field.
    if format!("{:?}", old.identity_providers) != format!("{:?}", new.identity_providers) {
        changed.push("[[identity_providers]]");
    }
    if old.cluster.params.server_version != new.cluster.params.server_version {
        changed.push("cluster.server_version (UDS version)");
    }
    changed
}

/// The stream listeners whose port changed, with their new configured port; or why the
/// change needs a restart (nodes added, removed, renamed or readdressed; UDP ports).
fn moved_listeners(
    old: &Cluster,
    new: &Cluster,
) -> Result<Vec<(NodeId, Service, u16)>, Vec<String>> {
    let same_nodes = old.nodes.len() == new.nodes.len()
        && old
            .nodes
            .iter()
            .zip(&new.nodes)
            .all(|(a, b)| a.name == b.name && a.address == b.address);
    if !same_nodes {
        return Err(vec![
            "nodes: adding, removing or renaming a node or changing its address needs a restart"
                .into(),
        ]);
    }
    let mut errors = Vec::new();
    let mut moved = Vec::new();
    for (i, (a, b)) in old.nodes.iter().zip(&new.nodes).enumerate() {
        if a.ports.sip != b.ports.sip || a.ports.tftp != b.ports.tftp {
            errors.push(format!(
                "nodes.{}.ports: the SIP (5060) and TFTP ports are UDP sockets and change only \
                 with a restart",
                b.name
            ));
        }
        for ((service, before), (_, after)) in stream_ports(&a.ports)
            .into_iter()
            .zip(stream_ports(&b.ports))
        {
            if before != after {
                moved.push((NodeId(i as u16), service, after));
            }
        }
    }
    // A listener moving onto a port that one of ours listens on now (ports swapped between
    // listeners) is refused rather than done: the new socket is bound while the old one
    // still serves, so that a refused reload changes nothing; closing first would leave a
    // window in which the port can be lost to another process, with no listener to go back
    // to. A restart binds everything afresh.
    for &(NodeId(i), service, after) in &moved {
        let node = &new.nodes[usize::from(i)];
        let holder = old.nodes.iter().find_map(|o| {
            (o.address == node.address)
                .then(|| stream_ports(&o.ports))
                .into_iter()
                .flatten()
                .find(|&(_, p)| p == after)
                .map(|(s, _)| (o, s))
        });
        if let Some((o, held_by)) = holder {
            errors.push(format!(
                "nodes.{}.ports: {} moves to port {after}, which the {} listener of node {}                  holds until this reload; swapping ports between listeners needs a restart",
                node.name,
                service.name(),
                held_by.name(),
                o.name
            ));
        }
    }
    if errors.is_empty() {
        Ok(moved)
    } else {
        Err(errors)
    }
}

/// The stream listeners' ports in a node's settings (those a reload can move).
fn stream_ports(p: &NodePorts) -> Vec<(Service, u16)> {
    vec![
        (Service::Sip(ListenerKind::Sip), p.sip),
        (Service::Sip(ListenerKind::SipSecure), p.sip_secure),
        (Service::Sip(ListenerKind::OAuth), p.sip_oauth),
        (Service::Sip(ListenerKind::MraOAuth), p.sip_mra_oauth),
        (Service::Web(WebPort::Tomcat), p.https),
        (Service::Web(WebPort::TftpHttp), p.tftp_http),
        (Service::Web(WebPort::TftpHttps), p.tftp_https),
    ]
}

/// `tomcat/tomcat.pem: <subject>, serial <hex>, names <SANs>`, after UCM's
/// `show cert list own` (`<unit>/<file>: <description>`).
fn cert_line(unit: &str, path: &Path, c: &regen::Regenerated) -> String {
    let file = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    format!(
        "{unit}/{file}: {}, issued by {}, serial {}, names {}",
        c.subject,
        c.issuer,
        c.serial,
        c.names.join(",")
    )
}

/// `r`'s value, or `None` with its errors added to `errors`.
fn collect<T>(r: Result<T, Vec<String>>, errors: &mut Vec<String>) -> Option<T> {
    r.map_err(|e| errors.extend(e)).ok()
}

/// Every configuration problem on its own line.
fn config_errors(e: ConfigError) -> Vec<String> {
    match e {
        ConfigError::Invalid(problems) => problems.iter().map(ToString::to_string).collect(),
        other => vec![error_chain(&other)],
    }
}

/// An error and its causes, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

impl crate::admin::Operations for Live {
    fn regen_key(&self, key: crate::oauth::AuthzKey) -> Result<String, String> {
        crate::admin::Operations::regen_key(&*self.tokens, key)
    }

    fn key_hash(&self, key: crate::oauth::AuthzKey) -> String {
        crate::admin::Operations::key_hash(&*self.tokens, key)
    }

    fn expressway(&self) -> Option<&ExpresswayStore> {
        Some(&self.expressway)
    }

    fn sip_oauth_mode(&self) -> Option<bool> {
        Some(self.mode.get())
    }

    fn set_sip_oauth_mode(&self, on: bool) -> Result<(), String> {
        self.set_mode(on)
    }

    fn listening(&self) -> Vec<OpenSocket> {
        self.sockets()
    }

    fn regen_tomcat(&self) -> Result<String, String> {
        self.new_tomcat()
    }

    fn own_certs(&self) -> Result<String, String> {
        self.certificates()
    }

    fn reload(&self) -> Result<String, String> {
        self.reload_config().map_err(|errors| {
            let mut out = format!(
                "Configuration not reloaded: {} error(s); the running configuration stays in force.",
                errors.len()
            );
            for e in errors {
                out.push_str("\n  ");
                out.push_str(&e);
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Cluster {
        Settings::lab().unwrap().cluster
    }

    #[test]
    fn moved_listeners_are_the_tcp_ports_that_changed_and_the_rest_needs_a_restart() {
        let old = lab();
        assert_eq!(moved_listeners(&old, &old), Ok(Vec::new()));

        let mut new = lab();
        new.nodes[1].ports.https = 18443;
        new.nodes[0].ports.sip_mra_oauth = 15091;
        assert_eq!(
            moved_listeners(&old, &new),
            Ok(vec![
                (NodeId(0), Service::Sip(ListenerKind::MraOAuth), 15091),
                (NodeId(1), Service::Web(WebPort::Tomcat), 18443),
            ])
        );

        new.nodes[1].ports.tftp = 1069;
        new.nodes[0].ports.sip = 15060;
        let errors = moved_listeners(&old, &new).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("nodes.UCM-PUB.ports: "), "{errors:?}");
        assert!(
            errors[1].starts_with("nodes.UCM-SUB1.ports: "),
            "{errors:?}"
        );

        let mut swapped = lab();
        let p = &mut swapped.nodes[0].ports;
        (p.tftp_http, p.tftp_https) = (p.tftp_https, p.tftp_http);
        let errors = moved_listeners(&old, &swapped).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors
                .iter()
                .all(|e| e.starts_with("nodes.UCM-PUB.ports: ") && e.ends_with("needs a restart")),
            "{errors:?}"
        );

        let mut fewer = lab();
        fewer.nodes.pop();
        assert!(moved_listeners(&old, &fewer).unwrap_err()[0].starts_with("nodes: "));
    }
}
