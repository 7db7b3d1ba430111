//! Integration tests: the real server in-process on ephemeral ports, real TLS (certificates
//! made at test time), real sockets. One binary, a module per feature.

// Harness items are `pub` for the sibling test modules; nothing is exported from a test binary.
#![allow(unreachable_pub)]

mod harness;

mod admin;
mod axl;
mod binary;
mod bindings;
mod errors;
mod hostile;
mod jabber;
mod jose;
mod mtls;
mod oauth;
mod outside_idp;
mod port_rules;
mod provisioning;
mod register;
mod reload;
mod streams;
mod tls_failures;
mod torture;
mod udp;
mod uds;
mod web;
mod xml;
