//! Holding inbox leases while a worker's round runs.
//!
//! A claim is leased for `claim_lease` (default 5 min). A round may take longer — PIM answers
//! slowed by `Retry-After`, an enrichment waiting on AEM — and once the lease has run out
//! another worker may take the same entries and write them; the first worker, still running,
//! would then write an older version over a newer one. So while a round runs, its leases are
//! renewed every quarter of a lease; and if they cannot be renewed (the state store is
//! unreachable) the lease is reported lost an eighth of a lease **before** it runs out, and the
//! round starts no further PIM write (it is checked between batches: a write already sent is
//! not taken back).
//!
//! Nothing here is stopped halfway: a renewal runs as a task of its own (a store write dropped
//! in the middle could leave the SQLite writer's transaction in an unknown state), and the
//! holder stops only between renewals.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often a held lease is renewed: every quarter of the lease.
pub(crate) fn renew_every(lease: Duration) -> Duration {
    lease / 4
}

/// How long before its end a lease that could not be renewed is given up: an eighth of it.
pub(crate) fn give_up_before(lease: Duration) -> Duration {
    lease / 8
}

/// Why [`hold`] returned early: the leases could not be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseLost {
    /// The last error of a renewal, if one failed (else: a renewal took too long).
    pub last_error: Option<String>,
}

/// Renews leases taken at `claimed_at` for `lease` with `renew` (which extends them to
/// now + `lease`) until `done` is cancelled (→ `None`), or until they could not be renewed in
/// time (→ [`LeaseLost`], returned an eighth of a lease before they end: the round must start no
/// further write).
///
/// A renewal's new end counts from the moment it was sent (the store computes it later, so
/// this end is never later than the store's). A renewal that fails is tried again every
/// 1/16 of the lease (at least every 100 ms) until it succeeds or the time to give up comes; one
/// still running then is left to finish on its own.
pub(crate) async fn hold<F, Fut, E>(
    claimed_at: Instant,
    lease: Duration,
    done: CancellationToken,
    mut renew: F,
) -> Option<LeaseLost>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let every = renew_every(lease);
    let retry = (lease / 16).max(Duration::from_millis(100));
    let mut ends = claimed_at + lease;
    let mut next = claimed_at + every;
    let mut last_error = None;
    loop {
        let give_up = ends - give_up_before(lease);
        tokio::select! {
            biased;
            _ = done.cancelled() => return None,
            _ = tokio::time::sleep_until(next.min(give_up)) => {}
        }
        if Instant::now() >= give_up {
            return Some(LeaseLost { last_error });
        }
        let sent = Instant::now();
        let renewal = tokio::spawn(renew());
        match tokio::time::timeout_at(give_up, renewal).await {
            Ok(Ok(Ok(()))) => {
                ends = sent + lease;
                next = sent + every;
                last_error = None;
            }
            Ok(Ok(Err(e))) => {
                warn!(error = %e, "cannot renew the inbox leases of this round; trying again");
                last_error = Some(e.to_string());
                next = Instant::now() + retry;
            }
            Ok(Err(e)) => {
                last_error = Some(format!("the renewal task stopped: {e}"));
                next = Instant::now() + retry;
            }
            Err(_) => return Some(LeaseLost { last_error }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    const LEASE: Duration = Duration::from_secs(80);

    #[tokio::test(start_paused = true)]
    async fn leases_renewed_in_time_are_held_for_as_long_as_the_round_runs() {
        let start = Instant::now();
        let renewals = Arc::new(AtomicU32::new(0));
        let r = renewals.clone();
        let held = hold(start, LEASE, CancellationToken::new(), move || {
            r.fetch_add(1, Ordering::SeqCst);
            async { Ok::<(), String>(()) }
        });
        // A round of ten leases: the holder is still holding when it ends.
        let round = tokio::time::sleep(LEASE * 10 + Duration::from_secs(1));
        tokio::select! {
            lost = held => panic!("lost the leases: {lost:?}"),
            _ = round => {}
        }
        // Every 20 s for 800 s.
        assert_eq!(renewals.load(Ordering::SeqCst), 40);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_renewals_give_the_round_up_before_the_lease_ends() {
        let start = Instant::now();
        let tries = Arc::new(AtomicU32::new(0));
        let t = tries.clone();
        let lost = hold(start, LEASE, CancellationToken::new(), move || {
            t.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>("database is locked") }
        })
        .await
        .unwrap();
        // Given up at 70 s: the lease (80 s) has not run out, so no other worker has the entries
        // yet; tried at 20 s and then every 5 s.
        assert_eq!(start.elapsed(), LEASE - LEASE / 8);
        assert_eq!(tries.load(Ordering::SeqCst), 10);
        assert_eq!(lost.last_error.as_deref(), Some("database is locked"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_that_hangs_is_given_up_in_time_too() {
        let start = Instant::now();
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let lost = hold(start, LEASE, CancellationToken::new(), move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n > 0 {
                    // The second renewal never answers.
                    std::future::pending::<()>().await;
                }
                Ok::<(), String>(())
            }
        })
        .await
        .unwrap();
        // First renewal at 20 s (the lease now ends at 100 s), the second hangs from 40 s until
        // the time to give up: 100 − 10 = 90 s.
        assert_eq!(start.elapsed(), Duration::from_secs(90));
        assert_eq!(lost, LeaseLost { last_error: None });
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_renewal_followed_by_a_good_one_keeps_the_leases() {
        let start = Instant::now();
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let held = hold(start, LEASE, CancellationToken::new(), move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err("busy".to_string())
                } else {
                    Ok(())
                }
            }
        });
        tokio::select! {
            lost = held => panic!("lost the leases: {lost:?}"),
            _ = tokio::time::sleep(LEASE * 3) => {}
        }
        // 20 s failed, 25 s renewed, then every 20 s: 45, 65, …, 225 s.
        assert_eq!(calls.load(Ordering::SeqCst), 2 + 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_holder_stops_when_the_round_is_done_and_not_during_a_renewal() {
        let start = Instant::now();
        let done = CancellationToken::new();
        let finished = Arc::new(AtomicU32::new(0));
        let f = finished.clone();
        let holder = tokio::spawn(hold(start, LEASE, done.clone(), move || {
            let f = f.clone();
            async move {
                // A renewal that takes 3 s.
                tokio::time::sleep(Duration::from_secs(3)).await;
                f.fetch_add(1, Ordering::SeqCst);
                Ok::<(), String>(())
            }
        }));
        // The round ends 1 s into the first renewal (sent at 20 s).
        tokio::time::sleep(Duration::from_secs(21)).await;
        done.cancel();
        assert_eq!(holder.await.unwrap(), None);
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(23),
            "after the renewal, not during it"
        );
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }
}
