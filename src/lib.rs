//! sip-oauth-registrar: a SIP registrar that behaves on the wire like Cisco Unified
//! Communications Manager in "SIP OAuth mode", for labs, client integration tests and load.
//!
//! # Layout
//! Data flows one way, top to bottom:
//!
//! | module | role |
//! |---|---|
//! | [`config`] | the TOML cluster file → typed [`config::Settings`] |
//! | [`cluster`] | the cluster model (nodes, ports, profiles, users, devices), read-only |
//! | [`server`] | prepares the state directory, binds every listener, shutdown |
//! | [`tls`] | server configs for 5061/5090/5091/8443 (swappable slots) and the Expressway-C check |
//! | [`net`] | leaf vocabulary every layer shares: [`net::Transport`], [`net::ListenerKind`], [`net::Peer`] |
//! | [`transport`] | UDP/TCP/TLS accept loops (SIP and HTTP listeners alike) and the stream [`transport::codec`]; no SIP logic |
//! | [`tftp`] | read-only TFTP (RFC 1350, 2347–2349) serving rendered config files from a callback |
//! | [`web`] | HTTP/1.1 connections (hyper) serving an axum router on the side listeners |
//! | [`sip`] | bytes → [`sip::Request`], responses in UCM's order |
//! | [`policy`] | the port rule table, a pure function |
//! | [`auth`] | bearer tokens: UCM-format issue and validation, outside issuers, cache ([`auth::Authenticator`] is the seam) |
//! | [`oauth`] | the token service on 8443: grants, login form, revocation, key regeneration, its persisted store |
//! | [`uds`] | User Data Services on 8443: `version`, `servers`, `clusterUser`, `user/<id>`, `user/<id>/devices` |
//! | [`registrar`] | the REGISTER pipeline and the binding [`registrar::Store`] |
//! | [`pki`] | lab certificates and keys, made on first start |
//! | [`admin`] | UCM's `admin:` CLI: command table, local admin socket (Unix), `cli` client |
//! | [`expressway`] | the Expressway-C table (`expresswaycconfiguration`): persisted, published to the 5091 verifier; `run sql` |
//! | [`axl`] | AXL (SOAP on 8443 `/axl/`): the Expressway-C operations and `executeSQLQuery` |
//! | [`provisioning`] | the TFTP server's `<device>.cnf.xml` files: rendering, who gets which, HTTP 6970/6971 |
//!
//! `sip`, `policy`, `registrar` and `cluster` never touch sockets; in `auth`, only `external`
//! does (its JWKS fetch, in a background task, never on the request path).

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod axl;
pub mod cluster;
pub mod config;
pub mod expressway;
pub mod net;
pub mod oauth;
pub mod pki;
pub mod policy;
pub mod provisioning;
pub mod registrar;
pub mod server;
pub mod sip;
pub mod tftp;
pub mod tls;
pub mod transport;
pub mod uds;
pub mod web;
