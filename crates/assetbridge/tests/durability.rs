//! The issue "Durable sync pipeline", end to end: the real binary (debug build) as child
//! processes, the DAM and Akeneo emulators in this process over HTTP on 127.0.0.1, the state in
//! SQLite (a temporary file) or PostgreSQL (a database of its own per test, dropped after it).
//!
//! - crash: a 20 000-asset `sync` killed with SIGKILL at 5 random points, restarted, run to the
//!   end → the PIM holds exactly the DAM's live assets, nothing pending (both backends);
//! - PIM outage during `run`: the backlog grows, then drains with no operator action;
//! - three `run` instances on one PostgreSQL database: every change written once; one instance
//!   killed mid-run loses nothing;
//! - SIGTERM: `run` exits 0 within its grace period, no claim left leased.
//!
//! The heavy tests take a process-wide lock so that they do not share the 2 CI cores with each
//! other (timings such as "kill mid-run" and the outage window depend on it).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use assetbridge_core::sanitize_code;
use common::{kill_hard, terminate, text, wait_exit, Backend, Env, EnvOptions, FAMILIES};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::process::Child;
use tokio::sync::Mutex;

static HEAVY: Mutex<()> = Mutex::const_new(());

/// A child still running?
fn running(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

/// Asset items the Akeneo emulator accepted (created or updated) so far.
fn written(env: &Env) -> u64 {
    env.akeneo.counters().asset_writes
}

// --- crash ---------------------------------------------------------------------------------

/// One kill: when it happened, relative to the run's progress.
#[derive(Debug)]
#[allow(dead_code)] // read through Debug, in the test's output
struct Kill {
    round: usize,
    after_ms: u64,
    written_at_kill: u64,
    pim_count_at_kill: usize,
    mid_run: bool,
}

async fn crash_and_resume(backend: Backend) {
    let _heavy = HEAVY.lock().await;
    const ASSETS: usize = 20_000;
    const KILLS: usize = 5;
    let started = Instant::now();
    let env = Env::start(EnvOptions {
        assets: ASSETS,
        backend,
        pim_latency: Duration::from_millis(10),
        ..EnvOptions::default()
    })
    .await;
    let cfg = env.config("assetbridge.toml", "", "", "5m");
    let c = cfg.display().to_string();
    let args = ["sync", "--config", c.as_str(), "--no-progress"];
    let mut rng = StdRng::from_entropy();
    let mut kills = Vec::new();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    let mut unrecorded_seen = 0usize;

    for round in 0..KILLS {
        // Latency between 5 and 20 ms per PIM request, new each round.
        env.akeneo
            .set_latency(Duration::from_millis(rng.gen_range(5..=20)));
        let before = written(&env);
        let log = format!("sync-{round}");
        let mut child = env.spawn(&args, &log);
        let t0 = Instant::now();
        // Kill at a random point of the pass: after a random number of writes (at least one
        // batch, at most a third of what is left), so the kill lands mid-run however fast the
        // machine is, with writes in flight.
        let left = (ASSETS as u64).saturating_sub(before);
        let target = before + rng.gen_range(100..(left / 3).max(200));
        while running(&mut child) && written(&env) < target {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no progress: {}",
                env.logs(&log)
            );
            tokio::time::sleep(Duration::from_millis(rng.gen_range(1..20))).await;
        }
        let mid_run = running(&mut child);
        kill_hard(&mut child).await;
        kills.push(Kill {
            round,
            after_ms: t0.elapsed().as_millis() as u64,
            written_at_kill: written(&env),
            pim_count_at_kill: env.pim_count(),
            mid_run,
        });

        // Meanwhile the DAM changes: updates, new assets, and deletions of random assets —
        // written, not yet written, or written by the killed pass without being recorded
        // (the engine records each asset code before writing, so those are found too).
        changed.extend(env.dam.touch(30));
        changed.extend(env.dam.add(10));
        let store = env.store().await;
        for f in FAMILIES {
            let live = env.live_ids(f);
            let mut doomed: Vec<String> = (0..3)
                .map(|_| live[rng.gen_range(0..live.len())].clone())
                .collect();
            // The crash window itself: assets the PIM holds that the store has no hash for.
            let unrecorded = written_but_unrecorded(&env, &store, f, &live).await;
            unrecorded_seen += unrecorded.len();
            doomed.extend(unrecorded.into_iter().take(3));
            for id in env.dam.delete(&doomed) {
                changed.remove(&id);
            }
        }
        store.close().await;
    }

    // The last run goes to the end.
    let log = "sync-final";
    let mut child = env.spawn(&args, log);
    let status = wait_exit(&mut child, Duration::from_secs(240))
        .await
        .unwrap_or_else(|| panic!("the final sync did not finish: {}", env.logs(log)));
    assert_eq!(status.code(), Some(0), "{}", env.logs(log));

    eprintln!("{backend:?}: kills {kills:#?}");
    let mid_run = kills.iter().filter(|k| k.mid_run).count();
    assert_eq!(mid_run, KILLS, "the kills should land mid-run: {kills:?}");
    for k in kills.iter().filter(|k| k.mid_run) {
        assert!(k.pim_count_at_kill < ASSETS, "{k:?}");
    }

    // The PIM holds exactly the live DAM assets, with their current content.
    let mut sample: Vec<String> = changed.iter().cloned().collect();
    for f in FAMILIES {
        let live = env.live_ids(f);
        sample.extend((0..150).map(|_| live[rng.gen_range(0..live.len())].clone()));
    }
    env.assert_pim_matches_dam(&sample);
    let (backlog, dead) = env.inbox_and_dead_letters().await;
    assert_eq!(
        (backlog.pending, backlog.in_flight, dead),
        (0, 0, 0),
        "nothing pending, nothing failed"
    );
    let distinct = env.pim_count() as u64;
    eprintln!(
        "{backend:?}: {ASSETS} assets, {KILLS} kills, {} asset writes for {distinct} assets \
         (+{} changes; {unrecorded_seen} assets found written but unrecorded after kills), \
         took {:.1}s",
        written(&env),
        changed.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Live DAM assets of `family` that the PIM holds but the store has no content hash for: what a
/// pass killed between the PIM's answer and its bookkeeping leaves behind.
async fn written_but_unrecorded(
    env: &Env,
    store: &assetbridge_store::Store,
    family: &str,
    live: &[String],
) -> Vec<String> {
    let in_pim: BTreeSet<String> = env
        .akeneo
        .assets(family)
        .into_iter()
        .filter_map(|a| a["code"].as_str().map(str::to_owned))
        .collect();
    let mut out = Vec::new();
    for chunk in live.chunks(500) {
        let held: Vec<(String, String)> = chunk
            .iter()
            .map(|id| (id.clone(), sanitize_code(id)))
            .filter(|(_, code)| in_pim.contains(code))
            .collect();
        let codes: Vec<String> = held.iter().map(|(_, c)| c.clone()).collect();
        let hashes = store.hashes(family, &codes).await.expect("hashes");
        out.extend(
            held.into_iter()
                .filter(|(_, code)| !hashes.contains_key(code))
                .map(|(id, _)| id),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_killed_at_random_points_converges_sqlite() {
    crash_and_resume(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_killed_at_random_points_converges_postgres() {
    crash_and_resume(Backend::Postgres).await;
}

// --- PIM outage ----------------------------------------------------------------------------

/// `status --json` of the running connector, as an operator would read it.
async fn status_json(env: &Env, c: &str) -> Value {
    let out = env
        .output(
            &["status", "--config", c, "--json"],
            Duration::from_secs(30),
        )
        .await;
    assert!(out.status.success(), "status: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// The PIM answers 503 to everything (token included) for a while during `run`; the DAM keeps
/// changing. The issue asks for a one-minute outage; CI uses 12 s (the mechanism is the same:
/// the retries' delays are short here, `retry_base_secs = 1`, `retry_max_secs = 2`, and the
/// attempts many, `max_attempts = 100`, so that 12 s of outage cannot exhaust them; with the
/// defaults — base 5 s doubling to 10 min, 8 attempts — a change survives ~10 minutes of outage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pim_outage_during_run_drains_without_operator_action() {
    let _heavy = HEAVY.lock().await;
    const ASSETS: usize = 2_000;
    const OUTAGE: Duration = Duration::from_secs(12);
    let started = Instant::now();
    let env = Env::start(EnvOptions {
        assets: ASSETS,
        ..EnvOptions::default()
    })
    .await;
    let cfg = env.config(
        "assetbridge.toml",
        "retry_base_secs = 1\nretry_max_secs = 2\nmax_attempts = 100\n",
        // A failing call gives up after one quick retry (the engine's retries are under test).
        "max_retries = 1\nretry_base_ms = 100\nretry_max_ms = 200\ntimeout_secs = 5\n",
        "1s",
    );
    let c = cfg.display().to_string();
    let log = "run";
    let mut run = env.spawn(&["run", "--config", &c, "--shutdown-grace", "10"], log);
    common::wait_until(Duration::from_secs(60), "the first pass", || {
        env.pim_count() == ASSETS
    })
    .await;
    assert!(running(&mut run), "{}", env.logs(log));

    // The outage, and DAM changes during it (no webhook: the poller finds them).
    env.akeneo.set_outage(true);
    let outage_started = Instant::now();
    let touched = env.dam.touch(200);
    let added = env.dam.add(50);
    let deleted = env.dam.delete_some(20);
    let changes = touched.len() + added.len() + deleted.len();
    let mut max_backlog = 0u64;
    let mut failed_seen = 0u64;
    while outage_started.elapsed() < OUTAGE {
        let s = status_json(&env, &c).await;
        max_backlog = max_backlog.max(s["backlog"]["total"].as_u64().unwrap());
        failed_seen = failed_seen.max(s["outcomes"]["last_5m"]["failed"].as_u64().unwrap());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        env.pim_count(),
        ASSETS,
        "nothing reached the PIM during the outage"
    );
    assert!(
        max_backlog >= changes as u64,
        "the backlog grew to {max_backlog}; {changes} changes wait"
    );
    assert!(failed_seen > 0, "status shows the failed writes");
    assert!(running(&mut run), "{}", env.logs(log));

    // The PIM is back: no operator action, the backlog drains.
    env.akeneo.set_outage(false);
    let back = Instant::now();
    loop {
        let s = status_json(&env, &c).await;
        if s["backlog"]["total"] == 0 && env.pim_codes() == env.expected_codes() {
            assert_eq!(s["dead_letters"], 0, "{s}");
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "not drained a minute after the outage: {s}\n{}",
            env.logs(log)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained_in = back.elapsed();
    let sample: Vec<String> = touched
        .iter()
        .chain(&added)
        .filter(|id| !deleted.contains(id))
        .cloned()
        .collect();
    env.assert_pim_matches_dam(&sample);
    for id in &deleted {
        let code = sanitize_code(id);
        assert!(FAMILIES
            .iter()
            .all(|f| env.akeneo.asset(f, &code).is_none()));
    }

    terminate(&run);
    let status = wait_exit(&mut run, Duration::from_secs(15)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", env.logs(log));
    eprintln!(
        "outage: {changes} changes, backlog peaked at {max_backlog}, drained {:.1}s after the \
         PIM came back; took {:.1}s",
        drained_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

// --- three instances on one PostgreSQL database ----------------------------------------------

/// Which family each instance is polling right now, from its JSON log: a `polling the DAM` line
/// not yet followed by `poll done` for that family.
fn polling_now(env: &Env, log: &str) -> Vec<String> {
    let err = std::fs::read_to_string(env.path(&format!("{log}.err"))).unwrap_or_default();
    let mut open: BTreeSet<String> = BTreeSet::new();
    for line in err.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let family = v["family"]
            .as_str()
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned();
        match v["message"].as_str() {
            Some("polling the DAM") => {
                open.insert(family);
            }
            Some("poll done") | Some("poll failed; the cursor stays where it was") => {
                open.remove(&family);
            }
            _ => {}
        }
    }
    open.into_iter().collect()
}

/// How many log lines of `log` carry this message.
fn count_lines(env: &Env, log: &str, message: &str) -> usize {
    let err = std::fs::read_to_string(env.path(&format!("{log}.err"))).unwrap_or_default();
    err.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .count()
}

/// Three `run` instances share one PostgreSQL database. Each family is polled by one instance
/// at a time (advisory lock) from the shared cursor, so every change is written exactly once;
/// then the DAM changes and the instance polling it is killed (SIGKILL) mid-pass: another one
/// takes the family over from the cursor and nothing is lost (duplicates only from the crash).
///
/// 50 000 assets, as the issue asks: with the debug build on 2 cores the first phase took
/// 11–21 s and the whole test 26–51 s in our runs (it prints its timings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_postgres_database() {
    let _heavy = HEAVY.lock().await;
    const ASSETS: usize = 50_000;
    const INSTANCES: usize = 3;
    let started = Instant::now();
    let env = Env::start(EnvOptions {
        assets: ASSETS,
        backend: Backend::Postgres,
        pim_latency: Duration::from_millis(5),
        ..EnvOptions::default()
    })
    .await;
    let cfg = env.config(
        "assetbridge.toml",
        // A killed instance's claims come back after 10 s.
        "claim_lease_secs = 10\n",
        "",
        "1s",
    );
    let c = cfg.display().to_string();
    let args = [
        "--log-format",
        "json",
        "run",
        "--config",
        c.as_str(),
        "--shutdown-grace",
        "10",
    ];
    let logs: Vec<String> = (0..INSTANCES).map(|i| format!("run-{i}")).collect();
    let mut runs: Vec<Option<Child>> = logs.iter().map(|l| Some(env.spawn(&args, l))).collect();

    // Phase 1: the whole DAM, exactly once.
    let t1 = Instant::now();
    common::wait_until(Duration::from_secs(240), "the PIM holds the DAM", || {
        env.pim_count() == ASSETS
    })
    .await;
    let phase1 = t1.elapsed();
    // Let the instances poll a few more rounds (they find nothing new).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counters = env.akeneo.counters();
    assert_eq!(
        counters.asset_writes, ASSETS as u64,
        "every asset written exactly once"
    );
    let batch_items: u64 = env
        .akeneo
        .request_log()
        .iter()
        .filter(|r| r.method == "PATCH" && r.route.ends_with("/assets"))
        .filter_map(|r| r.items.map(u64::from))
        .sum();
    assert_eq!(batch_items, ASSETS as u64, "items in batch PATCH requests");
    let skipped: usize = logs
        .iter()
        .map(|l| {
            count_lines(
                &env,
                l,
                "another instance polls this listing; skipping this round",
            )
        })
        .sum();
    assert!(skipped > 0, "the instances met at the family locks");
    for (i, r) in runs.iter_mut().enumerate() {
        assert!(running(r.as_mut().unwrap()), "{}", env.logs(&logs[i]));
    }

    // Phase 2: the DAM changes; the instance polling it dies mid-pass.
    env.akeneo.reset_counters();
    let touched = env.dam.touch(4_000);
    let added = env.dam.add(2_000);
    let changes = (touched.len() + added.len()) as u64;
    let t2 = Instant::now();
    let victim = loop {
        if written(&env) >= 300 {
            if let Some(i) = (0..INSTANCES).find(|&i| !polling_now(&env, &logs[i]).is_empty()) {
                break i;
            }
        }
        assert!(
            t2.elapsed() < Duration::from_secs(60),
            "nobody polls the changes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let families_of_victim = polling_now(&env, &logs[victim]);
    let mut child = runs[victim].take().unwrap();
    kill_hard(&mut child).await;
    let written_at_kill = written(&env);
    assert!(
        written_at_kill < changes,
        "the kill came before the pass ended"
    );
    // Cheap checks while waiting (the full comparison renders every asset: once at the end).
    common::wait_until(
        Duration::from_secs(120),
        "the PIM holds the changed DAM",
        || written(&env) >= changes && env.pim_count() == env.dam.count(),
    )
    .await;
    let mut sample: Vec<String> = touched.iter().take(300).cloned().collect();
    sample.extend(added.iter().take(300).cloned());
    // Content converges too (a page written twice is written the same).
    common::wait_until(Duration::from_secs(60), "the content converges", || {
        sample.iter().all(|id| {
            let r = env.dam.get(id).unwrap();
            env.akeneo
                .asset(r["type"].as_str().unwrap(), &sanitize_code(id))
                .is_some_and(|a| a["values"]["title"][0]["data"] == r["metadata"]["title"])
        })
    })
    .await;
    env.assert_pim_matches_dam(&sample);
    // Nothing pending, nothing failed (the shared store).
    let t3 = Instant::now();
    loop {
        let (backlog, dead) = env.inbox_and_dead_letters().await;
        if backlog.pending + backlog.in_flight == 0 {
            assert_eq!(dead, 0);
            break;
        }
        assert!(t3.elapsed() < Duration::from_secs(60), "{backlog:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rewrites = written(&env) - changes;
    // A crash can only repeat what was in flight: ≤ pages_in_flight (4) pages of 100 for each
    // family the victim was polling, and the hashes not yet recorded of the pages before them.
    assert!(
        rewrites <= 400 * families_of_victim.len() as u64 + 400,
        "{rewrites} repeated writes after killing an instance polling {families_of_victim:?}"
    );

    for (i, r) in runs.iter_mut().enumerate() {
        if let Some(child) = r.as_mut() {
            terminate(child);
            let status = wait_exit(child, Duration::from_secs(20)).await;
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(0),
                "{}",
                env.logs(&logs[i])
            );
        }
    }
    eprintln!(
        "three instances: {ASSETS} assets written once in {:.1}s; then {changes} changes, \
         instance {victim} (polling {families_of_victim:?}) killed after {written_at_kill} writes, \
         {rewrites} repeated writes; took {:.1}s",
        phase1.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

// --- graceful shutdown -------------------------------------------------------------------------

/// SIGTERM while inbox workers hold claims (webhook-like changes written into the inbox, PIM
/// calls slowed to 200 ms): `run` stops taking work, finishes or gives back what it holds, and
/// exits 0 within its grace period; no claim stays leased; a later `sync` delivers the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_run_gracefully_with_no_claim_left_leased() {
    let _heavy = HEAVY.lock().await;
    const ASSETS: usize = 1_000;
    const GRACE: Duration = Duration::from_secs(15);
    let env = Env::start(EnvOptions {
        assets: ASSETS,
        ..EnvOptions::default()
    })
    .await;
    // Polled once at start (then hourly): the inbox is what the workers work on.
    let cfg = env.config("assetbridge.toml", "claim_size = 200\n", "", "1h");
    let c = cfg.display().to_string();
    let log = "run";
    let mut run = env.spawn(
        &[
            "run",
            "--config",
            &c,
            "--workers",
            "2",
            "--shutdown-grace",
            &GRACE.as_secs().to_string(),
        ],
        log,
    );
    common::wait_until(Duration::from_secs(60), "the first pass", || {
        env.pim_count() == ASSETS
    })
    .await;

    // 600 changed assets arrive as webhook changes, into the inbox; the PIM slows down.
    env.akeneo.set_latency(Duration::from_millis(200));
    let touched = env.dam.touch(600);
    let changes: Vec<_> = touched
        .iter()
        .enumerate()
        .map(|(i, id)| env.change_of(id, &format!("hook-{i}")))
        .collect();
    let store = env.store().await;
    store.enqueue(&changes).await.expect("enqueue");
    // Wait until the workers hold claims, then stop the process.
    let t0 = Instant::now();
    loop {
        let b = store.backlog().await.unwrap();
        if b.in_flight > 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no claim taken: {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = Instant::now();
    terminate(&run);
    let status = wait_exit(&mut run, GRACE + Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("run did not stop: {}", env.logs(log)));
    let stopped_in = sent.elapsed();
    assert_eq!(status.code(), Some(0), "{}", env.logs(log));
    assert!(stopped_in < GRACE, "stopped after {stopped_in:?}");
    let logs = env.logs(log);
    assert!(
        !logs.contains("work still in flight after the grace period"),
        "{logs}"
    );

    // Nothing stays leased: every claim was completed or given back.
    let b = store.backlog().await.unwrap();
    assert_eq!(b.in_flight, 0, "claims left leased: {b:?}");
    let left = b.pending;
    store.close().await;

    // The rest is delivered by the next sync.
    env.akeneo.set_latency(Duration::ZERO);
    let out = env
        .output(
            &["sync", "--config", &c, "--no-progress"],
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (b, dead) = env.inbox_and_dead_letters().await;
    assert_eq!((b.pending, b.in_flight, dead), (0, 0, 0));
    env.assert_pim_matches_dam(&touched);
    eprintln!(
        "shutdown: SIGTERM with claims in flight, exit 0 after {:.2}s (grace {}s); {left} of 600 \
         changes left pending for the next run",
        stopped_in.as_secs_f64(),
        GRACE.as_secs()
    );
}
