//! A DAM emulator and an Akeneo emulator over real HTTP on 127.0.0.1, a SQLite state file and
//! the real clients in between (the pattern of `tests/sync.rs`), for the tests of deletion
//! marks, the dry run and the product filter. One family, `packshots`, whose structure has a
//! boolean `archived` and a text `status` attribute besides the mapped ones.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use assetbridge_akeneo::{AkeneoClient, AkeneoConfig};
use assetbridge_core::mapping::{CompiledMapping, FamilyMapping, ValueRule};
use assetbridge_core::{AssetAttribute, AttributeType, FamilyStructure};
use assetbridge_dam::rest::{DamAuth, Paging, RestDam, RestDamConfig};
use assetbridge_emulators::akeneo::{AkeneoEmulator, AkeneoEmulatorConfig, RunningEmulator};
use assetbridge_emulators::dam::{DamEmulator, DamEmulatorConfig, PagingStyle, RunningDam, TAGS};
use assetbridge_engine::{Engine, FamilyPlan, SyncOptions, SyncReport};
use assetbridge_store::Store;
use secrecy::SecretString;

pub const FAMILY: &str = "packshots";

pub struct TestApp {
    pub dam: DamEmulator,
    pub akeneo: AkeneoEmulator,
    pub engine: Engine,
    pub structure: Arc<FamilyStructure>,
    _dam_server: RunningDam,
    _akeneo_server: RunningEmulator,
    _dir: tempfile::TempDir,
}

pub fn structure(prefix: &str) -> FamilyStructure {
    let mut media = AssetAttribute::new("media", AttributeType::MediaLink);
    media.prefix = Some(prefix.to_owned());
    let mut title = AssetAttribute::new("title", AttributeType::Text);
    title.value_per_locale = true;
    let mut tags = AssetAttribute::new("tags", AttributeType::MultipleOptions);
    tags.options = Some(TAGS.iter().map(|s| s.to_string()).collect());
    let width = AssetAttribute::new("width", AttributeType::Number);
    let sku = AssetAttribute::new("sku", AttributeType::Text);
    let archived = AssetAttribute::new("archived", AttributeType::Boolean);
    let status = AssetAttribute::new("status", AttributeType::Text);
    FamilyStructure {
        code: FAMILY.to_owned(),
        attribute_as_main_media: Some("media".into()),
        attributes: [media, title, tags, width, sku, archived, status]
            .into_iter()
            .map(|a| (a.code.clone(), a))
            .collect(),
    }
}

pub fn rule(attribute: &str, from: &str, locale: Option<&str>) -> ValueRule {
    ValueRule {
        attribute: attribute.into(),
        from: Some(from.into()),
        locale: locale.map(str::to_owned),
        ..ValueRule::default()
    }
}

pub fn mapping() -> FamilyMapping {
    FamilyMapping {
        asset_code: "{{ dam_id }}".into(),
        values: vec![
            rule("media", "/url", None),
            rule("title", "/metadata/title", Some("en_US")),
            rule("tags", "/metadata/tags", None),
            rule("width", "/metadata/width", None),
            rule("sku", "/metadata/sku", None),
        ],
    }
}

/// A plan adjustment for [`TestApp::start_with`]: asset codes from the file name (`{{ name }}`),
/// with the mapping compiled without the structure, so only the rules that need none of it
/// (`title`, `sku`).
pub fn codes_from_names(mut plan: FamilyPlan) -> FamilyPlan {
    let mut m = mapping();
    m.asset_code = "{{ name }}".into();
    m.values
        .retain(|r| ["title", "sku"].contains(&r.attribute.as_str()));
    plan.mapping = Arc::new(CompiledMapping::new(&m, None).unwrap());
    plan
}

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A SQLite state file in `dir`.
pub async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
    Store::open(&format!(
        "sqlite://{}",
        dir.path().join("state.db").display()
    ))
    .await
    .unwrap()
}

/// The Akeneo client with the emulator's credentials.
pub fn pim_client(base_url: &str) -> AkeneoClient {
    AkeneoClient::new(AkeneoConfig::new(
        base_url.to_owned(),
        "assetbridge",
        "secret",
        "admin",
        "admin",
    ))
    .unwrap()
}

/// The DAM client's configuration for the DAM emulator: bearer token, `type` as the family
/// filter, cursor paging.
pub fn dam_config(base_url: &str) -> RestDamConfig {
    let mut dam_cfg = RestDamConfig::new(base_url.to_owned());
    dam_cfg.auth = DamAuth::Bearer {
        token: SecretString::from("dam-token".to_owned()),
    };
    dam_cfg.family_param = Some("type".into());
    dam_cfg.paging = Paging::Cursor {
        cursor_param: "cursor".into(),
        next_cursor_pointer: "/next_cursor".into(),
    };
    dam_cfg
}

impl TestApp {
    pub async fn start(assets: usize, options: SyncOptions) -> Self {
        Self::start_with(assets, options, |p| p).await
    }

    /// `adjust` may change the family plan (e.g. add a product filter).
    pub async fn start_with(
        assets: usize,
        options: SyncOptions,
        adjust: impl FnOnce(FamilyPlan) -> FamilyPlan,
    ) -> Self {
        let dam = DamEmulator::new(DamEmulatorConfig {
            assets,
            paging: PagingStyle::CursorToken,
            families: vec![FAMILY.to_owned()],
            ..DamEmulatorConfig::default()
        });
        let dam_server = dam.serve(localhost()).await.unwrap();
        let akeneo = AkeneoEmulator::new(AkeneoEmulatorConfig::default());
        let akeneo_server = akeneo.serve(localhost()).await.unwrap();
        let prefix = format!("{}/files/", dam_server.base_url);
        akeneo.add_asset_family(structure(&prefix));
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let pim = pim_client(&akeneo_server.base_url);
        let rest = RestDam::new(dam_config(&dam_server.base_url)).unwrap();
        let s = pim.family_structure(FAMILY).await.unwrap();
        options.deletions.check_against(&s).unwrap();
        let plan = adjust(FamilyPlan {
            code: FAMILY.to_owned(),
            query: rest.family_query(FAMILY),
            mapping: Arc::new(CompiledMapping::new(&mapping(), Some(&s)).unwrap()),
        });
        let engine = Engine::new(pim, store, rest, vec![plan], options);
        Self {
            dam,
            akeneo,
            engine,
            structure: s,
            _dam_server: dam_server,
            _akeneo_server: akeneo_server,
            _dir: dir,
        }
    }

    pub async fn sync(&self) -> SyncReport {
        let mut total = SyncReport::default();
        for plan in self.engine.families() {
            total += &self.engine.sync_family(plan, false).await.unwrap();
        }
        total += &self.engine.drain_inbox("test").await.unwrap();
        total
    }

    /// Requests Akeneo received other than for a token, from its own request log.
    pub fn pim_requests(&self) -> Vec<assetbridge_emulators::akeneo::LoggedRequest> {
        self.akeneo
            .request_log()
            .into_iter()
            .filter(|r| !r.path.contains("/oauth/"))
            .collect()
    }

    /// Write requests Akeneo received.
    pub fn pim_writes(&self) -> usize {
        self.pim_requests()
            .iter()
            .filter(|r| r.method != "GET")
            .count()
    }
}
