//! Test control over HTTP, for tools that run the emulator in another process (the benchmark
//! harness): `GET /_emulator/stats` answers the [`Counters`](super::Counters) as JSON (plus
//! `in_flight`, the API requests in flight now, and `link_jobs_pending`, product link rule jobs
//! not finished yet), `POST /_emulator/reset` sets the counters back
//! to zero and empties the request log (204).
//!
//! These routes are not part of the Akeneo API: they bypass the gate (no token, no latency, no
//! concurrency cap, no faults) and are neither counted nor logged, so reading the counters never
//! changes them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use http::StatusCode;

use super::http::{empty, json};
use super::state::Shared;

/// `GET` the counters.
pub const STATS: &str = "/_emulator/stats";
/// `POST` to reset the counters and the request log.
pub const RESET: &str = "/_emulator/reset";

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(STATS, get(stats))
        .route(RESET, post(reset))
        .with_state(shared)
}

async fn stats(State(s): State<Arc<Shared>>) -> Response {
    let mut body = serde_json::to_value(s.counters.snapshot()).unwrap_or_default();
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "in_flight".into(),
            s.in_flight.load(Ordering::SeqCst).into(),
        );
        obj.insert(
            "link_jobs_pending".into(),
            s.link_jobs.load(Ordering::SeqCst).into(),
        );
    }
    json(StatusCode::OK, &body)
}

async fn reset(State(s): State<Arc<Shared>>) -> Response {
    s.counters.reset();
    s.log.lock().entries.clear();
    empty(StatusCode::NO_CONTENT, None)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use super::super::{AkeneoEmulator, AkeneoEmulatorConfig};

    #[tokio::test]
    async fn stats_and_reset_bypass_the_gate_and_are_not_counted() {
        // A latency the stats request below is told from even on a loaded machine.
        let emu = AkeneoEmulator::new(AkeneoEmulatorConfig {
            latency: Duration::from_secs(2),
            max_concurrency: Some(1),
            ..AkeneoEmulatorConfig::default()
        });
        emu.add_demo_structure();
        let running = emu.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let base = &running.base_url;

        // One API request without a token: a 401, counted (after the latency).
        let r = http
            .get(format!("{base}/api/rest/v1/asset-families"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        // Stats answer at once (no latency), without a token, and are not counted.
        let started = std::time::Instant::now();
        let stats: Value = http
            .get(format!("{base}{}", super::STATS))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            stats["requests"]["GET /api/rest/v1/asset-families"]["401"],
            1
        );
        assert_eq!(stats["requests"].as_object().unwrap().len(), 1, "{stats}");
        assert_eq!(stats["asset_writes"], 0);
        assert_eq!(stats["in_flight"], 0);
        assert_eq!(emu.request_log().len(), 1);

        let r = http
            .post(format!("{base}{}", super::RESET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(emu.counters(), super::super::Counters::default());
        assert!(emu.request_log().is_empty());

        // Wrong method: not the API's 405 body, but refused all the same; still not counted.
        let r = http
            .get(format!("{base}{}", super::RESET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
        assert_eq!(emu.counters(), super::super::Counters::default());
    }
}
