//! `fulcrum check` on the real binary: exit codes, the one-line summary, and an error
//! naming the key path for every class of config mistake.

use std::process::Command;

/// Runs `fulcrum check` on `yaml`; returns (exit code, stdout, stderr).
fn check(yaml: &str) -> (i32, String, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    check_file(file.path())
}

fn check_file(path: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum")).args(["check", "--config"]).arg(path).output().unwrap();
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts `yaml` is rejected with an error line naming `path` and containing `message`.
fn rejects(yaml: &str, path: &str, message: &str) {
    let (code, stdout, stderr) = check(yaml);
    assert_eq!(code, 1, "accepted:\n{yaml}\nstdout: {stdout}");
    assert!(
        stderr.lines().any(|line| line.contains(&format!("{path}: ")) && line.contains(message)),
        "no error at {path:?} containing {message:?}; stderr:\n{stderr}"
    );
}

const BACKEND: &str = "backends:\n  - name: app\n    servers: [{ name: a, address: 127.0.0.1:8001 }]\n";

fn with_frontend(frontend: &str) -> String {
    format!("frontends:\n{frontend}\n{BACKEND}")
}

#[test]
fn a_valid_config_passes_with_a_summary() {
    let (code, stdout, stderr) =
        check(&with_frontend("  - { name: web, bind: 127.0.0.1:8080, mode: http, default_backend: app }"));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok (1 frontends, 1 backends, 1 servers)"), "{stdout}");
    assert_eq!(stdout.lines().count(), 1);
}

#[test]
fn every_example_config_passes() {
    // Each is checked from a copy beside the files the examples name (configs/tls.yaml:
    // certs/site.pem and .key, made as its comment says, here with rcgen), so the
    // check does not depend on what a developer's configs/certs/ holds.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let names = vec!["site.test".to_string(), "*.site.test".to_string()];
    let cert = rcgen::CertificateParams::new(names).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.path().join("certs/site.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("certs/site.key"), key.serialize_pem()).unwrap();
    // configs/edge.yaml serves configs/www.
    std::fs::create_dir(dir.path().join("www")).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/configs")).unwrap() {
        let shipped = entry.unwrap().path();
        if shipped.extension().is_some_and(|e| e == "yaml") {
            let path = dir.path().join(shipped.file_name().unwrap());
            std::fs::copy(&shipped, &path).unwrap();
            let (code, stdout, stderr) = check_file(&path);
            assert_eq!(code, 0, "{}: {stderr}", path.display());
            assert!(stdout.contains(": ok ("), "{stdout}");
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} example configs");
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let (code, _, stderr) = check("frontends:\n  - name: web\n    bind: [127.0.0.1:80\n");
    assert_eq!(code, 1);
    assert!(stderr.contains("line 4") || stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("column"), "{stderr}");
}

#[test]
fn unknown_keys_are_rejected() {
    // The path names the unknown key itself, once.
    rejects(
        &with_frontend("  - { name: web, bind: 127.0.0.1:8080, mode: http, default_backnd: app }"),
        "frontends[0].default_backnd",
        "unknown field",
    );
    rejects(
        "frontends:\n  - { name: web, bind: 127.0.0.1:8080, default_backend: app }\nbackends:\n  - name: app\n    servers: [{ name: a, address: 127.0.0.1:1, wieght: 2 }]\n",
        "backends[0].servers[0].wieght",
        "unknown field",
    );
    let (_, _, stderr) = check(&with_frontend("  - { name: web, bind: 127.0.0.1:8080, default_backnd: app }"));
    assert_eq!(stderr.matches("frontends[0]").count(), 1, "{stderr}");
}

#[test]
fn bad_duration_names_the_key() {
    rejects(
        &format!(
            "timeouts: {{ connect: 3 parsecs }}\n{}",
            with_frontend("  - { name: web, bind: 127.0.0.1:8080, default_backend: app }")
        ),
        "timeouts.connect",
        "invalid duration \"3 parsecs\"",
    );
    // The key path is said once, not twice.
    let (_, _, stderr) = check("timeouts: { connect: 3 parsecs }\n");
    assert_eq!(stderr.matches("timeouts.connect").count(), 1, "{stderr}");
}

#[test]
fn duplicate_names_are_rejected() {
    rejects(
        &with_frontend(
            "  - { name: web, bind: 127.0.0.1:8080, default_backend: app }\n  - { name: web, bind: 127.0.0.1:8081, default_backend: app }",
        ),
        "frontends[1].name",
        "duplicate",
    );
    rejects(
        "frontends:\n  - { name: web, bind: 127.0.0.1:8080, default_backend: app }\nbackends:\n  - name: app\n    servers:\n      - { name: a, address: 127.0.0.1:1 }\n      - { name: a, address: 127.0.0.1:2 }\n",
        "backends[0].servers[1].name",
        "duplicate",
    );
}

#[test]
fn references_to_missing_backends_are_rejected() {
    rejects(
        &with_frontend("  - { name: web, bind: 127.0.0.1:8080, default_backend: nowhere }"),
        "frontends[0].default_backend",
        "nowhere",
    );
    rejects(
        &with_frontend(
            "  - name: web\n    bind: 127.0.0.1:8080\n    default_backend: app\n    routes:\n      - { match: { path_prefix: /x }, backend: ghost }",
        ),
        "frontends[0].routes[0].backend",
        "ghost",
    );
}

#[test]
fn bad_addresses_and_binds_are_rejected() {
    rejects(
        "frontends:\n  - { name: web, bind: 127.0.0.1:8080, default_backend: app }\nbackends:\n  - name: app\n    servers: [{ name: a, address: \"not an address\" }]\n",
        "backends[0].servers[0].address",
        "",
    );
    rejects(&with_frontend("  - { name: web, bind: 127.0.0.1:99999, default_backend: app }"), "frontends[0].bind", "");
}

#[test]
fn weight_and_retries_out_of_range_are_rejected() {
    rejects(
        "frontends:\n  - { name: web, bind: 127.0.0.1:8080, default_backend: app }\nbackends:\n  - name: app\n    servers: [{ name: a, address: 127.0.0.1:1, weight: 257 }]\n",
        "backends[0].servers[0].weight",
        "256",
    );
    rejects(
        "frontends:\n  - { name: web, bind: 127.0.0.1:8080, default_backend: app }\nbackends:\n  - name: app\n    retries: 99\n    servers: [{ name: a, address: 127.0.0.1:1 }]\n",
        "backends[0].retries",
        "16",
    );
}

#[test]
fn head_limit_out_of_range_is_rejected() {
    rejects(
        &with_frontend("  - { name: web, bind: 127.0.0.1:8080, default_backend: app, max_header_bytes: 4096 }"),
        "frontends[0].max_header_bytes",
        "8192",
    );
}

#[test]
fn tcp_routes_match_sni_only() {
    let tcp = |route: &str| {
        with_frontend(&format!(
            "  - name: db\n    bind: 127.0.0.1:6432\n    mode: tcp\n    default_backend: app\n    routes:\n      - {route}"
        ))
    };
    rejects(
        &tcp("{ match: { path_prefix: / }, backend: app }"),
        "frontends[0].routes[0].match.path_prefix",
        "mode: http",
    );
    rejects(&tcp("{ match: { path_prefix: / }, backend: app }"), "frontends[0].routes[0].match.sni", "needs sni");
    rejects(&tcp("{ match: { sni: \"a.*.test\" }, backend: app }"), "frontends[0].routes[0].match.sni", "a.*.test");
    let (code, _, stderr) = check(&tcp("{ match: { sni: \"*.site.test\" }, backend: app }"));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn hash_key_mistakes_are_rejected() {
    rejects(
        "frontends:\n  - { name: web, bind: 127.0.0.1:8080, default_backend: app }\nbackends:\n  - name: app\n    balance: round_robin\n    hash_key: source_ip\n    servers: [{ name: a, address: 127.0.0.1:1 }]\n",
        "backends[0].hash_key",
        "consistent_hash",
    );
    rejects(
        "frontends:\n  - { name: web, bind: 127.0.0.1:8080, default_backend: app }\nbackends:\n  - name: app\n    balance: consistent_hash\n    hash_key: phase_of_moon\n    servers: [{ name: a, address: 127.0.0.1:1 }]\n",
        "backends[0].hash_key",
        "",
    );
}

#[test]
fn health_check_mistakes_are_rejected() {
    let backend = |check: &str| {
        format!(
            "frontends:\n  - {{ name: web, bind: 127.0.0.1:8080, default_backend: app }}\nbackends:\n  - name: app\n    servers: [{{ name: a, address: 127.0.0.1:1 }}]\n    health_check: {check}\n"
        )
    };
    rejects(&backend("{ kind: http, expect_status: 700 }"), "backends[0].health_check.expect_status", "100-599");
    rejects(&backend("{ kind: http, expect_status: \"300-200\" }"), "backends[0].health_check.expect_status", "");
    rejects(&backend("{ kind: tcp, path: /healthz }"), "backends[0].health_check.path", "kind: http");
    rejects(&backend("{ kind: http, rise: 0 }"), "backends[0].health_check.rise", "");
}

#[test]
fn every_error_is_reported_at_once() {
    let yaml = "frontends:\n  - { name: web, bind: 127.0.0.1:8080, default_backend: nowhere }\n  - { name: web, bind: 127.0.0.1:8081, default_backend: app }\nbackends:\n  - name: app\n    retries: 99\n    servers:\n      - { name: a, address: 127.0.0.1:1, weight: 1000 }\n      - { name: b, address: bad }\n";
    let (code, _, stderr) = check(yaml);
    assert_eq!(code, 1);
    for path in [
        "frontends[0].default_backend",
        "frontends[1].name",
        "backends[0].retries",
        "backends[0].servers[0].weight",
        "backends[0].servers[1].address",
    ] {
        assert!(stderr.contains(&format!("{path}: ")), "{path} missing from:\n{stderr}");
    }
    assert!(stderr.contains("5 error(s)"), "{stderr}");
}

#[test]
fn numbers_and_durations_have_upper_bounds() {
    // Both passed `check` once and then panicked `run` (tokio's semaphore limit;
    // `Instant + Duration` overflow).
    rejects(
        &with_frontend(
            "  - { name: web, bind: 127.0.0.1:8080, default_backend: app, max_connections: 18446744073709551615 }",
        ),
        "frontends[0].max_connections",
        "must be at most 10000000",
    );
    rejects(
        &format!(
            "timeouts: {{ client: 400000000000y }}\n{}",
            with_frontend("  - { name: web, bind: 127.0.0.1:8080, default_backend: app }")
        ),
        "timeouts.client",
        "must be at most 30d",
    );
    let backend = |server: &str, extra: &str| {
        format!(
            "frontends:\n  - {{ name: web, bind: 127.0.0.1:8080, default_backend: app }}\nbackends:\n  - name: app\n    servers: [{{ name: a, address: 127.0.0.1:1{server} }}]\n{extra}"
        )
    };
    rejects(
        &backend(", max_connections: 99999999999", ""),
        "backends[0].servers[0].max_connections",
        "must be at most 10000000",
    );
    rejects(&backend("", "    timeouts: { connect: 1d }\n"), "backends[0].timeouts.connect", "must be at most 1h");
    rejects(
        &backend("", "    health_check: { interval: 1000000h }\n"),
        "backends[0].health_check.interval",
        "must be at most 1d",
    );
    rejects(&backend("", "    health_check: { fall: 1000 }\n"), "backends[0].health_check.fall", "must be at most 100");
    rejects(
        &format!(
            "timeouts: {{ drain: 2d }}\n{}",
            with_frontend("  - { name: web, bind: 127.0.0.1:8080, default_backend: app }")
        ),
        "timeouts.drain",
        "must be at most 1d",
    );
}

#[test]
fn bad_values_are_reported_where_they_are() {
    rejects(
        &with_frontend("  - { name: web, bind: [127.0.0.1:8080, \"127.0.0.1:x\"], default_backend: app }"),
        "frontends[0].bind[1]",
        "not a listen address",
    );
    rejects(
        &with_frontend(
            "  - name: web\n    bind: 127.0.0.1:8080\n    routes:\n      - { match: { method: \"GE T\" }, backend: app }",
        ),
        "frontends[0].routes[0].match.method",
        "not an HTTP method",
    );
    rejects(
        "frontends:\n  - { name: web, bind: 127.0.0.1:8080, default_backend: app }\nbackends:\n  - name: app\n    servers: [{ name: a, address: 127.0.0.1:1 }]\n    health_check: { kind: http, expect_status: [200, 999] }\n",
        "backends[0].health_check.expect_status[1]",
        "100-599",
    );
}

#[test]
fn an_alias_bomb_is_rejected_without_expanding_it() {
    // One list of 20 000 binds aliased by 20 000 frontends: 400 million binds (tens
    // of GB) from 1.3 MB of YAML. serde_yaml's own limit only stops alias chains.
    const N: usize = 20_000;
    let binds: Vec<String> = (0..N).map(|i| format!("127.0.0.1:{}", 1000 + i)).collect();
    let mut yaml = format!("frontends:\n  - {{ name: f, bind: &b [{}], default_backend: app }}\n", binds.join(", "));
    for i in 0..N {
        yaml += &format!("  - {{ name: f{i}, bind: *b, default_backend: app }}\n");
    }
    yaml += BACKEND;
    let (code, _, stderr) = check(&yaml);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("values once its aliases are resolved"), "{stderr}");

    // The classic nested form ("billion laughs"), in a key that takes lists.
    let mut lol = String::from("frontends:\n  - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..10 {
        lol += &format!("  - &a{level} [{}]\n", vec![format!("*a{}", level - 1); 10].join(", "));
    }
    let (code, _, stderr) = check(&lol);
    assert_eq!(code, 1, "{stderr}");
}
