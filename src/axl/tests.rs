//! AXL operations end to end through [`super::dispatch`]: request envelopes in, response and
//! fault envelopes out, against a store in a temporary directory.

use super::*;
use crate::expressway::FILE;

fn store(dir: &std::path::Path) -> ExpresswayStore {
    ExpresswayStore::open(&dir.join(FILE), "u", &[]).unwrap()
}

fn envelope(op: &str) -> Vec<u8> {
    format!(
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:ns=\"http://www.cisco.com/AXL/API/12.5\"><soapenv:Header/><soapenv:Body>{op}\
         </soapenv:Body></soapenv:Envelope>"
    )
    .into_bytes()
}

fn ok(s: &ExpresswayStore, op: &str) -> String {
    let (_, r) = dispatch(s, true, &envelope(op));
    String::from_utf8(r.unwrap_or_else(|f| panic!("{f:?}"))).unwrap()
}

fn fault(s: &ExpresswayStore, op: &str) -> Fault {
    let (_, r) = dispatch(s, true, &envelope(op));
    r.expect_err("a fault")
}

const ADD: &str = "<ns:addExpresswayCConfiguration><expresswayCConfiguration>\
    <HostNameOrIP>exp-c2</HostNameOrIP><description>added through axl</description>\
    <X509SubjectNameorSubjectAlternateName>exp-c2.domain-9.com,Other.com\
    </X509SubjectNameorSubjectAlternateName></expresswayCConfiguration>\
    </ns:addExpresswayCConfiguration>";

#[test]
fn add_get_list_update_remove() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let out = ok(&s, ADD);
    let r = s.list()[0].clone();
    assert!(
        out.contains(&format!(
            "<ns:addExpresswayCConfigurationResponse xmlns:ns=\"http://www.cisco.com/AXL/API/12.5\">\
             <return>{}</return>",
            r.axl_uuid()
        )),
        "{out}"
    );
    assert_eq!(
        s.table().load()[0].subject_names,
        ["exp-c2.domain-9.com", "other.com"]
    );

    let out = ok(
        &s,
        "<ns:getExpresswayCConfiguration><HostNameOrIP>EXP-C2</HostNameOrIP>\
         </ns:getExpresswayCConfiguration>",
    );
    assert!(
        out.contains(&format!(
            "<return><expresswayCConfiguration uuid=\"{}\"><HostNameOrIP>exp-c2</HostNameOrIP>\
             <description>added through axl</description><X509SubjectNameorSubjectAlternateName>\
             exp-c2.domain-9.com,Other.com</X509SubjectNameorSubjectAlternateName>\
             </expresswayCConfiguration></return>",
            r.axl_uuid()
        )),
        "{out}"
    );

    let out = ok(
        &s,
        "<ns:listExpresswayCConfiguration><searchCriteria><HostNameOrIP>%</HostNameOrIP>\
         </searchCriteria><returnedTags><HostNameOrIP/></returnedTags>\
         </ns:listExpresswayCConfiguration>",
    );
    assert!(
        out.contains(&format!(
            "<return><expresswayCConfiguration uuid=\"{}\"><HostNameOrIP>exp-c2</HostNameOrIP>\
             </expresswayCConfiguration></return>",
            r.axl_uuid()
        )),
        "{out}"
    );
    let out = ok(
        &s,
        "<ns:listExpresswayCConfiguration><searchCriteria><HostNameOrIP>nope%</HostNameOrIP>\
         </searchCriteria><returnedTags/></ns:listExpresswayCConfiguration>",
    );
    assert!(out.contains("<return></return>"), "{out}");

    let uuid = r.axl_uuid().to_lowercase();
    ok(
        &s,
        &format!(
            "<ns:updateExpresswayCConfiguration><uuid>{uuid}</uuid>\
             <newHostNameOrIP>exp-c3</newHostNameOrIP><X509SubjectNameorSubjectAlternateName>\
             10.1.2.3</X509SubjectNameorSubjectAlternateName></ns:updateExpresswayCConfiguration>"
        ),
    );
    let now = s.list()[0].clone();
    assert_eq!(
        (
            now.host.as_str(),
            now.description.as_str(),
            now.names.as_str()
        ),
        ("exp-c3", "added through axl", "10.1.2.3")
    );

    let out = ok(
        &s,
        "<ns:executeSQLQuery><sql>select * from expresswaycconfiguration</sql>\
         </ns:executeSQLQuery>",
    );
    assert!(
        out.contains(&format!(
            "<return><row><pkid>{}</pkid><hostnameorip>exp-c3</hostnameorip>\
             <description>added through axl</description>\
             <x509subjectnameoraltname>10.1.2.3</x509subjectnameoraltname></row></return>",
            r.pkid
        )),
        "{out}"
    );
    ok(
        &s,
        "<ns:removeExpresswayCConfiguration><HostNameOrIP>exp-c3</HostNameOrIP>\
         </ns:removeExpresswayCConfiguration>",
    );
    assert!(s.list().is_empty());
}

#[test]
fn faults() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    ok(&s, ADD);
    assert_eq!(fault(&s, ADD).axlcode, -239);
    let missing = fault(
        &s,
        "<ns:removeExpresswayCConfiguration><HostNameOrIP>nope</HostNameOrIP>\
         </ns:removeExpresswayCConfiguration>",
    );
    assert_eq!(missing.axlcode, 5007);
    assert!(
        missing.message.starts_with("Item not valid"),
        "{}",
        missing.message
    );
    assert_eq!(fault(&s, "<ns:addPhone/>").axlcode, 5002);
    assert_eq!(fault(&s, "<ns:addExpresswayCConfiguration/>").axlcode, 5003);
    let long = format!(
        "<ns:addExpresswayCConfiguration><expresswayCConfiguration><HostNameOrIP>x\
         </HostNameOrIP><description>{}</description></expresswayCConfiguration>\
         </ns:addExpresswayCConfiguration>",
        "d".repeat(51)
    );
    assert_eq!(fault(&s, &long).axlcode, 5003);
    assert_eq!(
        fault(
            &s,
            "<ns:executeSQLQuery><sql>delete from device</sql></ns:executeSQLQuery>"
        )
        .axlcode,
        5003
    );
    assert_eq!(
        fault(
            &s,
            "<ns:listExpresswayCConfiguration><searchCriteria/></ns:listExpresswayCConfiguration>"
        )
        .axlcode,
        5003
    );
    let (_, r) = dispatch(&s, true, b"not xml <");
    assert_eq!(r.unwrap_err().axlcode, 5003);
}

#[test]
fn sql_mode_query() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (_, r) = dispatch(
        &s,
        false,
        &envelope(
            "<ns:executeSQLQuery><sql>select paramvalue FROM processconfig WHERE paramname = \
             'ClusterSIPOAuthMode'</sql></ns:executeSQLQuery>",
        ),
    );
    let out = String::from_utf8(r.unwrap()).unwrap();
    assert!(
        out.contains(
            "<ns:executeSQLQueryResponse xmlns:ns=\"http://www.cisco.com/AXL/API/12.5\">\
                      <return><row><paramvalue>0</paramvalue></row></return>"
        ),
        "{out}"
    );
}

#[test]
fn like_patterns() {
    assert!(like("%", ""));
    assert!(like("exp%", "EXP-c2"));
    assert!(like("e_p-c%", "exp-c2"));
    assert!(like("%c2", "exp-c2"));
    assert!(!like("exp", "exp-c2"));
    assert!(like("%-%-%", "a-b-c"));
}
