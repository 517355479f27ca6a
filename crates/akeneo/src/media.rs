//! Media file uploads (`POST /api/rest/v1/asset-media-files`), streamed.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{Stream, StreamExt};
use parking_lot::Mutex;
use reqwest::multipart::{Form, Part};
use reqwest::RequestBuilder;

use crate::error::AkeneoError;
use crate::stats::inc;
use crate::transport::MakeRequest;
use crate::AkeneoClient;

/// The response header carrying the code of an uploaded media file (read case-insensitively).
pub const MEDIA_FILE_CODE_HEADER: &str = "asset-media-file-code";

/// A MIME type for common media extensions (the PIM stores what the upload says).
fn mime_for(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "tif" | "tiff" => "image/tiff",
        "svg" => "image/svg+xml",
        "psd" => "image/vnd.adobe.photoshop",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        _ => "application/octet-stream",
    }
}

/// Builds each attempt's multipart request from a body source: a stream per attempt, counted
/// and cut at `media_max_bytes`.
struct Upload<F> {
    url: url::Url,
    filename: String,
    len: Option<u64>,
    max: u64,
    next_body: F,
    /// Why the body stream failed, when it did (too large, caller's I/O error).
    failure: Arc<Mutex<Option<AkeneoError>>>,
    sent: Arc<AtomicU64>,
}

impl<F, S> MakeRequest for Upload<F>
where
    F: FnMut() -> Option<S> + Send,
    S: Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
{
    fn make(&mut self, http: &reqwest::Client) -> Option<RequestBuilder> {
        if matches!(
            *self.failure.lock(),
            Some(AkeneoError::MediaTooLarge { .. })
        ) {
            // The file passed `media_max_bytes`: sending it again cannot succeed.
            return None;
        }
        let body = (self.next_body)()?;
        *self.failure.lock() = None;
        self.sent.store(0, Ordering::Relaxed);
        let (max, failure, sent) = (self.max, self.failure.clone(), self.sent.clone());
        let counted = body.map(move |chunk| match chunk {
            Ok(b) => {
                let total = sent.fetch_add(b.len() as u64, Ordering::Relaxed) + b.len() as u64;
                if total > max {
                    *failure.lock() = Some(AkeneoError::MediaTooLarge {
                        size: total,
                        limit: max,
                    });
                    Err(io::Error::other("media file larger than media_max_bytes"))
                } else {
                    Ok(b)
                }
            }
            Err(e) => {
                *failure.lock() = Some(AkeneoError::Body(e.to_string()));
                Err(e)
            }
        });
        let body = reqwest::Body::wrap_stream(counted);
        let part = match self.len {
            Some(n) => Part::stream_with_length(body, n),
            None => Part::stream(body),
        }
        .file_name(self.filename.clone())
        .mime_str(mime_for(&self.filename))
        .expect("static MIME types are valid");
        Some(
            http.post(self.url.clone())
                .multipart(Form::new().part("file", part)),
        )
    }
}

impl AkeneoClient {
    /// Uploads a media file and returns its code (from the `Asset-media-file-code` header), to
    /// use as the `data` of a `media_file` value.
    ///
    /// `body` is streamed into the multipart part `file` — never held whole in memory; `len`
    /// (when known) is sent as its length. Files larger than `media_max_bytes` are refused
    /// ([`AkeneoError::MediaTooLarge`]) — before sending when `len` says so, otherwise as soon as
    /// the stream passes the limit. `filename` is the name the PIM keeps (its directory part is
    /// dropped). A stream can be sent only once, so a failed attempt is not retried: use
    /// [`upload_media_file_with`](Self::upload_media_file_with) to retry with a new stream.
    pub async fn upload_media_file<S>(
        &self,
        filename: &str,
        body: S,
        len: Option<u64>,
    ) -> Result<String, AkeneoError>
    where
        S: Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
    {
        let mut once = Some(body);
        self.upload_media_file_with(filename, move || once.take(), len)
            .await
    }

    /// Like [`upload_media_file`](Self::upload_media_file), with a body source called once per
    /// attempt, so transient failures (5xx, timeouts, dropped connections, 429, 401) are retried
    /// like any other call. `make_body` returns `None` when no new stream can be made (then the
    /// last failure is returned).
    pub async fn upload_media_file_with<F, S>(
        &self,
        filename: &str,
        make_body: F,
        len: Option<u64>,
    ) -> Result<String, AkeneoError>
    where
        F: FnMut() -> Option<S> + Send,
        S: Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
    {
        let max = self.inner.config.media_max_bytes;
        if let Some(n) = len {
            if n > max {
                return Err(AkeneoError::MediaTooLarge {
                    size: n,
                    limit: max,
                });
            }
        }
        let filename = filename
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or(filename)
            .trim()
            .to_owned();
        if filename.is_empty() {
            return Err(AkeneoError::InvalidInput("media file name is empty".into()));
        }
        let failure = Arc::new(Mutex::new(None));
        let sent = Arc::new(AtomicU64::new(0));
        let mut upload = Upload {
            url: self.inner.api_url(&["asset-media-files"]),
            filename: filename.clone(),
            len,
            max,
            next_body: make_body,
            failure: failure.clone(),
            sent: sent.clone(),
        };
        let timeout = Duration::from_secs(self.inner.config.media_timeout_secs);
        let result = self
            .inner
            .execute("upload media file", true, timeout, &mut upload)
            .await;
        if let Some(e) = failure.lock().take() {
            return Err(e);
        }
        let r = result?;
        if r.code() != 201 && r.code() != 200 {
            return Err(r.into_error());
        }
        let code = r
            .headers
            .get(MEDIA_FILE_CODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| AkeneoError::Protocol {
                status: r.code(),
                message: "upload answered without an Asset-media-file-code header".into(),
            })?;
        inc(&self.inner.stats.media_uploads);
        self.inner
            .stats
            .media_bytes
            .fetch_add(sent.load(Ordering::Relaxed), Ordering::Relaxed);
        tracing::debug!(filename = %filename, bytes = sent.load(Ordering::Relaxed), code, "uploaded media file");
        Ok(code.to_owned())
    }
}
