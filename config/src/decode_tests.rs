use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Config, ConfigError, LogLevel, Warning};

const SRC: &str = "/etc/litestream.yml";

fn parse(text: &str) -> (Config, Vec<Warning>) {
    Config::parse(text, Path::new(SRC), false).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    match Config::parse(text, Path::new(SRC), false) {
        Ok((c, _)) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

#[test]
fn full_v0313_file() {
    let text = r#"
addr: ":9090"
exec: "myapp -serve"
access-key-id: TOPID
secret-access-key: TOPSECRET
logging:
  level: debug
  type: json
  stderr: true
dbs:
  - path: /var/lib/app/db.sqlite
    meta-path: /var/lib/app/.meta
    monitor-interval: 2s
    checkpoint-interval: 1m
    min-checkpoint-page-count: 500
    max-checkpoint-page-count: 0
    replicas:
      - url: s3://my-bucket/db
        retention: 72h
        retention-check-interval: 30m
        sync-interval: 500ms
        snapshot-interval: 6h
        validation-interval: 1h30m
        region: nyc3
        endpoint: https://nyc3.digitaloceanspaces.com
        force-path-style: yes
      - type: file
        path: /backup/db
        name: local
      - type: sftp
        host: backup.example.com:22
        user: me
        password: pw
        path: /srv/db
        age:
          identities: [AGE-SECRET-KEY-1ABC]
          recipients:
            - age1xyz
"#;
    let (c, w) = parse(text);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.addr.as_deref(), Some(":9090"));
    assert_eq!(c.exec.as_deref(), Some("myapp -serve"));
    assert_eq!(c.access_key_id.as_deref(), Some("TOPID"));
    assert_eq!(c.secret_access_key.as_deref(), Some("TOPSECRET"));
    assert_eq!(c.logging.level, LogLevel::Debug);
    assert!(c.logging.json && c.logging.stderr);
    assert_eq!(c.dbs.len(), 1);
    let db = &c.dbs[0];
    assert_eq!(db.path, PathBuf::from("/var/lib/app/db.sqlite"));
    assert_eq!(db.meta_path, Some(PathBuf::from("/var/lib/app/.meta")));
    assert_eq!(db.monitor_interval, secs(2));
    assert_eq!(db.checkpoint_interval, secs(60));
    assert_eq!(db.min_checkpoint_page_count, Some(500));
    assert_eq!(db.max_checkpoint_page_count, Some(0));
    assert_eq!(db.line, Some(11));
    let [s3, file, sftp] = &db.replicas[..] else {
        panic!("{:?}", db.replicas)
    };
    assert_eq!((s3.kind.as_str(), s3.name.as_str()), ("s3", "s3"));
    assert_eq!(s3.url.as_deref(), Some("s3://my-bucket/db"));
    assert_eq!(s3.retention, secs(72 * 3600));
    assert_eq!(s3.retention_check_interval, secs(1800));
    assert_eq!(s3.sync_interval, Some(Duration::from_millis(500)));
    assert_eq!(s3.snapshot_interval, secs(6 * 3600));
    assert_eq!(s3.validation_interval, secs(5400));
    assert_eq!(s3.option("region"), Some("nyc3"));
    assert_eq!(s3.option("force-path-style"), Some("yes"));
    assert_eq!(
        s3.settings(None).bool_option("force-path-style").unwrap(),
        Some(true)
    );
    assert_eq!(s3.option("access-key-id"), Some("TOPID"));
    assert_eq!(s3.option("secret-access-key"), Some("TOPSECRET"));
    assert_eq!(s3.line, Some(18));
    assert_eq!((file.kind.as_str(), file.name.as_str()), ("file", "local"));
    assert_eq!(file.path.as_deref(), Some("/backup/db"));
    assert_eq!(sftp.kind, "sftp");
    assert_eq!(sftp.option("host"), Some("backup.example.com:22"));
    assert_eq!(sftp.option("password"), Some("pw"));
    let age = sftp.age.as_ref().unwrap();
    assert_eq!(age.identities, ["AGE-SECRET-KEY-1ABC"]);
    assert_eq!(age.recipients, ["age1xyz"]);
    assert_eq!(
        c.db(Path::new("/var/lib/app/db.sqlite"))
            .unwrap()
            .replicas
            .len(),
        3
    );
}

#[test]
fn empty_and_comment_only_files() {
    for text in ["", "\n\n", "# nothing\n", "---\n", "~\n"] {
        let (c, w) = parse(text);
        assert_eq!(c, Config::default(), "{text:?}");
        assert!(w.is_empty());
    }
}

#[test]
fn defaults_are_left_unset() {
    let (c, _) = parse("dbs:\n  - path: /a.db\n    replicas:\n      - path: /r\n");
    let db = &c.dbs[0];
    assert_eq!(db.monitor_interval, None);
    assert_eq!(db.min_checkpoint_page_count, None);
    assert_eq!(db.meta_path, None);
    let r = &db.replicas[0];
    assert_eq!((r.kind.as_str(), r.name.as_str()), ("file", "file"));
    assert_eq!(r.sync_interval, None);
    assert!(r.options.is_empty());
    assert!(!c.logging.json && !c.logging.stderr);
    assert_eq!(c.logging.level, LogLevel::Info);
}

#[test]
fn unknown_keys_warn_with_line() {
    let text = "\
addr: ':1'
foo: 1
logging:
  colour: red
dbs:
  - path: /a.db
    replicas:
      - url: s3://b/p
        acess-key-id: typo
        bucketz: [1, 2]
        region: r
        age:
          identity: x
";
    let (c, w) = parse(text);
    let find = |needle: &str| {
        w.iter()
            .find(|w| w.message.contains(needle))
            .unwrap_or_else(|| panic!("no warning about {needle}: {w:?}"))
            .line
    };
    assert_eq!(find("\"foo\""), Some(2));
    assert_eq!(find("\"colour\""), Some(4));
    assert_eq!(find("\"acess-key-id\""), Some(9));
    assert_eq!(find("\"bucketz\""), Some(10));
    assert_eq!(find("\"identity\""), Some(13));
    assert_eq!(w.len(), 5, "{w:?}");
    let r = &c.dbs[0].replicas[0];
    // Unknown scalars are still handed to the backend; lists are not.
    assert_eq!(r.option("acess-key-id"), Some("typo"));
    assert_eq!(r.option("bucketz"), None);
    assert_eq!(r.option("region"), Some("r"));
    assert!(
        w[0].to_string().starts_with("line 2: unknown key \"foo\""),
        "{}",
        w[0]
    );
}

#[test]
fn known_backend_options_do_not_warn() {
    // Every option a linked backend declares, with a value of its type: no warning, all kept.
    let specs: Vec<_> = walship_s3::OPTIONS
        .iter()
        .chain(walship_sftp::OPTIONS)
        .filter(|o| o.name != "bucket" && o.name != "host")
        .collect();
    let mut text = String::from("dbs:\n  - path: /a.db\n    replicas:\n      - type: x\n");
    let mut seen = std::collections::BTreeSet::new();
    for o in &specs {
        if !seen.insert(o.name) {
            continue;
        }
        let v = match o.ty {
            walship_core::registry::OptionType::Bool => "false",
            walship_core::registry::OptionType::Duration => "30s",
            walship_core::registry::OptionType::Text => "v",
        };
        text.push_str(&format!("        {}: {v}\n", o.name));
    }
    text.push_str("        bucket: b\n        host: h\n");
    let (c, w) = parse(&text);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.dbs[0].replicas[0].options.len(), seen.len() + 2);
    assert_eq!(c.dbs[0].replicas[0].kind, "x");
    // A key no linked backend reads (Azure's, while walship has no abs backend) is kept, warned.
    let (c, w) =
        parse("dbs:\n  - path: /a.db\n    replicas:\n      - type: x\n        account-name: n\n");
    assert_eq!(c.dbs[0].replicas[0].option("account-name"), Some("n"));
    assert!(
        w[0].to_string().contains("no walship backend reads it"),
        "{w:?}"
    );
}

#[test]
fn duplicate_keys_warn_and_last_wins() {
    let (c, w) = parse("addr: ':1'\naddr: ':2'\n");
    assert_eq!(c.addr.as_deref(), Some(":2"));
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].line, Some(2));
    assert!(w[0].message.contains("first at line 1"), "{w:?}");
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let e = err("addr: ':1'\ndbs:\n  - path: /a\n   bad: [\n");
    assert!(e.starts_with("/etc/litestream.yml: line "), "{e}");
    let e = err("dbs:\n  - path: /a.db\n    replicas: [\n");
    assert!(e.starts_with("/etc/litestream.yml: line "), "{e}");
    let e = err("a: b\n c: d\n");
    assert!(e.starts_with("/etc/litestream.yml: line 2: "), "{e}");
    let e = err("a: 'unterminated\n");
    assert!(e.starts_with("/etc/litestream.yml: line 1: "), "{e}");
    let e = err("- just\n- a list\n");
    assert!(e.contains("line 1") && e.contains("mapping"), "{e}");
}

#[test]
fn bad_duration_names_key_value_and_line() {
    let text = "dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/p\n\n\n        sync-interval: 10x\n";
    assert_eq!(
        err(text),
        "/etc/litestream.yml: line 7: sync-interval: invalid duration \"10x\": unknown unit \"x\""
    );
    let e = err("dbs:\n  - path: /a.db\n    monitor-interval: -1s\n");
    assert!(
        e.contains("line 3: monitor-interval: invalid duration \"-1s\""),
        "{e}"
    );
    let e = err("dbs:\n  - path: /a.db\n    checkpoint-interval: -5\n");
    assert!(e.contains("line 3: checkpoint-interval:"), "{e}");
    let e = err("dbs:\n  - path: /a.db\n    checkpoint-interval: 1.5\n");
    assert!(
        e.contains("checkpoint-interval: invalid duration \"1.5\""),
        "{e}"
    );
    let e = err("dbs:\n  - path: /a.db\n    checkpoint-interval: [1s]\n");
    assert!(
        e.contains("checkpoint-interval: expected a duration"),
        "{e}"
    );
    let e = err("heartbeat-interval: yes\n");
    assert!(
        e.contains("line 1: heartbeat-interval: invalid duration \"yes\""),
        "{e}"
    );
}

#[test]
fn durations_as_strings_or_nanoseconds() {
    let text = "dbs:\n  - path: /a.db\n    monitor-interval: 1000000000\n    checkpoint-interval: \"90s\"\n    replicas:\n      - path: /r\n        sync-interval: 0\n        retention: 1.5h\n        snapshot-interval:\n";
    let (c, _) = parse(text);
    assert_eq!(c.dbs[0].monitor_interval, secs(1));
    assert_eq!(c.dbs[0].checkpoint_interval, secs(90));
    let r = &c.dbs[0].replicas[0];
    assert_eq!(r.sync_interval, Some(Duration::ZERO));
    assert_eq!(r.retention, secs(5400));
    assert_eq!(r.snapshot_interval, None);
}

#[test]
fn page_counts() {
    let e = err("dbs:\n  - path: /a.db\n    min-checkpoint-page-count: 0\n");
    assert_eq!(
        e,
        "/etc/litestream.yml: line 3: min-checkpoint-page-count: must be greater than 0"
    );
    let e = err("dbs:\n  - path: /a.db\n    max-checkpoint-page-count: -1\n");
    assert!(
        e.contains("line 3: max-checkpoint-page-count: expected a non-negative integer"),
        "{e}"
    );
    let e = err("dbs:\n  - path: /a.db\n    max-checkpoint-page-count: lots\n");
    assert!(e.contains("\"lots\""), "{e}");
    let (c, _) = parse("dbs:\n  - path: /a.db\n    min-checkpoint-page-count: 1\n    max-checkpoint-page-count: 20000\n");
    assert_eq!(c.dbs[0].min_checkpoint_page_count, Some(1));
    assert_eq!(c.dbs[0].max_checkpoint_page_count, Some(20000));
}

#[test]
fn url_conflicts() {
    let base = "dbs:\n  - path: /a.db\n    replicas:\n      - url: ";
    let e = err(&format!("{base}s3://b/p\n        path: x\n"));
    assert_eq!(
        e,
        "/etc/litestream.yml: line 4: url: cannot specify url & path for s3 replica"
    );
    let e = err(&format!("{base}file:///r\n        path: /r\n"));
    assert!(e.contains("url & path for file replica"), "{e}");
    for kind in ["s3", "gcs", "abs"] {
        let e = err(&format!("{base}{kind}://b/p\n        bucket: other\n"));
        assert!(
            e.contains(&format!("cannot specify url & bucket for {kind} replica")),
            "{e}"
        );
    }
    let e = err(&format!("{base}sftp://u@h/p\n        host: h2\n"));
    assert!(
        e.contains("cannot specify url & host for sftp replica"),
        "{e}"
    );
    // `bucket` with a file URL means nothing but is no conflict.
    parse(&format!("{base}file:///r\n        bucket: b\n"));
}

#[test]
fn url_scheme_required_and_path_not_a_url() {
    let base = "dbs:\n  - path: /a.db\n    replicas:\n";
    let e = err(&format!("{base}      - url: /backups/db\n"));
    assert!(
        e.contains("line 4: url: replica url scheme required"),
        "{e}"
    );
    let e = err(&format!(
        "{base}      - type: sftp\n        path: sftp://u:hunter2@h/x\n"
    ));
    assert!(
        e.contains("line 5: path: replica path cannot be a url"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn kind_and_name_rules() {
    let text = "dbs:\n  - path: /a.db\n    replicas:\n      - type: file\n        url: S3://b/p\n      - type: gcs\n        bucket: b\n      - type: Custom\n      - {}\n";
    let (c, _) = parse(text);
    let kinds: Vec<_> = c.dbs[0]
        .replicas
        .iter()
        .map(|r| (r.kind.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("s3", "s3"),
            ("gcs", "gcs"),
            ("Custom", "Custom"),
            ("file", "file")
        ]
    );
}

#[test]
fn duplicate_replica_names() {
    let e =
        err("dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/1\n      - url: s3://b/2\n");
    assert!(
        e.contains("line 5: name: duplicate replica name \"s3\""),
        "{e}"
    );
    let e = err("dbs:\n  - path: /a.db\n    replicas:\n      - {url: s3://b/1, name: x}\n      - {path: /r, name: x}\n");
    assert!(e.contains("duplicate replica name \"x\""), "{e}");
    // Same name in different databases is fine.
    parse("dbs:\n  - path: /a.db\n    replicas: [{url: s3://b/1}]\n  - path: /b.db\n    replicas: [{url: s3://b/2}]\n");
    // Named replicas of the same type are fine.
    let (c, _) = parse("dbs:\n  - path: /a.db\n    replicas:\n      - {url: s3://b/1, name: one}\n      - {url: s3://b/2, name: two}\n");
    assert_eq!(c.dbs[0].replicas.len(), 2);
}

#[test]
fn db_path_required_and_unique() {
    let e = err("dbs:\n  - meta-path: /m\n");
    assert_eq!(e, "/etc/litestream.yml: line 2: path: db path required");
    let e = err("dbs:\n  - path: \"\"\n");
    assert!(e.contains("path: db path required"), "{e}");
    let e = err("dbs:\n  - path: /a.db\n  - path: /x/../a.db\n");
    assert!(e.contains("line 3: path: duplicate db path"), "{e}");
    let e = err("dbs:\n  - /a.db\n");
    assert!(e.contains("line 2: dbs: expected a mapping"), "{e}");
    let e = err("dbs: /a.db\n");
    assert!(e.contains("line 1: dbs: expected a list"), "{e}");
    let e = err("dbs:\n  - path: /a.db\n    replicas: s3://b\n");
    assert!(e.contains("line 3: replicas: expected a list"), "{e}");
    let e = err("dbs:\n  - path: /a.db\n    replicas:\n      - s3://b\n");
    assert!(e.contains("line 4: replicas: expected a mapping"), "{e}");
    let e = err("dbs:\n  - path: [a]\n");
    assert!(e.contains("line 2: path: expected a single value"), "{e}");
}

#[test]
fn paths_are_expanded_and_absolute() {
    let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
    let cwd = std::env::current_dir().unwrap();
    let (c, _) =
        parse("dbs:\n  - path: ~/data/app.db\n    meta-path: ~/meta\n  - path: rel/./x.db\n");
    assert_eq!(c.dbs[0].path, home.join("data/app.db"));
    assert_eq!(c.dbs[0].meta_path, Some(home.join("meta")));
    assert_eq!(c.dbs[1].path, cwd.join("rel/x.db"));
    assert!(c.db(Path::new("rel/x.db")).is_some());
    assert!(c.db(&home.join("data/app.db")).is_some());
    assert!(c.db(Path::new("~/data/app.db")).is_some());
}

#[test]
fn top_level_credentials_fill_gaps_only() {
    let text = "access-key-id: TOP\nsecret-access-key: TOPS\ndbs:\n  - path: /a.db\n    replicas:\n      - {url: s3://b/1, name: a, access-key-id: OWN}\n      - {url: s3://b/2, name: b}\n";
    let (c, _) = parse(text);
    let [a, b] = &c.dbs[0].replicas[..] else {
        panic!()
    };
    assert_eq!(a.option("access-key-id"), Some("OWN"));
    assert_eq!(a.option("secret-access-key"), Some("TOPS"));
    assert_eq!(b.option("access-key-id"), Some("TOP"));
    assert_eq!(b.option("secret-access-key"), Some("TOPS"));
    let (c, _) = parse("dbs:\n  - path: /a.db\n    replicas: [{url: s3://b/1}]\n");
    assert!(c.dbs[0].replicas[0].options.is_empty());
}

#[test]
fn logging_section() {
    for (v, want) in [
        ("yes", true),
        ("on", true),
        ("Off", false),
        ("no", false),
        ("true", true),
        ("n", false),
    ] {
        let (c, _) = parse(&format!("logging:\n  stderr: {v}\n"));
        assert_eq!(c.logging.stderr, want, "{v}");
    }
    let e = err("logging:\n  stderr: maybe\n");
    assert_eq!(
        e,
        "/etc/litestream.yml: line 2: stderr: invalid boolean \"maybe\""
    );
    for (v, json) in [
        ("text", false),
        ("\"\"", false),
        ("json", true),
        ("JSON", true),
    ] {
        let (c, _) = parse(&format!("logging:\n  type: {v}\n"));
        assert_eq!(c.logging.json, json, "{v}");
    }
    let e = err("logging:\n  level: info\n  type: xml\n");
    assert!(
        e.contains("line 3: type: invalid logging type \"xml\""),
        "{e}"
    );
    let (c, w) = parse("logging:\n  level: TRACE\n");
    assert_eq!(c.logging.level, LogLevel::Info);
    assert_eq!(w[0].line, Some(2));
    let (c, w) = parse("logging:\n  level: WARNING\n");
    assert_eq!(c.logging.level, LogLevel::Warn);
    assert!(w.is_empty());
    let e = err("logging: loud\n");
    assert!(e.contains("line 1: logging: expected a mapping"), "{e}");
    let (c, _) = parse("logging:\n");
    assert_eq!(c.logging, crate::LoggingConfig::default());
}

#[test]
fn bool_options_checked_at_load() {
    let e = err("dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/p\n        skip-verify: sometimes\n");
    assert_eq!(
        e,
        "/etc/litestream.yml: line 5: skip-verify: invalid boolean \"sometimes\""
    );
    let e = err("dbs:\n  - path: /a.db\n    replicas:\n      - type: sftp\n        operation-timeout: soon\n");
    assert!(
        e.contains("line 5: operation-timeout: invalid duration \"soon\""),
        "{e}"
    );
}

#[test]
fn option_values_are_kept_as_written() {
    let text = "dbs:\n  - path: /a.db\n    replicas:\n      - type: sftp\n        user: 0755\n        password: 1e3\n        host: 'h:22'\n        key-path:\n        region: ~\n        endpoint: \"\"\n        force-path-style: ON\n";
    let (c, _) = parse(text);
    let r = &c.dbs[0].replicas[0];
    assert_eq!(r.option("user"), Some("0755"));
    assert_eq!(r.option("password"), Some("1e3"));
    assert_eq!(r.option("host"), Some("h:22"));
    assert_eq!(r.option("key-path"), None);
    assert_eq!(r.option("region"), None);
    assert_eq!(r.option("endpoint"), None);
    assert_eq!(
        r.settings(None).bool_option("force-path-style").unwrap(),
        Some(true)
    );
}

#[test]
fn age_forms() {
    let text = "dbs:\n  - path: /a.db\n    replicas:\n      - path: /r\n        age:\n          identities: AGE-SECRET-KEY-1ONE\n          recipients:\n            - age1a\n            - age1b\n";
    let (c, _) = parse(text);
    let age = c.dbs[0].replicas[0].age.clone().unwrap();
    assert_eq!(age.identities, ["AGE-SECRET-KEY-1ONE"]);
    assert_eq!(age.recipients, ["age1a", "age1b"]);
    let e = err("dbs:\n  - path: /a.db\n    replicas:\n      - path: /r\n        age: [x]\n");
    assert!(e.contains("line 5: age: expected a mapping"), "{e}");
    let e = err("dbs:\n  - path: /a.db\n    replicas:\n      - path: /r\n        age:\n          recipients: [[x]]\n");
    assert!(
        e.contains("line 6: recipients: expected a list of strings"),
        "{e}"
    );
    let (c, _) = parse("dbs:\n  - path: /a.db\n    replicas:\n      - path: /r\n        age:\n");
    assert!(c.dbs[0].replicas[0].age.is_none());
}

#[test]
fn debug_of_parsed_config_hides_secrets() {
    let text = "access-key-id: TOPKEYID\nsecret-access-key: TOPSECRET\ndbs:\n  - path: /a.db\n    replicas:\n      - url: sftp://me:URLPASS@h/p\n        key-passphrase: PASSPHRASE\n      - url: s3://b/p\n        secret-access-key: S3SECRET\n      - url: abs://acct@c/p\n        account-key: ABSKEY\n        age:\n          identities: [AGE-SECRET-KEY-1QQQ]\n";
    let (c, _) = parse(text);
    let dbg = format!("{c:?}\n{c:#?}\n{:?}", c.dbs[0]);
    for secret in [
        "TOPKEYID",
        "TOPSECRET",
        "URLPASS",
        "PASSPHRASE",
        "S3SECRET",
        "ABSKEY",
        "AGE-SECRET-KEY",
    ] {
        assert!(!dbg.contains(secret), "{secret} leaked:\n{dbg}");
    }
    assert!(dbg.contains("/a.db"));
}

#[test]
fn errors_do_not_echo_secret_urls() {
    let e = err("dbs:\n  - path: /a.db\n    replicas:\n      - url: sftp://me:URLPASS@h/p\n        host: h\n");
    assert!(!e.contains("URLPASS"), "{e}");
}

#[test]
fn env_expansion_on_and_off() {
    // A name no other test uses; std serialises its own environment access.
    std::env::set_var("WALSHIP_CONFIG_TEST_BUCKET", "from-env");
    let text = "dbs:\n  - path: /a.db\n    replicas:\n      - type: s3\n        bucket: ${WALSHIP_CONFIG_TEST_BUCKET}\n        password: pa$$word\n";
    let (c, _) = Config::parse(text, Path::new(SRC), true).unwrap();
    let r = &c.dbs[0].replicas[0];
    assert_eq!(r.option("bucket"), Some("from-env"));
    assert_ne!(r.option("password"), Some("pa$$word"));
    let (c, _) = Config::parse(text, Path::new(SRC), false).unwrap();
    let r = &c.dbs[0].replicas[0];
    assert_eq!(r.option("bucket"), Some("${WALSHIP_CONFIG_TEST_BUCKET}"));
    assert_eq!(r.option("password"), Some("pa$$word"));
    // An unset variable leaves an empty value: "not set", as in v0.3.13.
    let (c, _) = Config::parse(
        "addr: $WALSHIP_CONFIG_TEST_SURELY_UNSET\n",
        Path::new(SRC),
        true,
    )
    .unwrap();
    assert_eq!(c.addr, None);
}

#[test]
fn walship_additions() {
    let (c, w) = parse(
        "heartbeat-url: https://hc.example/ping/abc\nheartbeat-interval: 5m\nshutdown-sync-timeout: 2m\n",
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.shutdown_sync_timeout, secs(120));
    assert_eq!(
        c.heartbeat_url.as_deref(),
        Some("https://hc.example/ping/abc")
    );
    assert_eq!(c.heartbeat_interval, secs(300));
}

#[test]
fn multiple_documents_use_the_first() {
    let (c, w) = parse("addr: ':1'\n---\naddr: ':2'\n");
    assert_eq!(c.addr.as_deref(), Some(":1"));
    assert_eq!(w.len(), 1, "{w:?}");
}

#[test]
fn anchors_and_merge_keys() {
    let text = "x-common: &common\n  sync-interval: 10s\n  region: r1\ndbs:\n  - path: /a.db\n    replicas:\n      - <<: *common\n        url: s3://b/p\n";
    let (c, w) = parse(text);
    let r = &c.dbs[0].replicas[0];
    assert_eq!(r.sync_interval, secs(10));
    assert_eq!(r.option("region"), Some("r1"));
    assert_eq!(w.len(), 1, "only x-common is unknown: {w:?}");
}

#[test]
fn load_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("litestream.yml");
    std::fs::write(
        &p,
        "dbs:\n  - path: /a.db\n    replicas:\n      - url: file:///tmp/r\n",
    )
    .unwrap();
    let (c, w) = Config::load(&p, true).unwrap();
    assert!(w.is_empty());
    assert_eq!(c.dbs[0].replicas[0].kind, "file");

    let missing = dir.path().join("nope.yml");
    let e = Config::load(&missing, true).unwrap_err();
    assert!(matches!(e, ConfigError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("nope.yml"));

    std::fs::write(&p, b"addr: ':1'\n\xff\xfe: x\n").unwrap();
    let e = Config::load(&p, true).unwrap_err().to_string();
    assert!(
        e.contains("litestream.yml: line 2: ") && e.contains("UTF-8"),
        "{e}"
    );

    std::fs::write(
        &p,
        "addr: ':1'\ndbs:\n  - path: /a.db\n    sync-interval: [\n",
    )
    .unwrap();
    let e = Config::load(&p, true).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: line ", p.display())), "{e}");

    let e = Config::load(dir.path(), true).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
}

/// No input may panic: random bytes, random YAML-ish tokens, and pathological nesting.
#[test]
fn garbage_never_panics() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let tokens = [
        "dbs:",
        "- ",
        "path: ",
        "replicas:",
        "url: ",
        "s3://",
        "sftp://u:p@h",
        "type: ",
        "  ",
        "\n",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "&a ",
        "*a",
        "<<: ",
        "!!int ",
        "!!str ",
        "'",
        "\"",
        "|",
        ">",
        "~",
        "yes",
        "-1",
        "1e999",
        "0x",
        "µs",
        "$",
        "${",
        "}",
        "#",
        "\t",
        "---",
        "...",
        "?",
        "%YAML 1.1\n",
        "sync-interval: ",
        "10x",
        "age:",
        "identities: ",
        "name: ",
        "min-checkpoint-page-count: ",
        "logging:",
        "level: ",
        "stderr: ",
        "\u{feff}",
        "\0",
        "é",
    ];
    for _ in 0..3000 {
        let n = (next() % 40) as usize;
        let text: String = (0..n)
            .map(|_| tokens[(next() % tokens.len() as u64) as usize])
            .collect();
        let _ = Config::parse(&text, Path::new(SRC), true);
        let _ = Config::parse(&text, Path::new(SRC), false);
    }
    for _ in 0..500 {
        let n = (next() % 200) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        let text = String::from_utf8_lossy(&bytes);
        let _ = Config::parse(&text, Path::new(SRC), true);
    }
    for deep in [
        "[".repeat(10_000),
        format!("a: {}", "[".repeat(5000) + &"]".repeat(5000)),
        "- ".repeat(5000) + "x",
        (0..3000)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect(),
        "a: &a [*a]\n".into(),
        "a: &a x\nb: [*a, *a, *a]\n".into(),
    ] {
        let _ = Config::parse(&deep, Path::new(SRC), false);
    }
}

#[test]
fn bom_crlf_and_directives() {
    for text in [
        "\u{feff}addr: ':1'\n",
        "addr: ':1'\r\ndbs:\r\n  - path: /a.db\r\n",
        "%YAML 1.1\n---\naddr: ':1'\n",
        "---\naddr: ':1'\n...\n",
    ] {
        let (c, w) = parse(text);
        assert_eq!(c.addr.as_deref(), Some(":1"), "{text:?}");
        assert!(w.is_empty(), "{text:?}: {w:?}");
    }
}

/// Issue 15.3: two databases replicating to one place restored each other's data.
#[test]
fn shared_replica_targets_are_refused_naming_both_entries() {
    // The same S3 place spelled as a URL and as keys, with credentials in neither message.
    let e = err("dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://KEY:SECRET@bkt/app/\n  - path: /b.db\n    replicas:\n      - type: s3\n        bucket: bkt\n        path: /app\n");
    assert!(
        e.contains("line 7: replicas: replica target s3://|bkt/app is also the replica of db \"/a.db\" (line 4)"),
        "{e}"
    );
    assert!(!e.contains("SECRET") && !e.contains("KEY"), "{e}");
    // Directories: one place whatever the spelling.
    let e = err("dbs:\n  - path: /a.db\n    replicas: [{path: /backup/x}]\n  - path: /b.db\n    replicas: [{url: \"file:///backup/y/../x/\"}]\n");
    assert!(e.contains("replica target file:/backup/x is also"), "{e}");
    // SFTP: the default port is the same host.
    let e = err("dbs:\n  - path: /a.db\n    replicas: [{url: \"sftp://u@h/p\"}]\n  - path: /b.db\n    replicas: [{type: sftp, host: \"h:22\", path: p}]\n");
    assert!(e.contains("replica target sftp://h:22/p is also"), "{e}");
    // Two replicas of one database may share a place (same data, other credentials).
    parse("dbs:\n  - path: /a.db\n    replicas:\n      - {url: s3://b/1, name: one}\n      - {url: s3://b/1/, name: two}\n");
    // Different paths, buckets or endpoints are different places.
    parse("dbs:\n  - path: /a.db\n    replicas: [{url: s3://b/1}]\n  - path: /b.db\n    replicas: [{url: s3://b/2}]\n");
    parse("dbs:\n  - path: /a.db\n    replicas: [{url: s3://b/1}]\n  - path: /b.db\n    replicas: [{url: s3://c/1}]\n");
    parse("dbs:\n  - path: /a.db\n    replicas: [{url: s3://b/1, endpoint: \"https://nyc3.digitaloceanspaces.com\"}]\n  - path: /b.db\n    replicas: [{url: s3://b/1, endpoint: \"https://sfo3.digitaloceanspaces.com\"}]\n");
}

/// Issue 16.11: a config written for Litestream v0.5 (`replica:`, one mapping) replicates, instead
/// of warning about an unknown key and running with no replica.
#[test]
fn v05_single_replica_section_is_the_one_replica() {
    let (c, w) = parse(
        "dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      bucket: b\n      path: p\n",
    );
    assert!(w.is_empty(), "{w:?}");
    let r = &c.dbs[0].replicas;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, "s3");
    assert_eq!(r[0].option("bucket"), Some("b"));
    let e = err("dbs:\n  - path: /a.db\n    replica:\n      url: s3://b/p\n    replicas:\n      - url: file:///x\n");
    assert!(e.contains("line 5") && e.contains("replica"), "{e}");
}

#[test]
fn directory_entries_v05_keys() {
    let (c, w) = parse(
        r#"
dbs:
  - path: /var/lib/app/main.db
    replicas:
      - url: s3://b/main
  - dir: /var/lib/app/tenants/
    pattern: "*.db"
    recursive: true
    watch: true
    meta-dir: /var/lib/meta
    monitor-interval: 2s
    replica:
      type: s3
      bucket: b
      path: tenants
"#,
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.dbs.len(), 1);
    let d = &c.dirs[0];
    assert_eq!(d.dir, Path::new("/var/lib/app/tenants"));
    assert_eq!(
        (d.pattern.as_str(), d.recursive, d.watch),
        ("*.db", true, true)
    );
    assert_eq!(d.meta_dir.as_deref(), Some(Path::new("/var/lib/meta")));
    assert_eq!(d.line, Some(6));
    assert_eq!(d.template.monitor_interval, secs(2));
    // A path under the entry finds its database; one that does not match does not.
    let t = c
        .db_or_found(Path::new("/var/lib/app/tenants/eu/x.db"))
        .unwrap();
    assert_eq!(t.replicas[0].path.as_deref(), Some("tenants/eu/x.db"));
    assert_eq!(
        t.meta_path.as_deref(),
        Some(Path::new("/var/lib/meta/eu/x.db-litestream"))
    );
    assert!(c
        .db_or_found(Path::new("/var/lib/app/tenants/x.db-wal"))
        .is_none());
    assert_eq!(
        c.db_or_found(Path::new("/var/lib/app/main.db"))
            .unwrap()
            .path,
        Path::new("/var/lib/app/main.db")
    );
    let flat =
        parse("dbs:\n  - dir: /t\n    pattern: '*.sqlite'\n    replicas: [{url: 'file:///bk'}]\n")
            .0;
    assert!(!flat.dirs[0].recursive && !flat.dirs[0].watch);
}

#[test]
fn directory_entries_bad_input_names_line_and_key() {
    let both = err("dbs:\n  - path: /a.db\n    dir: /t\n    pattern: '*.db'\n");
    assert!(
        both.contains("line 3") && both.contains("`dir` and `path`"),
        "{both}"
    );
    let none = err("dbs:\n  - dir: /t\n    replicas: [{url: 'file:///bk'}]\n");
    assert!(
        none.contains("pattern") && none.contains("line 2"),
        "{none}"
    );
    let bad = err("dbs:\n  - dir: /t\n    pattern: '[a'\n");
    assert!(
        bad.contains("line 3") && bad.contains("invalid pattern"),
        "{bad}"
    );
    let stray = err("dbs:\n  - path: /a.db\n    watch: true\n");
    assert!(
        stray.contains("line 3") && stray.contains("only be used with `dir`"),
        "{stray}"
    );
    let meta = err("dbs:\n  - dir: /t\n    pattern: '*.db'\n    meta-path: /m\n");
    assert!(meta.contains("meta-dir"), "{meta}");
    let twice = err("dbs:\n  - dir: /t\n    pattern: '*.db'\n  - dir: /t/\n    pattern: '*.x'\n");
    assert!(
        twice.contains("line 4") && twice.contains("duplicate dir"),
        "{twice}"
    );
}

#[test]
fn metrics_per_db_switch() {
    assert_eq!(parse("dbs: []\n").0.metrics_per_db, None);
    let (c, w) = parse("metrics:\n  per-db: false\n");
    assert_eq!((c.metrics_per_db, w.len()), (Some(false), 0));
    let bad = err("metrics:\n  per-db: maybe\n");
    assert!(bad.contains("line 2") && bad.contains("per-db"), "{bad}");
}

#[test]
fn release_after_is_a_duration_with_a_default_for_directory_entries() {
    let (c, w) = parse("dbs:\n  - path: /a.db\n    release-after: 30s\n  - path: /b.db\n");
    assert_eq!(w.len(), 0, "{w:?}");
    assert_eq!(c.dbs[0].release_after, secs(30));
    assert_eq!(
        c.dbs[1].release_after, None,
        "a path entry is never released unless set"
    );
    let bad = err("dbs:\n  - path: /a.db\n    release-after: soon\n");
    assert!(
        bad.contains("line 3") && bad.contains("release-after"),
        "{bad}"
    );
    let d = tempfile::tempdir().unwrap();
    let text = format!(
        "dbs:\n  - dir: {}\n    pattern: \"*.db\"\n  - dir: {}/sub\n    pattern: \"*.db\"\n    release-after: 0s\n",
        d.path().display(),
        d.path().display()
    );
    std::fs::create_dir(d.path().join("sub")).unwrap();
    let (c, _) = parse(&text);
    let found = c.dirs[0].db(std::path::Path::new("x.db"));
    assert_eq!(found.release_after, Some(crate::dirs::DIR_RELEASE_AFTER));
    let off = c.dirs[1].db(std::path::Path::new("x.db"));
    assert_eq!(off.release_after, secs(0));
}
