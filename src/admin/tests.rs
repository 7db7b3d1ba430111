//! Unit tests of the command table, parser and executor (no sockets; the listener and client
//! are tested end to end in `tests/integration/admin.rs`).

use std::sync::Mutex;

use super::*;

/// Records calls; hashes are `<key>-<n>` so tests can tell them apart.
#[derive(Default)]
struct Fake {
    regens: Mutex<Vec<AuthzKey>>,
    fail: bool,
}

impl Operations for Fake {
    fn regen_key(&self, key: AuthzKey) -> Result<String, String> {
        if self.fail {
            return Err("disk full".into());
        }
        let mut regens = self.regens.lock().unwrap();
        regens.push(key);
        Ok(format!("{key:?}-{}", regens.len()))
    }

    fn key_hash(&self, key: AuthzKey) -> String {
        format!("{key:?}-hash")
    }
}

fn words(line: &str) -> &'static str {
    parse(line).unwrap().spec.words
}

#[test]
fn every_command_parses_as_itself_and_help_lists_it() {
    let help = usage();
    for spec in COMMANDS {
        let line = match spec.args {
            Args::None => spec.words.to_owned(),
            Args::Rest(_) => format!("{} x", spec.words),
        };
        assert_eq!(words(&line), spec.words);
        assert!(help.contains(&spec.syntax()), "{help}");
    }
    assert!(help.contains("quit | exit"));
}

#[test]
fn words_are_case_insensitive_and_spacing_is_free() {
    assert_eq!(words("SHOW Key AUTHZ signing"), "show key authz signing");
    assert_eq!(
        words("  set\tkey  regen authz   encryption \r\n"),
        "set key regen authz encryption"
    );
    assert_eq!(words("Help"), "help");
}

#[test]
fn unknown_incomplete_and_extra_words_are_errors() {
    assert_eq!(
        parse("show keys").unwrap_err(),
        ParseError::Unknown {
            line: "show keys".into()
        }
    );
    assert_eq!(
        parse("show key  authz").unwrap_err(),
        ParseError::Incomplete {
            line: "show key  authz".into()
        }
    );
    assert_eq!(
        parse("show key authz signing now").unwrap_err(),
        ParseError::ExtraArgs {
            words: "show key authz signing",
            extra: "now".into()
        }
    );
    assert_eq!(parse("   ").unwrap_err(), ParseError::Empty);
}

#[test]
fn rest_arguments_are_kept_as_typed() {
    static TABLE: &[CommandSpec] = &[CommandSpec {
        words: "run sql",
        args: Args::Rest("query"),
        help: "",
        confirm: None,
        run: |_, args| Ok(args.to_owned()),
    }];
    let i = parse_in(TABLE, "RUN  sql select * FROM t WHERE a = 'X  Y' ").unwrap();
    assert_eq!(i.args, "select * FROM t WHERE a = 'X  Y'");
    assert_eq!((i.spec.run)(&Fake::default(), i.args).unwrap(), i.args);
    assert_eq!(
        parse_in(TABLE, "run SQL").unwrap_err(),
        ParseError::MissingArgs {
            syntax: "run sql <query>".into(),
            name: "query"
        }
    );
    assert_eq!(TABLE[0].syntax(), "run sql <query>");
}

#[test]
fn show_prints_a_hash_line() {
    let ops = Fake::default();
    assert_eq!(
        execute(&ops, "show key authz signing"),
        Outcome::Done("Signing key hash: Signing-hash\n".into())
    );
    assert_eq!(
        execute(&ops, "show key authz ENCRYPTION"),
        Outcome::Done("Encryption key hash: Encryption-hash\n".into())
    );
    assert!(ops.regens.lock().unwrap().is_empty());
}

#[test]
fn regen_calls_the_operation_and_prints_the_new_hash() {
    let ops = Fake::default();
    let Outcome::Done(out) = execute(&ops, "set key regen authz signing") else {
        panic!()
    };
    assert!(
        out.starts_with("Signing key regenerated successfully.\n"),
        "{out}"
    );
    assert!(out.ends_with("Signing key hash: Signing-1\n"), "{out}");
    let Outcome::Done(out) = execute(&ops, "set key regen authz encryption") else {
        panic!()
    };
    assert!(
        out.ends_with("Encryption key hash: Encryption-2\n"),
        "{out}"
    );
    assert_eq!(
        *ops.regens.lock().unwrap(),
        [AuthzKey::Signing, AuthzKey::Encryption]
    );
    let confirmed: Vec<&str> = COMMANDS
        .iter()
        .filter(|c| c.confirm.is_some())
        .map(|c| c.words)
        .collect();
    assert_eq!(
        confirmed,
        [
            "set key regen authz signing",
            "set key regen authz encryption",
            "set cert regen tomcat"
        ]
    );
}

#[test]
fn failures_and_invalid_commands_say_unsuccessfully() {
    let ops = Fake {
        fail: true,
        ..Fake::default()
    };
    assert_eq!(
        execute(&ops, "set key regen authz signing"),
        Outcome::Failed(format!("{UNSUCCESSFUL}\ndisk full\n"))
    );
    let Outcome::Invalid(out) = execute(&ops, "show version") else {
        panic!()
    };
    assert!(
        out.starts_with(&format!(
            "{UNSUCCESSFUL}\nInvalid command: \"show version\"\n"
        )),
        "{out}"
    );
    assert!(out.contains("Supported commands:"), "{out}");
    assert_eq!(execute(&ops, ""), Outcome::Done(String::new()));
    let Outcome::Done(help) = execute(&ops, "help") else {
        panic!()
    };
    assert_eq!(help, usage());
}

#[test]
fn the_mode_commands_print_ucms_lines_and_fail_where_there_is_no_daemon() {
    let ops = Fake::default();
    // The implementor without live state refuses (the daemon's is tested end to end).
    assert_eq!(
        execute(&ops, "utils sipOAuth-mode enable"),
        Outcome::Failed(format!("{UNSUCCESSFUL}\nNot available on this server\n"))
    );
    assert_eq!(
        MODE_ENABLED,
        "SIP OAuth mode enabled.\nPlease restart the Cisco CallManager service on all nodes in \
         the cluster where it is running.\n"
    );
    assert!(matches!(
        parse("UTILS SIPOAUTH-MODE DISABLE"),
        Ok(i) if i.spec.words == "utils sipOAuth-mode disable"
    ));
    assert!(matches!(
        parse("show open ports regexp"),
        Err(ParseError::MissingArgs { .. })
    ));
}

#[test]
fn quit_and_exit_any_case() {
    assert!(is_quit("quit") && is_quit(" EXIT ") && is_quit("Quit"));
    assert!(!is_quit("quit now") && !is_quit("help"));
}
