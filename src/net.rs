//! The vocabulary every layer shares about where a message or connection arrived: transport,
//! listener, peer. A leaf module (it imports nothing of the crate but [`cluster::NodeId`]), so
//! `registrar`, `policy` and the store can name a listener without importing `transport`.
//!
//! [`cluster::NodeId`]: crate::cluster::NodeId

use std::net::SocketAddr;
use std::sync::Arc;

use crate::cluster::NodeId;

/// How a message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// The four SIP listeners of a node, by the UCM port setting they serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// "SIP Phone Port" (5060), UDP and TCP.
    Sip,
    /// "SIP Phone Secure Port" (5061), TLS with an optional client certificate.
    SipSecure,
    /// "SIP Phone OAuth Port" (5090), TLS with the server certificate only.
    OAuth,
    /// "SIP Mobile and Remote Access OAuth Port" (5091), mutual TLS from Expressway-C.
    MraOAuth,
}

impl ListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sip => "sip",
            Self::SipSecure => "sip-secure",
            Self::OAuth => "sip-oauth",
            Self::MraOAuth => "sip-mra-oauth",
        }
    }

    pub fn is_oauth(self) -> bool {
        matches!(self, Self::OAuth | Self::MraOAuth)
    }
}

/// The HTTP listeners of a node (side listeners: they never see SIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebPort {
    /// HTTPS 8443 with the tomcat certificate: the OAuth endpoints (`/ssosp/...`).
    Tomcat,
    /// HTTP 6970: the TFTP server's config files.
    TftpHttp,
    /// HTTPS 6971 (tomcat certificate): the TFTP server's config files, with a token under SIP
    /// OAuth.
    TftpHttps,
}

impl WebPort {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tomcat => "https-tomcat",
            Self::TftpHttp => "tftp-http",
            Self::TftpHttps => "tftp-https",
        }
    }
}

/// What a listening socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Sip(ListenerKind),
    Web(WebPort),
    /// TFTP (UDP), config files for non-OAuth devices.
    Tftp,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sip(kind) => kind.name(),
            Self::Web(port) => port.name(),
            Self::Tftp => "tftp",
        }
    }
}

/// Who sent a SIP message, and where it arrived.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub node: NodeId,
    pub listener: ListenerKind,
    pub transport: Transport,
    /// CN and DNS SANs of the client certificate verified at the TLS handshake, lower-cased.
    pub cert_names: Option<Arc<[String]>>,
}
