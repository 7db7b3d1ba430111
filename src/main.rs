//! Command line: `serve` (the default), `check-config`, `certs`, `token issue`, `hash-password`,
//! `cli`.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};
use sip_oauth_registrar::auth::{AuthOptions, TokenAuthority};
use sip_oauth_registrar::config::Settings;
use sip_oauth_registrar::server::{self, BindOptions, ConfigSource, Server};
use tokio_util::sync::CancellationToken;

/// A SIP registrar that behaves on the wire like Cisco UCM in SIP OAuth mode.
///
/// With no arguments it serves the embedded lab cluster (config/lab.toml): two nodes on
/// 127.0.0.1 and 127.0.0.2, each with SIP 5060 (UDP+TCP), 5061 (TLS), 5090 (OAuth TLS) and
/// 5091 (MRA mutual TLS). Lab certificates and the token signing key are created in the state
/// directory on first start.
#[derive(Parser, Debug)]
#[command(version, about, long_about, after_long_help = LAB_HELP)]
struct Args {
    /// Cluster configuration (TOML). Default: the embedded lab cluster.
    #[arg(long, global = true, env = "SIP_OAUTH_CONFIG")]
    config: Option<PathBuf>,
    /// Where certificates, keys and other state live.
    /// Default: $XDG_STATE_HOME/sip-oauth-registrar, else ~/.local/state/sip-oauth-registrar.
    #[arg(long, global = true, env = "SIP_OAUTH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

const LAB_HELP: &str = "\
The lab cluster's devices (user -> device, line, profile):
  rado  -> CSFrado          1010  Jabber (CSF), SIP OAuth
  alice -> CSFalice         2001  Jabber (CSF), SIP OAuth
  bob   -> SEP001122334455  2002  Cisco 8861, SIP OAuth
  bob   -> SEP0011223344AA  2003  Cisco 8861, encrypted, certificate on 5061, no OAuth
  bob   -> SIPlegacy1       3001  third-party, non-secure, no credentials on 5060
  mallory (inactive) -> CSFmallory 2099
Every user's password is `lab`; the application user `admin` (password `lab`) may revoke tokens.

Examples:
  sip-oauth-registrar token issue --user rado --device CSFrado
  sip-oauth-registrar certs show
  curl --cacert <state-dir>/certs/lab-ca.pem https://127.0.0.1:8443/ssosp/oauth/token \\
    -d grant_type=password -d username=rado -d password=lab -d client_id=C$(printf '%064d' 1)
  sip-oauth-registrar cli -c \"show key authz signing\"";

/// The log filter when neither `--log` nor `RUST_LOG` gives one.
const DEFAULT_LOG: &str = "info";

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the registrar (the default command).
    Serve {
        /// Log filter, in RUST_LOG syntax (e.g. `debug`, `sip_oauth_registrar=trace`).
        #[arg(long, env = "RUST_LOG", default_value = DEFAULT_LOG)]
        log: String,
    },
    /// Load the configuration, certificates and keys, report every problem, and exit.
    CheckConfig,
    /// The lab certificates: `certs init` creates what is missing, `certs show` prints every
    /// certificate in use.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Read a password from standard input (its first line) and print its argon2id hash, for
    /// `password_hash` in `[[users]]` and `[[app_users]]`.
    HashPassword,
    /// UCM's admin prompt (`admin:`), talking to the running daemon over
    /// `<state-dir>/admin.sock`. Type `help` for the commands.
    #[cfg(unix)]
    Cli {
        /// Run one command and exit (no "Do you want to continue?" confirmation).
        #[arg(short = 'c', long = "command")]
        command: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Create the lab CA, the tomcat, CallManager and Expressway-C certificates and an LSC per
    /// secure legacy device, where missing (as the first start does). Never replaces a file;
    /// keys are mode 0600.
    Init,
    /// Print subject, SANs, issuer, validity and SHA-256 fingerprint of every certificate in
    /// use: tomcat, CallManager, the trust stores, the lab CA, Expressway-C and the LSCs.
    /// Fails when a configured file is missing or unreadable.
    Show,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Print an access token for a user's device, to send as
    /// `Proxy-Authorization: Bearer token="<token>"`.
    Issue {
        /// The user the token is for (the device's owner).
        #[arg(long)]
        user: String,
        /// The device the token will register.
        #[arg(long)]
        device: String,
        /// Lifetime in seconds. Default: the cluster's access token expiry timer.
        #[arg(long)]
        ttl: Option<u64>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        // `serve --log` takes RUST_LOG through clap; the bare command reads it the same way.
        None => {
            let log = std::env::var("RUST_LOG")
                .ok()
                .filter(|v| !v.trim().is_empty());
            serve(
                args.config.as_deref(),
                args.state_dir,
                log.as_deref().unwrap_or(DEFAULT_LOG),
            )
        }
        Some(Command::Serve { ref log }) => {
            serve(args.config.as_deref(), args.state_dir.clone(), log)
        }
        Some(Command::CheckConfig) => check_config(args.config.as_deref(), args.state_dir),
        Some(Command::HashPassword) => hash_password(),
        Some(Command::Certs { ref command }) => {
            certs(args.config.as_deref(), args.state_dir.clone(), command)
        }
        Some(Command::Token {
            command:
                TokenCommand::Issue {
                    ref user,
                    ref device,
                    ttl,
                },
        }) => issue_token(
            args.config.as_deref(),
            args.state_dir.clone(),
            user,
            device,
            ttl,
        ),
        #[cfg(unix)]
        Some(Command::Cli { ref command }) => {
            let state = state_dir(args.state_dir.clone());
            return sip_oauth_registrar::admin::client::cli(&state, command.as_deref());
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: Option<&Path>) -> anyhow::Result<Settings> {
    Ok(match config {
        Some(path) => Settings::read(path)?,
        None => Settings::lab()?,
    })
}

fn state_dir(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir;
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")));
    match base {
        Some(b) => b.join("sip-oauth-registrar"),
        None => PathBuf::from("state"),
    }
}

fn serve(config: Option<&Path>, state: Option<PathBuf>, log: &str) -> anyhow::Result<()> {
    // rustls warns on every client that sends an IP address as SNI (stunnel does): noise
    // at `info` under load, so its records start at `error` unless the filter names it.
    let filter = if log.contains("rustls") {
        log.to_owned()
    } else {
        format!("{log},rustls=error")
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter).context("--log")?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let settings = load(config)?;
    let state = state_dir(state);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        let (server, prepared) = Server::start(&settings, &state, BindOptions::default(), cancel.clone()).await?;
        server.set_config_source(config.map_or(ConfigSource::Lab, |p| ConfigSource::File(p.to_owned())));
        #[cfg(unix)]
        server.reload_on_sighup().context("installing the SIGHUP handler")?;
        let cluster = &settings.cluster.params;
        tracing::info!(
            cluster = %cluster.name,
            sip_oauth_mode = server.sip_oauth_mode(),
            state_dir = %state.display(),
            "sip-oauth-registrar started"
        );
        for path in &prepared.created {
            tracing::info!(path = %path.display(), "created");
        }
        for l in server.listeners() {
            tracing::info!(node = %l.node_name, listener = l.service.name(), transport = l.transport.name(), addr = %l.addr, "listening");
        }
        if let Some(ca) = &prepared.lab_ca {
            println!("Lab CA (trust it in your client): {}", ca.display());
        }
        println!("Token signing key hash: {}", server.tokens().key_hash());
        shutdown_signal().await;
        tracing::info!("shutting down");
        if !server.shutdown(Duration::from_secs(5)).await {
            tracing::warn!("some connections did not close within 5 s");
        }
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn check_config(config: Option<&Path>, state: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = load(config)?;
    let state = state_dir(state);
    let c = &settings.cluster;
    println!(
        "configuration ok: cluster {:?}, {} node(s), {} profile(s), {} user(s), {} device(s), {} Expressway-C entr(ies)",
        c.params.name,
        c.nodes.len(),
        c.profiles.len(),
        c.users.len(),
        c.devices.len(),
        c.expressway.len()
    );
    let mut problems = Vec::new();
    let lab_dir = state.join(server::LAB_PKI_DIR);
    let missing_lab = settings.tls.lab_pki && !lab_dir.join("lab-ca.pem").exists();
    if missing_lab {
        println!(
            "lab PKI not created yet: `serve` creates it in {} on first start",
            lab_dir.display()
        );
    } else {
        let expressway = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(c.expressway.clone()));
        match sip_oauth_registrar::tls::TlsConfigs::load(&settings, &state, expressway) {
            Ok(_) => println!("TLS certificates, keys and trust stores ok"),
            // Its message names the file and the reason.
            Err(e) => problems.push(e.to_string()),
        }
    }
    let encryption = match encryption_key(&settings, &state) {
        Ok(k) => k,
        Err(e) => {
            problems.push(format!("{e:#}"));
            [0; 32]
        }
    };
    let key = Settings::resolve(&state, &settings.tokens.signing_key);
    if key.exists() {
        match std::fs::read_to_string(&key)
            .map_err(anyhow::Error::from)
            .and_then(|pem| {
                Ok(TokenAuthority::new(
                    &c.params.uuid,
                    &pem,
                    &encryption,
                    token_options(&settings),
                )?)
            }) {
            Ok(t) => println!(
                "token keys ok (signing hash {}, encryption hash {})",
                t.key_hash(),
                t.encryption_key_hash()
            ),
            Err(e) => problems.push(format!("tokens.signing_key ({}): {e:#}", key.display())),
        }
    } else {
        println!(
            "token signing key not created yet: `serve` creates {}",
            key.display()
        );
    }
    if !settings.identity_providers.is_empty() {
        // Files are checked and JWKS URLs fetched (an unreachable URL is a warning, as at start).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let issuers = settings.identity_providers.clone();
        match runtime.block_on(sip_oauth_registrar::auth::external::ExternalIssuers::load(
            issuers, &state,
        )) {
            Ok(_) => println!(
                "{} identity provider(s) ok",
                settings.identity_providers.len()
            ),
            // Its message already carries the OS's or the parser's reason.
            Err(e) => problems.push(format!("identity_providers: {e}")),
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// The encryption key `serve` uses, if it exists yet; a zero key (nothing to decrypt) before the
/// first start, since `check-config` creates nothing.
fn encryption_key(settings: &Settings, state: &Path) -> anyhow::Result<[u8; 32]> {
    let path = Settings::resolve(state, &settings.tokens.encryption_key);
    if !path.exists() {
        return Ok([0; 32]);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("tokens.encryption_key ({})", path.display()))?;
    sip_oauth_registrar::oauth::service::parse_encryption_key(&text)
        .map_err(|reason| anyhow::anyhow!("tokens.encryption_key ({}): {reason}", path.display()))
}

fn token_options(settings: &Settings) -> AuthOptions {
    AuthOptions {
        leeway_secs: settings.tokens.leeway_secs,
        cache_capacity: 1,
    }
}

fn issue_token(
    config: Option<&Path>,
    state: Option<PathBuf>,
    user: &str,
    device: &str,
    ttl: Option<u64>,
) -> anyhow::Result<()> {
    let settings = load(config)?;
    let state = state_dir(state);
    let c = &settings.cluster;
    let Some(id) = c.device_by_name(device) else {
        bail!("no device {device:?} in the configuration");
    };
    let d = c.device(id);
    match c.user(user) {
        None => bail!("no user {user:?} in the configuration"),
        Some(u) if !u.active => bail!("user {user:?} is not active"),
        Some(_) if *d.owner != *user => {
            bail!("device {device:?} belongs to {:?}, not {user:?}", &*d.owner)
        }
        Some(_) => {}
    }
    // The same key `serve` uses: created here if this runs first.
    let prepared = server::prepare_state(&settings, &state)?;
    let tokens = TokenAuthority::new(
        &c.params.uuid,
        &prepared.signing_key_pem,
        &prepared.encryption_key,
        token_options(&settings),
    )?;
    let ttl = ttl.unwrap_or_else(|| u64::from(c.params.access_token_expiry_minutes) * 60);
    // A revocation is remembered this long; a token living longer would outlive it.
    let horizon = server::revocation_horizon(c);
    if ttl > horizon {
        bail!("--ttl {ttl} is longer than the {horizon} s a revocation is remembered");
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let issued = tokens.issue(user, &client_id(device), ttl, now)?;
    eprintln!(
        "access token for user {user:?}, device {device:?}, expires in {ttl} s (token id {})",
        issued.token_id
    );
    println!("{}", issued.token);
    Ok(())
}

fn certs(
    config: Option<&Path>,
    state: Option<PathBuf>,
    command: &CertsCommand,
) -> anyhow::Result<()> {
    use sip_oauth_registrar::pki::certs;
    let settings = load(config)?;
    let state = state_dir(state);
    match command {
        CertsCommand::Init => {
            print!("{}", certs::init(&settings, &state)?.render());
            Ok(())
        }
        CertsCommand::Show => {
            let report = certs::show(&settings, &state, SystemTime::now());
            print!("{}", report.text);
            if !report.problems.is_empty() {
                bail!(
                    "{} problem(s):\n  {}",
                    report.problems.len(),
                    report.problems.join("\n  ")
                );
            }
            Ok(())
        }
    }
}

fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("no password on standard input");
    }
    let phc = sip_oauth_registrar::oauth::password::hash(password).map_err(anyhow::Error::msg)?;
    println!("{phc}");
    Ok(())
}

/// UCM client ids are `C` + 64 hex; the lab derives one per device so it is stable.
fn client_id(device: &str) -> String {
    format!("C{}", hex::encode(Sha256::digest(device.as_bytes())))
}
