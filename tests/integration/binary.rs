//! Smoke test of the real binary: `check-config`, `token issue`, and `serve` on free ports
//! answering a REGISTER with that token over TLS on the OAuth port; `RUST_LOG` without a
//! subcommand.

use std::process::{Command, Stdio};
use std::time::Duration;

use sip_oauth_registrar::config::LAB_CONFIG;

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_sip-oauth-registrar");

/// Free ports: bind, note, release. A small race with other processes, acceptable here.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n)
        .map(|_| {
            let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let p = t.local_addr().unwrap().port();
            let u = std::net::UdpSocket::bind(("127.0.0.1", p));
            (t, u, p)
        })
        .collect();
    held.into_iter()
        .filter(|(_, u, _)| u.is_ok())
        .map(|(_, _, p)| p)
        .collect()
}

/// The lab configuration with node 1 only, on `ports` (8 of them).
fn one_node_config(ports: &[u16]) -> String {
    // One node is enough here; the second lab node keeps its ports out of the way by removal.
    let one_node = LAB_CONFIG.split("[[nodes]]").collect::<Vec<_>>();
    let node1 = one_node[1]
        .replace("sip_port = 5060", &format!("sip_port = {}", ports[0]))
        .replace(
            "sip_secure_port = 5061",
            &format!("sip_secure_port = {}", ports[1]),
        )
        .replace(
            "sip_oauth_port = 5090",
            &format!("sip_oauth_port = {}", ports[2]),
        )
        .replace(
            "sip_mra_oauth_port = 5091",
            &format!("sip_mra_oauth_port = {}", ports[3]),
        )
        .replace("https_port = 8443", &format!("https_port = {}", ports[4]))
        .replace(
            "tftp_http_port = 6970",
            &format!("tftp_http_port = {}", ports[5]),
        )
        .replace(
            "tftp_https_port = 6971",
            &format!("tftp_https_port = {}", ports[6]),
        )
        .replace("tftp_port = 6969", &format!("tftp_port = {}", ports[7]));
    let rest = one_node[2]
        .split_once("[[profiles]]")
        .unwrap()
        .1
        .replace(
            "nodes = [\"UCM-PUB\", \"UCM-SUB1\"]",
            "nodes = [\"UCM-PUB\"]",
        )
        .replace(
            "nodes = [\"UCM-SUB1\", \"UCM-PUB\"]",
            "nodes = [\"UCM-PUB\"]",
        );
    format!("{}[[nodes]]{node1}[[profiles]]{rest}", one_node[0])
}

#[tokio::test]
async fn check_config_token_issue_and_serve() {
    let state = tempfile::tempdir().unwrap();
    let ports = free_ports(8);
    assert!(ports.len() >= 8, "free ports");
    let config = one_node_config(&ports);
    let path = state.path().join("cluster.toml");
    std::fs::write(&path, config).unwrap();

    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .arg("--state-dir")
            .arg(state.path())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration ok"));

    let out = run(&["token", "issue", "--user", "alice", "--device", "CSFrado"]);
    assert!(!out.status.success(), "alice does not own CSFrado");
    let out = run(&["token", "issue", "--user", "rado", "--device", "CSFrado"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a compact JWS");

    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("--state-dir")
        .arg(state.path())
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(child_take(&mut child));

    let oauth: std::net::SocketAddr = format!("127.0.0.1:{}", ports[2]).parse().unwrap();
    let ca = std::fs::read_to_string(state.path().join("certs/lab-ca.pem")).unwrap();
    let mut tls = None;
    for _ in 0..100 {
        if let Ok(t) = tls_connect(oauth, &ca, None).await {
            tls = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = Client::Tls(
        Box::new(tls.expect("serve listens on the OAuth port")),
        Vec::new(),
    );
    let reg = Register::jabber("CSFrado", "1010");
    assert_eq!(c.register(&reg).await.status, 407);
    let r = c.register(&reg.next().bearer(&token)).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(r.header("Contact").unwrap().ends_with(";x-cisco-newreg"));
}

fn child_take(c: &mut std::process::Child) -> std::process::Child {
    // Move the child out so the guard owns it; the placeholder is never used.
    std::mem::replace(c, Command::new("true").spawn().unwrap())
}

/// With no subcommand the binary serves, and `RUST_LOG` sets its log filter as it does for
/// `serve` (the default filter, `info`, prints no DEBUG line).
#[test]
fn rust_log_applies_without_a_subcommand() {
    use std::io::{BufRead, BufReader};

    let state = tempfile::tempdir().unwrap();
    let ports = free_ports(8);
    assert!(ports.len() >= 8, "free ports");
    let path = state.path().join("cluster.toml");
    std::fs::write(&path, one_node_config(&ports)).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("--state-dir")
        .arg(state.path())
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(child);
    // Lines go to a channel so the wait is bounded even if the binary prints nothing.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut debug_line = None;
    let mut started = false;
    while debug_line.is_none() || !started {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        // `udp socket buffers` is logged at DEBUG while binding, before `started` at INFO.
        if line.contains(" DEBUG ") && line.contains("udp socket buffers") {
            debug_line = Some(line.clone());
        }
        started |= line.contains("sip-oauth-registrar started");
        seen.push(line);
    }
    assert!(
        started,
        "the bare command serves; stderr:\n{}",
        seen.join("\n")
    );
    assert!(
        debug_line.is_some(),
        "RUST_LOG=debug shows DEBUG records; stderr:\n{}",
        seen.join("\n")
    );
}
