//! Explicit product links end to end: the engine writes assets to the Akeneo emulator (real HTTP
//! on 127.0.0.1) and links them to products through the product NDJSON API, with the state in
//! a real PostgreSQL database (one per test, dropped after it) or a SQLite file.
//!
//! PostgreSQL is expected at `postgres://postgres@127.0.0.1:5432/postgres` (override with
//! `ASSETBRIDGE_TEST_POSTGRES_URL`); if it is unreachable these tests fail, nothing is skipped.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use assetbridge_akeneo::{AkeneoClient, AkeneoConfig};
use assetbridge_core::mapping::CompiledMapping;
use assetbridge_core::{AssetChange, ChangeKind, DamAsset};
use assetbridge_dam::rest::{RestDam, RestDamConfig};
use assetbridge_emulators::akeneo::{
    AkeneoEmulator, AkeneoEmulatorConfig, ProductAttribute, RunningEmulator,
};
use assetbridge_engine::{
    DeletionPolicy, Engine, FamilyPlan, LinkReport, ProductLinkConfig, SyncOptions, WriteItem,
    LINKS_FAMILY,
};
use assetbridge_store::testing::PgTestDatabase;
use assetbridge_store::{DeadLetterFilter, Store};
use serde_json::{json, Value};
use support::{localhost, FAMILY};

/// The product asset-collection attribute linking `packshots` assets.
const ATTR: &str = "packshot_images";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The Akeneo emulator (asset family `packshots`, product attribute `packshot_images`) and the
/// state's address; engines are made on demand, each with its own store pool and PIM client,
/// as separate processes would have.
struct Env {
    akeneo: AkeneoEmulator,
    server: RunningEmulator,
    prefix: String,
    state_url: String,
    clock: AtomicI64,
    _pg: Option<PgTestDatabase>,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(backend: Backend, latency: Duration) -> Env {
        let akeneo = AkeneoEmulator::new(AkeneoEmulatorConfig {
            latency,
            ..AkeneoEmulatorConfig::default()
        });
        let server = akeneo.serve(localhost()).await.unwrap();
        let prefix = "https://dam.example.com/files/".to_owned();
        akeneo.add_asset_family(support::structure(&prefix));
        akeneo.add_product_attribute(ProductAttribute::asset_collection(ATTR, FAMILY));
        let dir = tempfile::tempdir().unwrap();
        let (pg, state_url) = match backend {
            Backend::Sqlite => (
                None,
                format!("sqlite://{}", dir.path().join("state.db").display()),
            ),
            Backend::Postgres => {
                let db = PgTestDatabase::create("links").await;
                let url = db.url().to_owned();
                (Some(db), url)
            }
        };
        Env {
            akeneo,
            server,
            prefix,
            state_url,
            clock: AtomicI64::new(0),
            _pg: pg,
            _dir: dir,
        }
    }

    fn link(&self, product: Value) -> ProductLinkConfig {
        serde_json::from_value(json!({"product": product, "attribute": ATTR})).unwrap()
    }

    async fn engine(&self, options: SyncOptions, link: Option<ProductLinkConfig>) -> Engine {
        let store = Store::open(&self.state_url).await.unwrap();
        let mut cfg = AkeneoConfig::new(
            self.server.base_url.clone(),
            "assetbridge",
            "secret",
            "admin",
            "admin",
        );
        cfg.max_retries = 1;
        cfg.retry_base_ms = 10;
        cfg.retry_max_ms = 20;
        let pim = AkeneoClient::new(cfg).unwrap();
        let dam = RestDam::new(RestDamConfig::new("http://127.0.0.1:9".to_owned())).unwrap();
        let s = pim.family_structure(FAMILY).await.unwrap();
        let plan = FamilyPlan {
            code: FAMILY.to_owned(),
            query: Vec::new(),
            mapping: Arc::new(CompiledMapping::new(&support::mapping(), Some(&s)).unwrap()),
        };
        let engine = Engine::new(pim, store, dam, vec![plan], options);
        match link {
            Some(l) => engine.with_product_links(FAMILY, l.compile(None).unwrap()),
            None => engine,
        }
    }

    /// A product with `codes` already in its asset collection.
    fn product(&self, identifier: &str, codes: &[&str]) {
        let values = if codes.is_empty() {
            json!({})
        } else {
            json!({ATTR: [{"locale": null, "scope": null, "data": codes}]})
        };
        self.akeneo
            .add_product(json!({"identifier": identifier, "values": values}))
            .unwrap();
    }

    /// The codes of a product's asset collection, as the PIM holds them.
    fn codes(&self, identifier: &str) -> Vec<String> {
        let p = self
            .akeneo
            .product_by_identifier(identifier)
            .unwrap_or_else(|| panic!("no product {identifier}"));
        p["values"][ATTR]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|v| v["locale"].is_null() && v["scope"].is_null())
            })
            .map(|v| {
                v["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A DAM asset change: `sku` is mapped (so changing it changes the content hash),
    /// `product_ref` is not.
    fn upsert(&self, id: &str, metadata: Value) -> WriteItem {
        let t = self.clock.fetch_add(1, Ordering::SeqCst);
        let mut meta = json!({
            "title": format!("Asset {id}"),
            "tags": [assetbridge_emulators::dam::TAGS[0]],
            "width": 800,
        });
        if let (Some(m), Some(extra)) = (meta.as_object_mut(), metadata.as_object()) {
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
        }
        WriteItem::fresh(AssetChange {
            family: FAMILY.to_owned(),
            event_id: None,
            source: "test".to_owned(),
            kind: ChangeKind::Upsert {
                asset: DamAsset {
                    id: id.to_owned(),
                    updated_at: chrono::DateTime::from_timestamp(1_700_000_000 + t, 0).unwrap(),
                    record: json!({"id": id, "url": format!("{}{id}.jpg", self.prefix), "metadata": meta}),
                },
            },
        })
    }

    fn delete(&self, id: &str) -> WriteItem {
        WriteItem::fresh(AssetChange {
            family: FAMILY.to_owned(),
            event_id: None,
            source: "test".to_owned(),
            kind: ChangeKind::Delete {
                dam_id: id.to_owned(),
                deleted_at: None,
            },
        })
    }

    /// Product requests the PIM received: (method, items) of `/products-uuid`.
    fn product_requests(&self) -> Vec<(String, Option<u32>)> {
        self.akeneo
            .request_log()
            .into_iter()
            .filter(|r| r.path == "/api/rest/v1/products-uuid")
            .map(|r| (r.method.to_string(), r.items))
            .collect()
    }
}

async fn write(engine: &Engine, items: Vec<WriteItem>) -> assetbridge_engine::SyncReport {
    let plan = engine.family(FAMILY).unwrap().clone();
    let r = engine.write_changes(&plan, items).await.unwrap();
    if r.failed + r.retrying > 0 {
        let dead = engine
            .store()
            .dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap();
        panic!("{r:?}: {:?}", dead.first().map(|d| &d.reason));
    }
    r
}

async fn merged_in_order_one_request_per_100_products(backend: Backend) {
    let env = Env::start(backend, Duration::ZERO).await;
    let engine = env
        .engine(
            SyncOptions::default(),
            Some(env.link(json!("/metadata/sku"))),
        )
        .await;
    // 250 products; P000 has two codes linked by hand, P001 already holds the code it gets.
    for i in 0..250 {
        let p = format!("P{i:03}");
        match i {
            0 => env.product(&p, &["manual_a", "manual_b"]),
            1 => env.product(&p, &["a001"]),
            _ => env.product(&p, &[]),
        }
    }
    // One asset per product, in pages of 100, and two more for P000 in later batches.
    let items: Vec<WriteItem> = (0..250)
        .map(|i| env.upsert(&format!("a{i:03}"), json!({"sku": format!("P{i:03}")})))
        .collect();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        write(&engine, items.by_ref().take(100).collect()).await;
    }
    write(&engine, vec![env.upsert("b000", json!({"sku": "P000"}))]).await;
    write(&engine, vec![env.upsert("c000", json!({"sku": "P000"}))]).await;
    assert_eq!(
        env.codes("P000"),
        vec!["manual_a", "manual_b"],
        "nothing linked before the linker runs"
    );
    let backlog = engine.store().link_backlog().await.unwrap();
    assert_eq!(backlog.pending, 252);

    env.akeneo.reset_log();
    let report = engine.link_pending().await.unwrap();
    assert_eq!(
        env.codes("P000"),
        vec!["manual_a", "manual_b", "a000", "b000", "c000"],
        "appended after the codes already there, in the order written"
    );
    assert_eq!(env.codes("P001"), vec!["a001"], "no duplicate");
    for i in 2..250 {
        assert_eq!(env.codes(&format!("P{i:03}")), vec![format!("a{i:03}")]);
    }
    // 249 products changed (P001 did not): 3 reads and 3 NDJSON writes of ≤ 100 products.
    let requests = env.product_requests();
    let writes: Vec<u32> = requests
        .iter()
        .filter(|(m, _)| m == "PATCH")
        .map(|(_, n)| n.unwrap())
        .collect();
    let reads = requests.iter().filter(|(m, _)| m == "GET").count();
    assert_eq!(writes.len(), 3, "{writes:?}");
    assert!(writes.iter().all(|n| *n <= 100), "{writes:?}");
    assert_eq!(writes.iter().sum::<u32>(), 249);
    assert_eq!(reads, 3);
    assert_eq!(
        report,
        LinkReport {
            links: 252,
            done: 252,
            added: 251,
            products_written: 249,
            products_unchanged: 1,
            pim_reads: 3,
            pim_writes: 3,
            ..LinkReport::default()
        }
    );
    assert_eq!(engine.store().link_backlog().await.unwrap().pending, 0);

    // Nothing pending: nothing asked. An asset written again (changed) is linked again, which
    // costs a read and no write (the code is there).
    env.akeneo.reset_log();
    assert_eq!(engine.link_pending().await.unwrap(), LinkReport::default());
    assert!(env.product_requests().is_empty());
    write(
        &engine,
        vec![env.upsert("a002", json!({"sku": "P002", "title": "new"}))],
    )
    .await;
    let again = engine.link_pending().await.unwrap();
    assert_eq!((again.products_unchanged, again.pim_writes), (1, 0));
    assert_eq!(env.codes("P002"), vec!["a002"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_links_merge_in_order_with_one_request_per_100_products() {
    merged_in_order_one_request_per_100_products(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_links_merge_in_order_with_one_request_per_100_products() {
    merged_in_order_one_request_per_100_products(Backend::Sqlite).await;
}

/// Two engines on one PostgreSQL store (separate pools and PIM clients, as two `run`
/// processes) write two different assets of the same product at the same time and link them,
/// round after round, with a random PIM latency per request so that the linkers' reads and
/// writes of the product interleave in every order. Every link must be there at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engines_linking_one_product_at_once_lose_no_link() {
    const ROUNDS: usize = 60;
    let env = Env::start(Backend::Postgres, Duration::ZERO).await;
    let link = env.link(json!("/metadata/sku"));
    let a = env.engine(SyncOptions::default(), Some(link.clone())).await;
    let b = env.engine(SyncOptions::default(), Some(link)).await;
    let env = Arc::new(env);
    // Jitter: each PIM request waits 0–12 ms (the latency in force when it arrives), so either
    // linker's read and write may land before or after the other's.
    let jitter = {
        let akeneo = env.akeneo.clone();
        tokio::spawn(async move {
            let mut n: u64 = 0x9E37_79B9_7F4A_7C15;
            loop {
                n ^= n << 13;
                n ^= n >> 7;
                n ^= n << 17;
                akeneo.set_latency(Duration::from_millis(n % 13));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mut busy = 0;
    let mut overlaps = 0;
    for i in 0..ROUNDS {
        let product = format!("R{i:03}");
        env.product(&product, &["manual"]);
        let side = |engine: &Engine, id: String, delay_ms: u64| {
            let (engine, env, product) = (engine.clone(), env.clone(), product.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                write(&engine, vec![env.upsert(&id, json!({"sku": product}))]).await;
                let started = std::time::Instant::now();
                let r = engine.link_pending().await.unwrap();
                (r, started, std::time::Instant::now())
            })
        };
        // Staggered by 0–12 ms: sometimes both links are pending when one linker claims the
        // product, sometimes the second is recorded while the first linker holds it.
        let ta = side(&a, format!("x{i:03}"), 0);
        let tb = side(&b, format!("y{i:03}"), (i % 7) as u64 * 2);
        let ((ra, sa, ea), (rb, sb, eb)) = (ta.await.unwrap(), tb.await.unwrap());
        busy += ra.busy + rb.busy;
        if sa < eb && sb < ea {
            overlaps += 1;
        }
        let codes = env.codes(&product);
        let set: BTreeSet<&str> = codes.iter().map(String::as_str).collect();
        let x = format!("x{i:03}");
        let y = format!("y{i:03}");
        assert_eq!(
            set,
            BTreeSet::from(["manual", x.as_str(), y.as_str()]),
            "round {i}: {codes:?}"
        );
        assert_eq!(codes.len(), 3, "no duplicate: {codes:?}");
        assert_eq!(codes[0], "manual", "the code already there stays first");
    }
    jitter.abort();
    // The linkers really ran at the same time, and one found the product held by the other.
    assert!(
        overlaps > ROUNDS / 2,
        "linking overlapped in {overlaps} rounds"
    );
    assert!(
        busy > 0,
        "no linker ever found the product held by the other"
    );
    assert_eq!(a.store().link_backlog().await.unwrap().pending, 0);
    assert_eq!(b.store().dead_letter_count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_in_the_pim_removes_the_link() {
    let env = Env::start(Backend::Postgres, Duration::ZERO).await;
    let options = SyncOptions {
        deletions: DeletionPolicy::Delete,
        ..SyncOptions::default()
    };
    // A list of products: one link each.
    let link = env.link(json!("/metadata/product_ref"));
    let engine = env.engine(options, Some(link.clone())).await;
    env.product("P1", &["manual"]);
    env.product("P2", &[]);
    write(
        &engine,
        vec![
            env.upsert("d1", json!({"product_ref": "P1"})),
            env.upsert("d2", json!({"product_ref": ["P1"]})),
            env.upsert("d3", json!({"product_ref": ["P1", "P2"]})),
        ],
    )
    .await;
    engine.link_pending().await.unwrap();
    assert_eq!(env.codes("P1"), vec!["manual", "d1", "d2", "d3"]);
    assert_eq!(env.codes("P2"), vec!["d3"]);

    let r = write(&engine, vec![env.delete("d1"), env.delete("d3")]).await;
    assert_eq!(r.deleted, 2);
    assert!(env.akeneo.asset(FAMILY, "d1").is_none());
    let report = engine.link_pending().await.unwrap();
    assert_eq!(env.codes("P1"), vec!["manual", "d2"]);
    assert!(env.codes("P2").is_empty());
    assert_eq!((report.removed, report.products_written), (3, 2));
    assert!(engine
        .store()
        .link_targets(FAMILY, &["d1".to_owned(), "d3".to_owned()])
        .await
        .unwrap()
        .is_empty());

    // `keep`: the asset stays in the PIM, and so do its links.
    let keep = env.engine(SyncOptions::default(), Some(link)).await;
    let r = write(&keep, vec![env.delete("d2")]).await;
    assert_eq!(r.kept, 1);
    keep.link_pending().await.unwrap();
    assert_eq!(env.codes("P1"), vec!["manual", "d2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_product_is_dead_lettered_and_dlq_retry_links_it_later() {
    let env = Env::start(Backend::Postgres, Duration::ZERO).await;
    let engine = env
        .engine(
            SyncOptions::default(),
            Some(env.link(json!("/metadata/sku"))),
        )
        .await;
    env.product("HERE", &[]);
    write(
        &engine,
        vec![
            env.upsert("m1", json!({"sku": "NOPE-1"})),
            env.upsert("m2", json!({"sku": "HERE"})),
        ],
    )
    .await;
    let report = engine.link_pending().await.unwrap();
    assert_eq!((report.done, report.failed), (1, 1));
    assert_eq!(env.codes("HERE"), vec!["m2"]);
    let dead = engine
        .store()
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.family.as_deref(), Some(LINKS_FAMILY));
    assert_eq!(d.reason.kind, "product_missing");
    assert!(
        d.reason.message.contains("NOPE-1") && d.reason.message.contains("m1"),
        "{}",
        d.reason.message
    );
    assert_eq!(engine.store().link_backlog().await.unwrap().pending, 0);

    // The product appears; `dlq retry` (the store call behind it) and a drain bring the link
    // back, and the linker makes it.
    env.product("NOPE-1", &["manual"]);
    let moved = engine
        .store()
        .retry_dead_letters(&DeadLetterFilter {
            family: Some(LINKS_FAMILY.to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(moved, 1);
    engine.drain_inbox("test").await.unwrap();
    assert_eq!(engine.store().backlog().await.unwrap().pending, 0);
    let report = engine.link_pending().await.unwrap();
    assert_eq!((report.done, report.failed), (1, 0));
    assert_eq!(env.codes("NOPE-1"), vec!["manual", "m1"]);
    assert_eq!(engine.store().dead_letter_count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_the_pim_refuses_is_dead_lettered_with_its_message() {
    let env = Env::start(Backend::Postgres, Duration::ZERO).await;
    // A locale on a non-localizable attribute: what the start-up check refuses, sent anyway.
    let mut link = env.link(json!("/metadata/sku"));
    link.locale = Some("en_US".into());
    let engine = env.engine(SyncOptions::default(), Some(link)).await;
    env.product("P1", &["manual"]);
    write(&engine, vec![env.upsert("r1", json!({"sku": "P1"}))]).await;
    let report = engine.link_pending().await.unwrap();
    assert_eq!(report.failed, 1);
    let dead = engine
        .store()
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    let d = &dead[0];
    assert_eq!(d.reason.kind, "pim_rejected");
    assert_eq!(d.reason.pim_status, Some(422));
    let pim_message = d.reason.pim_message.clone().unwrap();
    assert!(
        pim_message.contains(ATTR) && d.reason.message.contains(&pim_message),
        "{:?}",
        d.reason
    );
    assert_eq!(env.codes("P1"), vec!["manual"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pim_outage_retries_the_links_later() {
    let env = Env::start(Backend::Postgres, Duration::ZERO).await;
    // Long enough that the "not due yet" check below surely runs before the retry is due.
    let options = SyncOptions {
        retry_base: Duration::from_secs(1),
        retry_max: Duration::from_secs(1),
        ..SyncOptions::default()
    };
    let engine = env
        .engine(options, Some(env.link(json!("/metadata/sku"))))
        .await;
    env.product("P1", &[]);
    write(&engine, vec![env.upsert("o1", json!({"sku": "P1"}))]).await;
    env.akeneo.set_outage(true);
    let report = engine.link_pending().await.unwrap();
    assert_eq!((report.retrying, report.done, report.failed), (1, 0, 0));
    assert_eq!(engine.store().link_backlog().await.unwrap().pending, 1);
    env.akeneo.set_outage(false);
    // The retry comes due after the backoff (1 s - 25 %, capped at 1 s).
    assert_eq!(engine.link_pending().await.unwrap().links, 0);
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let report = engine.link_pending().await.unwrap();
    assert_eq!((report.done, report.products_written), (1, 1));
    assert_eq!(env.codes("P1"), vec!["o1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_asset_whose_product_changed_moves_without_an_asset_write() {
    let env = Env::start(Backend::Sqlite, Duration::ZERO).await;
    // Written before links were configured.
    let plain = env.engine(SyncOptions::default(), None).await;
    env.product("P1", &["manual"]);
    env.product("P2", &[]);
    write(
        &plain,
        vec![env.upsert("u1", json!({"sku": "S", "product_ref": "P1"}))],
    )
    .await;
    assert_eq!(plain.store().link_backlog().await.unwrap().pending, 0);

    // Links configured: the same asset, unchanged (no PIM asset write), gets its link.
    let engine = env
        .engine(
            SyncOptions::default(),
            Some(env.link(json!("/metadata/product_ref"))),
        )
        .await;
    env.akeneo.reset_log();
    let r = write(
        &engine,
        vec![env.upsert("u1", json!({"sku": "S", "product_ref": "P1"}))],
    )
    .await;
    assert_eq!((r.unchanged, r.pim_writes), (1, 0));
    engine.link_pending().await.unwrap();
    assert_eq!(env.codes("P1"), vec!["manual", "u1"]);

    // Re-read unchanged: nothing recorded again.
    write(
        &engine,
        vec![env.upsert("u1", json!({"sku": "S", "product_ref": "P1"}))],
    )
    .await;
    assert_eq!(engine.store().link_backlog().await.unwrap().pending, 0);

    // Its product changes (a field the mapping does not write): still no asset write, and the
    // link moves from P1 to P2.
    write(
        &engine,
        vec![env.upsert("u1", json!({"sku": "S", "product_ref": "P2"}))],
    )
    .await;
    engine.link_pending().await.unwrap();
    assert_eq!(env.codes("P1"), vec!["manual"]);
    assert_eq!(env.codes("P2"), vec!["u1"]);
    let asset_writes = env
        .akeneo
        .request_log()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/asset-families/"))
        .count();
    assert_eq!(asset_writes, 0);
}
