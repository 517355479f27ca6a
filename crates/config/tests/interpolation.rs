//! `${VAR}` / `${VAR:-default}` / `$${` in string values.

mod common;

use common::*;
use secrecy::ExposeSecret;

const TEXT: &str = r#"
# ${NOT_EXPANDED} in a comment is left alone
[akeneo]
url = "https://${PIM_HOST}/api"
client_id = "${CLIENT_ID:-1_default}"
password = "${PIM_PASSWORD}"
"#;

#[test]
fn variables_and_defaults() {
    let loaded = load_text_env(
        TEXT,
        &[("PIM_HOST", "pim.example"), ("PIM_PASSWORD", "s3cret!")],
    )
    .unwrap();
    let akeneo = loaded.value.akeneo;
    assert_eq!(akeneo.url, "https://pim.example/api");
    assert_eq!(akeneo.client_id, "1_default");
    assert_eq!(akeneo.password.expose_secret(), "s3cret!");

    let loaded = load_text_env(
        TEXT,
        &[
            ("PIM_HOST", "h"),
            ("PIM_PASSWORD", "p"),
            ("CLIENT_ID", "7_env"),
        ],
    )
    .unwrap();
    assert_eq!(loaded.value.akeneo.client_id, "7_env");

    // Set but empty: the default.
    let loaded = load_text_env(
        TEXT,
        &[("PIM_HOST", "h"), ("PIM_PASSWORD", "p"), ("CLIENT_ID", "")],
    )
    .unwrap();
    assert_eq!(loaded.value.akeneo.client_id, "1_default");
}

#[test]
fn values_with_quotes_and_newlines_stay_string_content() {
    let tricky = "a\"b\nc = 1\n[evil]\\";
    let loaded = load_text_env(TEXT, &[("PIM_HOST", "h"), ("PIM_PASSWORD", tricky)]).unwrap();
    assert_eq!(loaded.value.akeneo.password.expose_secret(), tricky);
}

#[test]
fn values_are_not_expanded_again() {
    let loaded = load_text_env(
        TEXT,
        &[("PIM_HOST", "${PIM_PASSWORD}"), ("PIM_PASSWORD", "p")],
    )
    .unwrap();
    assert_eq!(loaded.value.akeneo.url, "https://${PIM_PASSWORD}/api");
}

#[test]
fn unset_variable_names_variable_file_line_and_key() {
    let e = error_env(TEXT, &[("PIM_HOST", "h")]);
    assert_eq!(e.file, "assetbridge.toml");
    assert_eq!(e.key.as_deref(), Some("akeneo.password"));
    assert_eq!(e.line, Some(line_of(TEXT, "password = ")));
    // Points at the `${`.
    assert_eq!(e.column, Some(13));
    assert_eq!(
        e.message,
        "environment variable `PIM_PASSWORD` is not set (write `${PIM_PASSWORD:-default}` to give it a default)"
    );
    let line = e.line.unwrap();
    assert!(e
        .to_string()
        .starts_with(&format!("assetbridge.toml:{line}:13: key `akeneo.password`: environment variable `PIM_PASSWORD` is not set")));
}

#[test]
fn escaped_dollar_brace_is_literal() {
    let text = TEXT.replace("${PIM_PASSWORD}", "$${PIM_PASSWORD} costs $5 and $$");
    let loaded = load_text_env(&text, &[("PIM_HOST", "h")]).unwrap();
    assert_eq!(
        loaded.value.akeneo.password.expose_secret(),
        "${PIM_PASSWORD} costs $5 and $$"
    );
}

#[test]
fn keys_and_literal_strings_and_arrays() {
    // Keys are never interpolated: `${X}` as a (quoted) key is just an unknown key.
    let text = format!("{TEXT}\"${{X}}\" = 1\n");
    let e = error_env(
        &text,
        &[("PIM_HOST", "h"), ("PIM_PASSWORD", "p"), ("X", "sync")],
    );
    assert_eq!(e.key.as_deref(), Some("akeneo.\"${X}\""));

    // Literal strings and strings inside arrays and inline tables are values like any other.
    let text = r#"
[akeneo]
url = '${HOST}'
client_id = "c"
password = """
${PW}"""

[[families]]
code = "${FAMILY}"
values = [{ attribute = "${ATTR:-title}", from = "name" }]
"#;
    let loaded =
        load_text_env(text, &[("HOST", "h"), ("PW", "p"), ("FAMILY", "packshots")]).unwrap();
    assert_eq!(loaded.value.akeneo.url, "h");
    assert_eq!(loaded.value.akeneo.password.expose_secret(), "p");
    assert_eq!(loaded.value.families[0].code.0, "packshots");
    assert_eq!(loaded.value.families[0].values[0].attribute, "title");
}

#[test]
fn unterminated_and_bad_names() {
    let text = TEXT.replace("${PIM_PASSWORD}", "${PIM_PASSWORD");
    let e = error_env(&text, &[("PIM_HOST", "h")]);
    assert_eq!(e.key.as_deref(), Some("akeneo.password"));
    assert_eq!(e.line, Some(line_of(&text, "password = ")));
    assert!(e.message.starts_with("`${` without a closing `}`"), "{e}");

    let text = TEXT.replace("${PIM_PASSWORD}", "${PIM PASSWORD}");
    let e = error_env(&text, &[("PIM_HOST", "h")]);
    assert!(
        e.message
            .starts_with("`${PIM PASSWORD}` does not name an environment variable"),
        "{e}"
    );
}

#[test]
fn interpolated_strings_fill_numbers_and_booleans() {
    let text = format!(
        "{TEXT}batch_size = \"${{BATCH:-50}}\"\n[sync]\nworkers = \" ${{WORKERS}} \"\ndry_run = \"${{DRY}}\"\nratio = \"${{RATIO}}\"\n"
    );
    let vars = [
        ("PIM_HOST", "h"),
        ("PIM_PASSWORD", "p"),
        ("WORKERS", "8"),
        ("DRY", "true"),
        ("RATIO", "0.25"),
    ];
    let loaded = load_text_env(&text, &vars).unwrap();
    assert_eq!(loaded.value.akeneo.batch_size, Some(50));
    assert_eq!(loaded.value.sync.workers, Some(8));
    assert_eq!(loaded.value.sync.dry_run, Some(true));
    assert_eq!(loaded.value.sync.ratio, Some(0.25));

    // A literal string is still not a number.
    let e = error(&VALID.replace("workers = 4", "workers = \"4\""));
    assert_eq!(e.message, "invalid type: string \"4\", expected u16");
}

#[test]
fn interpolated_values_are_hidden_in_errors() {
    let text = format!("{TEXT}[sync]\nworkers = \"${{WORKERS}}\"\nmode = \"${{MODE}}\"\n");
    let vars = [
        ("PIM_HOST", "h"),
        ("PIM_PASSWORD", "p"),
        ("WORKERS", "hunter2-secret"),
        ("MODE", "poll"),
    ];
    let e = error_env(&text, &vars);
    assert_eq!(e.key.as_deref(), Some("sync.workers"));
    assert_eq!(
        e.message,
        "invalid type: string (value hidden), expected u16"
    );
    assert!(!e.to_string().contains("hunter2"), "{e}");

    let vars = [
        ("PIM_HOST", "h"),
        ("PIM_PASSWORD", "p"),
        ("WORKERS", "99999999"),
        ("MODE", "poll"),
    ];
    let e = error_env(&text, &vars);
    assert_eq!(
        e.message,
        "invalid value: integer (value hidden), expected u16"
    );
    assert!(!e.to_string().contains("99999999"), "{e}");

    let vars = [
        ("PIM_HOST", "h"),
        ("PIM_PASSWORD", "p"),
        ("WORKERS", "1"),
        ("MODE", "secret-mode"),
    ];
    let e = error_env(&text, &vars);
    assert_eq!(e.key.as_deref(), Some("sync.mode"));
    assert_eq!(
        e.message,
        "unknown variant (value hidden), expected one of `poll`, `webhook`"
    );
    assert!(!e.to_string().contains("secret-mode"), "{e}");

    // A type's own message that repeats the value.
    let text = format!("{TEXT}[[families]]\ncode = \"${{FAMILY}}\"\n");
    let vars = [
        ("PIM_HOST", "h"),
        ("PIM_PASSWORD", "p"),
        ("FAMILY", "top secret"),
    ];
    let e = error_env(&text, &vars);
    assert_eq!(e.key.as_deref(), Some("families[0].code"));
    assert_eq!(
        e.message,
        "`(value hidden)` is not a code (letters, digits and `_`)"
    );
    assert!(!e.to_string().contains("top secret"), "{e}");
}

#[test]
fn secret_inside_a_larger_interpolated_string_is_hidden() {
    let text = format!("{TEXT}[sync]\nworkers = \"x-${{TOKEN}}-y\"\n");
    let vars = [
        ("PIM_HOST", "h"),
        ("PIM_PASSWORD", "p"),
        ("TOKEN", "tok3n-value"),
    ];
    let e = error_env(&text, &vars);
    assert!(!e.to_string().contains("tok3n"), "{e}");
    assert!(e.message.contains("(value hidden)"), "{e}");
}

#[test]
fn process_environment_is_used_by_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("assetbridge.toml");
    // A name no one else sets; read only by this test.
    let var = "ASSETBRIDGE_CONFIG_TEST_INTERPOLATION_HOST";
    std::fs::write(
        &path,
        format!("[akeneo]\nurl = \"https://${{{var}:-fallback.example}}\"\nclient_id = \"c\"\npassword = \"p\"\n"),
    )
    .unwrap();
    let loaded = assetbridge_config::load::<Config>(&path).unwrap();
    assert_eq!(loaded.value.akeneo.url, "https://fallback.example");
}
