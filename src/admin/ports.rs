//! `show open ports regexp <pattern>`: the daemon's own listening sockets, one `lsof`-style
//! line each, as UCM prints them (docs/ucm.md §8):
//!
//! ```text
//! ccm      30622      ccmbase  364u  IPv4  207160      0t0  TCP 10.48.10.10:5090 (LISTEN)
//! ```
//!
//! Columns: command (9 characters, as `lsof` cuts it), PID, user, descriptor, type, device
//! (the socket's inode), size/offset, protocol and address. They are read where `lsof`
//! reads them: `/proc/self/fd` (descriptor → socket inode) and `/proc/self/net/{tcp,udp}[6]`
//! (inode → address, state). Only sockets the daemon lists as its listeners are shown, so a
//! test process running several daemons sees each one's own. Like UCM's, the pattern is
//! matched against the whole line.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Operations;

/// A socket the daemon listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenSocket {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// The command's handler.
pub fn show_open_ports(ops: &dyn Operations, pattern: &str) -> Result<String, String> {
    let re = regex::Regex::new(pattern).map_err(|e| format!("Invalid regular expression: {e}"))?;
    let lines = lsof_lines(&ops.listening())?;
    let mut out = String::from("\nExecuting.. please wait.\n");
    for line in lines.iter().filter(|l| re.is_match(l)) {
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// One line per socket of `ours` found open in this process, in descriptor order.
#[cfg(target_os = "linux")]
pub fn lsof_lines(ours: &[OpenSocket]) -> Result<Vec<String>, String> {
    let proc_error = |what: &str, e: std::io::Error| format!("cannot read {what}: {e}");
    // inode → descriptor
    let mut fds: HashMap<u64, u32> = HashMap::new();
    let dir = std::fs::read_dir("/proc/self/fd").map_err(|e| proc_error("/proc/self/fd", e))?;
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let inode = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok());
        if let Some(inode) = inode {
            fds.insert(inode, fd);
        }
    }
    let command = std::fs::read_to_string("/proc/self/comm")
        .map(|c| c.trim_end().chars().take(9).collect::<String>())
        .unwrap_or_default();
    let pid = std::process::id();
    let user = user_name();
    let mut found = Vec::new();
    for (table, protocol) in [
        ("/proc/self/net/tcp", Protocol::Tcp),
        ("/proc/self/net/tcp6", Protocol::Tcp),
        ("/proc/self/net/udp", Protocol::Udp),
        ("/proc/self/net/udp6", Protocol::Udp),
    ] {
        // A kernel without IPv6 has no tcp6/udp6.
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for row in text.lines().skip(1) {
            let Some(s) = parse_row(row) else { continue };
            let listening = match protocol {
                Protocol::Tcp => s.state == 0x0A,
                Protocol::Udp => true,
            };
            let ours = ours
                .iter()
                .any(|o| o.protocol == protocol && o.addr == s.local);
            let Some(&fd) = fds.get(&s.inode) else {
                continue;
            };
            if listening && ours {
                found.push((fd, protocol, s));
            }
        }
    }
    found.sort_by_key(|(fd, _, _)| *fd);
    Ok(found
        .into_iter()
        .map(|(fd, protocol, s)| line(&command, pid, &user, fd, s.inode, protocol, s.local))
        .collect())
}

/// One `lsof` line in the seed's columns.
fn line(
    command: &str,
    pid: u32,
    user: &str,
    fd: u32,
    inode: u64,
    protocol: Protocol,
    addr: SocketAddr,
) -> String {
    let (node, state) = match protocol {
        Protocol::Tcp => ("TCP", " (LISTEN)"),
        Protocol::Udp => ("UDP", ""),
    };
    let kind = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    // lsof names an IPv4-mapped address by its IPv4 form, on a line that says IPv6.
    let addr = match addr {
        SocketAddr::V6(v6) => v6
            .ip()
            .to_ipv4_mapped()
            .map_or(addr, |ip| SocketAddr::new(IpAddr::V4(ip), v6.port())),
        v4 => v4,
    };
    let fd = format!("{fd}u");
    format!(
        "{command:<8} {pid:<10} {user:<8} {fd:<5} {kind:<5} {inode:<11} 0t0  {node} {addr}{state}"
    )
}

#[cfg(not(target_os = "linux"))]
pub fn lsof_lines(_: &[OpenSocket]) -> Result<Vec<String>, String> {
    Err("show open ports reads /proc: Linux only".into())
}

struct Row {
    local: SocketAddr,
    state: u8,
    inode: u64,
}

/// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`
fn parse_row(row: &str) -> Option<Row> {
    let f: Vec<&str> = row.split_whitespace().collect();
    let local = parse_addr(f.get(1)?)?;
    let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
    let inode = f.get(9)?.parse().ok()?;
    Some(Row {
        local,
        state,
        inode,
    })
}

/// `0100007F:13C4` or 32 hex digits `:port`: the address as the kernel's 32-bit words in
/// host byte order, the port in plain hex.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| {
        ip.get(i * 8..i * 8 + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
            .map(u32::to_ne_bytes)
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            // An IPv4-mapped address stays IPv6: the socket is an AF_INET6 one (bound to
            // `::ffff:a.b.c.d`), lsof's TYPE column says IPv6, and the listener it belongs
            // to reports that IPv6 address as its own.
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The user name for this process's uid (`/etc/passwd`), else the number, as `lsof` does.
#[cfg(target_os = "linux")]
fn user_name() -> String {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        })
        .unwrap_or_default();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                (f.nth(1)? == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_addresses_parse() {
        assert_eq!(
            parse_addr("0100007F:13C4"),
            Some("127.0.0.1:5060".parse().unwrap())
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:13E2"),
            Some("[::1]:5090".parse().unwrap())
        );
        let mapped: SocketAddr = "[::ffff:10.48.10.10]:5090".parse().unwrap();
        assert_eq!(
            parse_addr("0000000000000000FFFF00000A0A300A:13E2"),
            Some(mapped)
        );
        assert_eq!(
            line("ccm", 1, "ccmbase", 3, 4, Protocol::Tcp, mapped),
            "ccm      1          ccmbase  3u    IPv6  4           0t0  TCP 10.48.10.10:5090 (LISTEN)"
        );
        assert_eq!(parse_addr("zz:1"), None);
    }

    #[test]
    fn the_line_has_the_seeds_columns() {
        let addr = "10.48.10.10:5090".parse().unwrap();
        assert_eq!(
            line("ccm", 30622, "ccmbase", 364, 207160, Protocol::Tcp, addr),
            "ccm      30622      ccmbase  364u  IPv4  207160      0t0  TCP 10.48.10.10:5090 (LISTEN)"
        );
        let addr = "127.0.0.1:5060".parse().unwrap();
        assert_eq!(
            line("sip-oauth", 7, "root", 12, 99, Protocol::Udp, addr),
            "sip-oauth 7          root     12u   IPv4  99          0t0  UDP 127.0.0.1:5060"
        );
    }

    /// An AF_INET6 socket bound to an IPv4-mapped address, as the real lsof shows it.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_mapped_socket_matches_lsof() {
        let Ok(l) = std::net::TcpListener::bind("[::ffff:127.0.0.1]:0") else {
            eprintln!("skipped: no IPv6 here");
            return;
        };
        let addr = l.local_addr().unwrap();
        let ours = lsof_lines(&[OpenSocket {
            protocol: Protocol::Tcp,
            addr,
        }])
        .unwrap();
        assert_eq!(ours.len(), 1, "{ours:?}");
        assert!(
            ours[0].contains("  IPv6  ")
                && ours[0].ends_with(&format!(" TCP 127.0.0.1:{} (LISTEN)", addr.port())),
            "{ours:?}"
        );
        let Ok(out) = std::process::Command::new("lsof")
            .args(["-nP", "-a", "-p", &std::process::id().to_string()])
            .arg(format!("-iTCP:{}", addr.port()))
            .args(["-sTCP:LISTEN"])
            .output()
        else {
            eprintln!("skipped the lsof comparison: lsof is not installed");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let theirs: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(theirs.len(), 1, "{text}");
        let fields = |l: &str| {
            l.split_whitespace()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fields(&ours[0]),
            fields(theirs[0]),
            "\n{}\n{}",
            ours[0],
            theirs[0]
        );
    }
}
