//! Serde shapes beyond plain structs: enums of every tagging, maps, datetimes, tuples.

use std::collections::BTreeMap;
use std::path::Path;

use assetbridge_config::{load_str, ConfigError, Loaded};
use serde::Deserialize;

fn load<T: serde::de::DeserializeOwned>(text: &str) -> Result<Loaded<T>, ConfigError> {
    let env = |name: &str| (name == "SECRET").then(|| "classified-value".to_owned());
    load_str(text, "s.toml", &env, Path::new(""))
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(untagged)]
enum CreateOptions {
    All(bool),
    Only(Vec<String>),
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum Source {
    Rest {
        url: String,
    },
    Nats {
        subject: String,
        stream: Option<String>,
    },
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Auth {
    None,
    Basic { user: String },
    Token(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Shapes {
    create: CreateOptions,
    source: Source,
    auth: Auth,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    since: Option<toml::value::Datetime>,
    #[serde(default)]
    pair: Option<(u8, u8)>,
}

const BASE: &str = r#"
create = ["colors", "sizes"]
auth = "none"

[source]
kind = "nats"
subject = "dam.assets"

[headers]
"X-Api-Version" = "2"
"#;

#[test]
fn every_shape_loads() {
    let loaded = load::<Shapes>(&format!(
        "since = 2024-05-01T10:00:00Z\npair = [1, 2]\n{BASE}"
    ))
    .unwrap();
    let v = loaded.value;
    assert_eq!(
        v.create,
        CreateOptions::Only(vec!["colors".into(), "sizes".into()])
    );
    assert_eq!(
        v.source,
        Source::Nats {
            subject: "dam.assets".into(),
            stream: None
        }
    );
    assert_eq!(v.auth, Auth::None);
    assert_eq!(
        v.headers.get("X-Api-Version").map(String::as_str),
        Some("2")
    );
    assert_eq!(v.since.unwrap().to_string(), "2024-05-01T10:00:00Z");
    assert_eq!(v.pair, Some((1, 2)));
    assert_eq!(
        loaded.source.locate("headers.X-Api-Version").unwrap().line,
        12
    );

    let v = load::<Shapes>(&BASE.replace("create = [\"colors\", \"sizes\"]", "create = true"))
        .unwrap()
        .value;
    assert_eq!(v.create, CreateOptions::All(true));

    let v = load::<Shapes>(&BASE.replace("auth = \"none\"", "auth = { basic = { user = \"u\" } }"))
        .unwrap()
        .value;
    assert_eq!(v.auth, Auth::Basic { user: "u".into() });
    let v = load::<Shapes>(&BASE.replace("auth = \"none\"", "auth = { token = \"t\" }"))
        .unwrap()
        .value;
    assert_eq!(v.auth, Auth::Token("t".into()));
}

#[test]
fn untagged_mismatch_is_placed() {
    let text = BASE.replace("create = [\"colors\", \"sizes\"]", "create = 3");
    let e = load::<Shapes>(&text).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("create"));
    assert_eq!(e.line, Some(2));
    assert_eq!(
        e.message,
        "data did not match any variant of untagged enum CreateOptions"
    );
}

#[test]
fn internally_tagged_errors_are_placed_and_hide_secrets() {
    let text = BASE.replace("kind = \"nats\"", "kind = \"ftp\"");
    let e = load::<Shapes>(&text).unwrap_err();
    // The tag is read as a value of the table: the error is at the tag.
    assert_eq!(e.key.as_deref(), Some("source.kind"));
    assert_eq!(e.line, Some(6));
    assert_eq!(
        e.message,
        "unknown variant `ftp`, expected one of `rest`, `nats`"
    );

    let text = BASE.replace(
        "subject = \"dam.assets\"",
        "subject = 7\nstream = \"${SECRET}\"",
    );
    let e = load::<Shapes>(&text).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("source"));
    assert!(e.message.contains("expected a string"), "{e}");

    // A secret inside a buffered table is scrubbed from whatever the type says.
    let text = BASE.replace("subject = \"dam.assets\"", "subject = [\"${SECRET}\"]");
    let e = load::<Shapes>(&text).unwrap_err();
    assert!(!e.to_string().contains("classified-value"), "{e}");
}

#[test]
fn enum_shape_errors() {
    let text = BASE.replace("auth = \"none\"", "auth = 5");
    let e = load::<Shapes>(&text).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("auth"));
    assert_eq!(
        e.message,
        "invalid type: integer `5`, expected a string (one of `none`, `basic`, `token`) or a table with one key"
    );

    let text = BASE.replace("auth = \"none\"", "auth = { basic = { usr = \"u\" } }");
    let e = load::<Shapes>(&text).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("auth.basic.usr"));
    assert_eq!(e.line, Some(3));

    let text = BASE.replace("auth = \"none\"", "auth = { none = 1 }");
    let e = load::<Shapes>(&text).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("auth.none"));
    assert!(e.message.contains("expected an empty table"), "{e}");

    let text = BASE.replace("auth = \"none\"", "auth = { oauth = {} }");
    let e = load::<Shapes>(&text).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("auth.oauth"));
    assert_eq!(e.column, Some(10));
    assert!(e.message.starts_with("unknown variant `oauth`"), "{e}");
}

#[test]
fn tuple_length_and_datetime_type() {
    let e = load::<Shapes>(&format!("pair = [1, 2, 3]\n{BASE}")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("pair"));
    assert_eq!(e.line, Some(1));
    assert!(e.message.starts_with("invalid length 3"), "{e}");

    let e = load::<Shapes>(&format!("since = \"yesterday\"\n{BASE}")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("since"));
    assert!(
        e.message.starts_with("invalid type: string \"yesterday\""),
        "{e}"
    );
}

#[test]
fn map_values_have_their_own_paths() {
    let text = BASE.replace("\"X-Api-Version\" = \"2\"", "\"X-Api-Version\" = 2");
    let e = load::<Shapes>(&text).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("headers.X-Api-Version"));
    assert_eq!(e.line, Some(10));
    assert_eq!(e.column, Some(19));
}
