//! The header grammar on hostile text: name-addr (From, To), Contact lists, SIP URIs and the
//! bearer credential of (Proxy-)Authorization, plus every accessor the registrar calls on their
//! results. No panic. Input that is not UTF-8 is read lossily, as a header value never is (the
//! SIP layer rejects it first), so that the fuzzer's byte mutations still reach the parsers.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_oauth_registrar::sip::grammar::{
    ContactList, NameAddr, parse_bearer_credential, parse_contact_list, parse_name_addr,
    parse_sip_uri,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    if let Ok(na) = parse_name_addr(text) {
        walk(&na);
    }
    match parse_contact_list(text) {
        Ok(ContactList::Entries(entries)) => entries.iter().for_each(walk),
        Ok(ContactList::Star) | Err(_) => {}
    }
    if let Ok(uri) = parse_sip_uri(text) {
        let _ = uri.params.iter().count();
        let _ = uri.params.get("transport");
    }
    let _ = parse_bearer_credential(text);
});

fn walk(na: &NameAddr<'_>) {
    let _ = na.tag();
    let _ = na.param("expires");
    let _ = na.param("+sip.instance");
    let _ = na.param("+u.sip!devicename.ccm.cisco.com");
    let _ = na.params.iter().count();
    if let Ok(uri) = na.sip_uri() {
        let _ = uri.params.get("transport");
        let _ = uri.params.get("orig-hostport");
    }
}
