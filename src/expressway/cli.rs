//! The admin CLI's handlers for the Expressway-C table and `run sql` (rows of
//! [`crate::admin::COMMANDS`]). Arguments are words separated by spaces; double quotes group
//! words (`"a.example.com b.example.com"`), so a space-separated name list or a description
//! with spaces is one argument.
//!
//! ```text
//! set expresswayc add <host> <names> [description...]
//! set expresswayc update <host> <names> [description...]
//! set expresswayc rename <host> <new host>
//! set expresswayc remove <host>
//! show expresswayc
//! run sql <query>
//! ```

use super::{Changes, ExpresswayStore, Key, NewEntry, Record, sql};
use crate::admin::Operations;

/// `run sql <query>`.
pub fn run_sql(ops: &dyn Operations, query: &str) -> Result<String, String> {
    let parsed = sql::parse(query).map_err(|e| e.to_string())?;
    let rows = match parsed {
        sql::Query::ExpresswayC => store(ops)?.list(),
        sql::Query::SipOAuthMode => Vec::new(),
    };
    let mode = ops.sip_oauth_mode().unwrap_or(false);
    Ok(sql::render(&sql::run(parsed, &rows, mode)))
}

/// `show expresswayc`.
pub fn show(ops: &dyn Operations, _: &str) -> Result<String, String> {
    let rows = store(ops)?.list();
    let mut out = format!("Expressway-C entries: {}\n", rows.len());
    for r in &rows {
        out.push_str(&format!(
            "\n{}\n  pkid:        {}\n  description: {}\n  names:       {}\n  matches:     {}\n",
            r.host,
            r.pkid,
            r.description,
            r.names,
            r.subject_names().join(", ")
        ));
    }
    Ok(out)
}

/// `set expresswayc add <host> <names> [description...]`.
pub fn add(ops: &dyn Operations, args: &str) -> Result<String, String> {
    let (host, names, description) = host_names_description(args, "add")?;
    let r = store(ops)?
        .add(NewEntry {
            host,
            description: description.unwrap_or_default(),
            names,
        })
        .map_err(|e| e.to_string())?;
    Ok(done(&r, "added"))
}

/// `set expresswayc update <host> <names> [description...]`: replaces the names, and the
/// description when one is given.
pub fn update(ops: &dyn Operations, args: &str) -> Result<String, String> {
    let (host, names, description) = host_names_description(args, "update")?;
    let r = store(ops)?
        .update(
            &Key::Host(host),
            Changes {
                host: None,
                description,
                names: Some(names),
            },
        )
        .map_err(|e| e.to_string())?;
    Ok(done(&r, "updated"))
}

/// `set expresswayc rename <host> <new host>`.
pub fn rename(ops: &dyn Operations, args: &str) -> Result<String, String> {
    let words = split_args(args)?;
    let [host, new] = words.as_slice() else {
        return Err("usage: set expresswayc rename <host> <new host>".into());
    };
    let r = store(ops)?
        .update(
            &Key::Host(host.clone()),
            Changes {
                host: Some(new.clone()),
                ..Changes::default()
            },
        )
        .map_err(|e| e.to_string())?;
    Ok(done(&r, "updated"))
}

/// `set expresswayc remove <host>`.
pub fn remove(ops: &dyn Operations, args: &str) -> Result<String, String> {
    let words = split_args(args)?;
    let [host] = words.as_slice() else {
        return Err("usage: set expresswayc remove <host>".into());
    };
    let r = store(ops)?
        .remove(&Key::Host(host.clone()))
        .map_err(|e| e.to_string())?;
    Ok(done(&r, "removed"))
}

fn store(ops: &dyn Operations) -> Result<&ExpresswayStore, String> {
    ops.expressway()
        .ok_or_else(|| "the Expressway-C table is not available".to_owned())
}

fn done(r: &Record, what: &str) -> String {
    format!(
        "Expressway-C {} {what} (pkid {}).\nThe next handshake on the MRA port uses the change.\n",
        r.host, r.pkid
    )
}

fn host_names_description(
    args: &str,
    verb: &str,
) -> Result<(String, String, Option<String>), String> {
    let words = split_args(args)?;
    let [host, names, description @ ..] = words.as_slice() else {
        return Err(format!(
            "usage: set expresswayc {verb} <host> <names> [description]\n\
             (names: comma-separated, or space-separated in double quotes)"
        ));
    };
    let description = (!description.is_empty()).then(|| description.join(" "));
    Ok((host.clone(), names.clone(), description))
}

/// Words separated by whitespace; `"…"` groups words (no escapes).
fn split_args(args: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = args.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut word = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(d) => word.push(d),
                    None => return Err("unterminated double quote".into()),
                }
            }
            out.push(word);
        } else {
            let mut word = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_whitespace() || d == '"' {
                    break;
                }
                word.push(d);
                chars.next();
            }
            out.push(word);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::AuthzKey;

    struct Ops(ExpresswayStore);

    impl Operations for Ops {
        fn regen_key(&self, _: AuthzKey) -> Result<String, String> {
            Err("no".into())
        }
        fn key_hash(&self, _: AuthzKey) -> String {
            String::new()
        }
        fn expressway(&self) -> Option<&ExpresswayStore> {
            Some(&self.0)
        }
        fn sip_oauth_mode(&self) -> Option<bool> {
            Some(true)
        }
    }

    fn ops(dir: &std::path::Path) -> Ops {
        Ops(ExpresswayStore::open(&dir.join(super::super::FILE), "u", &[]).unwrap())
    }

    fn run(ops: &Ops, line: &str) -> crate::admin::Outcome {
        crate::admin::execute(ops, line)
    }

    #[test]
    fn commands_through_the_table() {
        use crate::admin::Outcome::{Done, Failed};
        let dir = tempfile::tempdir().unwrap();
        let o = ops(dir.path());
        let Done(out) = run(&o, "set expresswayc add exp-c2 \"a.com b.com\" my lab box") else {
            panic!()
        };
        assert!(out.starts_with("Expressway-C exp-c2 added (pkid "), "{out}");
        let r = &o.0.list()[0];
        assert_eq!(
            (r.names.as_str(), r.description.as_str()),
            ("a.com b.com", "my lab box")
        );
        assert!(
            matches!(run(&o, "set expresswayc add EXP-C2 x.com"), Failed(t) if t.contains("already exists"))
        );
        let Done(_) = run(&o, "set expresswayc update exp-c2 c.com,d.com") else {
            panic!()
        };
        assert_eq!(o.0.list()[0].description, "my lab box");
        assert_eq!(o.0.list()[0].names, "c.com,d.com");
        let Done(out) = run(&o, "show expresswayc") else {
            panic!()
        };
        assert!(out.contains("matches:     c.com, d.com"), "{out}");
        let Done(out) = run(&o, "RUN SQL select * from expresswaycconfiguration") else {
            panic!()
        };
        assert!(out.starts_with("pkid  "), "{out}");
        assert!(out.contains("\n=====\n"), "{out}");
        let Done(_) = run(&o, "set expresswayc rename exp-c2 exp-c3") else {
            panic!()
        };
        assert!(
            matches!(run(&o, "set expresswayc remove exp-c2"), Failed(t) if t.contains("no Expressway-C entry"))
        );
        let Done(_) = run(&o, "set expresswayc remove exp-c3") else {
            panic!()
        };
        assert!(o.0.list().is_empty());
        let Done(out) = run(
            &o,
            "run sql select paramvalue FROM processconfig WHERE paramname = 'ClusterSIPOAuthMode'",
        ) else {
            panic!()
        };
        assert_eq!(out, "paramvalue\n=====\n1\n");
        assert!(
            matches!(run(&o, "run sql select * from device"), Failed(t) if t.contains("not supported"))
        );
        assert!(
            matches!(run(&o, "set expresswayc add onlyhost"), Failed(t) if t.contains("usage"))
        );
    }

    #[test]
    fn quoted_arguments() {
        assert_eq!(
            split_args(r#"h "a b"  c"#).unwrap(),
            ["h", "a b", "c"].map(String::from)
        );
        assert!(split_args("\"open").is_err());
    }
}
