//! Port rules: which listener a device may register on, and what it must prove there.
//! Pure functions over the cluster model; the README's port rule table is this module.
//!
//! Spec §5 names the cases that get UCM's `403` "SIP OAuth Registration port Mismatch": an
//! OAuth-profile device on 5060/5061, a non-OAuth device on 5090/5091, and cluster OAuth mode
//! off while an OAuth port is reached. The rest of the table is ours (see README).

use crate::cluster::{Profile, SecurityMode};
use crate::net::ListenerKind;

/// How a REGISTER that passed the port rule must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Non-secure legacy device: no credentials (Digest arrives in a later release).
    Open,
    /// Authenticated/encrypted legacy device on 5061: its TLS client certificate (LSC/MIC),
    /// verified against CallManager-trust at the handshake, must name the device.
    DeviceCertificate,
    /// OAuth device on an OAuth port: `Proxy-Authorization: Bearer` with a valid access token.
    Bearer,
}

/// Why the port rule refused a REGISTER; each maps to UCM's 403 Warning text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortReject {
    /// `Warning: 399 <node> "SIP OAuth Registration port Mismatch"`.
    PortMismatch,
    /// `Warning: 399 <node> "TLS authentication failure"`: a secure device off TLS.
    TlsAuthenticationFailure,
}

impl PortReject {
    pub fn warning_text(self) -> &'static str {
        match self {
            Self::PortMismatch => "SIP OAuth Registration port Mismatch",
            Self::TlsAuthenticationFailure => "TLS authentication failure",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::PortMismatch => "port_mismatch",
            Self::TlsAuthenticationFailure => "tls_authentication_failure",
        }
    }
}

/// The port rule table.
///
/// A device is "under OAuth" when cluster SIP OAuth mode is on and its profile enables OAuth.
/// Devices under OAuth register only on the OAuth ports; every other device only on the
/// legacy ports. On the legacy ports the profile's security mode decides what is checked.
pub fn admit(
    cluster_oauth_mode: bool,
    profile: &Profile,
    listener: ListenerKind,
) -> Result<Admission, PortReject> {
    let under_oauth = cluster_oauth_mode && profile.oauth;
    match (listener.is_oauth(), under_oauth) {
        (true, true) => Ok(Admission::Bearer),
        (true, false) | (false, true) => Err(PortReject::PortMismatch),
        (false, false) => match (profile.security_mode, listener) {
            (SecurityMode::NonSecure, _) => Ok(Admission::Open),
            (_, ListenerKind::SipSecure) => Ok(Admission::DeviceCertificate),
            _ => Err(PortReject::TlsAuthenticationFailure),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ProductType, TransportType};

    fn profile(oauth: bool, security_mode: SecurityMode) -> Profile {
        Profile {
            name: "p".into(),
            description: String::new(),
            product_type: ProductType::from_name("Cisco Unified Client Services Framework"),
            security_mode,
            transport: if security_mode == NonSecure {
                TransportType::TcpUdp
            } else {
                TransportType::Tls
            },
            digest_authentication: false,
            tftp_encrypted_config: false,
            oauth,
        }
    }

    use Admission::*;
    use ListenerKind::*;
    use PortReject::*;
    use SecurityMode::*;

    /// Every row of the README table: (cluster mode, profile OAuth, security, listener, outcome).
    type Row = (
        bool,
        bool,
        SecurityMode,
        ListenerKind,
        Result<Admission, PortReject>,
    );
    const TABLE: &[Row] = &[
        (true, true, Encrypted, OAuth, Ok(Bearer)),
        (true, true, Encrypted, MraOAuth, Ok(Bearer)),
        (true, true, Encrypted, Sip, Err(PortMismatch)),
        (true, true, Encrypted, SipSecure, Err(PortMismatch)),
        (true, false, NonSecure, OAuth, Err(PortMismatch)),
        (true, false, NonSecure, MraOAuth, Err(PortMismatch)),
        (true, false, Encrypted, OAuth, Err(PortMismatch)),
        (true, false, NonSecure, Sip, Ok(Open)),
        (true, false, NonSecure, SipSecure, Ok(Open)),
        (true, false, Encrypted, SipSecure, Ok(DeviceCertificate)),
        (true, false, Authenticated, SipSecure, Ok(DeviceCertificate)),
        (true, false, Encrypted, Sip, Err(TlsAuthenticationFailure)),
        (false, true, Encrypted, OAuth, Err(PortMismatch)),
        (false, true, Encrypted, MraOAuth, Err(PortMismatch)),
        (false, false, NonSecure, OAuth, Err(PortMismatch)),
        (false, true, Encrypted, SipSecure, Ok(DeviceCertificate)),
        (false, true, Encrypted, Sip, Err(TlsAuthenticationFailure)),
        (false, false, NonSecure, Sip, Ok(Open)),
    ];

    #[test]
    fn every_row_of_the_port_rule_table() {
        for &(mode, oauth, security, listener, expected) in TABLE {
            assert_eq!(
                admit(mode, &profile(oauth, security), listener),
                expected,
                "mode={mode} oauth={oauth} security={security:?} listener={listener:?}"
            );
        }
    }

    #[test]
    fn warning_texts_are_ucms() {
        assert_eq!(
            PortMismatch.warning_text(),
            "SIP OAuth Registration port Mismatch"
        );
        assert_eq!(
            TlsAuthenticationFailure.warning_text(),
            "TLS authentication failure"
        );
    }
}
