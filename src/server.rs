//! The daemon: prepares the state directory (lab PKI, token key), loads TLS and keys, binds
//! every listener of every node, then serves until cancelled. All sockets are bound before
//! anything is spawned, so a port in use fails the start instead of half-running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod listeners;
mod live;

pub use live::ConfigSource;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::external::ExternalIssuers;
use crate::auth::{AuthOptions, Authenticator, Authenticators, TokenAuthority};
use crate::cluster::{Cluster, LiveMode, NodeId, NodePorts};
use crate::config::Settings;
use crate::expressway::ExpresswayStore;
use crate::net::{ListenerKind, Service, Transport, WebPort};
use crate::oauth::service::{parse_encryption_key, unix_now};
use crate::oauth::store::TokenStore;
use crate::oauth::{KeyFiles, TokenService};
use crate::pki;
use crate::provisioning::Provisioning;
use crate::registrar::{Registrar, Store};
use crate::tls::{TlsConfigs, TlsError, TlsSlot, TlsSlots};
use crate::transport::{self, App};
use listeners::{Entry, StreamSet};
use live::Live;

/// Where the lab PKI is written, under the state directory; `config/lab.toml` points there.
pub const LAB_PKI_DIR: &str = pki::LAB_DIR;

/// How to bind.
#[derive(Debug, Clone, Copy, Default)]
pub struct BindOptions {
    /// Bind every listener on port 0 (tests). Config files then publish the ports bound, so a
    /// client can follow its file to the listeners.
    pub ephemeral_ports: bool,
}

/// A listener the server is serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundListener {
    pub node: NodeId,
    pub node_name: Arc<str>,
    pub service: Service,
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// What the state directory holds after [`prepare_state`].
#[derive(Debug, Clone)]
pub struct PreparedState {
    /// Files created by this start (empty on later starts).
    pub created: Vec<PathBuf>,
    /// The lab CA a client must trust, when the lab PKI is on.
    pub lab_ca: Option<PathBuf>,
    pub signing_key_pem: String,
    /// The access tokens' JWE key (`tokens.encryption_key`).
    pub encryption_key: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("lab PKI")]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("tokens.signing_key")]
    Key(#[from] crate::auth::KeyError),
    #[error("tokens.encryption_key ({}): {reason}", path.display())]
    EncryptionKey { path: PathBuf, reason: String },
    #[error("the Expressway-C table")]
    Expressway(#[from] crate::expressway::ExpresswayError),
    #[error("the SIP OAuth mode file")]
    Mode(#[from] crate::cluster::mode::ModeFileError),
    #[error("tokens.refresh_store")]
    TokenStore(#[from] crate::oauth::store::StoreError),
    #[error("identity_providers")]
    IdentityProviders(#[from] crate::auth::external::ExternalError),
    #[cfg(unix)]
    #[error("admin interface")]
    Admin(#[from] crate::admin::AdminError),
    #[error("cannot bind {kind} {transport} listener of node {node} on {addr}")]
    Bind {
        node: Arc<str>,
        kind: &'static str,
        transport: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running daemon.
pub struct Server {
    registrar: Registrar,
    tokens: Arc<TokenAuthority>,
    token_service: Arc<TokenService>,
    provisioning: Arc<Provisioning>,
    expressway: Arc<ExpresswayStore>,
    /// What changes while it runs: mode, listeners, TLS, the configuration.
    live: Arc<Live>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Creates what a first start needs and is missing: the lab CA and certificates (when
/// `tls.lab_pki` is on) and the token signing key. Existing files are never replaced.
pub fn prepare_state(settings: &Settings, state_dir: &Path) -> Result<PreparedState, StartError> {
    let mut created = Vec::new();
    let mut lab_ca = None;
    if settings.tls.lab_pki {
        let (files, made) = pki::ensure_lab_pki(&lab_plan(&settings.cluster, state_dir))?;
        created.extend(made);
        lab_ca = Some(files.ca_cert);
    }
    let key_path = Settings::resolve(state_dir, &settings.tokens.signing_key);
    let (signing_key_pem, made) =
        pki::ensure_secret_file(&key_path, pki::generate_rsa_signing_key_pem)?;
    if made {
        created.push(key_path);
    }
    let key_path = Settings::resolve(state_dir, &settings.tokens.encryption_key);
    let (text, made) = pki::ensure_secret_file(&key_path, || {
        Ok(format!(
            "{}\n",
            hex::encode(crate::auth::generate_encryption_key())
        ))
    })?;
    let encryption_key =
        parse_encryption_key(&text).map_err(|reason| StartError::EncryptionKey {
            path: key_path.clone(),
            reason,
        })?;
    if made {
        created.push(key_path);
    }
    Ok(PreparedState {
        created,
        lab_ca,
        signing_key_pem,
        encryption_key,
    })
}

/// Where the lab PKI lives and what it names (see [`pki::lab_plan`]).
pub use crate::pki::lab_plan;

impl Server {
    /// Prepares state, loads TLS and keys, binds everything, and starts serving.
    pub async fn start(
        settings: &Settings,
        state_dir: &Path,
        bind: BindOptions,
        cancel: CancellationToken,
    ) -> Result<(Self, PreparedState), StartError> {
        let prepared = prepare_state(settings, state_dir)?;
        // The table's file wins over `[[expressway_c]]` when present (crate::expressway).
        let expressway = Arc::new(ExpresswayStore::open(
            &state_dir.join(crate::expressway::FILE),
            &settings.cluster.params.uuid,
            &settings.cluster.expressway,
        )?);
        let tls = TlsConfigs::load(settings, state_dir, expressway.table())?;
        let tokens = Arc::new(TokenAuthority::new(
            &settings.cluster.params.uuid,
            &prepared.signing_key_pem,
            &prepared.encryption_key,
            AuthOptions {
                leeway_secs: settings.tokens.leeway_secs,
                cache_capacity: settings.tokens.cache_entries,
            },
        )?);
        let cluster = Arc::new(settings.cluster.clone());
        // The mode file (`utils sipOAuth-mode`) wins over the configuration.
        let mode_on = crate::cluster::mode::effective(state_dir, cluster.params.sip_oauth_mode)?;
        let mode = LiveMode::new(mode_on);
        let store = Store::with_limits(
            cluster.devices.len(),
            settings.limits.max_bindings,
            settings.limits.max_bindings_per_aor,
        );
        // Outside issuers: files are read and JWKS URLs fetched once now (an unreachable one is
        // retried in the background, not fatal).
        let outside = if settings.identity_providers.is_empty() {
            None
        } else {
            Some(ExternalIssuers::load(settings.identity_providers.clone(), state_dir).await?)
        };
        let authenticators = Arc::new(Authenticators {
            cluster: tokens.clone(),
            outside: outside.clone(),
        });
        // The config files check tokens with the registrar's own authenticator.
        let provisioning = Arc::new(
            Provisioning::new(
                cluster.clone(),
                authenticators.clone() as Arc<dyn Authenticator>,
            )
            .with_mode(mode.clone()),
        );
        let registrar = Registrar::new(cluster.clone(), store.clone(), authenticators.clone())
            .with_mode(mode.clone());

        let token_store = TokenStore::open(
            &Settings::resolve(state_dir, &settings.tokens.refresh_store),
            unix_now(),
            revocation_horizon(&cluster),
        )?;
        let token_service = Arc::new(
            TokenService::new(
                cluster.clone(),
                tokens.clone(),
                token_store,
                KeyFiles {
                    signing: Settings::resolve(state_dir, &settings.tokens.signing_key),
                    encryption: Settings::resolve(state_dir, &settings.tokens.encryption_key),
                },
            )
            .with_redirect_uris(settings.tokens.redirect_uris.clone()),
        );
        let tls = TlsSlots::new(tls);
        let uds = Arc::new(crate::uds::Uds::new(
            token_service.clone(),
            authenticators,
            provisioning.clone(),
        ));
        let web = crate::web::finish(
            crate::oauth::http::router(token_service.clone())
                .merge(crate::uds::router(uds))
                .merge(crate::axl::router(Arc::new(crate::axl::Axl {
                    tokens: token_service.clone(),
                    expressway: expressway.clone(),
                    sip_oauth_mode: mode.clone(),
                }))),
            &settings.limits,
        );
        let tftp_http = crate::web::finish(
            crate::provisioning::http::router(provisioning.clone(), WebPort::TftpHttp),
            &settings.limits,
        );
        let tftp_https = crate::web::finish(
            crate::provisioning::http::router(provisioning.clone(), WebPort::TftpHttps),
            &settings.limits,
        );

        let mut udp = Vec::new();
        let mut tftp = Vec::new();
        let mut entries = Vec::new();
        let mut listeners = Vec::new();
        for (i, node) in cluster.nodes.iter().enumerate() {
            let id = NodeId(i as u16);
            let port = |p: u16| if bind.ephemeral_ports { 0 } else { p };
            let at = |p: u16| SocketAddr::new(node.address, port(p));
            let bind_error =
                |service: Service, transport: Transport, addr, source| StartError::Bind {
                    node: node.name.clone(),
                    kind: service.name(),
                    transport: transport.name(),
                    addr,
                    source,
                };
            let mut record = |service, transport, addr| {
                listeners.push(BoundListener {
                    node: id,
                    node_name: node.name.clone(),
                    service,
                    transport,
                    addr,
                });
            };

            let addr = at(node.ports.sip);
            let sip = Service::Sip(ListenerKind::Sip);
            let socket = transport::bind_udp(addr, &settings.limits)
                .map_err(|e| bind_error(sip, Transport::Udp, addr, e))?;
            record(sip, Transport::Udp, local(&socket.local_addr(), addr));
            udp.push((socket, id));

            let addr = at(node.ports.tftp);
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|e| bind_error(Service::Tftp, Transport::Udp, addr, e))?;
            record(
                Service::Tftp,
                Transport::Udp,
                local(&socket.local_addr(), addr),
            );
            tftp.push(socket);

            // The OAuth ports are bound whatever the mode, and listen only while it is on:
            // `utils sipOAuth-mode enable` then opens the ports chosen here.
            let sip_app = |kind| App::Sip(kind, registrar.clone());
            let apps: Vec<(App, u16, Option<TlsSlot>)> = vec![
                (sip_app(ListenerKind::Sip), node.ports.sip, None),
                (
                    sip_app(ListenerKind::SipSecure),
                    node.ports.sip_secure,
                    Some(tls.secure.clone()),
                ),
                (
                    sip_app(ListenerKind::OAuth),
                    node.ports.sip_oauth,
                    Some(tls.oauth.clone()),
                ),
                (
                    sip_app(ListenerKind::MraOAuth),
                    node.ports.sip_mra_oauth,
                    Some(tls.mra.clone()),
                ),
                (
                    App::Web(WebPort::Tomcat, web.clone()),
                    node.ports.https,
                    Some(tls.web.clone()),
                ),
                (
                    App::Web(WebPort::TftpHttp, tftp_http.clone()),
                    node.ports.tftp_http,
                    None,
                ),
                (
                    App::Web(WebPort::TftpHttps, tftp_https.clone()),
                    node.ports.tftp_https,
                    Some(tls.web.clone()),
                ),
            ];
            for (app, p, slot) in apps {
                let transport = if slot.is_some() {
                    Transport::Tls
                } else {
                    Transport::Tcp
                };
                let addr = at(p);
                let service = app.service();
                let entry = Entry::bind(id, node.name.clone(), app, slot, addr)
                    .map_err(|e| bind_error(service, transport, addr, e))?;
                entries.push(entry);
            }
        }

        let tasks = TaskTracker::new();
        // Every listener holds a descriptor, and so does every TFTP transfer (its own socket).
        let tftp_limits = crate::tftp::TftpLimits::default();
        let admission = transport::Admission::new(
            connection_budget(
                settings.limits.max_connections,
                listeners.len() + entries.len() + tftp.len() * tftp_limits.max_transfers,
            ),
            settings.limits.max_connections_per_source,
        );
        // Its own token: a start that fails past here stops what it opened.
        let streams_cancel = cancel.child_token();
        let live = Arc::new(Live {
            state_dir: state_dir.to_owned(),
            bind,
            source: std::sync::Mutex::new(None),
            settings: std::sync::Mutex::new(settings.clone()),
            started: settings.clone(),
            tokens: token_service.clone(),
            expressway: expressway.clone(),
            provisioning: provisioning.clone(),
            mode: mode.clone(),
            registrar: registrar.clone(),
            tls: tls.clone(),
            streams: StreamSet::new(
                entries,
                settings.limits,
                streams_cancel.clone(),
                tasks.clone(),
                admission,
            ),
            udp: listeners,
            changing: std::sync::Mutex::new(()),
        });

        // Before anything is served: config files publish the ports just bound.
        provisioning.publish_ports(live.bound_ports(&cluster));

        // Last to bind: it replaces a stale socket, which must not happen for a start that then
        // fails on a port in use.
        #[cfg(unix)]
        let admin =
            crate::admin::bind(state_dir, live.clone() as Arc<dyn crate::admin::Operations>)
                .await?;

        if let Some(e) = live
            .streams
            .open(|e| mode_on || !live::is_oauth(e))
            .into_iter()
            .next()
        {
            streams_cancel.cancel();
            return Err(StartError::Bind {
                node: e.listener.node_name,
                kind: e.listener.service.name(),
                transport: e.listener.transport.name(),
                addr: e.listener.addr,
                source: e.source,
            });
        }

        #[cfg(unix)]
        tasks.spawn(admin.serve(cancel.child_token()));
        let codec_limits = transport::codec::Limits {
            max_message_bytes: settings.limits.max_message_bytes,
            max_headers: settings.limits.max_headers,
        };
        tasks.spawn(store.purge_task(cancel.child_token()));
        if let Some(outside) = &outside {
            tasks.spawn(outside.refresh_task(cancel.child_token()));
        }
        tasks.spawn(sweep_token_cache(tokens.clone(), cancel.child_token()));
        for (socket, node) in udp {
            tasks.spawn(transport::serve_udp(
                socket,
                node,
                registrar.clone(),
                codec_limits,
                cancel.child_token(),
            ));
        }
        // TFTP serves what 6970 serves: non-OAuth devices' files, rendered on request.
        let files: crate::tftp::FileSource = {
            let provisioning = provisioning.clone();
            Arc::new(move |name: &str| provisioning.file(name))
        };
        for socket in tftp {
            tasks.spawn(crate::tftp::serve(
                socket,
                files.clone(),
                tftp_limits,
                cancel.child_token(),
                tasks.clone(),
            ));
        }
        Ok((
            Self {
                registrar,
                tokens,
                token_service,
                provisioning,
                expressway,
                live,
                cancel,
                tasks,
            },
            prepared,
        ))
    }

    /// The listeners accepting now (the OAuth ones only while the mode is on).
    pub fn listeners(&self) -> Vec<BoundListener> {
        self.live
            .listeners()
            .into_iter()
            .filter_map(|(l, open)| open.then_some(l))
            .collect()
    }

    /// The cluster's SIP OAuth mode now.
    pub fn sip_oauth_mode(&self) -> bool {
        self.live.mode.get()
    }

    /// Where `utils reload config` and SIGHUP read the configuration; unset, they refuse.
    pub fn set_config_source(&self, source: ConfigSource) {
        *self
            .live
            .source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(source);
    }

    /// Reloads the configuration (what SIGHUP does): `Ok` with what changed, or every error
    /// found, the running configuration staying in force.
    pub async fn reload(&self) -> Result<String, Vec<String>> {
        let live = self.live.clone();
        tokio::task::spawn_blocking(move || live.reload_config())
            .await
            .unwrap_or_else(|e| Err(vec![format!("reload task failed: {e}")]))
    }

    /// Reloads on every SIGHUP until shutdown, logging the outcome.
    #[cfg(unix)]
    pub fn reload_on_sighup(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup())?;
        let live = self.live.clone();
        let cancel = self.cancel.child_token();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    got = hangups.recv() => if got.is_none() { return },
                }
                tracing::info!("SIGHUP: reloading the configuration");
                let live = live.clone();
                // The outcome is logged by the reload itself.
                let _ = tokio::task::spawn_blocking(move || live.reload_config()).await;
            }
        });
        Ok(())
    }

    /// The address of one listener, while it accepts (the OAuth ones only in SIP OAuth mode;
    /// closed, their ports stay reserved for `utils sipOAuth-mode enable`).
    pub fn addr(
        &self,
        node: NodeId,
        kind: ListenerKind,
        transport: Transport,
    ) -> Option<SocketAddr> {
        self.listeners()
            .into_iter()
            .find(|l| l.node == node && l.service == Service::Sip(kind) && l.transport == transport)
            .map(|l| l.addr)
    }

    /// The address of one HTTP side listener.
    pub fn web_addr(&self, node: NodeId, port: WebPort) -> Option<SocketAddr> {
        self.live
            .listeners()
            .into_iter()
            .map(|(l, _)| l)
            .find(|l| l.node == node && l.service == Service::Web(port))
            .map(|l| l.addr)
    }

    /// The config files (HTTP 6970/6971); the TFTP server serves [`Provisioning::file`].
    pub fn provisioning(&self) -> &Arc<Provisioning> {
        &self.provisioning
    }

    /// Makes `configs` the TLS configuration of every next handshake on every listener;
    /// established connections keep theirs.
    pub fn swap_tls(&self, configs: TlsConfigs) {
        self.live.tls.swap(configs);
    }

    /// The Expressway-C table (admin CLI, AXL, the 5091 verifier).
    pub fn expressway(&self) -> &Arc<ExpresswayStore> {
        &self.expressway
    }

    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    pub fn tokens(&self) -> &Arc<TokenAuthority> {
        &self.tokens
    }

    /// The OAuth token service (8443 and the admin commands act on it).
    pub fn token_service(&self) -> &Arc<TokenService> {
        &self.token_service
    }

    /// Stops accepting, closes connections and waits for every task, up to `deadline`.
    /// Returns false when tasks were still running at the deadline.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        self.cancel.cancel();
        self.tasks.close();
        tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_ok()
    }
}

/// How often expired tokens leave the verified-token cache. A full cache drops them anyway;
/// the sweep returns their memory sooner after a load test.
const TOKEN_CACHE_SWEEP: Duration = Duration::from_secs(600);

async fn sweep_token_cache(tokens: Arc<TokenAuthority>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(TOKEN_CACHE_SWEEP);
    tick.tick().await;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {
                let dropped = tokens.purge_expired(unix_now());
                tracing::debug!(dropped, "expired tokens swept from the cache");
            }
        }
    }
}

/// How long a revocation must be remembered: until every token it refuses has expired. Access
/// tokens from `token issue --ttl` may outlive the enterprise timer, so the refresh timer (the
/// longer of the two) bounds it.
pub fn revocation_horizon(cluster: &Cluster) -> u64 {
    let p = &cluster.params;
    u64::from(p.access_token_expiry_minutes) * 60
        + u64::from(
            p.jabber_refresh_token_expiry_days
                .max(p.phone_refresh_token_expiry_days),
        ) * 86_400
}

/// File descriptors kept free of connections: listeners, the state files, logs, and slack.
const FD_RESERVE: u64 = 64;

/// Raises the soft open-file limit to fit `wanted` connections; when the hard limit is lower,
/// serves fewer, so accept never fails with EMFILE (which would refuse clients on every
/// listener, not just the busy one).
fn connection_budget(wanted: usize, other_sockets: usize) -> usize {
    let reserve = FD_RESERVE + other_sockets as u64;
    let want = wanted as u64 + reserve;
    match rlimit::increase_nofile_limit(want) {
        Ok(got) if got >= want => wanted,
        Ok(got) => {
            let fit = got.saturating_sub(reserve).max(1) as usize;
            tracing::warn!(
                wanted,
                open_file_limit = got,
                serving = fit,
                "the open-file limit is below limits.max_connections; serving fewer connections"
            );
            fit
        }
        // Not a platform with rlimits: trust the configuration.
        Err(_) => wanted,
    }
}

/// The ports config files publish: each node's configured ports, overwritten by the SIP ports
/// actually bound. In a daemon they are the same; on port 0 (tests) they are what works. UDP
/// and TCP 5060 are bound apart on port 0, so `sipPort` then names the UDP one. Ports not
/// bound (the OAuth ports with the mode off, the ethernet phone port) stay as configured.
fn bound_ports(cluster: &Cluster, listeners: &[BoundListener]) -> Vec<NodePorts> {
    let mut ports: Vec<NodePorts> = cluster.nodes.iter().map(|n| n.ports).collect();
    for l in listeners {
        let Some(p) = ports.get_mut(usize::from(l.node.0)) else {
            continue;
        };
        let port = l.addr.port();
        match (l.service, l.transport) {
            (Service::Sip(ListenerKind::Sip), Transport::Udp) => p.sip = port,
            (Service::Sip(ListenerKind::SipSecure), _) => p.sip_secure = port,
            (Service::Sip(ListenerKind::OAuth), _) => p.sip_oauth = port,
            (Service::Sip(ListenerKind::MraOAuth), _) => p.sip_mra_oauth = port,
            (Service::Web(WebPort::Tomcat), _) => p.https = port,
            (Service::Web(WebPort::TftpHttp), _) => p.tftp_http = port,
            (Service::Web(WebPort::TftpHttps), _) => p.tftp_https = port,
            (Service::Tftp, _) => p.tftp = port,
            (Service::Sip(ListenerKind::Sip), _) => {}
        }
    }
    ports
}

fn local(bound: &std::io::Result<SocketAddr>, requested: SocketAddr) -> SocketAddr {
    *bound.as_ref().unwrap_or(&requested)
}
