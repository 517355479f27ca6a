//! Family routing wired: one DAM listing (no family filter) feeding two families through the
//! routing table, assets no route matches skipped and counted; a reconciliation of the routed
//! listing; a webhook message without a family routed into the right families. Emulators over
//! real HTTP, SQLite state in a temporary directory.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use assetbridge_core::mapping::CompiledMapping;
use assetbridge_core::routing::{CompiledRoutes, RouteConfig};
use assetbridge_core::sanitize_code;
use assetbridge_dam::rest::RestDam;
use assetbridge_emulators::akeneo::{AkeneoEmulator, AkeneoEmulatorConfig, RunningEmulator};
use assetbridge_emulators::dam::{DamEmulator, DamEmulatorConfig, PagingStyle, RunningDam};
use assetbridge_engine::{
    DeletionPolicy, Engine, FamilyPlan, RoutedListing, SyncOptions, ROUTED_LISTING,
};
use secrecy::SecretString;
use serde_json::json;
use support::{dam_config, localhost, mapping, pim_client, sqlite_store, structure};

const FAMILIES: [&str; 2] = ["packshots", "lifestyle"];

struct App {
    dam: DamEmulator,
    akeneo: AkeneoEmulator,
    engine: Engine,
    routes: Arc<CompiledRoutes>,
    _servers: (RunningDam, RunningEmulator),
    _dir: tempfile::TempDir,
}

/// Packshots and lifestyle assets go to their families; the DAM's third type, `misc`, matches
/// no route (and there is no default).
fn routes() -> Arc<CompiledRoutes> {
    let cfg: RouteConfig = serde_json::from_value(json!({"routes": [
        {"family": "packshots", "when": {"pointer": "/type", "equals": "packshots"}},
        {"family": "lifestyle", "when": {"pointer": "/type", "equals": "lifestyle"}},
    ]}))
    .unwrap();
    Arc::new(CompiledRoutes::new(&cfg).unwrap())
}

impl App {
    async fn start(assets: usize, options: SyncOptions) -> App {
        let dam = DamEmulator::new(DamEmulatorConfig {
            assets,
            paging: PagingStyle::CursorToken,
            families: vec!["packshots".into(), "lifestyle".into(), "misc".into()],
            ..DamEmulatorConfig::default()
        });
        let dam_server = dam.serve(localhost()).await.unwrap();
        let akeneo = AkeneoEmulator::new(AkeneoEmulatorConfig::default());
        let akeneo_server = akeneo.serve(localhost()).await.unwrap();
        let prefix = format!("{}/files/", dam_server.base_url);
        for f in FAMILIES {
            let mut s = structure(&prefix);
            s.code = f.to_owned();
            akeneo.add_asset_family(s);
        }
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let pim = pim_client(&akeneo_server.base_url);
        let rest = RestDam::new(dam_config(&dam_server.base_url)).unwrap();
        let mut plans = Vec::new();
        for f in FAMILIES {
            let s = pim.family_structure(f).await.unwrap();
            plans.push(FamilyPlan {
                code: f.to_owned(),
                // As the binary wires it: the family's own listing would be filtered, but a
                // routed family is never polled through it.
                query: rest.family_query(f),
                mapping: Arc::new(CompiledMapping::new(&mapping(), Some(&s)).unwrap()),
            });
        }
        let routes = routes();
        let engine =
            Engine::new(pim, store, rest, plans, options).with_routed_listing(RoutedListing {
                routes: routes.clone(),
                query: Vec::new(),
            });
        App {
            dam,
            akeneo,
            engine,
            routes,
            _servers: (dam_server, akeneo_server),
            _dir: dir,
        }
    }

    fn live_ids(&self, family: &str) -> BTreeSet<String> {
        self.dam
            .ordered_ids(None, Some(family))
            .into_iter()
            .filter(|id| self.dam.get(id).unwrap()["deleted"] == json!(false))
            .collect()
    }

    fn pim_codes(&self, family: &str) -> BTreeSet<String> {
        self.akeneo
            .assets(family)
            .iter()
            .map(|a| a["code"].as_str().unwrap().to_owned())
            .collect()
    }

    fn pim_writes(&self) -> usize {
        self.akeneo
            .request_log()
            .iter()
            .filter(|r| r.method != "GET" && !r.path.contains("/oauth/"))
            .count()
    }
}

fn codes(ids: &BTreeSet<String>) -> BTreeSet<String> {
    ids.iter().map(|id| sanitize_code(id)).collect()
}

#[tokio::test]
async fn one_listing_feeds_the_routed_families_and_counts_the_unrouted() {
    let app = App::start(
        420,
        SyncOptions {
            deletions: DeletionPolicy::Delete,
            ..SyncOptions::default()
        },
    )
    .await;
    let (packshots, lifestyle, misc) = (
        app.live_ids("packshots"),
        app.live_ids("lifestyle"),
        app.live_ids("misc"),
    );
    assert!(!packshots.is_empty() && !lifestyle.is_empty() && !misc.is_empty());
    assert!(app.engine.is_routed("packshots") && app.engine.is_routed("lifestyle"));

    let r = app.engine.sync_routed(false).await.unwrap();
    let by: std::collections::HashMap<_, _> = r.families.iter().cloned().collect();
    assert_eq!(by["packshots"].created as usize, packshots.len(), "{r:?}");
    assert_eq!(by["lifestyle"].created as usize, lifestyle.len(), "{r:?}");
    assert_eq!(r.unrouted.skipped as usize, misc.len(), "{r:?}");
    assert_eq!(r.unrouted.seen, r.unrouted.skipped);
    assert_eq!(by["packshots"].failed + by["lifestyle"].failed, 0);
    assert_eq!(app.pim_codes("packshots"), codes(&packshots));
    assert_eq!(app.pim_codes("lifestyle"), codes(&lifestyle));

    // One listing, unfiltered: every DAM asset served once, ⌈420 / 100⌉ pages.
    let stats = app.dam.stats();
    assert_eq!(stats.items_served, 420);
    assert_eq!(stats.list_requests, 5);
    // The listing's own cursor; the families have none.
    assert!(app.engine.cursor(ROUTED_LISTING).await.unwrap().is_some());
    for f in FAMILIES {
        assert!(app.engine.cursor(f).await.unwrap().is_none());
    }

    // Nothing changed: no write. Then a deletion of a routed asset and of a misc one.
    app.akeneo.reset_log();
    let again = app.engine.sync_routed(false).await.unwrap();
    assert_eq!(app.pim_writes(), 0, "{again:?}");
    let gone_packshot = packshots.iter().next().unwrap().clone();
    let gone_misc = misc.iter().next().unwrap().clone();
    app.dam.delete(&[gone_packshot.clone(), gone_misc]);
    let r = app.engine.sync_routed(false).await.unwrap();
    let by: std::collections::HashMap<_, _> = r.families.iter().cloned().collect();
    assert_eq!(by["packshots"].deleted, 1, "{r:?}");
    assert_eq!(by["lifestyle"].deleted, 0, "{r:?}");
    assert_eq!(
        r.unrouted.kept, 1,
        "a deletion no routed family holds: {r:?}"
    );
    assert!(app
        .akeneo
        .asset("packshots", &sanitize_code(&gone_packshot))
        .is_none());

    // An asset moving to the other family (its `type` changes in the DAM): written there; the
    // reconciliation of the routed listing then finds it absent from its old family.
    let moving = lifestyle.iter().next().unwrap().clone();
    app.dam.set(&moving, &json!({"type": "packshots"})).unwrap();
    let r = app.engine.sync_routed(false).await.unwrap();
    let by: std::collections::HashMap<_, _> = r.families.iter().cloned().collect();
    assert_eq!(by["packshots"].created, 1, "{r:?}");
    let code = sanitize_code(&moving);
    assert!(app.akeneo.asset("lifestyle", &code).is_some());
    let rec = app.engine.reconcile_routed().await.unwrap();
    assert_eq!(rec.families.len(), 2);
    let life = rec
        .families
        .iter()
        .find(|f| f.family == "lifestyle")
        .unwrap();
    let packs = rec
        .families
        .iter()
        .find(|f| f.family == "packshots")
        .unwrap();
    assert!(life.complete && packs.complete);
    assert_eq!(life.deleted_in_dam, 1, "{life:#?}");
    assert_eq!(life.repairs[0].code, code);
    assert_eq!(life.report.deleted, 1);
    assert_eq!(
        (packs.deleted_in_dam, packs.drift, packs.pim_only),
        (0, 0, 0),
        "{packs:#?}"
    );
    assert_eq!(rec.unrouted.skipped as usize, misc.len() - 1);
    assert!(app.akeneo.asset("lifestyle", &code).is_none());
    assert!(app.akeneo.asset("packshots", &code).is_some());

    // The dry run of a routed family reads its share of the routed listing.
    let plan = app.engine.family("packshots").unwrap().clone();
    let entries = app.engine.plan_family(&plan, true).await.unwrap();
    let listed: BTreeSet<String> = entries.iter().filter_map(|e| e.code.clone()).collect();
    assert_eq!(listed, app.pim_codes("packshots"));
}

/// One HTTP/1.1 POST over a plain TCP connection; returns the status and the body.
async fn post(addr: std::net::SocketAddr, path: &str, key: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Api-Key: {key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn a_webhook_message_without_a_family_is_routed() {
    use assetbridge_sources::message::MessageShape;
    use assetbridge_sources::webhook::{
        ApiKeyAuth, GenericWebhookConfig, WebhookAuth, WebhookConfig, WebhookServer,
    };
    let app = App::start(30, SyncOptions::default()).await;
    let mut shape = MessageShape::routed(app.routes.clone());
    shape.items_pointer = "/assets".into();
    let config = WebhookConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        generic: vec![GenericWebhookConfig {
            path: "/hooks/dam".into(),
            shape,
            auth: WebhookAuth::ApiKey(ApiKeyAuth {
                header: "X-Api-Key".into(),
                key: SecretString::from("k3y".to_owned()),
            }),
            event_id_header: None,
            source: "webhook".into(),
        }],
        ..WebhookConfig::default()
    };
    let server = WebhookServer::bind(&config, app.engine.store().clone())
        .await
        .unwrap();
    let addr = server.local_addr();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));

    // The DAM's own records, as its webhook would send them.
    let pick = |family: &str| app.live_ids(family).into_iter().next().unwrap();
    let (p, l, m) = (pick("packshots"), pick("lifestyle"), pick("misc"));
    let body = json!({"assets": [app.dam.get(&p).unwrap(), app.dam.get(&l).unwrap(), app.dam.get(&m).unwrap()]});
    let (status, answer) = post(addr, "/hooks/dam", "k3y", &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["accepted"], json!(2), "{answer}");
    assert_eq!(answer["skipped"], json!(1), "{answer}");

    let r = app.engine.drain_inbox("test").await.unwrap();
    assert_eq!((r.created, r.failed), (2, 0), "{r:?}");
    assert_eq!(
        app.pim_codes("packshots"),
        [sanitize_code(&p)].into_iter().collect()
    );
    assert_eq!(
        app.pim_codes("lifestyle"),
        [sanitize_code(&l)].into_iter().collect()
    );
    stop.cancel();
    task.await.unwrap().unwrap();
}
