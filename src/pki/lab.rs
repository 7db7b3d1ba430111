//! The lab PKI on disk: which files exist under the certificates directory, how missing ones are
//! issued from the lab CA, and how files are written (atomically, keys private) so that a restart
//! never loses or half-writes anything a user was given.

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::KeyPair;

use super::{Authority, PkiError};

/// Prefix of the lab CA's common name; the first node name follows in parentheses so CAs of
/// different labs can be told apart in a trust store.
const LAB_CA_NAME: &str = "sip-oauth-registrar lab CA";
/// Organizational units that tell the two server certificates apart (both name the node, as
/// on UCM).
const TOMCAT_UNIT: &str = "tomcat";
const CALLMANAGER_UNIT: &str = "CallManager";

/// What the lab PKI must cover.
#[derive(Debug, Clone)]
pub struct LabPkiPlan {
    /// Directory holding the files, e.g. `<state-dir>/certs`.
    pub dir: PathBuf,
    /// Node addresses and names plus "localhost": the SANs of the tomcat and CallManager
    /// certificates.
    pub server_names: Vec<String>,
    /// The first is the CN, all are DNS SANs of the Expressway-C client certificate.
    pub expressway_names: Vec<String>,
    /// Devices that get a device certificate (LSC) with CN = the name: those the legacy secure
    /// port (5061) admits by certificate.
    pub devices: Vec<String>,
}

/// Paths of the lab files (all under the plan's directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabPkiFiles {
    /// `lab-ca.pem`: the lab CA certificate; trust it in clients and as tomcat-trust.
    pub ca_cert: PathBuf,
    /// `lab-ca-key.pem`.
    pub ca_key: PathBuf,
    /// `tomcat.pem`: presented on the OAuth ports (5090, 5091).
    pub tomcat_cert: PathBuf,
    /// `tomcat-key.pem`.
    pub tomcat_key: PathBuf,
    /// `callmanager.pem`: presented on the legacy secure port (5061).
    pub callmanager_cert: PathBuf,
    /// `callmanager-key.pem`.
    pub callmanager_key: PathBuf,
    /// `expressway-c.pem`: client (and server) certificate for an emulated Expressway-C.
    pub expressway_cert: PathBuf,
    /// `expressway-c-key.pem`.
    pub expressway_key: PathBuf,
    /// `devices/`: one LSC per secure legacy device, `<name>.pem` and its key `<name>.key`
    /// (different extensions, so no device name can make one device's file another's).
    pub devices_dir: PathBuf,
}

impl LabPkiFiles {
    /// The standard file names under `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("lab-ca.pem"),
            ca_key: dir.join("lab-ca-key.pem"),
            tomcat_cert: dir.join("tomcat.pem"),
            tomcat_key: dir.join("tomcat-key.pem"),
            callmanager_cert: dir.join("callmanager.pem"),
            callmanager_key: dir.join("callmanager-key.pem"),
            expressway_cert: dir.join("expressway-c.pem"),
            expressway_key: dir.join("expressway-c-key.pem"),
            devices_dir: dir.join("devices"),
        }
    }

    /// The LSC of `device`: `devices/<device>.pem`.
    pub fn device_cert(&self, device: &str) -> PathBuf {
        self.devices_dir.join(format!("{device}.pem"))
    }

    /// The LSC's key: `devices/<device>.key` (PKCS#8 PEM).
    pub fn device_key(&self, device: &str) -> PathBuf {
        self.devices_dir.join(format!("{device}.key"))
    }
}

#[derive(Clone, Copy)]
enum Leaf<'a> {
    Tomcat,
    CallManager,
    Expressway,
    Device(&'a str),
}

/// What a certificate/key pair on disk needs.
enum PairState {
    Complete,
    /// The key survived (e.g. a crash between the two writes): certify it, keep it.
    NeedsCert,
    NeedsBoth,
}

fn pair_state(cert: &Path, key: &Path) -> Result<PairState, PkiError> {
    match (exists(cert)?, exists(key)?) {
        (true, true) => Ok(PairState::Complete),
        (false, true) => Ok(PairState::NeedsCert),
        (false, false) => Ok(PairState::NeedsBoth),
        (true, false) => Err(PkiError::IncompletePair {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
    }
}

/// Held while the lab PKI is checked and completed; stays behind, empty.
pub const LOCK_FILE: &str = ".lab-pki.lock";

/// Makes sure the lab CA, the tomcat, CallManager and Expressway-C certificates and the LSC of
/// every device in `plan.devices` exist under `plan.dir`. Idempotent: creates the directory (mode 0700 when new) and only the files that
/// are missing; an existing CA is loaded to issue missing leaves, and no existing file is ever
/// overwritten. Keys are written with mode 0600, every file atomically (temporary file in the
/// same directory, then rename), a key before its certificate.
///
/// Leaf subjects: tomcat `OU=tomcat, CN=<node>`, CallManager `OU=CallManager, CN=<node>` where
/// `<node>` is the first server name that is neither an IP address nor "localhost" (else the
/// first name); both carry every server name as a SAN. Expressway-C: `CN=<first name>`, all
/// names as DNS SANs. LSC: `CN=<device>`, no SAN, EKU clientAuth and serverAuth (like a CAPF
/// LSC). CA: `CN=sip-oauth-registrar lab CA (<node>)`.
///
/// A certificate whose key is missing is an error ([`PkiError::IncompletePair`]), except the
/// lab CA certificate when nothing needs issuing (the CA key may be kept offline). A key whose
/// certificate is missing gets a new certificate for the same key.
///
/// Returns the paths and the files created by this call, in creation order.
pub fn ensure_lab_pki(plan: &LabPkiPlan) -> Result<(LabPkiFiles, Vec<PathBuf>), PkiError> {
    for name in &plan.devices {
        if !file_safe(name) {
            return Err(PkiError::BadDeviceName { name: name.clone() });
        }
    }
    create_private_dir_pki(&plan.dir)?;
    // A first start and a `certs init` may run at once: without the lock both could find a
    // file missing, and a CA key of one run could end up next to the other's certificate.
    let lock_path = plan.dir.join(LOCK_FILE);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    let files = LabPkiFiles::in_dir(&plan.dir);
    if !plan.devices.is_empty() {
        create_private_dir_pki(&files.devices_dir)?;
    }
    let mut created = Vec::new();
    let node = node_name(&plan.server_names);

    let mut leaves = vec![
        (
            Leaf::Tomcat,
            files.tomcat_cert.clone(),
            files.tomcat_key.clone(),
        ),
        (
            Leaf::CallManager,
            files.callmanager_cert.clone(),
            files.callmanager_key.clone(),
        ),
        (
            Leaf::Expressway,
            files.expressway_cert.clone(),
            files.expressway_key.clone(),
        ),
    ];
    for name in &plan.devices {
        leaves.push((
            Leaf::Device(name),
            files.device_cert(name),
            files.device_key(name),
        ));
    }
    let mut pending = Vec::new();
    for (leaf, cert, key) in leaves {
        match pair_state(&cert, &key)? {
            PairState::Complete => {
                if matches!(leaf, Leaf::Device(_)) {
                    warn_if_exposed(&key);
                }
            }
            state => pending.push((leaf, cert, key, state)),
        }
    }

    let ca_state = match pair_state(&files.ca_cert, &files.ca_key) {
        Err(_) if pending.is_empty() => PairState::Complete,
        other => other?,
    };
    let ca = match ca_state {
        PairState::Complete if pending.is_empty() => None,
        PairState::Complete => {
            let cert_pem = read_text(&files.ca_cert)?;
            let key_pem = read_text(&files.ca_key)?;
            let ca = Authority::from_pem(&cert_pem, &key_pem).map_err(|e| match e {
                PkiError::BadCa { reason } => PkiError::BadPem {
                    path: files.ca_cert.clone(),
                    reason: format!("lab CA (with {}): {reason}", files.ca_key.display()),
                },
                other => other,
            })?;
            Some(ca)
        }
        PairState::NeedsCert => {
            let (key, key_pem) = read_key(&files.ca_key)?;
            let ca = Authority::self_signed(&lab_ca_name(&node), key, key_pem)?;
            write_new_file(&files.ca_cert, ca.cert_pem().as_bytes(), false)?;
            created.push(files.ca_cert.clone());
            Some(ca)
        }
        PairState::NeedsBoth => {
            let ca = Authority::generate(&lab_ca_name(&node))?;
            write_new_file(&files.ca_key, ca.key_pem().as_bytes(), true)?;
            created.push(files.ca_key.clone());
            write_new_file(&files.ca_cert, ca.cert_pem().as_bytes(), false)?;
            created.push(files.ca_cert.clone());
            Some(ca)
        }
    };

    if let Some(ca) = ca {
        let (devices, servers): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(leaf, ..)| matches!(leaf, Leaf::Device(_)));
        for item in servers {
            created.extend(issue_leaf(&ca, plan, &node, item, Durability::FileAndDir)?);
        }
        created.extend(issue_devices(
            &ca,
            plan,
            &node,
            devices,
            &files.devices_dir,
        )?);
    }

    for key in [
        &files.ca_key,
        &files.tomcat_key,
        &files.callmanager_key,
        &files.expressway_key,
    ] {
        warn_if_exposed(key);
    }
    Ok((files, created))
}

type Pending<'a> = (Leaf<'a>, PathBuf, PathBuf, PairState);

/// How much of a write is made durable before returning.
#[derive(Clone, Copy)]
enum Durability {
    /// The file and the rename (the directory): one file on its own.
    FileAndDir,
    /// The file only; the caller syncs the directory once after a batch.
    File,
}

/// Threads issuing LSCs. Writing them is bound by fsync latency rather than CPU (a few
/// milliseconds each on a virtual disk, four per device when done one by one), and concurrent
/// fsyncs share journal commits.
const DEVICE_WORKERS: usize = 8;

/// Issues the missing LSCs on [`DEVICE_WORKERS`] threads, each file synced before its rename
/// and the directory once at the end (a crash in between loses whole files, never part of
/// one: the next start issues them again). Returns the files created, in `devices` order.
fn issue_devices(
    ca: &Authority,
    plan: &LabPkiPlan,
    node: &str,
    devices: Vec<Pending<'_>>,
    dir: &Path,
) -> Result<Vec<PathBuf>, PkiError> {
    if devices.is_empty() {
        return Ok(Vec::new());
    }
    let chunk = devices.len().div_ceil(DEVICE_WORKERS);
    let mut chunks: Vec<Vec<Pending<'_>>> = Vec::new();
    let mut rest = devices.into_iter().peekable();
    while rest.peek().is_some() {
        chunks.push(rest.by_ref().take(chunk).collect());
    }
    let results: Vec<Result<Vec<PathBuf>, PkiError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    let mut made = Vec::new();
                    for item in chunk {
                        made.extend(issue_leaf(ca, plan, node, item, Durability::File)?);
                    }
                    Ok(made)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    // Durable renames for what was written, even if a worker failed.
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
    let mut created = Vec::new();
    for r in results {
        created.extend(r?);
    }
    Ok(created)
}

/// Issues one certificate (and its key unless the key survived); returns the files written.
fn issue_leaf(
    ca: &Authority,
    plan: &LabPkiPlan,
    node: &str,
    (leaf, cert, key, state): Pending<'_>,
    sync: Durability,
) -> Result<Vec<PathBuf>, PkiError> {
    let (key_pair, key_pem) = match state {
        PairState::NeedsCert => read_key(&key)?,
        _ => {
            let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let pem = pair.serialize_pem();
            (pair, pem)
        }
    };
    let cert_pem = match leaf {
        Leaf::Tomcat => {
            ca.certify_server(node, Some(TOMCAT_UNIT), &plan.server_names, &key_pair)?
        }
        Leaf::CallManager => {
            ca.certify_server(node, Some(CALLMANAGER_UNIT), &plan.server_names, &key_pair)?
        }
        Leaf::Expressway => {
            let Some(cn) = plan.expressway_names.first() else {
                return Err(PkiError::NoNames {
                    what: "Expressway-C",
                });
            };
            ca.certify_client(cn, &plan.expressway_names, &key_pair)?
        }
        Leaf::Device(name) => ca.certify_client(name, &[], &key_pair)?,
    };
    let mut made = Vec::with_capacity(2);
    if !matches!(state, PairState::NeedsCert) {
        write_file(&key, key_pem.as_bytes(), true, sync, Place::New)?;
        made.push(key);
    }
    write_file(&cert, cert_pem.as_bytes(), false, sync, Place::New)?;
    made.push(cert);
    Ok(made)
}

/// The same idempotent, atomic, mode-0600 writing for one generated secret (the token signing
/// key): if `path` exists its contents are returned, else `make()` is called and its result
/// written and returned. The flag says whether the file was created.
pub fn ensure_secret_file(
    path: &Path,
    make: impl FnOnce() -> Result<String, PkiError>,
) -> Result<(String, bool), PkiError> {
    if exists(path)? {
        warn_if_exposed(path);
        return Ok((read_text(path)?, false));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir_pki(dir)?;
    }
    let secret = make()?;
    write_new_file(path, secret.as_bytes(), true)?;
    Ok((secret, true))
}

/// Writes (or replaces) a private file atomically: a temporary file in the same directory,
/// mode 0600 from creation, synced, then renamed over `path`. For state that must survive a
/// crash whole (regenerated keys, compacted token logs).
pub fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_file(path, contents, true, Durability::FileAndDir, Place::Replace).map_err(|e| match e {
        PkiError::Io { source, .. } => source,
        other => io::Error::other(other),
    })
}

/// UCM's device-name alphabet (as the configuration checks it): no separator, no "..", so the
/// name is one file name in `devices/`.
fn file_safe(name: &str) -> bool {
    !name.is_empty()
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The name the server certificates are about: UCM names a node by its host name, so prefer a
/// name over an address or "localhost".
fn node_name(server_names: &[String]) -> String {
    server_names
        .iter()
        .find(|n| n.parse::<IpAddr>().is_err() && !n.eq_ignore_ascii_case("localhost"))
        .or_else(|| server_names.first())
        .cloned()
        .unwrap_or_else(|| "localhost".to_owned())
}

fn lab_ca_name(node: &str) -> String {
    format!("{LAB_CA_NAME} ({node})")
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn exists(path: &Path) -> Result<bool, PkiError> {
    path.try_exists().map_err(io_err(path))
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(io_err(path))
}

fn read_key(path: &Path) -> Result<(KeyPair, String), PkiError> {
    let pem = read_text(path)?;
    let key = KeyPair::from_pem(&pem).map_err(|e| PkiError::BadPem {
        path: path.to_owned(),
        reason: format!("not a usable private key: {e}"),
    })?;
    Ok((key, pem))
}

fn create_private_dir_pki(dir: &Path) -> Result<(), PkiError> {
    create_private_dir(dir).map_err(io_err(dir))
}

/// Creates `dir` and its missing parents, new ones mode 0700: state that holds keys.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes `contents` to a temporary file next to `path`, flushes it to disk, then renames it
/// into place, so a crash leaves either no file or a complete one. Private files are created
/// with mode 0600 from the start (never briefly readable by others).
fn write_new_file(path: &Path, contents: &[u8], private: bool) -> Result<(), PkiError> {
    write_file(path, contents, private, Durability::FileAndDir, Place::New)
}

/// Whether the file may replace one already at its path.
#[derive(Clone, Copy)]
enum Place {
    /// Lab files: a file that appeared meanwhile (the user's own) is kept, and this is an error.
    New,
    /// State rewritten whole (regenerated keys, compacted logs).
    Replace,
}

fn write_file(
    path: &Path,
    contents: &[u8],
    private: bool,
    sync: Durability,
    place: Place,
) -> Result<(), PkiError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        &nonce[..8]
    ));

    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = private;

    let result = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    // A hard link, unlike a rename, fails when the target exists.
    let result = result.and_then(|()| match place {
        Place::Replace => fs::rename(&tmp, path),
        Place::New => fs::hard_link(&tmp, path).and_then(|()| fs::remove_file(&tmp)),
    });
    if let Err(source) = result {
        // Best effort: the temporary file may not exist if open itself failed.
        let _ = fs::remove_file(&tmp);
        return Err(PkiError::Io {
            path: path.to_owned(),
            source,
        });
    }
    // Make the rename itself durable. Best effort: some filesystems refuse fsync on a directory
    // and the file is complete either way.
    #[cfg(unix)]
    if matches!(sync, Durability::FileAndDir)
        && let Ok(d) = fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = sync;
    Ok(())
}

/// Keys must not be readable by group or others; say so rather than fail, since the user may
/// have reasons (and fixing modes behind their back would be surprising).
fn warn_if_exposed(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:o}"),
                    "private key file is readable by group or others; chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    use rustls::pki_types::pem::PemObject;

    use super::super::tests::{verify_client, verify_server};

    fn plan(dir: &Path) -> LabPkiPlan {
        LabPkiPlan {
            dir: dir.join("certs"),
            server_names: vec!["127.0.0.1".into(), "ucm-pub.lab".into(), "localhost".into()],
            expressway_names: vec!["exp-c.domain-1.com".into(), "domain-2.com".into()],
            devices: Vec::new(),
        }
    }

    fn all(files: &LabPkiFiles) -> [&PathBuf; 8] {
        [
            &files.ca_cert,
            &files.ca_key,
            &files.tomcat_cert,
            &files.tomcat_key,
            &files.callmanager_cert,
            &files.callmanager_key,
            &files.expressway_cert,
            &files.expressway_key,
        ]
    }

    fn snapshot(files: &LabPkiFiles) -> Vec<Vec<u8>> {
        all(files).iter().map(|p| fs::read(p).unwrap()).collect()
    }

    fn text(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn subject(cert_path: &Path) -> String {
        let der = rustls::pki_types::CertificateDer::from_pem_slice(text(cert_path).as_bytes());
        let der = der.unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        x.subject().to_string()
    }

    #[test]
    fn creates_everything_once_and_verifiably() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = plan(tmp.path());
        let (files, created) = ensure_lab_pki(&plan).unwrap();
        assert_eq!(created.len(), 8);
        for path in all(&files) {
            assert!(created.contains(path), "{} not created", path.display());
            assert!(path.starts_with(&plan.dir));
        }
        // No temporary files left behind (the lock file stays, empty).
        let names: Vec<_> = fs::read_dir(&plan.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != LOCK_FILE)
            .collect();
        assert_eq!(names.len(), 8, "{names:?}");

        let ca = text(&files.ca_cert);
        for name in ["127.0.0.1", "ucm-pub.lab", "localhost"] {
            verify_server(&ca, &text(&files.tomcat_cert), name).unwrap();
            verify_server(&ca, &text(&files.callmanager_cert), name).unwrap();
        }
        verify_client(&ca, &text(&files.expressway_cert)).unwrap();
        assert_eq!(subject(&files.tomcat_cert), "OU=tomcat, CN=ucm-pub.lab");
        assert_eq!(
            subject(&files.callmanager_cert),
            "OU=CallManager, CN=ucm-pub.lab"
        );
        assert_eq!(subject(&files.expressway_cert), "CN=exp-c.domain-1.com");
        assert_eq!(
            subject(&files.ca_cert),
            "CN=sip-oauth-registrar lab CA (ucm-pub.lab)"
        );

        #[cfg(unix)]
        {
            for key in [
                &files.ca_key,
                &files.tomcat_key,
                &files.callmanager_key,
                &files.expressway_key,
            ] {
                assert_eq!(mode(key), 0o600, "{}", key.display());
            }
            assert_eq!(
                mode(&files.tomcat_cert) & 0o022,
                0,
                "not writable by others"
            );
            assert_eq!(mode(&plan.dir), 0o700);
        }

        let before = snapshot(&files);
        let (files2, created2) = ensure_lab_pki(&plan).unwrap();
        assert_eq!(files2, files);
        assert!(created2.is_empty(), "{created2:?}");
        assert_eq!(snapshot(&files), before);
    }

    #[test]
    fn deleted_pair_is_reissued_from_the_same_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = plan(tmp.path());
        let (files, _) = ensure_lab_pki(&plan).unwrap();
        let before = snapshot(&files);
        let old_tomcat = text(&files.tomcat_cert);
        fs::remove_file(&files.tomcat_cert).unwrap();
        fs::remove_file(&files.tomcat_key).unwrap();

        let (_, created) = ensure_lab_pki(&plan).unwrap();
        assert_eq!(
            created,
            vec![files.tomcat_key.clone(), files.tomcat_cert.clone()]
        );
        let after = snapshot(&files);
        for (i, path) in all(&files).iter().enumerate() {
            let is_tomcat = **path == files.tomcat_cert || **path == files.tomcat_key;
            assert_eq!(before[i] == after[i], !is_tomcat, "{}", path.display());
        }
        assert_ne!(text(&files.tomcat_cert), old_tomcat);
        verify_server(
            &text(&files.ca_cert),
            &text(&files.tomcat_cert),
            "ucm-pub.lab",
        )
        .unwrap();
    }

    #[test]
    fn surviving_key_is_certified_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = plan(tmp.path());
        let (files, _) = ensure_lab_pki(&plan).unwrap();
        let key = fs::read(&files.expressway_key).unwrap();
        fs::remove_file(&files.expressway_cert).unwrap();
        let (_, created) = ensure_lab_pki(&plan).unwrap();
        assert_eq!(created, vec![files.expressway_cert.clone()]);
        assert_eq!(fs::read(&files.expressway_key).unwrap(), key);

        // The new certificate belongs to the kept key: rustls checks that when loading a pair.
        let cert = rustls::pki_types::CertificateDer::from_pem_file(&files.expressway_cert);
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&files.expressway_key);
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.unwrap()], key.unwrap())
            .unwrap();
    }

    #[test]
    fn lost_ca_cert_is_remade_from_its_key_and_still_anchors_old_leaves() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = plan(tmp.path());
        let (files, _) = ensure_lab_pki(&plan).unwrap();
        let old_ca = text(&files.ca_cert);
        fs::remove_file(&files.ca_cert).unwrap();
        let (_, created) = ensure_lab_pki(&plan).unwrap();
        assert_eq!(created, vec![files.ca_cert.clone()]);
        let new_ca = text(&files.ca_cert);
        assert_ne!(new_ca, old_ca);
        verify_server(&new_ca, &text(&files.tomcat_cert), "localhost").unwrap();
        verify_client(&new_ca, &text(&files.expressway_cert)).unwrap();
    }

    #[test]
    fn ca_key_may_be_offline_until_something_must_be_issued() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = plan(tmp.path());
        let (files, _) = ensure_lab_pki(&plan).unwrap();
        fs::remove_file(&files.ca_key).unwrap();
        let (_, created) = ensure_lab_pki(&plan).unwrap();
        assert!(created.is_empty());

        fs::remove_file(&files.callmanager_cert).unwrap();
        fs::remove_file(&files.callmanager_key).unwrap();
        let err = ensure_lab_pki(&plan).unwrap_err();
        assert!(matches!(err, PkiError::IncompletePair { ref key, .. } if *key == files.ca_key));
    }

    #[test]
    fn certificate_without_key_is_an_error_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = plan(tmp.path());
        let (files, _) = ensure_lab_pki(&plan).unwrap();
        let cert = fs::read(&files.tomcat_cert).unwrap();
        fs::remove_file(&files.tomcat_key).unwrap();
        let err = ensure_lab_pki(&plan).unwrap_err();
        assert!(matches!(err, PkiError::IncompletePair { .. }), "{err}");
        assert_eq!(fs::read(&files.tomcat_cert).unwrap(), cert);
        assert!(!files.tomcat_key.exists());
    }

    #[test]
    fn user_supplied_files_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = plan(tmp.path());
        fs::create_dir_all(&plan.dir).unwrap();
        let files = LabPkiFiles::in_dir(&plan.dir);
        let own = Authority::generate("corporate CA").unwrap();
        let tomcat = own
            .issue_server("ucm", &["ucm-pub.lab".to_owned()])
            .unwrap();
        fs::write(&files.tomcat_cert, &tomcat.cert_pem).unwrap();
        fs::write(&files.tomcat_key, &tomcat.key_pem).unwrap();

        let (_, created) = ensure_lab_pki(&plan).unwrap();
        assert_eq!(created.len(), 6);
        assert_eq!(text(&files.tomcat_cert), tomcat.cert_pem);
        assert_eq!(text(&files.tomcat_key), tomcat.key_pem);
    }

    #[test]
    fn device_certificates_name_the_device_and_are_made_once() {
        let tmp = tempfile::tempdir().unwrap();
        let mut plan = plan(tmp.path());
        plan.devices = vec!["SEP0011223344AA".into(), "SEP0011223344AA-key".into()];
        let (files, created) = ensure_lab_pki(&plan).unwrap();
        assert_eq!(created.len(), 12);
        let ca = text(&files.ca_cert);
        for name in &plan.devices {
            let (cert, key) = (files.device_cert(name), files.device_key(name));
            assert!(created.contains(&cert) && created.contains(&key), "{name}");
            assert_eq!(subject(&cert), format!("CN={name}"));
            verify_client(&ca, &text(&cert)).unwrap();
            #[cfg(unix)]
            assert_eq!(mode(&key), 0o600);
        }
        #[cfg(unix)]
        assert_eq!(mode(&files.devices_dir), 0o700);
        // 2 devices x (certificate, key), nothing else in the directory.
        assert_eq!(fs::read_dir(&files.devices_dir).unwrap().count(), 4);

        let lsc = fs::read(files.device_cert("SEP0011223344AA")).unwrap();
        let (_, again) = ensure_lab_pki(&plan).unwrap();
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(fs::read(files.device_cert("SEP0011223344AA")).unwrap(), lsc);

        // A device added later gets its LSC from the same CA; the others are kept.
        plan.devices.push("SEPAABBCCDDEEFF".into());
        let (_, added) = ensure_lab_pki(&plan).unwrap();
        assert_eq!(
            added,
            vec![
                files.device_key("SEPAABBCCDDEEFF"),
                files.device_cert("SEPAABBCCDDEEFF")
            ]
        );
        verify_client(&ca, &text(&files.device_cert("SEPAABBCCDDEEFF"))).unwrap();
        assert_eq!(fs::read(files.device_cert("SEP0011223344AA")).unwrap(), lsc);
    }

    #[test]
    fn many_lscs_are_issued_in_parallel_and_reported_in_plan_order() {
        let tmp = tempfile::tempdir().unwrap();
        let mut plan = plan(tmp.path());
        // More devices than workers, and not a multiple of them.
        plan.devices = (0..DEVICE_WORKERS * 3 + 1)
            .map(|i| format!("SEP{i:012X}"))
            .collect();
        let (files, created) = ensure_lab_pki(&plan).unwrap();
        let expected: Vec<PathBuf> = plan
            .devices
            .iter()
            .flat_map(|d| [files.device_key(d), files.device_cert(d)])
            .collect();
        assert_eq!(created[8..], expected[..]);
        let ca = text(&files.ca_cert);
        let mut serials = std::collections::HashSet::new();
        for d in &plan.devices {
            assert_eq!(subject(&files.device_cert(d)), format!("CN={d}"));
            verify_client(&ca, &text(&files.device_cert(d))).unwrap();
            let der = rustls::pki_types::CertificateDer::from_pem_file(files.device_cert(d));
            let der = der.unwrap();
            let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
            assert!(
                serials.insert(x.raw_serial().to_vec()),
                "{d}: serial reused"
            );
        }
        // No temporary file left behind by any worker.
        assert_eq!(
            fs::read_dir(&files.devices_dir).unwrap().count(),
            plan.devices.len() * 2
        );
    }

    #[test]
    fn device_names_must_be_file_names() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a/b", "..", "SEP 1"] {
            let mut plan = plan(tmp.path());
            plan.devices = vec![bad.into()];
            assert!(
                matches!(ensure_lab_pki(&plan), Err(PkiError::BadDeviceName { .. })),
                "{bad:?}"
            );
        }
        assert!(!tmp.path().join("certs").exists(), "nothing written");
    }

    #[test]
    fn missing_names_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let mut plan = plan(tmp.path());
        plan.expressway_names.clear();
        assert!(matches!(
            ensure_lab_pki(&plan),
            Err(PkiError::NoNames {
                what: "Expressway-C"
            })
        ));
        let mut plan = self::plan(tmp.path());
        plan.dir = tmp.path().join("other");
        plan.server_names.clear();
        assert!(matches!(
            ensure_lab_pki(&plan),
            Err(PkiError::NoNames { what: "server" })
        ));
    }

    #[test]
    fn secret_file_is_made_once() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state").join("token-signing-key.pem");
        let (first, created) = ensure_secret_file(&path, || Ok("secret-1".into())).unwrap();
        assert!(created);
        assert_eq!(first, "secret-1");
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        let (second, created) =
            ensure_secret_file(&path, || panic!("must not be called when the file exists"))
                .unwrap();
        assert!(!created);
        assert_eq!(second, "secret-1");
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn secret_file_make_error_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("key.pem");
        let err = ensure_secret_file(&path, || Err(PkiError::Clock)).unwrap_err();
        assert!(matches!(err, PkiError::Clock));
        assert!(!path.exists());
    }

    #[test]
    fn rsa_secret_file_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("jwt.pem");
        let (pem, _) =
            ensure_secret_file(&path, super::super::generate_rsa_signing_key_pem).unwrap();
        let (again, created) =
            ensure_secret_file(&path, super::super::generate_rsa_signing_key_pem).unwrap();
        assert!(!created);
        assert_eq!(pem, again);
        jsonwebtoken::EncodingKey::from_rsa_pem(again.as_bytes()).unwrap();
    }

    /// Full mutual-TLS handshake in memory with the lab files: tomcat on the server side,
    /// lab CA as tomcat-trust, Expressway-C certificate on the client side.
    #[test]
    fn lab_files_complete_a_mutual_tls_handshake() {
        use std::sync::Arc;

        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

        let tmp = tempfile::tempdir().unwrap();
        let plan = plan(tmp.path());
        let (files, _) = ensure_lab_pki(&plan).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&files.ca_cert).unwrap())
            .unwrap();
        let roots = Arc::new(roots);

        let client_verifier = rustls::server::WebPkiClientVerifier::builder(roots.clone())
            .build()
            .unwrap();
        let server_config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_file(&files.tomcat_cert).unwrap()],
                PrivateKeyDer::from_pem_file(&files.tomcat_key).unwrap(),
            )
            .unwrap();
        let client_config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(&files.expressway_cert).unwrap()],
                PrivateKeyDer::from_pem_file(&files.expressway_key).unwrap(),
            )
            .unwrap();

        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        let peer = server.peer_certificates().unwrap();
        assert_eq!(
            peer[0].as_ref(),
            CertificateDer::from_pem_file(&files.expressway_cert)
                .unwrap()
                .as_ref()
        );
    }
}
