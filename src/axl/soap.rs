//! SOAP 1.1 for AXL: the request envelope parsed with quick-xml into a small element tree
//! (namespace-tolerant: every name is matched by its local part, whatever the prefix), and
//! the response and fault envelopes written with quick-xml's [`Writer`], in UCM's shapes:
//!
//! ```xml
//! <soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
//!   <soapenv:Body>
//!     <ns:addExpresswayCConfigurationResponse xmlns:ns="http://www.cisco.com/AXL/API/12.5">
//!       <return>{8F3C…}</return>
//! ```
//! and for a fault `soapenv:Fault` with `faultcode`, `faultstring` and
//! `<detail><axlError><axlcode>…</axlcode><axlmessage>…</axlmessage><request>op</request>`.
//! Children of the operation element are unqualified (the schema's
//! `elementFormDefault="unqualified"`).

use std::io;

use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::{Reader, Writer};

/// SOAP 1.1's envelope namespace.
pub const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The AXL 12.5 namespace responses are written in.
pub const AXL_NS: &str = "http://www.cisco.com/AXL/API/12.5";

/// Nesting deeper than this is refused: no AXL request needs more than a handful of levels.
const MAX_DEPTH: usize = 32;
/// Elements per request; a body is already capped in bytes by the web limits, this bounds
/// the tree built from many tiny elements.
const MAX_ELEMENTS: usize = 10_000;

/// An element: local name, attributes by local name, children, and its text (the text of an
/// element with children is dropped: AXL has no mixed content).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Self>,
    pub text: String,
}

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Self> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text of child `name`; `xsi:nil="true"` reads as empty.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| {
            if c.attr("nil") == Some("true") {
                ""
            } else {
                c.text.as_str()
            }
        })
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a body is not an AXL request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoapError {
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("not a SOAP envelope: {0}")]
    Envelope(&'static str),
    #[error("the request is nested too deeply or has too many elements")]
    TooLarge,
}

/// Parses a SOAP envelope and returns the operation element (the first child of `Body`).
pub fn parse_request(body: &[u8]) -> Result<Element, SoapError> {
    let root = parse(body)?;
    if root.name != "Envelope" {
        return Err(SoapError::Envelope("the root element is not Envelope"));
    }
    let body = root
        .child("Body")
        .ok_or(SoapError::Envelope("no Body element"))?;
    body.children
        .first()
        .cloned()
        .ok_or(SoapError::Envelope("the Body is empty"))
}

/// Parses `xml` into its root element.
fn parse(xml: &[u8]) -> Result<Element, SoapError> {
    let xml_error = |e: &dyn std::fmt::Display| SoapError::Xml(e.to_string());
    let mut reader = Reader::from_reader(xml);
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut count = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| xml_error(&e))?;
        match event {
            Event::Start(s) => {
                count += 1;
                if count > MAX_ELEMENTS || stack.len() > MAX_DEPTH {
                    return Err(SoapError::TooLarge);
                }
                stack.push(element(&s)?);
            }
            Event::Empty(s) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(SoapError::TooLarge);
                }
                let e = element(&s)?;
                top(&mut stack)?.children.push(e);
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| xml_error(&e))?;
                top(&mut stack)?.text.push_str(&text);
            }
            Event::CData(c) => {
                let text = std::str::from_utf8(&c)
                    .map_err(|e| xml_error(&e))?
                    .to_owned();
                top(&mut stack)?.text.push_str(&text);
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(|e| xml_error(&e))? {
                    Some(c) => c,
                    None => match &*r.decode().map_err(|e| xml_error(&e))? {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "quot" => '"',
                        "apos" => '\'',
                        other => {
                            return Err(SoapError::Xml(format!("unknown entity &{other};")));
                        }
                    },
                };
                top(&mut stack)?.text.push(c);
            }
            Event::End(_) => {
                let mut done = stack.pop().ok_or(SoapError::Envelope("unbalanced"))?;
                if !done.children.is_empty() {
                    done.text.clear();
                }
                top(&mut stack)?.children.push(done);
            }
            Event::Eof => break,
            // Declaration, comments, processing instructions: nothing to keep. A DOCTYPE is
            // ignored too; its entities are never expanded (unknown entities are refused).
            _ => {}
        }
    }
    if stack.len() != 1 {
        return Err(SoapError::Xml("unclosed element".into()));
    }
    let mut doc = stack.pop().unwrap_or_default();
    if doc.children.len() != 1 {
        return Err(SoapError::Envelope("there must be one root element"));
    }
    Ok(doc.children.pop().unwrap_or_default())
}

fn top(stack: &mut [Element]) -> Result<&mut Element, SoapError> {
    stack.last_mut().ok_or(SoapError::Envelope("unbalanced"))
}

fn element(s: &quick_xml::events::BytesStart<'_>) -> Result<Element, SoapError> {
    let utf8 = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|e| SoapError::Xml(e.to_string()))
    };
    let mut attrs = Vec::new();
    for a in s.attributes() {
        let a = a.map_err(|e| SoapError::Xml(e.to_string()))?;
        let value = a
            .unescape_value()
            .map_err(|e| SoapError::Xml(e.to_string()))?;
        attrs.push((utf8(a.key.local_name().as_ref())?, value.into_owned()));
    }
    Ok(Element {
        name: utf8(s.local_name().as_ref())?,
        attrs,
        ..Element::default()
    })
}

/// The writer handed to response bodies.
pub type W = Writer<Vec<u8>>;

/// A response envelope: `<ns:{operation}Response>` holding what `body` writes.
pub fn response(
    operation: &str,
    body: impl FnOnce(&mut W) -> io::Result<()>,
) -> io::Result<Vec<u8>> {
    let name = format!("ns:{operation}Response");
    envelope(|w| {
        w.create_element(name.as_str())
            .with_attribute(("xmlns:ns", AXL_NS))
            .write_inner_content(body)?;
        Ok(())
    })
}

/// Who is at fault, SOAP 1.1's `faultcode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    Client,
    Server,
}

/// A fault envelope with AXL's `axlError` detail.
pub fn fault(code: FaultCode, axlcode: i32, message: &str, request: &str) -> io::Result<Vec<u8>> {
    let code = match code {
        FaultCode::Client => "soapenv:Client",
        FaultCode::Server => "soapenv:Server",
    };
    envelope(|w| {
        w.create_element("soapenv:Fault").write_inner_content(|w| {
            text(w, "faultcode", code)?;
            text(w, "faultstring", message)?;
            w.create_element("detail").write_inner_content(|w| {
                w.create_element("axlError").write_inner_content(|w| {
                    text(w, "axlcode", &axlcode.to_string())?;
                    text(w, "axlmessage", message)?;
                    text(w, "request", request)
                })?;
                Ok(())
            })?;
            Ok(())
        })?;
        Ok(())
    })
}

/// `<name>value</name>`, escaped.
pub fn text(w: &mut W, name: &str, value: &str) -> io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

fn envelope(body: impl FnOnce(&mut W) -> io::Result<()>) -> io::Result<Vec<u8>> {
    let mut w = Writer::new(Vec::new());
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("soapenv:Envelope")
        .with_attribute(("xmlns:soapenv", SOAP_ENV))
        .write_inner_content(|w| {
            w.create_element("soapenv:Body").write_inner_content(body)?;
            Ok(())
        })?;
    Ok(w.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_by_local_name_whatever_the_prefix() {
        let body = br#"<?xml version="1.0"?>
<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/" xmlns:a="http://www.cisco.com/AXL/API/12.5">
  <S:Header/>
  <S:Body>
    <a:getExpresswayCConfiguration sequence="1">
      <HostNameOrIP>exp&amp;c&#65;<![CDATA[<x>]]></HostNameOrIP>
      <description xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">x</description>
    </a:getExpresswayCConfiguration>
  </S:Body>
</S:Envelope>"#;
        let op = parse_request(body).unwrap();
        assert_eq!(op.name, "getExpresswayCConfiguration");
        assert_eq!(op.attr("sequence"), Some("1"));
        assert_eq!(op.text_of("HostNameOrIP"), Some("exp&cA<x>"));
        assert_eq!(op.text_of("description"), Some(""));
        assert_eq!(op.text_of("uuid"), None);
    }

    #[test]
    fn refuses_what_is_not_an_envelope() {
        assert!(matches!(parse_request(b"<a><b>"), Err(SoapError::Xml(_))));
        assert!(matches!(
            parse_request(b"<Envelope><Header/></Envelope>"),
            Err(SoapError::Envelope(_))
        ));
        assert!(matches!(
            parse_request(b"<Envelope><Body/></Envelope>"),
            Err(SoapError::Envelope(_))
        ));
        assert!(matches!(
            parse_request(b"<x>&xxe;</x>"),
            Err(SoapError::Xml(_))
        ));
        let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
        assert_eq!(parse_request(deep.as_bytes()), Err(SoapError::TooLarge));
    }

    #[test]
    fn response_and_fault_shapes() {
        let r = response("addExpresswayCConfiguration", |w| text(w, "return", "{A}")).unwrap();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\">\
             <soapenv:Body><ns:addExpresswayCConfigurationResponse \
             xmlns:ns=\"http://www.cisco.com/AXL/API/12.5\"><return>{A}</return>\
             </ns:addExpresswayCConfigurationResponse></soapenv:Body></soapenv:Envelope>"
        );
        let f = fault(FaultCode::Client, -239, "dup <x>", "addX").unwrap();
        let f = String::from_utf8(f).unwrap();
        assert!(
            f.contains(
                "<soapenv:Fault><faultcode>soapenv:Client</faultcode>\
                 <faultstring>dup &lt;x&gt;</faultstring><detail><axlError>\
                 <axlcode>-239</axlcode><axlmessage>dup &lt;x&gt;</axlmessage>\
                 <request>addX</request></axlError></detail></soapenv:Fault>"
            ),
            "{f}"
        );
    }
}
