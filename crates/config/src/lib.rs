//! The generic configuration loader of assetbridge: one TOML file into any
//! `#[derive(Deserialize)]` type, with errors that name the file, the line and the key.
//!
//! ```no_run
//! # use serde::Deserialize;
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config { url: String, batch_size: Option<u32> }
//!
//! let loaded = assetbridge_config::load::<Config>("assetbridge.toml".as_ref())?;
//! let line = loaded.source.locate("url").map(|at| at.line);
//! # Ok::<(), assetbridge_config::ConfigError>(())
//! ```
//!
//! # What loading does
//!
//! 1. **Parse** the TOML. A syntax error is reported at its line and column.
//! 2. **Interpolate** `${VAR}` and `${VAR:-default}` in *string values* (never in keys or
//!    comments), from the environment ([`load`]) or the given lookup ([`load_str`]):
//!    - `${VAR}` is the variable's value; an unset variable is an error naming it, with the
//!      file, line and key. A variable set to the empty string gives the empty string.
//!    - `${VAR:-default}` is the value, or `default` when the variable is unset or empty. The
//!      default is taken literally and ends at the first `}`.
//!    - `$${` is a literal `${`; any other `$` is kept.
//!    - Values are inserted as string content after parsing: quotes or newlines in a value cannot
//!      change the file's structure, and a value is not expanded again.
//!    - Since only strings are interpolated, a string that came from the environment is also
//!      accepted where the schema wants a number or a boolean: `port = "${PORT:-8080}"` fills a
//!      `u16` (surrounding spaces ignored).
//! 3. **Read `*_file` secrets**: in any table, a key ending in `_file` whose value is a string —
//!    say `password_file = "/run/secrets/pw"` — is replaced by the key without the suffix,
//!    `password`, holding the file's text with one trailing newline (`\n` or `\r\n`) removed.
//!    - A relative path is relative to the configuration file's directory (`base_dir`).
//!    - Setting both `password` and `password_file` in the same table is an error naming both.
//!    - An unreadable file (missing, a directory, not UTF-8, larger than
//!      [`MAX_SECRET_FILE_BYTES`]) is an error naming the key, its line and the path.
//!    - Keys that really are paths (`tls_cert_file`) are kept as they are when listed in
//!      [`LoadOptions::literal_file_keys`] (matched on the key's own name, in any table).
//!    - The path itself may be interpolated (`"${CREDENTIALS_DIRECTORY}/pw"`).
//! 4. **Deserialize** into the target type. Unknown keys are refused: the target types should use
//!    `#[serde(deny_unknown_fields)]` (the error then lists the known keys), and a key that a
//!    type without it would silently ignore is refused anyway (see
//!    [`LoadOptions::reject_ignored_keys`]). Wrong types, missing required keys (placed at the
//!    enclosing table's header) and values refused by the type's own `Deserialize` all come with
//!    the key path (`families[1].values[0].attribute`) and line.
//!
//! # Secrets in messages
//!
//! Values that came from the environment or from a `*_file` are never shown in an error: the
//! message says `(value hidden)` where the value would be. (Excerpts show the file's own text,
//! where such values are only `${VAR}` or a path.) Use [`redact_url`] before printing URLs.
//!
//! # Value mapping
//!
//! TOML strings, integers (`i64`), floats, booleans, arrays and tables map to their serde
//! counterparts; a present key is always `Some` for an `Option`. Datetimes are given as their
//! RFC 3339 text (so `String` and `chrono` types work), or as `toml::value::Datetime` when the
//! target is that type. Enums are a string (unit variants) or a table with one key (`{ rest = {
//! url = "..." } }`); internally tagged and untagged enums work as serde makes them.

mod de;
mod error;
mod file_keys;
mod interpolate;
mod redact;
mod source;
mod tree;

use std::path::Path;

use serde::de::DeserializeOwned;

pub use crate::error::ConfigError;
pub use crate::file_keys::MAX_SECRET_FILE_BYTES;
pub use crate::redact::redact_url;
pub use crate::source::{Location, SourceMap};

use crate::source::SourceText;

/// A loaded configuration: the value, and where each of its keys was written.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The deserialized configuration.
    pub value: T,
    /// Where each key path was written, for errors found after loading
    /// ([`SourceMap::error_at`]).
    pub source: SourceMap,
}

/// Choices of the program that owns the schema.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions<'a> {
    /// Keys ending in `_file` that are plain settings (paths the program opens itself), not
    /// secrets to read: e.g. `&["tls_cert_file", "tls_key_file"]`. Matched against the key's own
    /// name in every table. Default: none (every string-valued `*_file` key is read as a secret).
    pub literal_file_keys: &'a [&'a str],
    /// Refuse a key that the target type would ignore (a struct without
    /// `#[serde(deny_unknown_fields)]`, or any value the type reads as `serde::de::IgnoredAny`).
    /// Unknown keys are then always errors, whatever the schema types say. Default: `true`.
    pub reject_ignored_keys: bool,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        Self {
            literal_file_keys: &[],
            reject_ignored_keys: true,
        }
    }
}

/// Loads the TOML file at `path` with [`LoadOptions::default`], interpolating from the process
/// environment (a variable whose value is not UTF-8 counts as unset); relative `*_file` paths
/// are relative to `path`'s directory. Errors name the file as `path` is written.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Loaded<T>, ConfigError> {
    load_with(path, LoadOptions::default())
}

/// [`load`] with explicit [`LoadOptions`].
pub fn load_with<T: DeserializeOwned>(
    path: &Path,
    options: LoadOptions<'_>,
) -> Result<Loaded<T>, ConfigError> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        ConfigError::whole_file(&origin, format!("cannot read the configuration file: {e}"))
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let source = SourceText::new(&origin, &String::from_utf8_lossy(e.as_bytes()));
        let at = e.utf8_error().valid_up_to();
        ConfigError::build(
            &source,
            Some(at..at + 1),
            None,
            "the file is not UTF-8 text".to_owned(),
        )
    })?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    let env = |name: &str| std::env::var(name).ok();
    load_str_with(&text, &origin, &env, base_dir, options)
}

/// Loads configuration text with [`LoadOptions::default`].
///
/// - `origin`: the file name used in messages and [`Location`]s.
/// - `env`: looks up a variable for `${VAR}` (`None`: unset).
/// - `base_dir`: the directory relative `*_file` paths are relative to (empty: the current
///   directory).
pub fn load_str<T: DeserializeOwned>(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: &Path,
) -> Result<Loaded<T>, ConfigError> {
    load_str_with(text, origin, env, base_dir, LoadOptions::default())
}

/// [`load_str`] with explicit [`LoadOptions`].
pub fn load_str_with<T: DeserializeOwned>(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: &Path,
    options: LoadOptions<'_>,
) -> Result<Loaded<T>, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let source = SourceText::new(origin, text);
    let document = toml_edit::ImDocument::parse(text).map_err(|e| syntax_error(&source, &e))?;
    let mut map = SourceMap::new(source.clone());
    let mut root = tree::from_document(document.as_table(), &mut map);
    interpolate::interpolate_tree(&mut root, &mut Vec::new(), env, &source)?;
    file_keys::resolve_tree(
        &mut root,
        &mut Vec::new(),
        base_dir,
        options.literal_file_keys,
        &source,
        &mut map,
    )?;
    let strictness = de::Strictness {
        reject_ignored_keys: options.reject_ignored_keys,
    };
    let value = de::deserialize::<T>(&root, strictness, &source)?;
    Ok(Loaded { value, source: map })
}

fn syntax_error(source: &SourceText, error: &toml_edit::TomlError) -> ConfigError {
    let message: Vec<&str> = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    ConfigError::build(
        source,
        error.span(),
        None,
        format!("TOML syntax error: {}", message.join("; ")),
    )
}
