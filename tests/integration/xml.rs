//! A small element tree from quick-xml's reader, for tests that read our XML answers (config
//! files, UDS) with a real parser. No namespace processing: UCM's config-file root uses the
//! undeclared `xsi:` and `axl:` prefixes, as UCM's own files do.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

#[derive(Debug, Default)]
pub struct El {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Self>,
    pub text: String,
}

impl El {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> &Self {
        self.children
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("<{}> has no <{name}>", self.name))
    }

    pub fn path(&self, path: &str) -> &Self {
        path.split('/').fold(self, |e, n| e.child(n))
    }

    pub fn all(&self, name: &str) -> Vec<&Self> {
        self.children.iter().filter(|c| c.name == name).collect()
    }

    pub fn text_of(&self, name: &str) -> &str {
        &self.child(name).text
    }
}

pub fn parse(xml: &[u8]) -> El {
    let mut reader = Reader::from_reader(xml);
    let mut stack = vec![El::default()];
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(s) => stack.push(element(&s)),
            Event::Empty(s) => stack.last_mut().unwrap().children.push(element(&s)),
            Event::Text(t) => stack.last_mut().unwrap().text += &t.decode().unwrap(),
            Event::GeneralRef(r) => {
                let c = match &*r.decode().unwrap() {
                    "lt" => "<",
                    "gt" => ">",
                    "amp" => "&",
                    "quot" => "\"",
                    "apos" => "'",
                    other => panic!("entity {other}"),
                };
                stack.last_mut().unwrap().text += c;
            }
            Event::End(_) => {
                let mut done = stack.pop().unwrap();
                if !done.children.is_empty() {
                    done.text.clear();
                }
                stack.last_mut().unwrap().children.push(done);
            }
            Event::Eof => break,
            Event::Decl(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut top = stack.pop().unwrap();
    assert_eq!(top.children.len(), 1, "one root element");
    top.children.pop().unwrap()
}

fn element(s: &BytesStart<'_>) -> El {
    El {
        name: String::from_utf8(s.name().as_ref().to_vec()).unwrap(),
        attrs: s
            .attributes()
            .map(|a| {
                let a = a.unwrap();
                (
                    String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                    a.unescape_value().unwrap().into_owned(),
                )
            })
            .collect(),
        ..El::default()
    }
}
