//! The OAuth token service on HTTPS 8443: UCM-format tokens issued by password, code and
//! refresh grants, revocation, key regeneration ([`service`]), its HTTP routes ([`http`]),
//! what survives a restart ([`store`]) and password hashes ([`password`]).

pub mod http;
pub mod password;
pub mod service;
pub mod store;

pub use service::{AuthzKey, KeyFiles, OAuthError, TokenService};
