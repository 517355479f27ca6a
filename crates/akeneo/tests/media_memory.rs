//! A 50 MB media upload keeps memory flat: the body is streamed, never held whole.
//!
//! Alone in its own test binary so no other test allocates meanwhile. The server is a minimal
//! axum handler in the same process that counts and discards the request body, so the
//! measurement covers both ends of the stream.
//!
//! Tolerance: the process's peak RSS may grow by at most 16 MiB while 50 MiB go through (the
//! runtime, HTTP buffers and allocator slack take a few MiB; holding the file would take ≥ 50).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use assetbridge_akeneo::{AkeneoClient, AkeneoConfig};
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;

const FILE_BYTES: u64 = 50 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;
const TOLERANCE_KIB: u64 = 16 * 1024;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabyte_upload_with_flat_memory() {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = Router::new().route(
        "/api/rest/v1/asset-media-files",
        post(move |body: Body| {
            let counter = counter.clone();
            async move {
                let mut frames = body.into_data_stream();
                while let Some(frame) = frames.next().await {
                    counter.fetch_add(frame.unwrap().len() as u64, Ordering::Relaxed);
                }
                (
                    StatusCode::CREATED,
                    [("Asset-media-file-code", "a/b/c/d/0123_big.bin")],
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut config = AkeneoConfig::with_app_token(format!("http://{addr}"), "app_token");
    config.requests_per_second = None;
    let client = AkeneoClient::new(config).unwrap();

    // Warm up the runtime, connection pool and allocator with a small upload.
    let small = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
    client
        .upload_media_file("warm.bin", small, Some(1))
        .await
        .unwrap();
    received.store(0, Ordering::Relaxed);

    // Reset the peak (best effort; without it the check is only stricter).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = status_kib("VmRSS:");

    let chunks = FILE_BYTES / CHUNK as u64;
    let body = futures::stream::iter(0..chunks)
        .map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![(i % 251) as u8; CHUNK])));
    let code = client
        .upload_media_file("big.bin", body, Some(FILE_BYTES))
        .await
        .unwrap();
    assert_eq!(code, "a/b/c/d/0123_big.bin");

    let peak_after = status_kib("VmHWM:");
    let got = received.load(Ordering::Relaxed);
    assert!(
        got > FILE_BYTES && got < FILE_BYTES + 1024,
        "server received {got} bytes (file {FILE_BYTES} + multipart framing)"
    );
    let growth = peak_after.saturating_sub(rss_before);
    eprintln!("RSS before {rss_before} KiB, peak after {peak_after} KiB, growth {growth} KiB");
    assert!(
        growth < TOLERANCE_KIB,
        "peak RSS grew by {growth} KiB while uploading {} KiB",
        FILE_BYTES / 1024
    );
    assert_eq!(client.stats().media_bytes, 1 + FILE_BYTES);
}
