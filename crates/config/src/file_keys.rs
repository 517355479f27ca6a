//! `*_file` keys: `password_file = "/run/secrets/pw"` becomes `password = "<the file's text>"`.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::source::{render_path, Segment, SourceMap, SourceText};
use crate::tree::{Entry, Kind, Node, Origin};

/// The largest secret file read. Larger files are refused (a secret is a few bytes; a huge file
/// is a mistake in the path).
pub const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;

const SUFFIX: &str = "_file";

/// Rewrites every `*_file` key under `node` (see the crate docs for the rule).
pub(crate) fn resolve_tree(
    node: &mut Node,
    path: &mut Vec<Segment>,
    base_dir: &Path,
    literal_keys: &[&str],
    source: &SourceText,
    map: &mut SourceMap,
) -> Result<(), ConfigError> {
    match &mut node.kind {
        Kind::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Segment::Index(i));
                resolve_tree(item, path, base_dir, literal_keys, source, map)?;
                path.pop();
            }
            Ok(())
        }
        Kind::Table(entries) => {
            resolve_table(entries, path, base_dir, literal_keys, source, map)?;
            for entry in entries.iter_mut() {
                path.push(Segment::Key(entry.key.clone()));
                resolve_tree(&mut entry.value, path, base_dir, literal_keys, source, map)?;
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The key a `*_file` key stands for, if it is one.
fn secret_stem<'k>(key: &'k str, literal_keys: &[&str]) -> Option<&'k str> {
    let stem = key.strip_suffix(SUFFIX)?;
    if stem.is_empty() || literal_keys.contains(&key) {
        return None;
    }
    Some(stem)
}

fn resolve_table(
    entries: &mut [Entry],
    path: &mut Vec<Segment>,
    base_dir: &Path,
    literal_keys: &[&str],
    source: &SourceText,
    map: &mut SourceMap,
) -> Result<(), ConfigError> {
    for i in 0..entries.len() {
        let Some(stem) = secret_stem(&entries[i].key, literal_keys) else {
            continue;
        };
        let Kind::String(file) = &entries[i].value.kind else {
            continue;
        };
        let stem = stem.to_owned();
        let entry = &entries[i];
        path.push(Segment::Key(entry.key.clone()));
        let place = entry.key_span.clone().or_else(|| entry.value.span.clone());
        let fail = |message: String| {
            ConfigError::build(source, place.clone(), Some(render_path(path)), message)
        };
        if entries.iter().any(|e| e.key == stem) {
            return Err(fail(format!(
                "both `{stem}` and `{}` are set: set only one of them",
                entry.key
            )));
        }
        let resolved = resolve_path(base_dir, file);
        let text = read_secret(&resolved).map_err(|reason| {
            let shown = if resolved.as_os_str() == std::ffi::OsStr::new(file) {
                format!("`{file}`")
            } else {
                format!("`{file}` (resolved to `{}`)", resolved.display())
            };
            fail(format!("cannot read the secret file {shown}: {reason}"))
        })?;
        path.pop();
        path.push(Segment::Key(stem.clone()));
        if let Some(place) = &place {
            map.insert(path, place.clone());
        }
        path.pop();

        let entry = &mut entries[i];
        let file_key = std::mem::replace(&mut entry.key, stem);
        entry.from_file_key = Some(file_key);
        entry.value = Node {
            kind: Kind::String(text.clone()),
            span: entry.value.span.clone(),
            origin: Origin::File {
                fragments: vec![text],
            },
        };
    }
    Ok(())
}

/// `file` itself when absolute, else `base_dir/file`.
fn resolve_path(base_dir: &Path, file: &str) -> PathBuf {
    let file = Path::new(file);
    if file.is_absolute() || base_dir.as_os_str().is_empty() {
        file.to_path_buf()
    } else {
        base_dir.join(file)
    }
}

/// The file's text with one trailing newline (`\n` or `\r\n`) removed.
fn read_secret(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "it is larger than {MAX_SECRET_FILE_BYTES} bytes (a secret file holds the secret alone)"
        ));
    }
    let mut text = String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_owned())?;
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems() {
        assert_eq!(secret_stem("password_file", &[]), Some("password"));
        assert_eq!(secret_stem("_file", &[]), None);
        assert_eq!(secret_stem("password", &[]), None);
        assert_eq!(secret_stem("tls_cert_file", &["tls_cert_file"]), None);
    }

    #[test]
    fn relative_paths_join_the_base_dir() {
        assert_eq!(
            resolve_path(Path::new("conf"), "pw"),
            Path::new("conf").join("pw")
        );
        assert_eq!(resolve_path(Path::new(""), "pw"), Path::new("pw"));
        let abs = std::env::temp_dir().join("pw");
        assert_eq!(resolve_path(Path::new("conf"), abs.to_str().unwrap()), abs);
    }
}
