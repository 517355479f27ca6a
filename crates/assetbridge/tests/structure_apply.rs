//! `assetbridge structure apply` through the real binary against the Akeneo emulator, then a
//! `sync` whose created assets Akeneo links to products by the applied naming convention and
//! product link rule:
//!
//! 1. the PIM has no asset family: a dry run writes nothing, `apply` creates the family, its
//!    attributes, options, main media, naming convention and link rule;
//! 2. a second `apply` sends zero PATCH (request log and `/_emulator/stats`);
//! 3. one option label changed in the configuration: exactly one PATCH;
//! 4. an immutable change (attribute type) is refused with the configuration line, nothing sent;
//! 5. `sync` creates the DAM's assets (named after SKUs): the naming convention fills
//!    `product_ref` from the main media's file name and the rule links each asset to its product
//!    (read from the emulator's products);
//! 6. an asset updated later (204) does not run the rule again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use assetbridge_emulators::akeneo::{
    AkeneoEmulator, AkeneoEmulatorConfig, ProductAttribute, RunningEmulator, ROUTE_OPTION,
};
use assetbridge_emulators::dam::{DamEmulator, DamEmulatorConfig, RunningDam};
use serde_json::{json, Value};
use tokio::process::Command;

const T: Duration = Duration::from_secs(120);
const FAMILY: &str = "packshots";

struct Env {
    dam: DamEmulator,
    akeneo: AkeneoEmulator,
    dam_url: String,
    akeneo_url: String,
    dir: tempfile::TempDir,
    _dam_server: RunningDam,
    _akeneo_server: RunningEmulator,
}

async fn start() -> Env {
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let dam = DamEmulator::new(DamEmulatorConfig {
        assets: 30,
        families: vec![FAMILY.to_owned()],
        skus: 1..=8,
        ..DamEmulatorConfig::default()
    });
    let dam_server = dam.serve(localhost).await.expect("DAM emulator");
    let akeneo = AkeneoEmulator::new(AkeneoEmulatorConfig::default());
    let akeneo_server = akeneo.serve(localhost).await.expect("Akeneo emulator");
    // The product side exists (products and their asset collection); the asset family does not.
    akeneo.add_product_attribute(ProductAttribute::asset_collection(FAMILY, FAMILY));
    Env {
        dam,
        akeneo,
        dam_url: dam_server.base_url.clone(),
        akeneo_url: akeneo_server.base_url.clone(),
        dir: tempfile::tempdir().expect("temp dir"),
        _dam_server: dam_server,
        _akeneo_server: akeneo_server,
    }
}

impl Env {
    /// The configuration, with `summer_label` as the `season.summer` option's label and
    /// `product_ref_type` as the type of `product_ref`.
    fn config(&self, summer_label: &str, product_ref_type: &str) -> PathBuf {
        let text = format!(
            r#"[state]
url = "sqlite://{state}"

[akeneo]
url = "{akeneo}"
client_id = "assetbridge"
secret = "secret"
username = "admin"
password = "admin"
option_writes_per_second = 100

[dam]
base_url = "{dam}"
auth = {{ type = "bearer", token = "dam-token" }}
family_param = "type"

[log]
level = "warn"

[[families]]
code = "{FAMILY}"
values = [
  {{ attribute = "url", from = "/url" }},
  {{ attribute = "title", from = "/metadata/title", locale = "en_US" }},
]

[families.structure]
labels = {{ en_US = "Packshots", fr_FR = "Photos produit" }}
attribute_as_main_media = "url"
naming_convention = {{ source = {{ property = "url" }}, pattern = "/(?P<product_ref>SKU-\\d+)_\\w+\\.jpg$/", abort_asset_creation_on_error = false }}

[[families.structure.attributes]]
code = "url"
type = "media_link"
prefix = "{dam}/files/"
media_type = "image"
labels = {{ en_US = "Image" }}

[[families.structure.attributes]]
code = "product_ref"
type = "{product_ref_type}"
labels = {{ en_US = "Product reference" }}

[[families.structure.attributes]]
code = "title"
type = "text"
value_per_locale = true
max_characters = 255

[[families.structure.attributes]]
code = "season"
type = "single_option"
options = [
  {{ code = "summer", labels = {{ en_US = "{summer_label}" }} }},
  {{ code = "winter", labels = {{ en_US = "Winter", fr_FR = "Hiver" }} }},
]

[[families.structure.product_link_rules]]
product_selections = [ {{ field = "sku", operator = "EQUALS", value = "{{{{product_ref}}}}" }} ]
assign_assets_to = [ {{ attribute = "{FAMILY}", mode = "add" }} ]
"#,
            state = self.dir.path().join("state.db").display(),
            akeneo = self.akeneo_url,
            dam = self.dam_url,
        );
        let path = self.dir.path().join("assetbridge.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    async fn run(&self, args: &[&str]) -> Output {
        let child = Command::new(env!("CARGO_BIN_EXE_assetbridge"))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("ASSETBRIDGE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn assetbridge");
        tokio::time::timeout(T, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`assetbridge {}` did not finish", args.join(" ")))
            .expect("wait for assetbridge")
    }

    async fn apply(&self, config: &Path, extra: &[&str]) -> Output {
        let cfg = config.display().to_string();
        let mut args = vec!["structure", "apply", "--config", cfg.as_str()];
        args.extend_from_slice(extra);
        self.run(&args).await
    }

    /// PATCH requests the emulator received since the log was last emptied.
    fn patches(&self) -> Vec<(&'static str, String)> {
        self.akeneo
            .request_log()
            .into_iter()
            .filter(|r| r.method == reqwest::Method::PATCH)
            .map(|r| (r.route, r.path))
            .collect()
    }

    /// The emulator's own counters over HTTP, as another process would read them.
    async fn stats_patch_count(&self) -> u64 {
        let stats: Value = reqwest::get(format!("{}/_emulator/stats", self.akeneo_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["requests"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(route, _)| route.starts_with("PATCH "))
            .flat_map(|(_, by_status)| by_status.as_object().unwrap().values())
            .map(|n| n.as_u64().unwrap())
            .sum()
    }

    fn reset(&self) {
        self.akeneo.reset_log();
        self.akeneo.reset_counters();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Whether `out` has a line `  <item>  …  <outcome>`.
fn has_line(out: &str, item: &str, outcome: &str) -> bool {
    out.lines().any(|l| {
        let l = l.trim();
        l.starts_with(item) && l[item.len()..].trim() == outcome
    })
}

/// The SKU of a DAM record (`metadata.sku`, also in its file name).
fn sku_of(record: &Value) -> String {
    record["metadata"]["sku"].as_str().unwrap().to_owned()
}

fn collection(akeneo: &AkeneoEmulator, sku: &str) -> Vec<String> {
    akeneo.product_by_identifier(sku).unwrap()["values"][FAMILY]
        .as_array()
        .and_then(|l| l.first())
        .and_then(|v| v["data"].as_array())
        .map(|l| l.iter().map(|c| c.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structure_apply_then_sync_links_created_assets_only() {
    let env = start().await;
    let records: Vec<Value> = env
        .dam
        .ordered_ids(None, None)
        .iter()
        .map(|id| env.dam.get(id).unwrap())
        .collect();
    let skus: BTreeSet<String> = records.iter().map(sku_of).collect();
    assert!(
        skus.len() > 1 && skus.len() < records.len(),
        "several assets per SKU"
    );
    for sku in &skus {
        env.akeneo
            .add_product(json!({"identifier": sku, "family": "shirts"}))
            .unwrap();
    }
    let config = env.config("Summer", "text");
    assert!(env.akeneo.family_structure(FAMILY).is_none());

    // 1a. Dry run: the plan, GETs only.
    env.reset();
    let out = env.apply(&config, &["--dry-run"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(has_line(&stdout, "asset family", "to create"), "{stdout}");
    assert!(
        has_line(&stdout, "option `season.summer`", "to create"),
        "{stdout}"
    );
    assert!(stdout.contains("dry run: nothing was written"), "{stdout}");
    assert_eq!(env.patches(), vec![], "a dry run writes nothing");
    assert!(env.akeneo.family_structure(FAMILY).is_none());

    // 1b. Apply: everything created.
    env.reset();
    let out = env.apply(&config, &[]).await;
    assert!(out.status.success(), "{}", show(&out));
    let stdout = text(&out.stdout);
    let structure = env.akeneo.family_structure(FAMILY).expect("family created");
    assert_eq!(structure.attribute_as_main_media.as_deref(), Some("url"));
    let url = structure.attribute("url").unwrap();
    assert_eq!(
        url.prefix.as_deref(),
        Some(format!("{}/files/", env.dam_url).as_str())
    );
    assert!(structure.attribute("title").unwrap().value_per_locale);
    assert_eq!(
        structure
            .attribute("season")
            .unwrap()
            .options
            .clone()
            .unwrap(),
        BTreeSet::from(["summer".to_owned(), "winter".to_owned()])
    );
    // Read back over the API: labels, naming convention and rule as configured.
    let pim = assetbridge_akeneo::AkeneoClient::new(assetbridge_akeneo::AkeneoConfig::new(
        &env.akeneo_url,
        "assetbridge",
        "secret",
        "admin",
        "admin",
    ))
    .unwrap();
    let family = pim.asset_family(FAMILY).await.unwrap().unwrap();
    assert_eq!(
        family["labels"],
        json!({"en_US": "Packshots", "fr_FR": "Photos produit"})
    );
    assert_eq!(family["naming_convention"]["source"]["property"], "url");
    assert_eq!(
        family["product_link_rules"][0]["assign_assets_to"][0]["attribute"],
        FAMILY
    );
    let options = pim.asset_attribute_options(FAMILY, "season").await.unwrap();
    assert_eq!(
        options[1],
        json!({"code": "winter", "labels": {"en_US": "Winter", "fr_FR": "Hiver"}})
    );
    // family + 4 attributes + 2 options + the properties (main media, convention, rule)
    let patches = env.patches();
    assert_eq!(patches.len(), 8, "{patches:#?}\n{stdout}");
    assert!(
        stdout.contains("7 created, 1 updated, 0 unchanged; 8 PATCH requests"),
        "{stdout}"
    );

    // 2. Again: the PIM matches, zero PATCH.
    env.reset();
    let out = env.apply(&config, &[]).await;
    assert!(out.status.success(), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert_eq!(env.patches(), vec![], "{stdout}");
    assert_eq!(env.stats_patch_count().await, 0);
    assert!(stdout.contains("nothing to write"), "{stdout}");
    assert!(
        stdout.contains("0 created, 0 updated, 7 unchanged; 0 PATCH requests"),
        "{stdout}"
    );
    assert!(
        has_line(&stdout, "attribute `product_ref`", "unchanged"),
        "{stdout}"
    );

    // 3. One option label changed: exactly one PATCH, to that option.
    let changed = env.config("Summer 2026", "text");
    env.reset();
    let out = env.apply(&changed, &[]).await;
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        env.patches(),
        vec![(
            ROUTE_OPTION,
            format!("/api/rest/v1/asset-families/{FAMILY}/attributes/season/options/summer")
        )]
    );
    assert_eq!(env.stats_patch_count().await, 1);
    assert!(
        has_line(
            &text(&out.stdout),
            "option `season.summer`",
            "updated: labels.en_US"
        ),
        "{}",
        show(&out)
    );
    let options = pim.asset_attribute_options(FAMILY, "season").await.unwrap();
    assert_eq!(options[0]["labels"]["en_US"], "Summer 2026");

    // 4. An immutable change is a configuration error at its line; nothing is written.
    let immutable = env.config("Summer 2026", "number");
    env.reset();
    let out = env.apply(&immutable, &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("families[0].structure.attributes[1].type"),
        "{stderr}"
    );
    assert!(stderr.contains("assetbridge.toml:"), "{stderr}");
    assert_eq!(env.patches(), vec![]);

    // 5. Sync: every DAM asset is created; the PIM's naming convention and rule link each one
    //    to the product of its SKU (after the answer: wait for the emulator's link jobs).
    let config = env.config("Summer 2026", "text");
    let cfg = config.display().to_string();
    env.reset();
    let out = env.run(&["sync", "--config", &cfg, "--no-progress"]).await;
    assert!(out.status.success(), "{}", show(&out));
    assert!(env.akeneo.wait_for_link_jobs(Duration::from_secs(30)).await);
    let c = env.akeneo.counters();
    assert_eq!(c.assets_created as usize, records.len());
    assert_eq!(c.naming_conventions_applied as usize, records.len());
    let pim_assets = env.akeneo.assets(FAMILY);
    assert_eq!(pim_assets.len(), records.len());
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for a in &pim_assets {
        let code = a["code"].as_str().unwrap().to_owned();
        let link = a["values"]["url"][0]["data"].as_str().unwrap();
        let record = records
            .iter()
            .find(|r| r["url"].as_str().unwrap().ends_with(link))
            .expect("the asset's DAM record");
        let sku = sku_of(record);
        // The naming convention wrote the product reference captured from the file name.
        assert_eq!(a["values"]["product_ref"][0]["data"], json!(sku), "{a}");
        expected.entry(sku).or_default().insert(code);
    }
    for (sku, codes) in &expected {
        let linked: BTreeSet<String> = collection(&env.akeneo, sku).into_iter().collect();
        assert_eq!(&linked, codes, "product {sku}");
    }
    assert_eq!(c.link_rule_runs as usize, records.len());

    // 6. An asset updated later does not run the rule again. Unlink one asset by hand, change
    //    it in the DAM, sync: it is updated (204) and stays unlinked.
    let (sku, codes) = expected.iter().next().unwrap();
    let unlinked = codes.iter().next().unwrap().clone();
    let product = env.akeneo.product_by_identifier(sku).unwrap();
    let rest: Vec<&String> = codes.iter().filter(|c| **c != unlinked).collect();
    env.akeneo
        .add_product(json!({"uuid": product["uuid"], "values": {FAMILY: [
            {"locale": null, "scope": null, "data": rest}
        ]}}))
        .unwrap();
    let asset = pim_assets
        .iter()
        .find(|a| a["code"] == json!(unlinked))
        .unwrap();
    let link = asset["values"]["url"][0]["data"].as_str().unwrap();
    let id = records
        .iter()
        .find(|r| r["url"].as_str().unwrap().ends_with(link))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.dam
        .set(&id, &json!({"metadata": {"title": "Retouched"}}))
        .unwrap();
    env.reset();
    let out = env.run(&["sync", "--config", &cfg, "--no-progress"]).await;
    assert!(out.status.success(), "{}", show(&out));
    assert!(env.akeneo.wait_for_link_jobs(Duration::from_secs(30)).await);
    let c = env.akeneo.counters();
    assert_eq!(c.assets_created, 0);
    assert_eq!(c.assets_updated, 1, "{}", show(&out));
    assert_eq!(c.link_rule_runs, 0, "an update runs no link rule");
    assert_eq!(
        env.akeneo.asset(FAMILY, &unlinked).unwrap()["values"]["title"][0]["data"],
        "Retouched"
    );
    let linked: BTreeSet<String> = collection(&env.akeneo, sku).into_iter().collect();
    assert!(!linked.contains(&unlinked), "{linked:?}");
    assert_eq!(linked.len(), codes.len() - 1);
}
