//! PIM → DAM enrichment end to end: the AEM emulator (IMS, Assets Author API, signed I/O Events
//! sender) and the Akeneo emulator over real HTTP on 127.0.0.1, the Adobe webhook receiver of
//! `assetbridge-sources` writing into a SQLite inbox in a temporary directory, and the engine's
//! inbox worker enriching.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use assetbridge_akeneo::{AkeneoClient, AkeneoConfig};
use assetbridge_core::mapping::{CompiledMapping, FamilyMapping, ValueRule};
use assetbridge_core::{AssetAttribute, AssetChange, AttributeType, FamilyStructure};
use assetbridge_dam::aem::{AemClient, AemConfig, ImsConfig};
use assetbridge_dam::rest::{RestDam, RestDamConfig};
use assetbridge_emulators::aem::{
    AemEmulator, AemEmulatorConfig, AemEndpoint, DeliveryMode, DeliveryOutcome, Fault, RunningAem,
};
use assetbridge_emulators::akeneo::{
    AkeneoEmulator, AkeneoEmulatorConfig, ProductAttribute, RunningEmulator,
};
use assetbridge_engine::enrich::{
    Enricher, EnrichmentConfig, FieldRule, UnknownProduct, ENRICHMENT_FAMILY, LINKS_FAMILY,
};
use assetbridge_engine::{Engine, FamilyPlan, SyncOptions};
use assetbridge_sources::webhook::{AdobeFamily, AdobeWebhookConfig, WebhookConfig, WebhookServer};
use assetbridge_store::{DeadLetterFilter, Store};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const HOST: &str = "author-p12345-e67890.adobeaemcloud.com";
/// The inbox family the Adobe webhook gives AEM events in these tests.
const AEM_FAMILY: &str = "aem_assets";

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

struct App {
    aem: RunningAem,
    akeneo: AkeneoEmulator,
    _akeneo_server: RunningEmulator,
    store: Store,
    engine: Engine,
    enricher: Arc<Enricher>,
    webhook_url: url::Url,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The tutorial's mapping: SKU and supplier name into `wknd-` fields, the product found by the
/// asset's file name without its extension.
fn tutorial_config() -> EnrichmentConfig {
    let mut c = EnrichmentConfig::new(vec![
        FieldRule::new("sku", "wknd-skuid"),
        FieldRule::new("supplier", "wknd-suppliername"),
    ]);
    c.product_key.strip_extension = true;
    c
}

struct Options {
    enrichment: EnrichmentConfig,
    /// Families also written DAM → PIM (Akeneo asset families), with their mapping.
    pim_families: Vec<(FamilyStructure, FamilyMapping)>,
    /// The webhook does not store the echoes of enrichment's writes, as `assetbridge run` wires
    /// it (`AdobeEventRules::echoes`); without it echoes reach the inbox and the engine's own
    /// echo check.
    drop_echoes_at_ingest: bool,
}

impl Options {
    fn new(enrichment: EnrichmentConfig) -> Self {
        Self {
            enrichment,
            pim_families: Vec::new(),
            drop_echoes_at_ingest: false,
        }
    }
}

async fn start(options: Options) -> App {
    let aem_emulator = AemEmulator::new(AemEmulatorConfig {
        author_host: HOST.into(),
        ..AemEmulatorConfig::default()
    });
    let aem = aem_emulator.serve(localhost()).await.unwrap();

    let akeneo = AkeneoEmulator::new(AkeneoEmulatorConfig::default());
    let akeneo_server = akeneo.serve(localhost()).await.unwrap();
    akeneo.add_product_attribute(ProductAttribute::text("supplier", false, false));
    for (structure, _) in &options.pim_families {
        akeneo.add_asset_family(structure.clone());
    }

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("state.db").display()
    ))
    .await
    .unwrap();
    let pim = AkeneoClient::new(AkeneoConfig::new(
        akeneo_server.base_url.clone(),
        "assetbridge",
        "secret",
        "admin",
        "admin",
    ))
    .unwrap();

    let config = aem.config().clone();
    let mut ims = ImsConfig::new(
        config.client_id.clone(),
        config.client_secret.clone(),
        config.allowed_scopes.clone(),
    );
    ims.token_url = aem.ims_token_url();
    ims.retry_backoff_ms = 10;
    let mut aem_cfg = AemConfig::new(vec![HOST.into()], ims);
    aem_cfg
        .base_url_overrides
        .insert(HOST.into(), aem.base_url.clone());
    aem_cfg.max_retries = 1;
    aem_cfg.retry_backoff_ms = 10;
    aem_cfg.timeout_secs = 10;
    let aem_client = Arc::new(AemClient::new(aem_cfg).unwrap());

    let enricher = Arc::new(
        Enricher::new(options.enrichment, pim.clone(), aem_client, store.clone()).unwrap(),
    );
    let mut plans = Vec::new();
    for (structure, mapping) in &options.pim_families {
        let s = pim.family_structure(&structure.code).await.unwrap();
        plans.push(FamilyPlan {
            code: structure.code.clone(),
            query: Vec::new(),
            mapping: Arc::new(CompiledMapping::new(mapping, Some(&s)).unwrap()),
        });
    }
    let sync = SyncOptions {
        retry_base: Duration::from_millis(1),
        retry_max: Duration::from_millis(5),
        max_attempts: 3,
        ..SyncOptions::default()
    };
    // No DAM is polled in these tests: the REST adapter points nowhere and is never called.
    let dam = RestDam::new(RestDamConfig::new("http://127.0.0.1:9")).unwrap();
    let engine =
        Engine::new(pim, store.clone(), dam, plans, sync).with_enrichment(enricher.clone());

    // The Adobe webhook receiver, verifying signatures with the emulator's public keys.
    let webhook = WebhookConfig {
        listen: localhost(),
        adobe: Some(AdobeWebhookConfig {
            path: "/webhooks/adobe".into(),
            client_id: config.client_id.clone(),
            key_origin: aem.base_url.clone(),
            family: AdobeFamily::Fixed(AEM_FAMILY.into()),
            upsert_types: vec![
                "aem.assets.asset.processing_completed".into(),
                "aem.assets.asset.metadata_updated".into(),
            ],
            delete_types: vec!["aem.assets.asset.deleted".into()],
            echoes: if options.drop_echoes_at_ingest {
                assetbridge_sources::webhook::EchoFilter {
                    keys: enricher.owned_keys().map(str::to_owned).collect(),
                    families: enricher.families().iter().cloned().collect(),
                }
            } else {
                Default::default()
            },
        }),
        ..WebhookConfig::default()
    };
    let server = WebhookServer::bind(&webhook, store.clone()).await.unwrap();
    let webhook_url =
        url::Url::parse(&format!("http://{}/webhooks/adobe", server.local_addr())).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));

    App {
        aem,
        akeneo,
        _akeneo_server: akeneo_server,
        store,
        engine,
        enricher,
        webhook_url,
        stop,
        _dir: dir,
    }
}

impl App {
    fn product(&self, sku: &str, supplier: &str) {
        self.akeneo
            .add_product(json!({
                "values": {
                    "sku": [{"locale": null, "scope": null, "data": sku}],
                    "supplier": [{"locale": null, "scope": null, "data": supplier}],
                    "name": [{"locale": "en_US", "scope": null, "data": format!("{sku} name")}],
                }
            }))
            .unwrap();
    }

    fn asset(&self, id: &str, name: &str) {
        self.aem.add_asset(
            id,
            name,
            &format!("/content/dam/products/{name}"),
            json!({"dc:title": name}),
        );
    }

    /// Delivers events to the webhook as I/O Events does (signed), and checks they were taken.
    async fn deliver(&self, events: Vec<Value>, mode: DeliveryMode) {
        let records = self.aem.deliver(&self.webhook_url, events, mode).await;
        for r in records {
            assert_eq!(r.outcome, DeliveryOutcome::Delivered, "{:?}", r.attempts);
        }
    }

    async fn drain(&self) {
        self.engine.drain_inbox("test-worker").await.unwrap();
    }

    fn product_reads(&self) -> usize {
        self.akeneo
            .request_log()
            .iter()
            .filter(|r| r.method.as_str() == "GET" && r.route == "/api/rest/v1/products-uuid")
            .count()
    }

    async fn dead_letters(&self) -> Vec<assetbridge_store::DeadLetter> {
        self.store
            .dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap()
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn processing_completed_end_to_end_then_redelivery_and_echo_write_nothing() {
    let app = start(Options::new(tutorial_config())).await;
    app.product("SKU-1", "mock-supplier");
    app.asset("urn:aaid:aem:1111", "SKU-1.jpg");
    // Every event the emulator emits from now on (the echo of our PATCH included) is pushed to
    // the webhook, signed.
    app.aem
        .register_webhook(Some((app.webhook_url.clone(), DeliveryMode::Single)));

    let event = app.aem.processing_completed("urn:aaid:aem:1111").unwrap();
    wait_for("the processing_completed delivery", || {
        app.aem.deliveries().len() == 1
    })
    .await;
    let stored = app.store.backlog().await.unwrap();
    assert_eq!(stored.pending, 1, "the webhook stored the event");

    app.drain().await;
    let patches = app.aem.patches();
    assert_eq!(patches.len(), 1, "one PATCH");
    let p = &patches[0];
    assert_eq!(p.status, 200);
    assert_eq!(p.path, "/adobe/assets/urn:aaid:aem:1111/metadata");
    let body: Value = serde_json::from_str(&p.body).unwrap();
    assert_eq!(
        body,
        json!([
            {"op": "add", "path": "/wknd-skuid", "value": "SKU-1"},
            {"op": "add", "path": "/wknd-suppliername", "value": "mock-supplier"}
        ])
    );
    assert_eq!(
        p.header("content-type"),
        Some("application/json-patch+json")
    );
    assert_eq!(p.header("if-match"), Some("*"));
    assert_eq!(p.header("x-api-key"), Some("emulated-client-id"));
    assert_eq!(p.header("x-adobe-accept-experimental"), Some("1"));
    assert!(p
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer ") && a.len() > 20));
    let meta = app.aem.metadata("urn:aaid:aem:1111").unwrap();
    assert_eq!(meta["wknd-skuid"], "SKU-1");
    assert_eq!(meta["wknd-suppliername"], "mock-supplier");
    assert_eq!(meta["dc:title"], "SKU-1.jpg", "other metadata untouched");

    // The PATCH made the emulator emit a metadata_updated echo, delivered to the webhook.
    wait_for("the echo delivery", || app.aem.deliveries().len() == 2).await;
    let echo: Value = serde_json::from_str(&app.aem.deliveries()[1].body).unwrap();
    assert_eq!(echo["type"], "aem.assets.asset.metadata_updated");
    let requests_before = app.aem.requests().len();
    app.drain().await;
    assert_eq!(
        app.aem.requests().len(),
        requests_before,
        "the echo costs no AEM call at all"
    );
    assert_eq!(app.enricher.stats().echoes, 1);

    // A redelivery of the same event (same eventid) is dropped by the inbox.
    app.deliver(vec![event.clone()], DeliveryMode::Single).await;
    assert_eq!(
        app.store.backlog().await.unwrap().pending,
        0,
        "deduplicated"
    );
    app.drain().await;
    assert_eq!(app.aem.requests().len(), requests_before);

    // Even without the dedup (a new eventid), nothing is written: the asset holds the values.
    let mut again = event.clone();
    again["eventid"] = json!("another-delivery-of-the-same-change");
    again["event_id"] = again["eventid"].clone();
    app.deliver(vec![again], DeliveryMode::Single).await;
    app.drain().await;
    let after = app.aem.requests();
    assert_eq!(after.len(), requests_before + 1, "one GET, no PATCH");
    assert_eq!(after.last().unwrap().method, "GET");
    assert_eq!(app.aem.patches().len(), 1);
    let stats = app.enricher.stats();
    assert_eq!((stats.patched, stats.unchanged, stats.failed), (1, 1, 0));
    assert_eq!(app.store.backlog().await.unwrap().pending, 0);
    assert!(app.dead_letters().await.is_empty());
    assert_eq!(app.aem.ims_tokens_issued(), 1);
}

#[tokio::test]
async fn a_thousand_events_cost_one_token_and_few_product_reads() {
    let app = start(Options::new(tutorial_config())).await;
    let mut events = Vec::new();
    for i in 0..1000 {
        let sku = format!("SKU-{i:04}");
        app.product(&sku, &format!("supplier-{}", i % 7));
        let id = format!("urn:aaid:aem:{i:08}");
        app.asset(&id, &format!("{sku}.png"));
        events.push(app.aem.processing_completed(&id).unwrap());
    }
    app.akeneo.reset_log();
    app.deliver(events, DeliveryMode::Batch).await;
    assert_eq!(app.store.backlog().await.unwrap().pending, 1000);

    app.drain().await;

    assert_eq!(app.aem.patches().len(), 1000, "every asset patched once");
    assert!(app.aem.patches().iter().all(|p| p.status == 200));
    assert_eq!(
        app.aem.ims_tokens_issued(),
        1,
        "ONE IMS token for 1000 events"
    );
    let reads = app.product_reads();
    eprintln!(
        "1000 events: {reads} product reads, {} IMS token(s)",
        app.aem.ims_tokens_issued()
    );
    assert!(
        reads <= 10 + 1000 / 100,
        "{reads} product reads for 1000 events (claims of 500 → 5 reads of 100 each)"
    );
    assert!(reads >= 10, "identifiers are read 100 per request: {reads}");
    let m = app.aem.metadata("urn:aaid:aem:00000999").unwrap();
    assert_eq!(m["wknd-skuid"], "SKU-0999");
    assert_eq!(m["wknd-suppliername"], "supplier-5");
    let stats = app.enricher.stats();
    assert_eq!(stats.patched, 1000);
    assert_eq!(stats.product_requests as usize, reads);
    assert_eq!(app.store.backlog().await.unwrap().pending, 0);
}

#[tokio::test]
async fn unknown_products_are_skipped_without_any_call() {
    let app = start(Options::new(tutorial_config())).await;
    app.asset("urn:aaid:aem:2222", "NOPE-1.jpg");
    let e = app.aem.processing_completed("urn:aaid:aem:2222").unwrap();
    app.deliver(vec![e], DeliveryMode::Single).await;
    app.drain().await;
    assert!(app.aem.requests().is_empty(), "skip: no AEM call");
    assert_eq!(app.aem.ims_tokens_issued(), 0);
    let stats = app.enricher.stats();
    assert_eq!((stats.not_found, stats.marked), (1, 0));
    assert_eq!(
        app.store.backlog().await.unwrap().pending,
        0,
        "done, not retried"
    );
    assert!(app.dead_letters().await.is_empty());
}

#[tokio::test]
async fn unknown_products_are_marked_then_enriched_once_the_product_exists() {
    let mut config = tutorial_config();
    config.unknown_product = UnknownProduct::Mark;
    config.locale = Some("en_US".into());
    config.fields.push(FieldRule::new("name", "pim:name"));
    config.product_poll.overlap_secs = 0;
    let app = start(Options::new(config)).await;
    // The product poll starts from now.
    assert!(app.enricher.poll_products_once().await.unwrap().started);

    app.asset("urn:aaid:aem:3333", "NEW-1.jpg");
    let e = app.aem.processing_completed("urn:aaid:aem:3333").unwrap();
    app.deliver(vec![e], DeliveryMode::Single).await;
    app.drain().await;
    let patches = app.aem.patches();
    assert_eq!(patches.len(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(&patches[0].body).unwrap(),
        json!([{"op": "add", "path": "/pim:status", "value": "not_found"}])
    );
    assert_eq!(app.enricher.stats().marked, 1);

    // The product appears in the PIM: the poll finds the asset linked to its identifier.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.product("NEW-1", "acme");
    let r = app.enricher.poll_products_once().await.unwrap();
    assert_eq!((r.changed, r.enqueued), (1, 1), "{r:?}");
    app.drain().await;
    let patches = app.aem.patches();
    assert_eq!(patches.len(), 2);
    assert_eq!(
        serde_json::from_str::<Value>(&patches[1].body).unwrap(),
        json!([
            {"op": "add", "path": "/wknd-skuid", "value": "NEW-1"},
            {"op": "add", "path": "/wknd-suppliername", "value": "acme"},
            {"op": "add", "path": "/pim:name", "value": "NEW-1 name"},
            {"op": "remove", "path": "/pim:status"}
        ]),
        "the values, in the locale asked for, and the marker cleared"
    );
    let meta = app.aem.metadata("urn:aaid:aem:3333").unwrap();
    assert!(!meta.contains_key("pim:status"));
}

/// The PATCH that clears the marker is applied but its answer lost (503): the client sends it
/// again, and AEM refuses the `remove` of a member already gone (400). The asset holds what
/// was wanted, so the enrichment is done — not dead-lettered as refused.
#[tokio::test]
async fn a_removal_applied_before_its_answer_was_lost_is_not_a_failure() {
    let mut config = tutorial_config();
    config.unknown_product = UnknownProduct::Mark;
    config.product_poll.overlap_secs = 0;
    let app = start(Options::new(config)).await;
    assert!(app.enricher.poll_products_once().await.unwrap().started);
    app.asset("urn:aaid:aem:4444", "LATE-1.jpg");
    let e = app.aem.processing_completed("urn:aaid:aem:4444").unwrap();
    app.deliver(vec![e], DeliveryMode::Single).await;
    app.drain().await;
    assert_eq!(
        app.aem.metadata("urn:aaid:aem:4444").unwrap()["pim:status"],
        "not_found"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.product("LATE-1", "acme");
    assert_eq!(app.enricher.poll_products_once().await.unwrap().enqueued, 1);
    app.aem
        .fail_next(AemEndpoint::Metadata, &[Fault::lost_answer(503)]);
    app.drain().await;
    let statuses: Vec<u16> = app.aem.patches().iter().map(|p| p.status).collect();
    assert_eq!(statuses[1..], [503, 400], "{statuses:?}");
    let meta = app.aem.metadata("urn:aaid:aem:4444").unwrap();
    assert_eq!(meta["wknd-skuid"], "LATE-1");
    assert!(!meta.contains_key("pim:status"));
    assert!(
        app.dead_letters().await.is_empty(),
        "{:?}",
        app.dead_letters().await
    );
    assert_eq!(app.store.backlog().await.unwrap().pending, 0);
}

#[tokio::test]
async fn a_foreign_host_is_a_dead_letter_and_never_called() {
    let app = start(Options::new(tutorial_config())).await;
    app.product("SKU-1", "mock-supplier");
    app.asset("urn:aaid:aem:4444", "SKU-1.jpg");
    let mut event = app.aem.processing_completed("urn:aaid:aem:4444").unwrap();
    event["data"]["repositoryMetadata"]["repo:repositoryId"] =
        json!("author-p666-e666.evil.example.com");
    app.deliver(vec![event], DeliveryMode::Single).await;
    app.drain().await;
    assert!(app.aem.requests().is_empty(), "no call to any host");
    assert_eq!(app.aem.ims_tokens_issued(), 0, "not even a token");
    assert_eq!(app.product_reads(), 0, "nor a product read");
    let dl = app.dead_letters().await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].reason.kind, "enrichment_host_not_allowed");
    assert!(
        dl[0]
            .reason
            .message
            .contains("author-p666-e666.evil.example.com"),
        "{}",
        dl[0].reason.message
    );
    assert_eq!(dl[0].dam_id.as_deref(), Some("urn:aaid:aem:4444"));
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_then_succeeds() {
    let app = start(Options::new(tutorial_config())).await;
    app.product("SKU-1", "s1");
    app.product("SKU-2", "s2");
    app.asset("urn:aaid:aem:5551", "SKU-1.jpg");
    app.asset("urn:aaid:aem:5552", "SKU-2.jpg");
    let e = app.aem.processing_completed("urn:aaid:aem:5551").unwrap();
    app.deliver(vec![e], DeliveryMode::Single).await;
    app.drain().await;
    assert_eq!(app.aem.ims_tokens_issued(), 1);

    // IMS revokes the token: the next AEM call gets 401, the client renews once and retries.
    app.aem.expire_tokens();
    let e = app.aem.processing_completed("urn:aaid:aem:5552").unwrap();
    app.deliver(vec![e], DeliveryMode::Single).await;
    app.drain().await;
    assert_eq!(app.aem.ims_tokens_issued(), 2, "one refresh");
    let statuses: Vec<(String, u16)> = app
        .aem
        .requests()
        .iter()
        .filter(|r| r.asset_id == "urn:aaid:aem:5552")
        .map(|r| (r.method.clone(), r.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("GET".to_owned(), 401),
            ("GET".to_owned(), 200),
            ("PATCH".to_owned(), 200)
        ]
    );
    assert_eq!(
        app.aem.metadata("urn:aaid:aem:5552").unwrap()["wknd-skuid"],
        "SKU-2"
    );
    assert!(app.dead_letters().await.is_empty());
}

#[tokio::test]
async fn transient_failures_are_retried_and_permanent_ones_dead_lettered() {
    let app = start(Options::new(tutorial_config())).await;
    app.product("SKU-1", "s1");
    app.product("SKU-2", "s2");
    app.product("SKU-3", "s3");
    app.asset("urn:aaid:aem:6661", "SKU-1.jpg");
    app.asset("urn:aaid:aem:6663", "SKU-3.jpg");

    // AEM unavailable (503 on the GET and its one client retry): back to the inbox.
    app.aem.fail_next(
        AemEndpoint::Metadata,
        &[Fault::status(503), Fault::status(503)],
    );
    let e = app.aem.processing_completed("urn:aaid:aem:6661").unwrap();
    app.deliver(vec![e], DeliveryMode::Single).await;
    let (n, _) = app.engine.drain_once("w").await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(app.aem.patches().len(), 0);
    let backlog = app.store.backlog().await.unwrap();
    assert_eq!(backlog.pending, 1, "waiting for its retry: {backlog:?}");
    assert_eq!(app.enricher.stats().retrying, 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.drain().await;
    assert_eq!(app.aem.patches().len(), 1, "the retry succeeded");
    assert!(app.dead_letters().await.is_empty());

    // An asset AEM does not have (404): dead letter, with the reason.
    let mut e = app.aem.processing_completed("urn:aaid:aem:6661").unwrap();
    e["data"]["assetId"] = json!("urn:aaid:aem:missing");
    e["data"]["repositoryMetadata"]["repo:name"] = json!("SKU-2.jpg");
    app.deliver(vec![e], DeliveryMode::Single).await;
    app.drain().await;
    // 403: the credential may not write here.
    app.aem
        .fail_next(AemEndpoint::Metadata, &[Fault::status(403)]);
    let e = app.aem.processing_completed("urn:aaid:aem:6663").unwrap();
    app.deliver(vec![e], DeliveryMode::Single).await;
    app.drain().await;
    let kinds: Vec<String> = app
        .dead_letters()
        .await
        .into_iter()
        .map(|d| d.reason.kind)
        .collect();
    assert_eq!(
        kinds,
        vec!["enrichment_asset_not_found", "enrichment_forbidden"]
    );
    assert_eq!(app.store.backlog().await.unwrap().pending, 0);
}

#[tokio::test]
async fn a_product_change_in_the_pim_re_enriches_its_assets_only() {
    let mut config = tutorial_config();
    config.product_poll.overlap_secs = 0;
    let app = start(Options::new(config)).await;
    app.product("SKU-A", "old-supplier");
    app.product("SKU-B", "b-supplier");
    app.asset("urn:aaid:aem:a1", "SKU-A.jpg");
    app.asset("urn:aaid:aem:a2", "SKU-A.tif");
    app.asset("urn:aaid:aem:b1", "SKU-B.jpg");
    let events = ["urn:aaid:aem:a1", "urn:aaid:aem:a2", "urn:aaid:aem:b1"]
        .map(|id| app.aem.processing_completed(id).unwrap())
        .to_vec();
    app.deliver(events, DeliveryMode::Batch).await;
    app.drain().await;
    assert_eq!(app.aem.patches().len(), 3);
    let links = app
        .store
        .asset_codes(LINKS_FAMILY, &["sku-a".to_owned(), "sku-b".to_owned()])
        .await
        .unwrap();
    assert!(
        links["sku-a"].contains("urn:aaid:aem:a1") && links["sku-a"].contains("urn:aaid:aem:a2"),
        "stored under the identifier in lower case: {links:?}"
    );
    assert!(app.enricher.poll_products_once().await.unwrap().started);

    // The supplier of SKU-A changes in the PIM (a second later: `updated` has seconds).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let uuid = app.akeneo.product_by_identifier("SKU-A").unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    app.akeneo
        .add_product(json!({
            "uuid": uuid,
            "values": {"supplier": [{"locale": null, "scope": null, "data": "new-supplier"}]}
        }))
        .unwrap();
    let r = app.enricher.poll_products_once().await.unwrap();
    assert_eq!((r.products, r.changed, r.enqueued), (1, 1, 2), "{r:?}");
    let backlog = app.store.backlog().await.unwrap();
    assert_eq!(
        backlog.pending, 2,
        "durable in the inbox ({ENRICHMENT_FAMILY})"
    );
    app.drain().await;
    let patches = app.aem.patches();
    assert_eq!(patches.len(), 5, "the two assets of SKU-A, not SKU-B's");
    for p in &patches[3..] {
        assert!(p.asset_id.starts_with("urn:aaid:aem:a"));
        assert_eq!(
            serde_json::from_str::<Value>(&p.body).unwrap(),
            json!([{"op": "add", "path": "/wknd-suppliername", "value": "new-supplier"}])
        );
    }

    // Polling again finds the same product (overlap, second granularity) but nothing to do.
    let r = app.enricher.poll_products_once().await.unwrap();
    assert_eq!(r.enqueued, 0, "{r:?}");
    // A change that does not touch the enrichment values re-enriches nothing.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.akeneo
        .add_product(json!({
            "uuid": uuid,
            "values": {"name": [{"locale": "en_US", "scope": null, "data": "renamed"}]}
        }))
        .unwrap();
    let r = app.enricher.poll_products_once().await.unwrap();
    assert_eq!((r.products, r.enqueued), (1, 0), "{r:?}");
}

fn pim_family() -> (FamilyStructure, FamilyMapping) {
    let mut title = AssetAttribute::new("title", AttributeType::Text);
    title.value_per_locale = false;
    let structure = FamilyStructure {
        code: AEM_FAMILY.into(),
        attribute_as_main_media: None,
        attributes: [title]
            .into_iter()
            .map(|a| (a.code.clone(), a))
            .collect::<BTreeMap<_, _>>(),
    };
    let mapping = FamilyMapping {
        asset_code: "{{ dam_id }}".into(),
        values: vec![ValueRule {
            attribute: "title".into(),
            from: Some("/assetMetadata/dc:title".into()),
            ..ValueRule::default()
        }],
    };
    (structure, mapping)
}

#[tokio::test]
async fn both_directions_on_one_family_without_ping_pong() {
    let app = start(Options {
        enrichment: tutorial_config(),
        pim_families: vec![pim_family()],
        drop_echoes_at_ingest: false,
    })
    .await;
    app.product("SKU-1", "mock-supplier");
    app.asset("urn:aaid:aem:7777", "SKU-1.jpg");
    app.aem
        .register_webhook(Some((app.webhook_url.clone(), DeliveryMode::Single)));
    app.aem.processing_completed("urn:aaid:aem:7777").unwrap();
    wait_for("the event", || app.aem.deliveries().len() == 1).await;
    app.akeneo.reset_log();
    app.drain().await;
    // DAM → PIM: the asset went to Akeneo's Asset Manager; PIM → DAM: the metadata was patched.
    let code = assetbridge_core::sanitize_code("urn:aaid:aem:7777");
    assert!(
        app.akeneo.asset(AEM_FAMILY, &code).is_some(),
        "written to the PIM"
    );
    assert_eq!(app.aem.patches().len(), 1);
    let pim_writes = |app: &App| {
        app.akeneo
            .request_log()
            .iter()
            .filter(|r| r.method.as_str() != "GET")
            .count()
    };
    let writes = pim_writes(&app);
    assert!(writes >= 1);

    // The echo of the PATCH goes nowhere: no AEM call, no PIM write.
    wait_for("the echo", || app.aem.deliveries().len() == 2).await;
    let aem_calls = app.aem.requests().len();
    let report = app.engine.drain_inbox("w").await.unwrap();
    assert_eq!(
        report.seen, 0,
        "the echo never reaches the DAM → PIM writer: {report:?}"
    );
    assert_eq!(app.enricher.stats().echoes, 1);
    assert_eq!(app.aem.requests().len(), aem_calls);
    assert_eq!(
        pim_writes(&app),
        writes,
        "the echo writes nothing to the PIM"
    );

    // A user's edit in AEM still flows DAM → PIM (and costs enrichment one GET, no PATCH).
    let mut edit = app.aem.envelope(
        "aem.assets.asset.metadata_updated",
        json!({
            "assetId": "urn:aaid:aem:7777",
            "repositoryMetadata": {"repo:repositoryId": HOST, "repo:name": "SKU-1.jpg"},
            "assetMetadata": {"dc:title": "Front view", "event:updated": {"dc:title": "Front view"}},
        }),
    );
    edit["data"]["assetMetadata"]["wknd-skuid"] = json!("SKU-1");
    app.deliver(vec![edit], DeliveryMode::Single).await;
    let report = app.engine.drain_inbox("w").await.unwrap();
    assert_eq!((report.seen, report.updated), (1, 1), "{report:?}");
    assert_eq!(app.aem.patches().len(), 1, "no PATCH: the values are there");
    let asset = app.akeneo.asset(AEM_FAMILY, &code).unwrap();
    assert_eq!(asset["values"]["title"][0]["data"], "Front view");
    assert!(app.dead_letters().await.is_empty());
}

#[tokio::test]
async fn an_enrichment_failure_does_not_hold_up_the_dam_to_pim_write() {
    let app = start(Options {
        enrichment: tutorial_config(),
        pim_families: vec![pim_family()],
        drop_echoes_at_ingest: false,
    })
    .await;
    app.product("SKU-1", "mock-supplier");
    app.asset("urn:aaid:aem:8888", "SKU-1.jpg");
    app.aem.fail_next(
        AemEndpoint::Metadata,
        &[Fault::status(503), Fault::status(503)],
    );
    let e = app.aem.processing_completed("urn:aaid:aem:8888").unwrap();
    app.deliver(vec![e], DeliveryMode::Single).await;
    let (n, report) = app.engine.drain_once("w").await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(report.created, 1, "written to the PIM at once: {report:?}");
    // The enrichment waits apart, in its own family, and succeeds on the next round.
    let backlog = app.store.backlog().await.unwrap();
    assert_eq!(backlog.pending, 1, "{backlog:?}");
    app.drain().await;
    assert_eq!(app.aem.patches().len(), 1);
    assert_eq!(app.enricher.stats().reenrich_enqueued, 1);
    assert!(app.dead_letters().await.is_empty());
}

/// Changes as another source (a queue) would store them still enrich when their record carries
/// the event type.
#[tokio::test]
async fn changes_from_any_source_with_the_event_type_are_enriched() {
    let app = start(Options::new(tutorial_config())).await;
    app.product("SKU-9", "nine");
    app.asset("urn:aaid:aem:9999", "SKU-9.jpg");
    let event = app.aem.processing_completed("urn:aaid:aem:9999").unwrap();
    let mut record = event["data"].clone();
    record["_event_type"] = event["type"].clone();
    let change = AssetChange {
        family: "from_a_queue".into(),
        event_id: Some("q-1".into()),
        source: "amqp".into(),
        kind: assetbridge_core::ChangeKind::Upsert {
            asset: assetbridge_core::DamAsset {
                id: "urn:aaid:aem:9999".into(),
                updated_at: chrono_now(),
                record,
            },
        },
    };
    app.store.enqueue(&[change]).await.unwrap();
    app.drain().await;
    assert_eq!(
        app.aem.metadata("urn:aaid:aem:9999").unwrap()["wknd-skuid"],
        "SKU-9"
    );
    assert!(app.dead_letters().await.is_empty(), "not an unknown family");
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// The engine's futures run on spawned tasks in the binary: they must be `Send`.
#[allow(dead_code)]
fn futures_are_send(engine: &Engine, enricher: &Enricher) {
    fn send<T: Send>(_: T) {}
    send(engine.drain_inbox("w"));
    send(engine.run_worker("w", Duration::from_secs(1), CancellationToken::new()));
    send(enricher.poll_products_once());
    send(enricher.run_product_poll(CancellationToken::new()));
}

/// A PIM outage while reading products is transient: retried, not dead-lettered.
#[tokio::test]
async fn a_pim_outage_is_retried_not_dead_lettered() {
    let app = start(Options::new(tutorial_config())).await;
    app.product("SKU-1", "s1");
    app.asset("urn:aaid:aem:7772", "SKU-1.jpg");
    let e = app.aem.processing_completed("urn:aaid:aem:7772").unwrap();
    app.deliver(vec![e], DeliveryMode::Single).await;
    app.akeneo.set_outage(true);
    app.engine.drain_once("w").await.unwrap();
    app.akeneo.set_outage(false);
    assert!(
        app.dead_letters().await.is_empty(),
        "{:?}",
        app.dead_letters().await
    );
    assert_eq!(app.store.backlog().await.unwrap().pending, 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.drain().await;
    assert_eq!(
        app.aem.metadata("urn:aaid:aem:7772").unwrap()["wknd-skuid"],
        "SKU-1"
    );
}

/// Metadata keys holding `/` and `~` are escaped per RFC 6901 in the JSON Patch paths.
#[tokio::test]
async fn target_keys_with_slash_and_tilde_are_escaped() {
    let mut config = EnrichmentConfig::new(vec![
        FieldRule::new("sku", "pim/sku"),
        FieldRule::new("supplier", "pim~supplier"),
    ]);
    config.product_key.strip_extension = true;
    let app = start(Options::new(config)).await;
    app.product("SKU-1", "s1");
    app.asset("urn:aaid:aem:7773", "SKU-1.jpg");
    let e = app.aem.processing_completed("urn:aaid:aem:7773").unwrap();
    app.deliver(vec![e], DeliveryMode::Single).await;
    app.drain().await;
    let body: Value = serde_json::from_str(&app.aem.patches()[0].body).unwrap();
    assert_eq!(
        body,
        json!([
            {"op": "add", "path": "/pim~1sku", "value": "SKU-1"},
            {"op": "add", "path": "/pim~0supplier", "value": "s1"}
        ])
    );
    let meta = app.aem.metadata("urn:aaid:aem:7773").unwrap();
    assert_eq!(meta["pim/sku"], "SKU-1");
    assert_eq!(meta["pim~supplier"], "s1");
    // Idempotent: a second event reads and writes nothing.
    let mut e = app.aem.processing_completed("urn:aaid:aem:7773").unwrap();
    e["eventid"] = json!("again");
    e["event_id"] = json!("again");
    app.deliver(vec![e], DeliveryMode::Single).await;
    app.drain().await;
    assert_eq!(app.aem.patches().len(), 1);
}

/// Our echo arriving while a user's edit of the same asset still waits in the inbox does not take
/// its place (the inbox keeps one pending change per asset): the Adobe webhook does not store an
/// echo when it knows enrichment's keys, as `assetbridge run` wires it. Before: the echo replaced
/// the edit, was then dropped as an echo, and the edit never reached the PIM.
#[tokio::test]
async fn an_echo_does_not_take_the_place_of_a_pending_user_edit() {
    let app = start(Options {
        enrichment: tutorial_config(),
        pim_families: vec![pim_family()],
        drop_echoes_at_ingest: true,
    })
    .await;
    app.product("SKU-1", "mock-supplier");
    app.asset("urn:aaid:aem:7777", "SKU-1.jpg");
    let e = app.aem.processing_completed("urn:aaid:aem:7777").unwrap();
    app.deliver(vec![e], DeliveryMode::Single).await;
    app.drain().await;
    assert_eq!(app.aem.patches().len(), 1);
    let code = assetbridge_core::sanitize_code("urn:aaid:aem:7777");
    assert!(app.akeneo.asset(AEM_FAMILY, &code).is_some());

    // A user edits the title; before a worker takes the edit, the echo of an enrichment write
    // arrives (changed keys: enrichment's own fields only).
    let repo = json!({"repo:repositoryId": HOST, "repo:name": "SKU-1.jpg"});
    let edit = app.aem.envelope(
        "aem.assets.asset.metadata_updated",
        json!({
            "assetId": "urn:aaid:aem:7777",
            "repositoryMetadata": repo,
            "assetMetadata": {"dc:title": "Front view", "event:updated": {"dc:title": "Front view"}},
        }),
    );
    let echo = app.aem.envelope(
        "aem.assets.asset.metadata_updated",
        json!({
            "assetId": "urn:aaid:aem:7777",
            "repositoryMetadata": repo,
            "assetMetadata": {
                "wknd-skuid": "SKU-1", "wknd-suppliername": "mock-supplier",
                "event:updated": {"wknd-skuid": "SKU-1", "wknd-suppliername": "mock-supplier"},
            },
        }),
    );
    app.deliver(vec![edit], DeliveryMode::Single).await;
    app.deliver(vec![echo], DeliveryMode::Single).await;
    let backlog = app.store.backlog().await.unwrap();
    assert_eq!(backlog.pending, 1, "the edit waits, alone: {backlog:?}");

    let report = app.engine.drain_inbox("w").await.unwrap();
    assert_eq!((report.seen, report.updated), (1, 1), "{report:?}");
    let asset = app.akeneo.asset(AEM_FAMILY, &code).unwrap();
    assert_eq!(asset["values"]["title"][0]["data"], "Front view");
    assert_eq!(app.aem.patches().len(), 1, "no PATCH: the values are there");
    assert!(app.dead_letters().await.is_empty());
}
