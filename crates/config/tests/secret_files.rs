//! `*_file` keys: secrets read from files.

mod common;

use std::path::Path;

use assetbridge_config::LoadOptions;
use common::*;
use secrecy::ExposeSecret;

fn text_with_password_file(path: &str) -> String {
    format!(
        "[akeneo]\nurl = \"https://pim.example\"\nclient_id = \"c\"\npassword_file = \"{path}\"\n"
    )
}

#[test]
fn reads_the_file_and_trims_one_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n\n").unwrap();
    let text = text_with_password_file(&pw.display().to_string().replace('\\', "\\\\"));
    let loaded = load_in(&text, Path::new(""), LoadOptions::default()).unwrap();
    // One newline trimmed, not all of them.
    assert_eq!(loaded.value.akeneo.password.expose_secret(), "s3cret\n");

    std::fs::write(&pw, "s3cret\r\n").unwrap();
    let loaded = load_in(&text, Path::new(""), LoadOptions::default()).unwrap();
    assert_eq!(loaded.value.akeneo.password.expose_secret(), "s3cret");

    std::fs::write(&pw, "  spaced  ").unwrap();
    let loaded = load_in(&text, Path::new(""), LoadOptions::default()).unwrap();
    assert_eq!(loaded.value.akeneo.password.expose_secret(), "  spaced  ");
}

#[test]
fn relative_paths_are_relative_to_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/pw"), "from-relative\n").unwrap();
    let text = text_with_password_file("secrets/pw");
    let loaded = load_in(&text, dir.path(), LoadOptions::default()).unwrap();
    assert_eq!(
        loaded.value.akeneo.password.expose_secret(),
        "from-relative"
    );

    // Through `load`: the directory of the file given.
    let config = dir.path().join("assetbridge.toml");
    std::fs::write(&config, &text).unwrap();
    let loaded = assetbridge_config::load::<Config>(&config).unwrap();
    assert_eq!(
        loaded.value.akeneo.password.expose_secret(),
        "from-relative"
    );
    // The made key is located at the `*_file` key.
    let at = loaded.source.locate("akeneo.password").unwrap();
    assert_eq!(at.line, line_of(&text, "password_file"));
    assert_eq!(at.file, config.display().to_string());
    assert_eq!(loaded.source.locate("akeneo.password_file"), Some(at));
}

#[test]
fn files_in_arrays_of_tables_and_inline_tables_and_option_fields() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "p\n").unwrap();
    std::fs::write(dir.path().join("token"), "app-token\n").unwrap();
    let text = "akeneo = { url = \"u\", client_id = \"c\", password_file = \"pw\", app_token_file = \"token\" }\n";
    let loaded = load_in(text, dir.path(), LoadOptions::default()).unwrap();
    assert_eq!(loaded.value.akeneo.password.expose_secret(), "p");
    assert_eq!(
        loaded
            .value
            .akeneo
            .app_token
            .as_ref()
            .unwrap()
            .expose_secret(),
        "app-token"
    );
}

#[test]
fn the_path_may_be_interpolated() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "via-env\n").unwrap();
    let text = text_with_password_file("${CREDENTIALS_DIRECTORY}/pw");
    let env = test_env(&[("CREDENTIALS_DIRECTORY", &dir.path().display().to_string())]);
    let loaded =
        assetbridge_config::load_str::<Config>(&text, "a.toml", &env, Path::new("")).unwrap();
    assert_eq!(loaded.value.akeneo.password.expose_secret(), "via-env");
}

#[test]
fn both_set_is_an_error_naming_both() {
    let text = format!("{}password = \"inline\"\n", text_with_password_file("pw"));
    let e = load_in(&text, Path::new(""), LoadOptions::default()).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("akeneo.password_file"));
    assert_eq!(e.line, Some(line_of(&text, "password_file")));
    assert_eq!(
        e.message,
        "both `password` and `password_file` are set: set only one of them"
    );
}

#[test]
fn unreadable_file_names_key_line_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let text = text_with_password_file("secrets/missing");
    let e = load_in(&text, dir.path(), LoadOptions::default()).unwrap_err();
    assert_eq!(e.file, "assetbridge.toml");
    assert_eq!(e.key.as_deref(), Some("akeneo.password_file"));
    assert_eq!(e.line, Some(line_of(&text, "password_file")));
    assert_eq!(e.column, Some(1));
    let resolved = dir.path().join("secrets/missing");
    assert!(
        e.message.starts_with(&format!(
            "cannot read the secret file `secrets/missing` (resolved to `{}`): ",
            resolved.display()
        )),
        "{e}"
    );

    // A directory is not a secret file either.
    let text = text_with_password_file(".");
    let e = load_in(&text, dir.path(), LoadOptions::default()).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("akeneo.password_file"));
    assert!(
        e.message.starts_with("cannot read the secret file `.`"),
        "{e}"
    );
}

#[test]
fn non_utf8_and_oversized_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bin"), [0xff, 0xfe, 0x00]).unwrap();
    let e = load_in(
        &text_with_password_file("bin"),
        dir.path(),
        LoadOptions::default(),
    )
    .unwrap_err();
    assert!(e.message.ends_with(": it is not UTF-8 text"), "{e}");

    let big = vec![b'a'; assetbridge_config::MAX_SECRET_FILE_BYTES as usize + 1];
    std::fs::write(dir.path().join("big"), big).unwrap();
    let e = load_in(
        &text_with_password_file("big"),
        dir.path(),
        LoadOptions::default(),
    )
    .unwrap_err();
    assert!(e.message.contains("larger than 1048576 bytes"), "{e}");
}

#[test]
fn literal_file_keys_are_kept() {
    let text = "[akeneo]\nurl = \"u\"\nclient_id = \"c\"\npassword = \"p\"\ntls_cert_file = \"/etc/ssl/cert.pem\"\n";
    let options = LoadOptions {
        literal_file_keys: &["tls_cert_file", "tls_key_file"],
        ..Default::default()
    };
    let loaded = load_in(text, Path::new(""), options).unwrap();
    assert_eq!(
        loaded.value.akeneo.tls_cert_file.as_deref(),
        Some("/etc/ssl/cert.pem")
    );

    // Without the exception, it is read as a secret; the resulting unknown key says why.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "PEM\n").unwrap();
    let text = text.replace("/etc/ssl/cert.pem", "cert.pem");
    let e = load_in(&text, dir.path(), LoadOptions::default()).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("akeneo.tls_cert"));
    assert_eq!(e.line, Some(line_of(&text, "tls_cert_file")));
    assert!(
        e.message
            .starts_with("unknown field `tls_cert`, expected one of"),
        "{e}"
    );
    assert!(e.message.contains("made from `tls_cert_file`"), "{e}");
    assert!(e.message.contains("LoadOptions::literal_file_keys"), "{e}");
}

#[test]
fn non_string_file_keys_are_left_alone() {
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Limits {
        max_file: u32,
    }
    let env = test_env(&[]);
    let loaded =
        assetbridge_config::load_str::<Limits>("max_file = 3\n", "l.toml", &env, Path::new(""))
            .unwrap();
    assert_eq!(loaded.value.max_file, 3);
}

#[test]
fn file_sourced_values_are_hidden_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers"), "forty-two-secret\n").unwrap();
    std::fs::write(dir.path().join("code"), "not a code!\n").unwrap();
    std::fs::write(dir.path().join("n"), "12\n").unwrap();
    let base = "[akeneo]\nurl = \"u\"\nclient_id = \"c\"\npassword = \"p\"\n";

    let text = format!("{base}[sync]\nworkers_file = \"workers\"\n");
    let e = load_in(&text, dir.path(), LoadOptions::default()).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("sync.workers"));
    assert_eq!(e.line, Some(line_of(&text, "workers_file")));
    assert_eq!(
        e.message,
        "invalid type: string (value hidden), expected u16"
    );
    assert!(!e.to_string().contains("forty-two"), "{e}");

    let text = format!("{base}[[families]]\ncode_file = \"code\"\n");
    let e = load_in(&text, dir.path(), LoadOptions::default()).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("families[0].code"));
    assert!(!e.to_string().contains("not a code!"), "{e}");
    assert_eq!(
        e.message,
        "`(value hidden)` is not a code (letters, digits and `_`)"
    );

    // File-sourced strings fill numbers too.
    let text = format!("{base}[sync]\nworkers_file = \"n\"\n");
    let loaded = load_in(&text, dir.path(), LoadOptions::default()).unwrap();
    assert_eq!(loaded.value.sync.workers, Some(12));
}

#[test]
fn short_secrets_never_show_in_a_types_own_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("code"), "a b\n").unwrap();
    let text = "[akeneo]\nurl = \"u\"\nclient_id = \"c\"\npassword = \"p\"\n[[families]]\ncode_file = \"code\"\n";
    let e = load_in(text, dir.path(), LoadOptions::default()).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("families[0].code"));
    assert_eq!(e.message, "invalid value (value hidden)");
}

#[test]
fn secrets_are_not_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "very-secret-pw\n").unwrap();
    let loaded = load_in(
        &text_with_password_file("pw"),
        dir.path(),
        LoadOptions::default(),
    )
    .unwrap();
    let debug = format!("{loaded:?}");
    assert!(!debug.contains("very-secret-pw"), "{debug}");
}
