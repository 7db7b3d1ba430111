//! The read-only SQL the emulator answers, from the admin CLI (`run sql …`) and AXL
//! (`executeSQLQuery`): not an SQL engine, a recogniser of the two queries the seeds show
//! (docs/ucm.md §8). Keywords, identifiers and the string literal match case-insensitively; spacing
//! is free (`paramname='ClusterSIPOAuthMode'` works); one trailing `;` is allowed.

use super::Record;

/// The queries answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// `select * from expresswaycconfiguration`
    ExpresswayC,
    /// `select paramvalue from processconfig where paramname = 'ClusterSIPOAuthMode'`
    SipOAuthMode,
}

/// The queries as help and errors list them.
pub const SUPPORTED: &[&str] = &[
    "select * from expresswaycconfiguration",
    "select paramvalue FROM processconfig WHERE paramname = 'ClusterSIPOAuthMode'",
];

/// Why a query is not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// Not a `select`: UCM's read-only entry points refuse every change.
    #[error("only SELECT statements are allowed here (read-only)")]
    NotSelect,
    #[error(
        "query not supported by this emulator; supported queries:\n{}",
        supported_list()
    )]
    Unsupported,
}

/// A result: column names and rows of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rows {
    pub columns: &'static [&'static str],
    pub rows: Vec<Vec<String>>,
}

/// Recognises `query`.
pub fn parse(query: &str) -> Result<Query, SqlError> {
    let tokens = tokens(query);
    if tokens.first().map(String::as_str) != Some("select") {
        return Err(SqlError::NotSelect);
    }
    let t: Vec<&str> = tokens.iter().map(String::as_str).collect();
    match t.as_slice() {
        ["select", "*", "from", "expresswaycconfiguration"] => Ok(Query::ExpresswayC),
        [
            "select",
            "paramvalue",
            "from",
            "processconfig",
            "where",
            "paramname",
            "=",
            "'clustersipoauthmode'",
        ] => Ok(Query::SipOAuthMode),
        _ => Err(SqlError::Unsupported),
    }
}

/// Runs `query` against the table rows and the cluster's SIP OAuth mode.
pub fn run(query: Query, rows: &[Record], sip_oauth_mode: bool) -> Rows {
    match query {
        Query::ExpresswayC => Rows {
            columns: &[
                "pkid",
                "hostnameorip",
                "description",
                "x509subjectnameoraltname",
            ],
            rows: rows
                .iter()
                .map(|r| {
                    vec![
                        r.pkid.clone(),
                        r.host.clone(),
                        r.description.clone(),
                        r.names.clone(),
                    ]
                })
                .collect(),
        },
        Query::SipOAuthMode => Rows {
            columns: &["paramvalue"],
            rows: vec![vec![u8::from(sip_oauth_mode).to_string()]],
        },
    }
}

/// The `run sql` layout of the seeds (docs/ucm.md §8): a header line, `=====`, one line per row.
/// Every column but the last is padded to its widest cell (header included) and followed by
/// two spaces; the last is not padded, so no line has trailing spaces. (The seed's own
/// spacing is not consistent between its header and its row; this rule reproduces its
/// description column and its header's `hostnameorip` column exactly.)
pub fn render(result: &Rows) -> String {
    let widths: Vec<usize> = (0..result.columns.len())
        .map(|i| {
            result
                .rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain(std::iter::once(result.columns[i].len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == widths.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&mut result.columns.iter().copied());
    out.push_str("=====\n");
    for row in &result.rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|q| format!("  {q}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lower-cased tokens: words, `*`, `=`, and quoted literals (kept with single quotes); a
/// final `;` is dropped.
fn tokens(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = query.trim().trim_end_matches(';').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '*' | '=' | ',' | '(' | ')' => out.push(c.to_string()),
            '\'' | '"' => {
                let mut lit = String::from('\'');
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                    lit.push(d.to_ascii_lowercase());
                }
                lit.push('\'');
                out.push(lit);
            }
            c => {
                let mut word = String::from(c.to_ascii_lowercase());
                while let Some(&d) = chars.peek() {
                    if d.is_whitespace() || "*=,()'\"".contains(d) {
                        break;
                    }
                    word.push(d.to_ascii_lowercase());
                    chars.next();
                }
                out.push(word);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_two_queries_tolerantly() {
        for q in [
            "select * from expresswaycconfiguration",
            "SELECT  *\tFROM ExpresswayCConfiguration ;",
            "select*from expresswaycconfiguration",
        ] {
            assert_eq!(parse(q), Ok(Query::ExpresswayC), "{q}");
        }
        for q in [
            "select paramvalue FROM processconfig WHERE paramname = 'ClusterSIPOAuthMode'",
            "SELECT paramvalue from processconfig where paramname='clustersipoauthmode';",
            "select paramvalue from processconfig where paramname = \"ClusterSIPOAuthMode\"",
        ] {
            assert_eq!(parse(q), Ok(Query::SipOAuthMode), "{q}");
        }
        assert_eq!(
            parse("delete from expresswaycconfiguration"),
            Err(SqlError::NotSelect)
        );
        assert_eq!(parse("select * from device"), Err(SqlError::Unsupported));
        assert!(
            SqlError::Unsupported
                .to_string()
                .contains("ClusterSIPOAuthMode")
        );
    }

    #[test]
    fn renders_the_seed_layout() {
        let rows = [Record {
            pkid: "d5fd15d5-b049-c5b5-0197-bd11a5641640".into(),
            host: "exp-c".into(),
            description: "this is added through axl".into(),
            names: "domain-2.com,secure-phone-profile,domain-1.com,exp-c.domain-1.com".into(),
        }];
        let out = render(&run(Query::ExpresswayC, &rows, true));
        assert_eq!(
            out,
            "pkid                                  hostnameorip  description                \
             x509subjectnameoraltname\n\
             =====\n\
             d5fd15d5-b049-c5b5-0197-bd11a5641640  exp-c         this is added through axl  \
             domain-2.com,secure-phone-profile,domain-1.com,exp-c.domain-1.com\n"
        );
        assert_eq!(
            render(&run(Query::SipOAuthMode, &[], true)),
            "paramvalue\n=====\n1\n"
        );
        assert_eq!(
            render(&run(Query::SipOAuthMode, &[], false)),
            "paramvalue\n=====\n0\n"
        );
    }
}
