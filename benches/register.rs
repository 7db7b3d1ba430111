//! The REGISTER pipeline without I/O: [`Registrar::handle`] on a cluster of many Jabber (CSF)
//! devices under the lab's OAuth profile, against two floors measured in the same run
//! (`baseline/copy`, `baseline/rsip_parse`). Before the timings, a one-off memory report prints
//! the bytes a binding and a cached token cost. See `benches/BENCHMARKING.md`.
//!
//! Run with `cargo bench --bench register`. `REGISTER_BENCH_DEVICES=<n>` changes how many devices
//! are measured (default 10 000; `cargo test --benches` uses 200).

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion};
use sha2::Digest;
use sip_oauth_registrar::auth::{AuthOptions, Authenticator, TokenAuthority};
use sip_oauth_registrar::cluster::{DeviceId, NodeId};
use sip_oauth_registrar::config::{LAB_CONFIG, Settings};
use sip_oauth_registrar::net::ListenerKind;
use sip_oauth_registrar::net::{Peer, Transport};
use sip_oauth_registrar::oauth::store::{RefreshRecord, TokenStore};
use sip_oauth_registrar::oauth::{KeyFiles, TokenService};
use sip_oauth_registrar::pki::generate_rsa_signing_key_pem;
use sip_oauth_registrar::registrar::{Registrar, Store};
use sip_oauth_registrar::sip;

/// Devices registered (and tokens cached) by the memory report, and rotated through by the
/// benches.
const MEASURED_DEVICES: usize = 10_000;
/// Under `cargo test --benches` (criterion's test mode): enough to exercise every path.
const MEASURED_DEVICES_TEST_MODE: usize = 200;
/// Extra devices, registered before the memory report's "before" reading so that one-off
/// allocations (thread cache, first B-tree node, lazily initialised statics) are not counted.
const WARMUP_DEVICES: usize = 64;
const CSF: &str = "Cisco Unified Client Services Framework";
const CCID: &str = "C3b0affefe1439041683e9c2c37d36f438ef0ef27c0938adc6226e0c03d169f2a";
const TOKEN_TTL_SECS: u64 = 3600;
/// CSeq of the first (memory report) REGISTER; refreshes use the next one, repeatedly: the
/// store answers a repeated CSeq on the same Call-ID as a refresh (a retransmission).
const FIRST_CSEQ: u32 = 2271;
const REMOTECC_BODY: &str = "--uniqueBoundary\r\n\
Content-Type: application/x-cisco-remotecc-request+xml\r\n\
Content-Disposition: session;handling=required\r\n\
\r\n\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<x-cisco-remotecc-request>\n<bulkregisterreq>\n\
<contact all=\"true\">\n<register></register>\n</contact>\n</bulkregisterreq>\n\
</x-cisco-remotecc-request>\n\
\r\n--uniqueBoundary\r\n\
Content-Type: application/x-cisco-remotecc-request+xml\r\n\
Content-Disposition: session;handling=required\r\n\
\r\n\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<x-cisco-remotecc-request>\n<optionsind>\n\
<combine max=\"6\">\n<capability><remotecc><status/></remotecc></capability>\n\
<capability><service-control/></capability>\n</combine>\n\
<dialog usage=\"hook status\">\n<unot/>\n<sub/>\n</dialog>\n\
<dialog usage=\"shared line\">\n<unot/>\n<sub/>\n</dialog>\n\
<presence usage=\"blf speed dial\">\n<unot/>\n<sub/>\n</presence>\n\
<joinreq></joinreq>\n</optionsind>\n</x-cisco-remotecc-request>\n\
\r\n--uniqueBoundary--\r\n";

/// The project's budgets on this machine (Kamailio: ~35 µs CPU per plain REGISTER; bare socket
/// path: ~4 µs). Reported, never asserted: timings belong here, not in tests.
const BUDGET_NS_PER_REFRESH: f64 = 10_000.0;
const BUDGET_BYTES_PER_BINDING: f64 = 512.0;

/// Every benchmark, in the order of the ratio table printed at the end.
const BENCHES: [&str; 18] = [
    "baseline/copy",
    "baseline/rsip_parse",
    "baseline/sha256_token",
    "register/parse",
    "register/challenge",
    "register/port_mismatch",
    "register/refresh_cached_token",
    "register/refresh_cached_token_remotecc",
    "register/top_via_as_received",
    "register/top_via_received",
    "register/top_via_rport",
    "register/first_token_validation",
    "tokens/validate_cached",
    "tokens/validate_cold",
    "tokens/issue_access",
    "tokens/issue_refresh",
    "tokens/refresh_grant",
    "tokens/password_check",
];

/// One configured Jabber device, its owner and its token.
struct Device {
    index: usize,
    name: String,
    user: String,
    dn: String,
    contact: String,
    token: String,
}

impl Device {
    fn new(index: usize, token: String) -> Self {
        Self {
            index,
            name: format!("CSFuser{index:05}"),
            user: format!("user{index:05}"),
            dn: (100_000 + index).to_string(),
            contact: format!("00000000-0000-4000-8000-{index:012x}"),
            token,
        }
    }

    fn ip(&self) -> Ipv4Addr {
        let [_, a, b, c] = (self.index as u32).to_be_bytes();
        Ipv4Addr::new(10, a, b, c)
    }

    /// Jabber's REGISTER (docs/ucm.md §4). `first` adds what the second REGISTER of a registration
    /// carries besides the token: `Reason: ...cisco-alarm:111...` and the remotecc multipart.
    fn register(&self, cseq: u32, token: Option<&str>, first: bool) -> Vec<u8> {
        let (i, ip, name, dn) = (self.index, self.ip(), &self.name, &self.dn);
        let mut m = format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/TLS {ip}:62162;branch=z9hG4bK{cseq:04x}{i:08x}\r\n\
             From: <sip:{dn}@127.0.0.1>;tag={i:08x}089000003bdd-00005eff\r\n\
             To: <sip:{dn}@127.0.0.1>\r\n\
             Call-ID: {i:08x}-12340017-00001c0b-00000cfa@{ip}\r\n\
             Max-Forwards: 70\r\n\
             Date: Mon, 30 Mar 2020 11:03:19 GMT\r\n\
             CSeq: {cseq} REGISTER\r\n\
             User-Agent: Cisco-CSF\r\n\
             Contact: <sip:{contact}@{ip}:62162;transport=tls>;\
             +sip.instance=\"<urn:uuid:00000000-0000-0000-0000-{i:012x}>\";\
             +u.sip!devicename.ccm.cisco.com=\"{name}\";+u.sip!model.ccm.cisco.com=\"503\";video\r\n\
             Supported: replaces,join,sdp-anat,norefersub,resource-priority,extended-refer,\
             X-cisco-callinfo,X-cisco-serviceuri,X-cisco-escapecodes,X-cisco-service-control,\
             X-cisco-srtp-fallback,X-cisco-monrec,X-cisco-config,X-cisco-sis-7.0.0,\
             X-cisco-xsi-8.5.1,X-cisco-graceful-reg,X-cisco-duplicate-reg\r\n",
            contact = self.contact,
        );
        if let Some(token) = token {
            m.push_str(&format!(
                "Proxy-Authorization: Bearer token=\"{token}\"\r\n"
            ));
        }
        m.push_str("Expires: 3600\r\n");
        if first {
            m.push_str(&format!(
                "Reason: SIP;cause=200;text=\"cisco-alarm:111 Name={name} \
                 ActiveLoad=Jabber_for_Windows-12.8.0.51973 \
                 InactiveLoad=Jabber_for_Windows-12.8.0.51973 \
                 Last=Application-Requested-Destroy\"\r\n\
                 Content-Type: multipart/mixed; boundary=uniqueBoundary\r\n\
                 Mime-Version: 1.0\r\n\
                 Content-Length: {}\r\n\r\n{REMOTECC_BODY}",
                REMOTECC_BODY.len()
            ));
        } else {
            m.push_str("Content-Length: 0\r\n\r\n");
        }
        m.into_bytes()
    }
}

/// The lab configuration with its users and devices replaced by `devices.len()` users, each
/// owning one CSF device under the lab's Jabber OAuth profile, one TOML line each.
fn cluster_toml(devices: &[Device]) -> String {
    let mut lab: toml::Table = toml::from_str(LAB_CONFIG).expect("lab.toml parses");
    let profile = lab["profiles"]
        .as_array()
        .and_then(|ps| {
            ps.iter().find(|p| {
                p.get("product_type").and_then(|v| v.as_str()) == Some(CSF)
                    && p.get("enable_oauth_authentication")
                        .and_then(|v| v.as_bool())
                        .unwrap_or(false)
            })
        })
        .and_then(|p| p.get("name")?.as_str())
        .expect("lab.toml has an OAuth profile for Jabber (CSF)")
        .to_owned();
    lab.remove("users");
    lab.remove("devices");
    // Root keys come before the first [table] header.
    let mut text = String::with_capacity(devices.len() * 280 + 4096);
    text.push_str("users = [\n");
    for d in devices {
        text.push_str(&format!("  {{ id = \"{}\" }},\n", d.user));
    }
    text.push_str("]\ndevices = [\n");
    for d in devices {
        text.push_str(&format!(
            "  {{ name = \"{}\", product_type = \"{CSF}\", owner = \"{}\", profile = \"{profile}\", \
             lines = [{{ dn = \"{}\", display_name = \"User {}\", contact = \"{}\" }}] }},\n",
            d.name, d.user, d.dn, d.index, d.contact
        ));
    }
    text.push_str("]\n");
    text.push_str(&toml::to_string(&lab).expect("lab.toml re-serialises"));
    text
}

struct Fixture {
    registrar: Registrar,
    tokens: Arc<TokenAuthority>,
    /// The same keys without a cache: every validation is a cold one.
    uncached: TokenAuthority,
    /// The token service over `tokens`, with an in-memory refresh-token store.
    service: TokenService,
    /// Warm-up devices first, then the measured ones.
    devices: Vec<Device>,
    /// 5090, TLS.
    oauth: Peer,
    /// 5061, TLS: a legacy listener, where an OAuth-profile device gets the port-mismatch 403.
    legacy: Peer,
}

impl Fixture {
    fn new(measured: usize) -> Self {
        let total = WARMUP_DEVICES + measured;
        let t = Instant::now();
        let pem = generate_rsa_signing_key_pem().expect("RSA key generation");
        let mut devices: Vec<Device> = (0..total).map(|i| Device::new(i, String::new())).collect();
        let config = cluster_toml(&devices);
        let parse = Instant::now();
        let settings = Settings::from_toml(&config).expect("generated config is valid");
        let parse = parse.elapsed();
        let cluster = Arc::new(settings.cluster.clone());
        let encryption_key = sip_oauth_registrar::auth::generate_encryption_key();
        let authority = |cache_capacity| {
            TokenAuthority::new(
                &cluster.params.uuid,
                &pem,
                &encryption_key,
                AuthOptions {
                    leeway_secs: settings.tokens.leeway_secs,
                    cache_capacity,
                },
            )
            .expect("token authority")
        };
        let tokens = Arc::new(authority(settings.tokens.cache_entries));
        let uncached = authority(0);
        let service = TokenService::new(
            Arc::new(Settings::lab().expect("lab config").cluster),
            tokens.clone(),
            TokenStore::in_memory(),
            KeyFiles {
                signing: PathBuf::new(),
                encryption: PathBuf::new(),
            },
        );
        assert!(
            settings.tokens.cache_entries >= 4 * total && settings.limits.max_bindings >= total,
            "lab limits too small for {total} devices"
        );
        let store = Store::new(cluster.devices.len(), settings.limits.max_bindings);
        let registrar = Registrar::new(cluster, store, tokens.clone());
        let setup = t.elapsed();
        let now = unix_now();
        for d in &mut devices {
            d.token = tokens
                .issue(&d.user, CCID, TOKEN_TTL_SECS, now)
                .expect("token issue")
                .token;
        }
        println!(
            "setup: {total} devices: key, config and registrar in {:.2} s (Settings::from_toml \
             of {} KiB: {:.2} s), {total} tokens issued in {:.2} s",
            setup.as_secs_f64(),
            config.len() / 1024,
            parse.as_secs_f64(),
            (t.elapsed() - setup).as_secs_f64()
        );
        let peer = |listener, port| Peer {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), port),
            node: NodeId(0),
            listener,
            transport: Transport::Tls,
            cert_names: None,
        };
        Self {
            registrar,
            tokens,
            uncached,
            service,
            devices,
            oauth: peer(ListenerKind::OAuth, 62162),
            legacy: peer(ListenerKind::SipSecure, 62162),
        }
    }
}

/// Anonymous resident memory of the process (`RssAnon`, else `VmRSS`), in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    field("RssAnon:")
        .or_else(|| field("VmRSS:"))
        .map(|kib| kib * 1024)
}

/// Resident growth, in bytes, of `work` run on a new thread that gets a malloc arena of its own
/// (glibc gives a new thread a fresh arena while no exited thread's arena is free, so the thread
/// stays alive until the returned sender is dropped). `warm_up` runs first, unmeasured.
fn grown_on_fresh_thread<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    warm_up: impl FnOnce() + Send + 's,
    work: impl FnOnce() + Send + 's,
) -> (Option<u64>, mpsc::Sender<()>) {
    let (result_tx, result_rx) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    scope.spawn(move || {
        warm_up();
        let before = resident_bytes();
        work();
        let after = resident_bytes();
        let _ = result_tx.send(before.zip(after).map(|(b, a)| a.saturating_sub(b)));
        // Returns when the sender is dropped.
        let _ = released.recv();
    });
    (result_rx.recv().ok().flatten(), release)
}

/// Registers every measured device through `Registrar::handle` (tokens cached beforehand) and
/// prints the store's bytes per binding and the token cache's bytes per token.
fn memory_report(fx: &Fixture) {
    let (warm, measured) = fx.devices.split_at(WARMUP_DEVICES);
    let n = measured.len();
    let now = unix_now();
    let authenticate = |ds: &[Device]| {
        for d in ds {
            fx.tokens.authenticate(&d.token, now).expect("valid token");
        }
    };
    let register = |ds: &[Device]| {
        for d in ds {
            let req = d.register(FIRST_CSEQ, Some(&d.token), true);
            let reply = fx.registrar.handle(&req, &fx.oauth).expect("a reply");
            assert!(reply.starts_with(b"SIP/2.0 200 "), "{}", show(&reply));
        }
    };
    let (cache, store) = std::thread::scope(|s| {
        // Token cache first, so that the REGISTERs below are cache hits and add nothing to it.
        // Both threads stay alive until the scope ends (`_keep`), so each has its own arena.
        let (cache, _keep) =
            grown_on_fresh_thread(s, || authenticate(warm), || authenticate(measured));
        let (store, _keep_too) = grown_on_fresh_thread(s, || register(warm), || register(measured));
        (cache, store)
    });
    let stats = fx.tokens.cache_stats();
    assert_eq!(stats.len, fx.devices.len(), "every token cached once");
    assert_eq!(
        fx.registrar.store().len(),
        fx.devices.len(),
        "every device bound"
    );

    // What a binding owns, for comparison with what its registration cost.
    let at = tokio::time::Instant::now();
    let strings: usize = measured
        .iter()
        .map(|d| {
            let b = fx
                .registrar
                .store()
                .lookup(DeviceId(d.index as u32), at)
                .expect("bound");
            b.contact_uri.len() + b.call_id.len() + b.instance.as_deref().map_or(0, str::len)
        })
        .sum();
    let token_text: usize = measured.iter().map(|d| d.token.len()).sum();
    let slot = sip_oauth_registrar::registrar::store::SLOT_BYTES + size_of::<bool>();
    let per = |bytes: u64| bytes as f64 / n as f64;
    match (store, cache) {
        (Some(store), Some(cache)) => {
            let binding = slot as f64 + per(store);
            println!(
                "memory: store {binding:.0} B/binding, token cache {:.0} B/token (N={n})",
                per(cache)
            );
            println!(
                "memory:   budget {BUDGET_BYTES_PER_BINDING:.0} B/binding: store {}, store + \
                 token cache {}",
                verdict(binding / BUDGET_BYTES_PER_BINDING),
                verdict((binding + per(cache)) / BUDGET_BYTES_PER_BINDING)
            );
            println!(
                "memory:   store = {slot} B slot (one inline binding + seen flag, preallocated for \
                 every configured device) + {:.0} B heap per registration (of which the \
                 binding's strings are {} B; the expiry B-tree and malloc overhead are the rest)",
                per(store),
                strings / n
            );
            println!(
                "memory:   token cache = heap per verified token (its text is {} B; the map \
                 entry, the Identity's two Arc<str> and malloc overhead are the rest)",
                token_text / n
            );
            println!(
                "memory:   method: growth of anonymous resident memory (RssAnon, 4 KiB pages) on a \
                 thread with a fresh malloc arena; includes allocator overhead"
            );
        }
        _ => println!("memory: not measured (no /proc/self/status on this system)"),
    }
}

fn verdict(share: f64) -> String {
    let word = if share <= 1.0 { "within" } else { "OVER" };
    format!("{word} ({:.0}% of budget)", share * 100.0)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn show(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).into_owned()
}

/// Cycles through `items`, one per call: the benches touch many devices, not one cache line.
struct Rotation<'a, T> {
    items: &'a [T],
    next: usize,
}

impl<'a, T> Rotation<'a, T> {
    fn new(items: &'a [T]) -> Self {
        Self { items, next: 0 }
    }

    fn next(&mut self) -> &'a T {
        let item = &self.items[self.next];
        self.next += 1;
        if self.next == self.items.len() {
            self.next = 0;
        }
        item
    }
}

/// Every request of a set answered with `status`: a bench must measure the path it names.
fn expect_status(fx: &Fixture, reqs: &[Vec<u8>], peer: &Peer, status: &str) {
    let prefix = format!("SIP/2.0 {status} ");
    for req in reqs {
        let reply = fx.registrar.handle(req, peer).expect("a reply");
        assert!(reply.starts_with(prefix.as_bytes()), "{}", show(&reply));
    }
}

fn benches(c: &mut Criterion, fx: &Fixture) {
    let refresh_cseq = FIRST_CSEQ + 1;
    let refresh: Vec<Vec<u8>> = fx
        .devices
        .iter()
        .map(|d| d.register(refresh_cseq, Some(&d.token), false))
        .collect();
    let refresh_remotecc: Vec<Vec<u8>> = fx
        .devices
        .iter()
        .map(|d| d.register(refresh_cseq, Some(&d.token), true))
        .collect();
    let anonymous: Vec<Vec<u8>> = fx
        .devices
        .iter()
        .map(|d| d.register(FIRST_CSEQ - 1, None, false))
        .collect();
    expect_status(fx, &refresh, &fx.oauth, "200");
    expect_status(fx, &refresh_remotecc, &fx.oauth, "200");
    expect_status(fx, &anonymous, &fx.oauth, "407");
    expect_status(fx, &anonymous, &fx.legacy, "403");
    let refresh_len = refresh.iter().map(Vec::len).sum::<usize>() / refresh.len();
    println!(
        "requests: refresh {refresh_len} B (token {} B), with remotecc body {} B, without \
         credentials {} B; rotating through {} devices",
        fx.devices[0].token.len(),
        refresh_remotecc[0].len(),
        anonymous[0].len(),
        fx.devices.len()
    );

    let mut g = c.benchmark_group("baseline");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("copy", |b| {
        let mut reqs = Rotation::new(&refresh);
        b.iter(|| black_box(reqs.next()).to_vec());
    });
    g.bench_function("rsip_parse", |b| {
        let mut reqs = Rotation::new(&refresh);
        b.iter(|| rsip::Request::try_from(&black_box(reqs.next())[..]));
    });
    // The floor of a cached validation: the cache is keyed by this digest.
    g.bench_function("sha256_token", |b| {
        let mut devices = Rotation::new(&fx.devices);
        b.iter(|| sha2::Sha256::digest(black_box(devices.next().token.as_bytes())));
    });
    g.finish();

    let mut g = c.benchmark_group("register");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("parse", |b| {
        let mut reqs = Rotation::new(&refresh);
        b.iter(|| sip::parse(black_box(reqs.next())));
    });
    g.bench_function("challenge", |b| {
        let mut reqs = Rotation::new(&anonymous);
        b.iter(|| fx.registrar.handle(black_box(reqs.next()), &fx.oauth));
    });
    g.bench_function("port_mismatch", |b| {
        let mut reqs = Rotation::new(&anonymous);
        b.iter(|| fx.registrar.handle(black_box(reqs.next()), &fx.legacy));
    });
    g.bench_function("refresh_cached_token", |b| {
        let mut reqs = Rotation::new(&refresh);
        b.iter(|| fx.registrar.handle(black_box(reqs.next()), &fx.oauth));
    });
    g.bench_function("refresh_cached_token_remotecc", |b| {
        let mut reqs = Rotation::new(&refresh_remotecc);
        b.iter(|| fx.registrar.handle(black_box(reqs.next()), &fx.oauth));
    });
    // The top Via as a response echoes it (RFC 3261 §18.2.1, RFC 3581): the common case (host
    // is the source), `received` added (NAT), and `rport` filled in.
    let via = "SIP/2.0/TLS 10.10.10.10:62162;branch=z9hG4bK00001188";
    let via_rport = "SIP/2.0/UDP 10.10.10.10:62162;rport;branch=z9hG4bK00001188";
    let jabber = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 10, 10, 10)), 62162);
    let nat = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40000);
    for (id, via, source) in [
        ("top_via_as_received", via, jabber),
        ("top_via_received", via, nat),
        ("top_via_rport", via_rport, nat),
    ] {
        g.bench_function(id, |b| {
            let mut out = String::with_capacity(256);
            b.iter(|| {
                out.clear();
                sip::response::write_top_via(&mut out, black_box(via), source);
                black_box(out.len())
            });
        });
    }

    // Cold: a token never seen, so an RSA-2048 verification, JSON claims and a cache insert.
    // Signing the fresh token in setup costs ~20x the routine: keep the sample small.
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(1));
    let now = unix_now();
    g.bench_function("first_token_validation", |b| {
        let mut devices = Rotation::new(&fx.devices);
        b.iter_batched_ref(
            || {
                let d = devices.next();
                let token = fx
                    .tokens
                    .issue(&d.user, CCID, TOKEN_TTL_SECS, now)
                    .expect("issue");
                d.register(refresh_cseq, Some(&token.token), false)
            },
            |req| fx.registrar.handle(req, &fx.oauth),
            BatchSize::SmallInput,
        );
    });
    g.finish();
    token_benches(c, fx);
}

/// The token service: what one validation, issue and refresh grant cost, without SIP.
fn token_benches(c: &mut Criterion, fx: &Fixture) {
    let now = unix_now();
    let client = "C".to_owned() + &"ab".repeat(32);
    // A refresh token bound to a lab user (the service's cluster is the lab's).
    let refresh = fx
        .tokens
        .issue_refresh(&client, TOKEN_TTL_SECS, now)
        .expect("issue refresh");
    fx.service
        .store()
        .insert(RefreshRecord {
            tid: refresh.token_id.clone(),
            user: "rado".into(),
            client_id: client.clone(),
            issued_at: now,
            expires_at: refresh.expires_at,
            revoked_at: None,
        })
        .expect("in-memory insert");
    assert!(fx.service.refresh(&refresh.token, &client).is_ok());
    let lab_hash = Settings::lab().expect("lab config").cluster.users[0]
        .password_hash
        .clone()
        .expect("lab users have passwords");

    let mut g = c.benchmark_group("tokens");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("validate_cached", |b| {
        let mut devices = Rotation::new(&fx.devices);
        b.iter(|| {
            fx.tokens
                .authenticate(black_box(&devices.next().token), now)
        });
    });
    g.bench_function("validate_cold", |b| {
        let mut devices = Rotation::new(&fx.devices);
        b.iter(|| {
            fx.uncached
                .authenticate(black_box(&devices.next().token), now)
        });
    });
    g.bench_function("issue_access", |b| {
        b.iter(|| {
            fx.tokens
                .issue(black_box("rado"), &client, TOKEN_TTL_SECS, now)
        });
    });
    g.bench_function("issue_refresh", |b| {
        b.iter(|| {
            fx.tokens
                .issue_refresh(black_box(&client), TOKEN_TTL_SECS, now)
        });
    });
    // Verify the refresh token (RSA), look it up, sign a new access token (RSA + AES).
    g.bench_function("refresh_grant", |b| {
        b.iter(|| fx.service.refresh(black_box(&refresh.token), &client));
    });
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(2));
    // argon2id as configured (m=19 MiB, t=2): what the password grant and the login form cost.
    g.bench_function("password_check", |b| {
        b.iter(|| sip_oauth_registrar::oauth::password::verify(&lab_hash, black_box("lab")));
    });
    g.finish();
}

/// Where criterion writes its estimates (its own search order, less `cargo metadata`).
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    // <target>/<profile>/deps/register-<hash>
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// Criterion's typical time (slope, else mean) in ns, if `id` was measured since `since`.
fn estimate(dir: &std::path::Path, id: &str, since: SystemTime) -> Option<f64> {
    let path = dir.join(id).join("new").join("estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| v["mean"]["point_estimate"].as_f64())
}

/// The run's results as ratios to the floors measured in the same run.
fn print_ratios(since: SystemTime) {
    let Some(dir) = criterion_dir() else { return };
    let times: HashMap<&str, f64> = BENCHES
        .iter()
        .filter_map(|id| Some((*id, estimate(&dir, id, since)?)))
        .collect();
    if times.is_empty() {
        return;
    }
    let copy = times.get("baseline/copy");
    let rsip = times.get("baseline/rsip_parse");
    let ratio = |t: f64, base: Option<&f64>| match base {
        Some(b) if t / b < 10.0 => format!("{:.2}", t / b),
        Some(b) => format!("{:.1}", t / b),
        None => "-".to_owned(),
    };
    println!("\nratios to the baselines of this run (criterion's estimate):");
    println!(
        "{:<40} {:>12} {:>9} {:>12}",
        "bench", "time", "x copy", "x rsip_parse"
    );
    for id in BENCHES {
        if let Some(&t) = times.get(id) {
            let shown = if t >= 1e6 {
                format!("{:.2} ms", t / 1e6)
            } else {
                format!("{:.3} µs", t / 1e3)
            };
            println!(
                "{id:<40} {shown:>12} {:>9} {:>12}",
                ratio(t, copy),
                ratio(t, rsip)
            );
        }
    }
    if let Some(&t) = times.get("register/refresh_cached_token") {
        println!(
            "budget: register/refresh_cached_token {:.2} µs against {:.0} µs per plain REGISTER: {}",
            t / 1e3,
            BUDGET_NS_PER_REFRESH / 1e3,
            verdict(t / BUDGET_NS_PER_REFRESH)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    // Criterion runs each bench once (test mode) unless `--bench` is given without `--test`.
    let benchmarking = has("--bench") && !has("--test") && !has("--list");
    let measured = std::env::var("REGISTER_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benchmarking {
            MEASURED_DEVICES
        } else {
            MEASURED_DEVICES_TEST_MODE
        });
    let started = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    let fx = Fixture::new(measured);
    memory_report(&fx);
    benches(&mut c, &fx);
    c.final_summary();
    if benchmarking {
        print_ratios(started);
    }
}
