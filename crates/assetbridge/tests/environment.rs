//! Settings that come from the environment before the configuration file is read, and what the
//! process prints of configured URLs it cannot use.

use std::process::{Command, Output};

fn assetbridge(page_cache_mib: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_assetbridge"))
        .args(["check", "--config", "no-such-assetbridge.toml"])
        .env("ASSETBRIDGE_SQLITE_PAGE_CACHE_MIB", page_cache_mib)
        .output()
        .expect("the binary runs")
}

/// A page-cache size that is not a whole number of MiB stops the process before anything else,
/// with exit 2 and the variable named; `0` (no region) and a number are accepted, so the same
/// command goes on to its own error (the missing configuration file).
#[test]
fn the_sqlite_page_cache_size_is_checked_before_anything_runs() {
    let out = assetbridge("lots");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "ASSETBRIDGE_SQLITE_PAGE_CACHE_MIB must be a whole number of MiB, got `lots`"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("no-such-assetbridge.toml"), "{stderr}");

    for accepted in ["0", "8"] {
        let out = assetbridge(accepted);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("ASSETBRIDGE_SQLITE_PAGE_CACHE_MIB"),
            "{accepted}: {stderr}"
        );
        assert!(
            stderr.contains("no-such-assetbridge.toml"),
            "{accepted}: {stderr}"
        );
    }
}

/// A configuration with one `amqps://` consumer (`check --offline` contacts nothing).
const AMQPS_CONFIG: &str = r#"
[akeneo]
url = "http://127.0.0.1:1"
client_id = "c"
secret = "s"
username = "u"
password = "p"

[dam]
base_url = "http://127.0.0.1:2"

[[families]]
code = "packshots"
values = [{ attribute = "media", from = "/url" }]

[[queues.amqp]]
url = "amqps://guest:s3cret@broker.example/%2f"
queue = "assets"
shape = { family = "packshots" }
"#;

/// lapin's TLS stack panics at an `amqps://` connection when the system's trusted certificates
/// cannot be read (`SSL_CERT_FILE` naming a missing file): the configuration check says so
/// first, naming the consumer and the variable, with no panic and no password.
#[test]
fn unreadable_system_certificates_are_a_configuration_error_for_amqps() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("assetbridge.toml");
    std::fs::write(&config, AMQPS_CONFIG).unwrap();
    let check = |cert_file: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_assetbridge"));
        cmd.args(["check", "--offline", "--config"])
            .arg(&config)
            .env_remove("SSL_CERT_DIR");
        match cert_file {
            Some(f) => cmd.env("SSL_CERT_FILE", f),
            None => cmd.env_remove("SSL_CERT_FILE"),
        };
        let out = cmd.output().expect("the binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stderr)
    };

    let missing = dir.path().join("no-such-bundle.pem");
    let (ok, stderr) = check(Some(&missing));
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("queues.amqp[0]"), "{stderr}");
    assert!(
        stderr.contains("trusted certificates") && stderr.contains("no-such-bundle.pem"),
        "{stderr}"
    );
    assert!(stderr.contains("SSL_CERT_FILE"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");

    // A readable bundle (here a single certificate): the same configuration passes.
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        include_str!("../../sources/tests/fixtures/localhost-cert.pem"),
    )
    .unwrap();
    let (ok, stderr) = check(Some(&bundle));
    assert!(ok, "{stderr}");
}

/// A password holding characters a URL parser stops at (`/`, `#`, `?`) makes the URL
/// unparseable, and the error that says so names the URL: with the password hidden, whole
/// (`status` opens the state store; `check` reads the consumers' URLs).
#[test]
fn a_password_in_an_unparseable_url_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("assetbridge.toml");
    let with = |state: &str, amqp: &str| {
        AMQPS_CONFIG.replace(
            "[[queues.amqp]]\nurl = \"amqps://guest:s3cret@broker.example/%2f\"",
            &format!("[state]\nurl = \"{state}\"\n\n[[queues.amqp]]\nurl = \"{amqp}\""),
        )
    };
    for (state, amqp, secret) in [
        (
            "postgres://app:pg/pass#1@127.0.0.1:1/db",
            "amqp://guest:guest@127.0.0.1:1/%2f",
            "pg/pass#1",
        ),
        (
            "sqlite://state.db",
            "amqp://u:am/q?p#w@127.0.0.1:1/v",
            "am/q?p#w",
        ),
    ] {
        let text = with(state, amqp);
        assert!(text.contains(state) && text.contains(amqp), "{text}");
        std::fs::write(&config, text).unwrap();
        for args in [&["status"][..], &["check", "--offline"], &["check"]] {
            let out = Command::new(env!("CARGO_BIN_EXE_assetbridge"))
                .current_dir(dir.path())
                .args(args)
                .arg("--config")
                .arg(&config)
                .output()
                .unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // Not even part of it (before: `cannot open the state store
            // \`postgres://app:pg/pass#1@127.0.0.1:1/db\``).
            for part in [secret, &secret[..3], &secret[secret.len() - 3..]] {
                assert!(!all.contains(part), "{args:?}: `{part}` in {all}");
            }
            if args == ["status"] && state.starts_with("postgres") {
                assert!(all.contains("cannot open the state store"), "{all}");
            }
        }
    }
}
