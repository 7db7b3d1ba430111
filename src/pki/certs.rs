//! The lab PKI as the `certs init` and `certs show` commands see it: what the lab issues for a
//! cluster ([`lab_plan`]: server names, the Expressway-C client certificate, one LSC per
//! secure legacy device), and a report of every certificate the daemon and its lab clients use.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;

use super::{LabPkiFiles, LabPkiPlan, PkiError, ensure_lab_pki};
use crate::cluster::{Cluster, NodePorts};
use crate::config::Settings;
use crate::expressway::{self, ExpresswayStore};
use crate::net::ListenerKind;
use crate::policy::{self, Admission};

/// Where the lab PKI is written, under the state directory; `config/lab.toml` points there.
pub const LAB_DIR: &str = "certs";

/// Where the lab PKI lives and what it names: every node's address and name plus `localhost`
/// (tomcat and CallManager SANs); the first Expressway-C entry's names for the lab
/// Expressway-C client certificate; and the devices that get an LSC ([`lsc_devices`]).
///
/// The Expressway-C entry is read from the persisted table (`<state>/expressway-c.json`, which
/// wins over `[[expressway_c]]` once it exists, see [`crate::expressway`]), so a table changed
/// over AXL or the admin CLI names the certificate issued next; an unreadable table falls back
/// to the configuration (the daemon's start then reports the table's problem).
pub fn lab_plan(cluster: &Cluster, state_dir: &Path) -> LabPkiPlan {
    let mut server_names: Vec<String> = Vec::new();
    for n in &cluster.nodes {
        server_names.push(n.name.to_string());
        server_names.push(n.address.to_string());
    }
    server_names.push("localhost".into());
    // Names added over AXL may hold what a DNS SAN cannot (AXL takes any String4096): those
    // are left out rather than stopping the start that re-issues the certificate.
    let usable = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()))
            .collect()
    };
    let from_config = || cluster.expressway.first().map(|e| e.subject_names.clone());
    let named = match ExpresswayStore::open(
        &state_dir.join(expressway::FILE),
        &cluster.params.uuid,
        &cluster.expressway,
    ) {
        // An emptied table names nobody: the configuration's entry is no longer trusted
        // either, so the lab name is used.
        Ok(table) => table.list().first().map(|r| r.subject_names()),
        Err(_) => from_config(),
    };
    let expressway_names = named
        .map(usable)
        .filter(|names| !names.is_empty())
        .unwrap_or_else(|| vec!["expressway-c.lab".into()]);
    LabPkiPlan {
        dir: state_dir.join(LAB_DIR),
        server_names,
        expressway_names,
        devices: lsc_devices(cluster),
    }
}

/// The secure legacy devices: those the port rule admits on the legacy secure port (5061) by
/// their TLS certificate ([`Admission::DeviceCertificate`]), under the cluster's SIP OAuth
/// mode. With the mode on, that is every Authenticated or Encrypted profile without OAuth;
/// with it off, OAuth profiles (always Encrypted) too.
pub fn lsc_devices(cluster: &Cluster) -> Vec<String> {
    cluster
        .devices
        .iter()
        .filter(|d| {
            let profile = &cluster.profiles[d.profile];
            policy::admit(
                cluster.params.sip_oauth_mode,
                profile,
                ListenerKind::SipSecure,
            ) == Ok(Admission::DeviceCertificate)
        })
        .map(|d| d.name.to_string())
        .collect()
}

/// What `certs init` did.
#[derive(Debug)]
pub struct InitReport {
    pub files: LabPkiFiles,
    /// Files created by this call, in creation order; empty when everything was there.
    pub created: Vec<PathBuf>,
    /// Devices that have an LSC.
    pub devices: Vec<String>,
    /// Whether the configuration uses the lab files (`tls.lab_pki`).
    pub lab_pki: bool,
}

/// `certs init`: creates whatever of the lab PKI is missing, exactly as the daemon's first
/// start does; never replaces an existing file.
pub fn init(settings: &Settings, state_dir: &Path) -> Result<InitReport, PkiError> {
    let plan = lab_plan(&settings.cluster, state_dir);
    let (files, created) = ensure_lab_pki(&plan)?;
    Ok(InitReport {
        files,
        created,
        devices: plan.devices,
        lab_pki: settings.tls.lab_pki,
    })
}

impl InitReport {
    /// What the command prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.created.is_empty() {
            let _ = writeln!(
                out,
                "Lab PKI complete in {}: nothing created.",
                self.files
                    .ca_cert
                    .parent()
                    .unwrap_or_else(|| Path::new("."))
                    .display()
            );
        }
        for path in &self.created {
            let _ = writeln!(out, "created {}", path.display());
        }
        let _ = writeln!(
            out,
            "Lab CA (trust it in your clients): {}",
            self.files.ca_cert.display()
        );
        if !self.devices.is_empty() {
            // A large lab has thousands: name a few, count the rest.
            const NAMED: usize = 5;
            let mut names = self.devices[..self.devices.len().min(NAMED)].join(", ");
            if self.devices.len() > NAMED {
                let _ = write!(names, " and {} more", self.devices.len() - NAMED);
            }
            let _ = writeln!(
                out,
                "Device certificates (LSC, CN = device name) for 5061: {} ({names})",
                self.files.devices_dir.display(),
            );
        }
        if !self.lab_pki {
            let _ = writeln!(
                out,
                "Note: tls.lab_pki is false, so the daemon presents and trusts the [tls] files, \
                 not these; `certs show` lists what it uses."
            );
        }
        out
    }
}

/// What one certificate says, as `certs show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    /// `DNS:<name>`, `IP:<address>`, `URI:<uri>`, `email:<address>`, in certificate order.
    pub sans: Vec<String>,
    pub issuer: String,
    /// As `openssl x509 -dates` would show them, in UTC.
    pub not_before: String,
    pub not_after: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// Whether the certificate is a CA (basicConstraints cA).
    pub ca: bool,
    /// SHA-256 of the DER, colon-separated upper-case hex (what Jabber and browsers display).
    pub sha256: String,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, x) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = x.subject_alternative_name() {
            for name in &ext.value.general_names {
                sans.push(match name {
                    GeneralName::DNSName(n) => format!("DNS:{n}"),
                    GeneralName::IPAddress(bytes) => match ip(bytes) {
                        Some(ip) => format!("IP:{ip}"),
                        None => format!("IP:<{} bytes>", bytes.len()),
                    },
                    GeneralName::URI(u) => format!("URI:{u}"),
                    GeneralName::RFC822Name(m) => format!("email:{m}"),
                    other => format!("{other:?}"),
                });
            }
        }
        let ca = x
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        let fingerprint = Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let validity = x.validity();
        Ok(Self {
            subject: x.subject().to_string(),
            sans,
            issuer: x.issuer().to_string(),
            not_before: utc(&validity.not_before),
            not_after: utc(&validity.not_after),
            not_before_unix: validity.not_before.timestamp(),
            not_after_unix: validity.not_after.timestamp(),
            ca,
            sha256: fingerprint,
        })
    }

    /// Every certificate of a PEM file, in file order.
    pub fn from_pem_file(path: &Path) -> Result<Vec<Self>, String> {
        let ders = CertificateDer::pem_file_iter(path)
            .map_err(|e| e.to_string())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        if ders.is_empty() {
            return Err("no CERTIFICATE block".into());
        }
        ders.iter().map(|d| Self::from_der(d)).collect()
    }

    /// "valid", "EXPIRED" or "NOT YET VALID" at `now`.
    pub fn status(&self, now: SystemTime) -> &'static str {
        let now = match now.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(_) => 0,
        };
        if now < self.not_before_unix {
            "NOT YET VALID"
        } else if now > self.not_after_unix {
            "EXPIRED"
        } else {
            "valid"
        }
    }
}

/// The address of an IP SAN (4 or 16 bytes).
pub(crate) fn ip(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// A certificate's DNS SANs as written and its IP SANs as text (canonical form); other kinds
/// of name are not names a TLS peer is matched by here.
pub(crate) fn dns_and_ip_sans(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => names.extend(ip(bytes).map(|a| a.to_string())),
                _ => {}
            }
        }
    }
    names
}

/// `Nov 27 18:20:00 2026 GMT`, openssl's form, so the output compares with `openssl x509`.
fn utc(t: &x509_parser::time::ASN1Time) -> String {
    let text = t.to_string();
    match text.strip_suffix(" +00:00") {
        Some(base) => format!("{base} GMT"),
        None => text,
    }
}

/// What `certs show` found: the report, and the problems that make the command fail.
#[derive(Debug)]
pub struct ShowReport {
    pub text: String,
    pub problems: Vec<String>,
}

/// One file and what it is for.
struct Entry {
    path: PathBuf,
    roles: Vec<String>,
    /// Missing is a problem (a file the configuration names), or expected (a lab file not made
    /// yet is reported as such).
    required: bool,
}

/// `certs show`: subject, SANs, issuer, validity and fingerprint of every certificate in use —
/// the tomcat and CallManager certificates with their chains, the tomcat-trust and
/// CallManager-trust stores, and the lab's client-side certificates (Expressway-C, LSCs).
pub fn show(settings: &Settings, state_dir: &Path, now: SystemTime) -> ShowReport {
    let tls = &settings.tls;
    let cluster = &settings.cluster;
    let resolve = |p: &Path| Settings::resolve(state_dir, p);
    let ports = |f: fn(&NodePorts) -> u16| distinct(cluster.nodes.iter().map(|n| f(&n.ports)));
    let sip_ports = if cluster.params.sip_oauth_mode {
        format!(
            "SIP OAuth {} and MRA {}, ",
            ports(|p| p.sip_oauth),
            ports(|p| p.sip_mra_oauth)
        )
    } else {
        String::new()
    };

    let mut entries: Vec<Entry> = Vec::new();
    let mut add = |path: PathBuf, role: String, required: bool| match entries
        .iter_mut()
        .find(|e| e.path == path)
    {
        Some(e) => {
            e.roles.push(role);
            e.required |= required;
        }
        None => entries.push(Entry {
            path,
            roles: vec![role],
            required,
        }),
    };
    add(
        resolve(&tls.tomcat_cert),
        format!(
            "tomcat: presented on {sip_ports}HTTPS {} and TFTP HTTPS {}",
            ports(|p| p.https),
            ports(|p| p.tftp_https)
        ),
        true,
    );
    add(
        resolve(&tls.callmanager_cert),
        format!(
            "CallManager: presented on the secure SIP port {}",
            ports(|p| p.sip_secure)
        ),
        true,
    );
    for p in &tls.tomcat_trust {
        add(
            resolve(p),
            "tomcat-trust: an Expressway-C certificate on the MRA port must chain to it".into(),
            true,
        );
    }
    for p in &tls.callmanager_trust {
        add(
            resolve(p),
            "CallManager-trust: a device certificate on the secure SIP port must chain to it"
                .into(),
            true,
        );
    }
    let plan = lab_plan(cluster, state_dir);
    let lab = LabPkiFiles::in_dir(&plan.dir);
    let expected = tls.lab_pki;
    add(
        lab.ca_cert.clone(),
        "lab CA: trust it in clients (README \"Lab certificates\")".into(),
        false,
    );
    add(
        lab.expressway_cert.clone(),
        format!(
            "lab Expressway-C client certificate (key {})",
            lab.expressway_key.display()
        ),
        false,
    );
    for d in &plan.devices {
        add(
            lab.device_cert(d),
            format!(
                "LSC of device {d} for the secure SIP port (key {})",
                lab.device_key(d).display()
            ),
            false,
        );
    }

    let mut text = String::new();
    let mut problems = Vec::new();
    let _ = writeln!(
        text,
        "Certificates of cluster {:?} (state directory {}, tls.lab_pki = {})",
        cluster.params.name,
        state_dir.display(),
        tls.lab_pki
    );
    for e in &entries {
        // An error here (a folder we may not search) is not "missing": the read below names it.
        let present = e.path.try_exists().unwrap_or(true);
        // With the lab off, lab files that were never made are not "in use": say nothing.
        if !present && !e.required && !expected {
            continue;
        }
        let _ = writeln!(text, "\n{}", e.path.display());
        for role in &e.roles {
            let _ = writeln!(text, "  {role}");
        }
        if !present {
            if e.required {
                let hint = if expected && e.path.starts_with(&plan.dir) {
                    " (`certs init` or the first start creates it)"
                } else {
                    ""
                };
                let _ = writeln!(text, "  MISSING{hint}");
                problems.push(format!("{}: missing{hint}", e.path.display()));
            } else {
                let _ = writeln!(
                    text,
                    "  not created yet (`certs init` or the first start creates it)"
                );
            }
            continue;
        }
        match CertInfo::from_pem_file(&e.path) {
            Ok(certs) => {
                for (i, c) in certs.iter().enumerate() {
                    if certs.len() > 1 {
                        let _ = writeln!(text, "  [{}]", i + 1);
                    }
                    render(&mut text, c, now);
                }
            }
            Err(reason) => {
                let _ = writeln!(text, "  UNREADABLE: {reason}");
                problems.push(format!("{}: {reason}", e.path.display()));
            }
        }
    }
    ShowReport { text, problems }
}

fn render(out: &mut String, c: &CertInfo, now: SystemTime) {
    let sans = if c.sans.is_empty() {
        "(none)".to_owned()
    } else {
        c.sans.join(", ")
    };
    let _ = writeln!(out, "  subject:    {}", c.subject);
    let _ = writeln!(out, "  SANs:       {sans}");
    let _ = writeln!(out, "  issuer:     {}", c.issuer);
    let _ = writeln!(out, "  notBefore:  {}", c.not_before);
    let _ = writeln!(out, "  notAfter:   {} ({})", c.not_after, c.status(now));
    if c.ca {
        let _ = writeln!(out, "  CA:         yes");
    }
    let _ = writeln!(out, "  SHA-256:    {}", c.sha256);
}

/// `5090` or `5090, 5190`: the distinct values in first-seen order.
fn distinct(values: impl Iterator<Item = u16>) -> String {
    let mut seen: Vec<u16> = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen.iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LAB_CONFIG;

    fn lab() -> Settings {
        Settings::from_toml(LAB_CONFIG).unwrap()
    }

    #[test]
    fn lab_plan_names_nodes_expressway_and_secure_legacy_devices() {
        let tmp = tempfile::tempdir().unwrap();
        let s = lab();
        let plan = lab_plan(&s.cluster, tmp.path());
        assert_eq!(plan.dir, tmp.path().join("certs"));
        assert_eq!(
            plan.server_names,
            ["UCM-PUB", "127.0.0.1", "UCM-SUB1", "127.0.0.2", "localhost"]
        );
        assert_eq!(
            plan.expressway_names,
            [
                "exp-c.domain-1.com",
                "domain-1.com",
                "domain-2.com",
                "secure-phone-profile"
            ]
        );
        // The only Encrypted profile without OAuth in the lab: the 8861 on 5061.
        assert_eq!(plan.devices, ["SEP0011223344AA"]);

        // With SIP OAuth mode off, 5061 admits OAuth-profile devices by certificate too.
        let mut off = s.cluster;
        off.params.sip_oauth_mode = false;
        assert_eq!(
            lsc_devices(&off),
            [
                "CSFrado",
                "CSFalice",
                "SEP001122334455",
                "SEP0011223344AA",
                "CSFmallory"
            ]
        );
    }

    #[test]
    fn lab_plan_takes_expressway_names_from_the_persisted_table() {
        let tmp = tempfile::tempdir().unwrap();
        let s = lab();
        let store = ExpresswayStore::open(
            &tmp.path().join(expressway::FILE),
            &s.cluster.params.uuid,
            &s.cluster.expressway,
        )
        .unwrap();
        // The table's file now exists without the configuration's entry.
        store
            .add(expressway::NewEntry {
                host: "exp-new".into(),
                description: String::new(),
                names: "EXP-NEW.domain-7.com, 10.9.8.7".into(),
            })
            .unwrap();
        store
            .remove(&expressway::Key::Host("exp-c".into()))
            .unwrap();
        drop(store);
        let plan = lab_plan(&s.cluster, tmp.path());
        assert_eq!(plan.expressway_names, ["exp-new.domain-7.com", "10.9.8.7"]);

        // Issued from that plan, the certificate names what the table lists (the IP as an IP
        // SAN, which the MRA check compares in canonical form).
        let (files, _) = ensure_lab_pki(&plan).unwrap();
        let info = CertInfo::from_pem_file(&files.expressway_cert).unwrap();
        assert_eq!(info[0].subject, "CN=exp-new.domain-7.com");
        assert_eq!(info[0].sans, ["DNS:exp-new.domain-7.com", "IP:10.9.8.7"]);

        // An unreadable table falls back to the configuration.
        std::fs::write(tmp.path().join(expressway::FILE), "{").unwrap();
        let plan = lab_plan(&s.cluster, tmp.path());
        assert_eq!(plan.expressway_names[0], "exp-c.domain-1.com");
    }

    #[test]
    fn show_lists_every_certificate_and_flags_problems() {
        let tmp = tempfile::tempdir().unwrap();
        let s = lab();
        let before = show(&s, tmp.path(), SystemTime::now());
        // Nothing created yet: the configured files are missing.
        assert_eq!(before.problems.len(), 3, "{:?}", before.problems);
        assert!(before.text.contains("not created yet"), "{}", before.text);

        let report = init(&s, tmp.path()).unwrap();
        assert_eq!(report.created.len(), 10);
        let shown = show(&s, tmp.path(), SystemTime::now());
        assert!(shown.problems.is_empty(), "{:?}", shown.problems);
        let t = &shown.text;
        let certs = tmp.path().join("certs");
        for file in [
            "tomcat.pem",
            "callmanager.pem",
            "lab-ca.pem",
            "expressway-c.pem",
            "devices/SEP0011223344AA.pem",
        ] {
            // Each file once, even when it has several roles (the lab CA is both trust stores).
            let line = format!("\n{}\n", certs.join(file).display());
            assert_eq!(t.matches(&line).count(), 1, "{file} in\n{t}");
        }
        assert!(t.contains("  subject:    OU=tomcat, CN=UCM-PUB\n"), "{t}");
        assert!(t.contains(
            "  SANs:       DNS:UCM-PUB, IP:127.0.0.1, DNS:UCM-SUB1, IP:127.0.0.2, DNS:localhost\n"
        ));
        assert!(t.contains("  issuer:     CN=sip-oauth-registrar lab CA (UCM-PUB)\n"));
        assert!(t.contains("  subject:    CN=SEP0011223344AA\n  SANs:       (none)\n"));
        assert!(t.contains("tomcat-trust: "));
        assert!(t.contains("CallManager-trust: "));
        assert!(t.contains("presented on SIP OAuth 5090 and MRA 5091, HTTPS 8443"));
        assert_eq!(t.matches("  CA:         yes\n").count(), 1);
        assert_eq!(t.matches("(valid)\n").count(), 5, "{t}");

        // Two years on, every leaf has expired; the CA has not.
        let later = SystemTime::now() + std::time::Duration::from_secs(3 * 365 * 86_400);
        let t = show(&s, tmp.path(), later).text;
        assert_eq!(t.matches("(EXPIRED)\n").count(), 4, "{t}");
    }

    #[test]
    fn show_with_the_lab_off_lists_only_the_configured_files() {
        let tmp = tempfile::tempdir().unwrap();
        let toml = LAB_CONFIG.replace("lab_pki = true", "lab_pki = false");
        let s = Settings::from_toml(&toml).unwrap();
        let shown = show(&s, tmp.path(), SystemTime::now());
        assert_eq!(shown.problems.len(), 3, "{:?}", shown.problems);
        assert!(!shown.text.contains("expressway-c.pem"), "{}", shown.text);
        assert!(!shown.text.contains("not created yet"), "{}", shown.text);
        assert!(shown.text.contains("tls.lab_pki = false"));
        // `certs init` still makes the files, and says they are not what the daemon uses.
        let report = init(&s, tmp.path()).unwrap();
        assert!(report.render().contains("tls.lab_pki is false"));
        let shown = show(&s, tmp.path(), SystemTime::now());
        assert!(shown.problems.is_empty(), "{:?}", shown.problems);
    }

    #[test]
    fn cert_info_fields_match_openssl_forms() {
        let ca = super::super::Authority::generate("info CA").unwrap();
        let leaf = ca
            .issue_server("n", &["n.lab".into(), "::1".into()])
            .unwrap();
        let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        let info = CertInfo::from_der(&der).unwrap();
        assert_eq!(info.subject, "CN=n");
        assert_eq!(info.issuer, "CN=info CA");
        assert_eq!(info.sans, ["DNS:n.lab", "IP:::1"]);
        assert!(!info.ca);
        // `Nov  7 18:20:00 2026 GMT`
        let parts: Vec<&str> = info.not_after.split_whitespace().collect();
        assert_eq!(parts.len(), 5, "{}", info.not_after);
        assert_eq!(parts[4], "GMT");
        assert_eq!(info.sha256.len(), 32 * 3 - 1);
        assert_eq!(info.status(SystemTime::UNIX_EPOCH), "NOT YET VALID");
        assert!(CertInfo::from_der(b"junk").is_err());
    }
}
