//! Every error names the file, the line and the key.

mod common;

use common::*;
use secrecy::ExposeSecret;
use serde::Deserialize;

#[test]
fn valid_file_loads() {
    let loaded = load_text(VALID).unwrap();
    let cfg = loaded.value;
    assert_eq!(cfg.akeneo.url, "https://pim.example");
    assert_eq!(cfg.akeneo.password.expose_secret(), "pw");
    assert_eq!(cfg.akeneo.batch_size, None);
    assert_eq!(cfg.sync.workers, Some(4));
    assert_eq!(cfg.families.len(), 2);
    assert_eq!(cfg.families[1].code, Code("videos".into()));
    assert_eq!(cfg.families[1].values[1].locale.as_deref(), Some("en_US"));
    assert_eq!(cfg.families[1].values[1].from, "metadata.description");
}

#[test]
fn syntax_error_has_line_and_column() {
    let text = VALID.replace("workers = 4", "workers = = 4");
    let e = error(&text);
    assert_eq!(e.file, "assetbridge.toml");
    assert_eq!(e.line, Some(line_of(&text, "workers = = 4")));
    assert_eq!(e.column, Some(11));
    assert_eq!(e.key, None);
    assert!(e.message.starts_with("TOML syntax error: "), "{e}");
    assert!(e.to_string().starts_with(&format!(
        "assetbridge.toml:{}:11: TOML syntax error: ",
        e.line.unwrap()
    )));
}

#[test]
fn syntax_error_duplicate_key() {
    let text = VALID.replace(
        "client_id = \"1_abc\"",
        "client_id = \"1_abc\"\nclient_id = \"2\"",
    );
    let e = error(&text);
    assert_eq!(e.line, Some(line_of(&text, "client_id = \"2\"")));
    assert!(e.message.contains("duplicate key `client_id`"), "{e}");
}

#[test]
fn unknown_key_at_depth_three_names_path_and_line() {
    let text = VALID.replace("attribute = \"description\"", "attribut = \"description\"");
    let e = error(&text);
    assert_eq!(e.key.as_deref(), Some("families[1].values[1].attribut"));
    assert_eq!(e.line, Some(line_of(&text, "attribut = \"description\"")));
    assert_eq!(e.column, Some(1));
    assert_eq!(
        e.message,
        "unknown field `attribut`, expected one of `attribute`, `from`, `locale`"
    );
    let line = e.line.unwrap();
    assert_eq!(
        e.excerpt(),
        Some(format!("   |\n{line} | attribut = \"description\"\n   | ^^^^^^^^").as_str())
    );
    assert_eq!(
        e.to_string(),
        format!(
            "assetbridge.toml:{line}:1: key `families[1].values[1].attribut`: unknown field \
             `attribut`, expected one of `attribute`, `from`, `locale`\n   |\n{line} | attribut = \
             \"description\"\n   | ^^^^^^^^"
        )
    );
}

#[test]
fn unknown_key_in_first_element_and_top_level() {
    let text = VALID.replacen("from = \"name\"", "from = \"name\"\ncolour = 1", 1);
    let e = error(&text);
    assert_eq!(e.key.as_deref(), Some("families[0].values[0].colour"));
    assert_eq!(e.line, Some(line_of(&text, "colour = 1")));

    let text = format!("verbose = true\n{VALID}");
    let e = error(&text);
    assert_eq!(e.key.as_deref(), Some("verbose"));
    assert_eq!(e.line, Some(1));
    assert!(e
        .message
        .starts_with("unknown field `verbose`, expected one of `akeneo`"));
}

#[test]
fn unknown_table_is_refused() {
    let text = format!("{VALID}\n[logging]\nlevel = \"info\"\n");
    let e = error(&text);
    assert_eq!(e.key.as_deref(), Some("logging"));
    assert_eq!(e.line, Some(line_of(&text, "[logging]")));
}

#[test]
fn wrong_type_names_key_and_value_position() {
    let text = VALID.replace("workers = 4", "workers = \"four\"");
    let e = error(&text);
    assert_eq!(e.key.as_deref(), Some("sync.workers"));
    assert_eq!(e.line, Some(line_of(&text, "workers = \"four\"")));
    assert_eq!(e.column, Some(11));
    assert_eq!(e.message, "invalid type: string \"four\", expected u16");
}

#[test]
fn out_of_range_and_table_instead_of_value() {
    let e = error(&VALID.replace("workers = 4", "workers = 70000"));
    assert_eq!(e.key.as_deref(), Some("sync.workers"));
    assert_eq!(e.message, "invalid value: integer `70000`, expected u16");

    let text = VALID.replace("url = \"https://pim.example\"", "url = { host = \"x\" }");
    let e = error(&text);
    assert_eq!(e.key.as_deref(), Some("akeneo.url"));
    assert_eq!(e.message, "invalid type: a table, expected a string");

    let text = format!("sync = 3\n{}", VALID.replace("[sync]\nworkers = 4", ""));
    let e = error(&text);
    assert_eq!(e.key.as_deref(), Some("sync"));
    assert_eq!(e.line, Some(line_of(&text, "sync = 3")));
    assert_eq!(e.message, "invalid type: integer `3`, expected struct Sync");
}

#[test]
fn families_must_be_an_array() {
    let text = VALID.replace("workers = 4", "workers = 4\n[families]\ncode = \"x\"");
    // `[families]` and `[[families]]` together is a TOML error already.
    let e = error(&text);
    assert!(e.line.is_some());

    let text = "families = \"all\"\n[akeneo]\nurl = \"u\"\nclient_id = \"c\"\npassword = \"p\"\n";
    let e = error(text);
    assert_eq!(e.key.as_deref(), Some("families"));
    assert_eq!(e.line, Some(1));
    assert_eq!(e.message, "invalid type: string \"all\", expected an array");
}

#[test]
fn missing_key_points_at_the_enclosing_table() {
    let text = VALID.replace("from = \"metadata.description\"\n", "");
    let e = error(&text);
    assert_eq!(e.key.as_deref(), Some("families[1].values[1].from"));
    // The second `[[families.values]]` of the second family.
    let header = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "[[families.values]]")
        .nth(2)
        .unwrap()
        .0
        + 1;
    assert_eq!(e.line, Some(header));
    assert_eq!(e.column, Some(1));
    assert_eq!(e.message, "missing required key `from` in this table");
    assert!(e.to_string().contains("| [[families.values]]\n"), "{e}");
}

#[test]
fn missing_top_level_key_has_no_line() {
    let e = error("[sync]\nworkers = 1\n");
    assert_eq!(e.key.as_deref(), Some("akeneo"));
    assert_eq!(e.line, None);
    assert_eq!(
        e.to_string(),
        "assetbridge.toml: key `akeneo`: missing required key `akeneo`"
    );
}

#[test]
fn missing_key_in_implicit_and_inline_tables() {
    let e = error("akeneo = { url = \"u\", password = \"p\" }\n");
    assert_eq!(e.key.as_deref(), Some("akeneo.client_id"));
    assert_eq!(e.line, Some(1));
    assert_eq!(e.column, Some(10));

    // Dotted keys make `akeneo` implicitly: point at its first key.
    let e = error("\n\nakeneo.url = \"u\"\nakeneo.password = \"p\"\n");
    assert_eq!(e.key.as_deref(), Some("akeneo.client_id"));
    assert_eq!(e.line, Some(3));
}

#[test]
fn invalid_value_from_the_types_own_deserialize() {
    let text = VALID.replace("code = \"videos\"", "code = \"vid eos\"");
    let e = error(&text);
    assert_eq!(e.key.as_deref(), Some("families[1].code"));
    assert_eq!(e.line, Some(line_of(&text, "code = \"vid eos\"")));
    assert_eq!(
        e.message,
        "`vid eos` is not a code (letters, digits and `_`)"
    );
}

#[test]
fn enum_values() {
    let loaded = load_text(&VALID.replace("workers = 4", "mode = \"webhook\"")).unwrap();
    assert_eq!(loaded.value.sync.mode, Some(Mode::Webhook));

    let text = VALID.replace("workers = 4", "mode = \"push\"");
    let e = error(&text);
    assert_eq!(e.key.as_deref(), Some("sync.mode"));
    assert_eq!(e.line, Some(line_of(&text, "mode = \"push\"")));
    assert_eq!(
        e.message,
        "unknown variant `push`, expected one of `poll`, `webhook`"
    );
}

#[test]
fn inline_arrays_of_tables_have_indexed_paths() {
    let text = r#"
[akeneo]
url = "u"
client_id = "c"
password = "p"

[[families]]
code = "a"
values = [
  { attribute = "t", from = "n" },
  { attribute = "t", form = "n" },
]
"#;
    let e = error(text);
    assert_eq!(e.key.as_deref(), Some("families[0].values[1].form"));
    assert_eq!(e.line, Some(line_of(text, "form = ")));
    assert_eq!(e.column, Some(22));
}

#[test]
fn ignored_keys_are_refused_even_without_deny_unknown_fields() {
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Lenient {
        name: String,
        #[serde(default)]
        nested: Option<LenientInner>,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct LenientInner {
        size: u8,
    }
    let env = test_env(&[]);
    let text = "name = \"x\"\n[nested]\nsize = 1\nsise = 2\n";
    let e = assetbridge_config::load_str::<Lenient>(text, "f.toml", &env, "".as_ref()).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("nested.sise"));
    assert_eq!(e.line, Some(4));
    assert_eq!(
        e.message,
        "unknown key `sise`: the configuration has no such setting here"
    );

    // The program may opt out.
    let options = assetbridge_config::LoadOptions {
        reject_ignored_keys: false,
        ..Default::default()
    };
    let loaded =
        assetbridge_config::load_str_with::<Lenient>(text, "f.toml", &env, "".as_ref(), options)
            .unwrap();
    assert_eq!(loaded.value.name, "x");
}

#[test]
fn datetimes_and_floats() {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Times {
        since: String,
        ratio: f64,
        whole: f64,
    }
    let env = test_env(&[]);
    let loaded = assetbridge_config::load_str::<Times>(
        "since = 2024-05-01T10:00:00Z\nratio = 0.5\nwhole = 2\n",
        "t.toml",
        &env,
        "".as_ref(),
    )
    .unwrap();
    assert_eq!(loaded.value.since, "2024-05-01T10:00:00Z");
    assert_eq!(loaded.value.ratio, 0.5);
    assert_eq!(loaded.value.whole, 2.0);
}

#[test]
fn source_map_locates_key_paths() {
    let loaded = load_text(VALID).unwrap();
    let map = &loaded.source;
    assert_eq!(map.file(), "assetbridge.toml");
    let at = map.locate("families[1].values[1].locale").unwrap();
    assert_eq!(at.file, "assetbridge.toml");
    assert_eq!(at.line, line_of(VALID, "locale = \"en_US\""));
    assert_eq!(at.column, 1);
    assert_eq!(at.to_string(), format!("assetbridge.toml:{}:1", at.line));
    // Tables and array elements point at their headers.
    assert_eq!(
        map.locate("akeneo").unwrap().line,
        line_of(VALID, "[akeneo]")
    );
    assert_eq!(
        map.locate("families").unwrap().line,
        line_of(VALID, "[[families]]")
    );
    let second_family = VALID
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "[[families]]")
        .nth(1)
        .unwrap()
        .0
        + 1;
    assert_eq!(map.locate("families[1]").unwrap().line, second_family);
    assert_eq!(map.locate("families[1].values[2]"), None);
    assert_eq!(map.locate("akeneo.batch_size"), None);
    // Other spellings of the same path.
    assert_eq!(
        map.locate("families[1] . \"values\"[1].locale"),
        map.locate("families[1].values[1].locale")
    );
    // Nearest enclosing key for what the file leaves to defaults.
    assert_eq!(
        map.locate_nearest("akeneo.batch_size").unwrap().line,
        line_of(VALID, "[akeneo]")
    );
}

#[test]
fn error_at_for_later_validation() {
    let loaded = load_text(VALID).unwrap();
    let e = loaded.source.error_at(
        "families[1].values[0].attribute",
        "attribute `title` does not exist in family `videos`",
    );
    let line = e.line.unwrap();
    assert_eq!(e.key.as_deref(), Some("families[1].values[0].attribute"));
    assert_eq!(
        e.to_string(),
        format!(
            "assetbridge.toml:{line}:1: key `families[1].values[0].attribute`: attribute `title` \
             does not exist in family `videos`\n   |\n{line} | attribute = \"title\"\n   | ^^^^^^^^^"
        )
    );
    // A key the file does not write: the nearest table's line.
    let e = loaded.source.error_at("akeneo.batch_size", "too small");
    assert_eq!(e.line, Some(line_of(VALID, "[akeneo]")));
    assert_eq!(e.key.as_deref(), Some("akeneo.batch_size"));
}

#[test]
fn display_snapshots() {
    let text = VALID.replace("attribute = \"description\"", "attribut = \"description\"");
    insta::assert_snapshot!("unknown_key", error(&text).to_string());
    let text = VALID.replace("workers = 4", "workers = \"four\"  # threads");
    insta::assert_snapshot!("wrong_type", error(&text).to_string());
    let text = VALID.replace("from = \"metadata.description\"\n", "");
    insta::assert_snapshot!("missing_key", error(&text).to_string());
    let text = VALID.replace(
        "[[families]]\ncode = \"videos\"",
        "[[families]\ncode = \"videos\"",
    );
    insta::assert_snapshot!("syntax", error(&text).to_string());
}

#[test]
fn unreadable_and_non_utf8_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let e = assetbridge_config::load::<Config>(&path).unwrap_err();
    assert_eq!(e.file, path.display().to_string());
    assert_eq!(e.line, None);
    assert!(
        e.message
            .starts_with("cannot read the configuration file: "),
        "{e}"
    );

    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"[akeneo]\nurl = \"caf\xe9\"\n").unwrap();
    let e = assetbridge_config::load::<Config>(&path).unwrap_err();
    assert_eq!(e.line, Some(2));
    assert_eq!(e.message, "the file is not UTF-8 text");
}
