//! Media files (§5.14): `POST /api/rest/v1/asset-media-files` (multipart, streamed) and
//! `GET /api/rest/v1/asset-media-files/{code}`.
//!
//! Uploads are streamed: the emulator hashes and counts the bytes as they arrive and keeps them
//! only up to `media_keep_bytes_max` per file and `media_keep_bytes_total` overall (for
//! download); a file whose bytes were not kept downloads as 404
//! `Media file "<code>" is not present on the filesystem.`, the server's own message for a file
//! known to the database but missing from storage.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::response::Response;
use bytes::BytesMut;
use http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, StatusCode};
use sha1::{Digest, Sha1};

use super::http::{base_url, error, require_content_type, MULTIPART};
use super::state::{add, bump, MediaFileInfo, Shared};

fn guess_mime(ext: &str) -> &'static str {
    match ext {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "tif" | "tiff" => "image/tiff",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

fn file_required() -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Property \"file\" is required.",
    )
}

/// `POST /api/rest/v1/asset-media-files` → 201, empty body, `Asset-media-file-code` + `Location`.
pub(crate) async fn upload(State(s): State<Arc<Shared>>, req: Request) -> Response {
    if let Err(r) = require_content_type(req.headers(), MULTIPART) {
        return r;
    }
    let base = base_url(req.headers());
    let Ok(mut multipart) = Multipart::from_request(req, &()).await else {
        return file_required();
    };
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => return file_required(),
        };
        // PHP only lists parts with a file name in `$request->files`.
        let (Some("file"), Some(raw_name)) = (field.name(), field.file_name()) else {
            continue;
        };
        let name = raw_name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or(raw_name)
            .to_owned();
        let extension = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_owned())
            .unwrap_or_default();
        if !extension.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "File extension cannot contain special characters.",
            );
        }
        let mime = field
            .content_type()
            .map(str::to_owned)
            .unwrap_or_else(|| guess_mime(&extension.to_lowercase()).to_owned());
        let mut field = field;
        let mut hasher = Sha1::new();
        let mut size: u64 = 0;
        let mut kept = Some(BytesMut::new());
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    if let Some(buf) = kept.as_mut() {
                        if buf.len() + chunk.len() > s.media_keep_max {
                            kept = None;
                        } else {
                            buf.extend_from_slice(&chunk);
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "The file could not be uploaded: the multipart body is incomplete.",
                    )
                }
            }
        }
        let content_sha1 = hex::encode(hasher.finalize());
        let mut media = s.media.write();
        media.uploads += 1;
        // Akeneo's path generator gives every upload a new key (not a content address).
        let key_hash = hex::encode(Sha1::digest(format!(
            "{content_sha1}:{}:{}",
            media.uploads,
            rand::random::<u64>()
        )));
        let sanitized: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let h = key_hash.as_bytes();
        let code = format!(
            "{}/{}/{}/{}/{}_{}",
            h[0] as char, h[1] as char, h[2] as char, h[3] as char, key_hash, sanitized
        );
        let bytes = kept
            .filter(|b| media.kept_bytes + b.len() <= s.media_keep_total)
            .map(BytesMut::freeze);
        if let Some(b) = &bytes {
            media.kept_bytes += b.len();
        }
        media.files.insert(
            code.clone(),
            MediaFileInfo {
                code: code.clone(),
                original_filename: name,
                mime_type: mime,
                size,
                extension,
                content_sha1,
                bytes,
            },
        );
        drop(media);
        bump(&s.counters.media_uploads);
        add(&s.counters.media_upload_bytes, size);
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::CREATED;
        if let Ok(v) = HeaderValue::from_str(&code) {
            r.headers_mut().insert("asset-media-file-code", v);
        }
        if let Ok(v) =
            HeaderValue::from_str(&format!("{base}/api/rest/v1/asset-media-files/{code}"))
        {
            r.headers_mut().insert(LOCATION, v);
        }
        return r;
    }
}

/// `GET /api/rest/v1/asset-media-files/{code}` (the code spans slashes).
pub(crate) async fn download(State(s): State<Arc<Shared>>, Path(code): Path<String>) -> Response {
    let code = code.trim_start_matches('/').to_owned();
    let media = s.media.read();
    let Some(file) = media.files.get(&code) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("Media file \"{code}\" not found."),
        );
    };
    let Some(bytes) = file.bytes.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            format!("Media file \"{code}\" is not present on the filesystem."),
        );
    };
    let mut r = Response::new(Body::from(bytes));
    if let Ok(v) = HeaderValue::from_str(&file.mime_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    let filename = file.original_filename.replace('"', "");
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        r.headers_mut().insert(CONTENT_DISPOSITION, v);
    }
    r
}
