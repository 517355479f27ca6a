//! A small schema shaped like assetbridge's (nested tables, arrays of tables with nested arrays
//! of tables, options, secrets, enums) and helpers to load text into it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use assetbridge_config::{ConfigError, LoadOptions, Loaded};
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub akeneo: Akeneo,
    #[serde(default)]
    pub sync: Sync,
    #[serde(default)]
    pub families: Vec<Family>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Akeneo {
    pub url: String,
    pub client_id: String,
    pub password: SecretString,
    #[serde(default)]
    pub app_token: Option<SecretString>,
    #[serde(default)]
    pub batch_size: Option<u32>,
    #[serde(default)]
    pub tls_cert_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sync {
    #[serde(default)]
    pub workers: Option<u16>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub ratio: Option<f64>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Poll,
    Webhook,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Family {
    pub code: Code,
    #[serde(default)]
    pub values: Vec<ValueRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueRule {
    pub attribute: String,
    pub from: String,
    #[serde(default)]
    pub locale: Option<String>,
}

/// A value with its own rule, refused by its `Deserialize` impl.
#[derive(Debug, PartialEq, Eq)]
pub struct Code(pub String);

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Ok(Code(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "`{s}` is not a code (letters, digits and `_`)"
            )))
        }
    }
}

/// A valid file, to start from.
pub const VALID: &str = r#"# assetbridge test configuration
[akeneo]
url = "https://pim.example"
client_id = "1_abc"
password = "pw"

[sync]
workers = 4

[[families]]
code = "packshots"

[[families.values]]
attribute = "title"
from = "name"

[[families]]
code = "videos"

[[families.values]]
attribute = "title"
from = "name"

[[families.values]]
attribute = "description"
from = "metadata.description"
locale = "en_US"
"#;

/// A fixed environment for tests (never the process's).
pub fn test_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name: &str| vars.get(name).cloned()
}

pub fn load_text(text: &str) -> Result<Loaded<Config>, ConfigError> {
    load_text_env(text, &[])
}

pub fn load_text_env(text: &str, vars: &[(&str, &str)]) -> Result<Loaded<Config>, ConfigError> {
    let env = test_env(vars);
    assetbridge_config::load_str(text, "assetbridge.toml", &env, Path::new(""))
}

pub fn load_in(
    text: &str,
    base_dir: &Path,
    options: LoadOptions<'_>,
) -> Result<Loaded<Config>, ConfigError> {
    let env = test_env(&[]);
    assetbridge_config::load_str_with(text, "assetbridge.toml", &env, base_dir, options)
}

pub fn error(text: &str) -> ConfigError {
    match load_text(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

pub fn error_env(text: &str, vars: &[(&str, &str)]) -> ConfigError {
    match load_text_env(text, vars) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

/// The 1-based line of the first line of `text` that contains `needle`.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not in text"))
        + 1
}
