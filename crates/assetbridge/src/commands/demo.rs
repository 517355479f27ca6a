use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use assetbridge_core::{AssetAttribute, AttributeType, FamilyStructure};
use assetbridge_emulators::akeneo::{AkeneoEmulator, AkeneoEmulatorConfig};
use assetbridge_emulators::dam::{DamEmulator, DamEmulatorConfig};
use assetbridge_engine::SyncReport;
use clap::Args;

use crate::exit::Failure;
use crate::logging::{self, LogArgs};
use crate::progress::{summary, Progress};
use crate::{config, wiring, CliResult};

/// Shows the main job end to end, on built-in emulators: nothing to install or configure.
///
/// Starts a DAM emulator and an Akeneo emulator on free localhost ports, seeds the DAM
/// (default 10 000 assets in 2 families), writes a configuration file and a SQLite state file
/// in a temporary directory, runs a full sync, changes some assets in the DAM (updates, new
/// assets, deletions), runs an incremental sync, then a sync with nothing changed (zero PIM
/// writes), checks that the PIM holds exactly what the DAM holds, and prints how to try it
/// for real.
///
/// Example:
///   assetbridge demo
///   assetbridge demo --assets 100000 --changes 1000
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DemoArgs {
    /// Assets seeded in the DAM emulator. Default: 10 000.
    #[arg(long, default_value_t = 10_000)]
    pub assets: usize,
    /// Seed of the DAM emulator's data (same seed, same assets). Default: 42.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Assets updated in the DAM between the first and second sync; a quarter as many are
    /// added and a tenth as many deleted. Default: 500.
    #[arg(long, default_value_t = 500)]
    pub changes: usize,
    /// Keep the temporary directory (configuration and state) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

const FAMILIES: [&str; 2] = ["packshots", "lifestyle"];

/// The Akeneo structure the demo creates: what a real PIM admin would set up for DAM assets.
pub fn family_structure(code: &str, media_prefix: &str) -> FamilyStructure {
    let mut media = AssetAttribute::new("media", AttributeType::MediaLink);
    media.prefix = Some(media_prefix.to_owned());
    let mut title = AssetAttribute::new("title", AttributeType::Text);
    title.value_per_locale = true;
    title.max_characters = Some(255);
    let mut description = AssetAttribute::new("description", AttributeType::Text);
    description.value_per_locale = true;
    description.max_characters = Some(1000);
    let mut tags = AssetAttribute::new("tags", AttributeType::MultipleOptions);
    // Only the seasons exist up front: the connector creates the other tags it meets
    // (`create_missing_options = ["tags"]`).
    tags.options = Some(
        ["summer", "winter", "spring", "autumn"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    );
    let mut width = AssetAttribute::new("width", AttributeType::Number);
    width.decimals_allowed = Some(false);
    let mut height = AssetAttribute::new("height", AttributeType::Number);
    height.decimals_allowed = Some(false);
    let sku = AssetAttribute::new("sku", AttributeType::Text);
    let supplier = AssetAttribute::new("supplier", AttributeType::Text);
    let attributes = [
        media,
        title,
        description,
        tags,
        width,
        height,
        sku,
        supplier,
    ]
    .into_iter()
    .map(|a| (a.code.clone(), a))
    .collect();
    FamilyStructure {
        code: code.to_owned(),
        attribute_as_main_media: Some("media".to_owned()),
        attributes,
    }
}

fn demo_config(akeneo: &str, dam: &str, state: &str) -> String {
    let mut families = String::new();
    for f in FAMILIES {
        families.push_str(&format!(
            r#"
[[families]]
code = "{f}"
schedule = "5m"
values = [
  {{ attribute = "media",       from = "/url" }},
  {{ attribute = "title",       from = "/metadata/title",    locale = "en_US" }},
  {{ attribute = "title",       from = "/metadata/title_fr", locale = "fr_FR" }},
  {{ attribute = "title",       from = "/metadata/title_de", locale = "de_DE" }},
  {{ attribute = "description", from = "/metadata/description", locale = "en_US" }},
  {{ attribute = "tags",        from = "/metadata/tags" }},
  {{ attribute = "width",       from = "/metadata/width" }},
  {{ attribute = "height",      from = "/metadata/height" }},
  {{ attribute = "sku",         from = "/metadata/sku" }},
  {{ attribute = "supplier",    from = "/metadata/supplier" }},
]
"#
        ));
    }
    format!(
        r#"# Written by `assetbridge demo`: the configuration it ran with.
[state]
url = "sqlite://{state}"

[akeneo]
url = "{akeneo}"
client_id = "assetbridge"
secret = "${{DEMO_AKENEO_SECRET:-secret}}"
username = "admin"
password = "${{DEMO_AKENEO_PASSWORD:-admin}}"
create_missing_options = ["tags"]

[dam]
base_url = "{dam}"
auth = {{ type = "bearer", token = "dam-token" }}
family_param = "type"

[sync]
deletions = "delete"
{families}"#
    )
}

pub async fn run(args: DemoArgs, log: LogArgs) -> CliResult {
    logging::init(&log, None);
    let started = Instant::now();
    let localhost: SocketAddr = "127.0.0.1:0".parse().expect("valid address");

    let dam = DamEmulator::new(DamEmulatorConfig {
        assets: args.assets,
        seed: args.seed,
        families: FAMILIES.iter().map(|s| s.to_string()).collect(),
        ..DamEmulatorConfig::default()
    });
    let dam_server = dam
        .serve(localhost)
        .await
        .context("cannot start the DAM emulator")?;
    let akeneo = AkeneoEmulator::new(AkeneoEmulatorConfig::default());
    let akeneo_server = akeneo
        .serve(localhost)
        .await
        .context("cannot start the Akeneo emulator")?;
    let media_prefix = format!("{}/files/", dam_server.base_url);
    for f in FAMILIES {
        akeneo.add_asset_family(family_structure(f, &media_prefix));
    }
    println!("assetbridge demo");
    println!(
        "  DAM emulator     {}  ({} assets in {} families, seed {})",
        dam_server.base_url,
        args.assets,
        FAMILIES.len(),
        args.seed
    );
    println!(
        "  Akeneo emulator  {}  (asset families: {})",
        akeneo_server.base_url,
        FAMILIES.join(", ")
    );

    let dir = tempfile::Builder::new()
        .prefix("assetbridge-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let state = dir.path().join("state.db");
    let config_path = dir.path().join("assetbridge.toml");
    std::fs::write(
        &config_path,
        demo_config(
            &akeneo_server.base_url,
            &dam_server.base_url,
            &state.display().to_string(),
        ),
    )
    .context("cannot write the demo configuration")?;
    println!("  configuration    {}", config_path.display());
    println!("  state            {}", state.display());

    let loaded = config::load(&config_path)?;
    let engine = wiring::engine(&loaded)
        .await?
        .with_observer(Arc::new(Progress::auto()));

    // 1. Full sync.
    println!("\n1. First sync: every DAM asset becomes an Akeneo asset");
    let full = step(&engine, &akeneo).await?;

    // 2. Changes in the DAM.
    let updated = dam.touch(args.changes);
    let added = dam.add(args.changes / 4);
    let deleted = dam.delete_some(args.changes / 10);
    println!(
        "\n2. Meanwhile in the DAM: {} assets updated, {} added, {} deleted",
        updated.len(),
        added.len(),
        deleted.len()
    );

    // 3. Incremental sync.
    println!("\n3. Incremental sync: only what changed since the cursor is written");
    let incremental = step(&engine, &akeneo).await?;

    // 4. Nothing changed.
    println!("\n4. Sync again with nothing changed: zero PIM writes");
    let idle = step(&engine, &akeneo).await?;

    // 5. Verify.
    let in_pim: usize = FAMILIES.iter().map(|f| akeneo.asset_count(f)).sum();
    let in_dam = dam.count();
    println!("\nChecks");
    let mut ok = true;
    ok &= check(
        in_pim == in_dam,
        &format!("Akeneo holds {in_pim} assets; the DAM holds {in_dam} live assets"),
    );
    ok &= check(
        full.created as usize == args.assets,
        &format!("first sync created {} assets", full.created),
    );
    // An asset updated (or added) and then deleted before the sync is only a deletion (or
    // nothing at all): the sync sees the DAM as it is, not its history.
    let gone: std::collections::HashSet<&String> = deleted.iter().collect();
    let new: std::collections::HashSet<&String> = added.iter().collect();
    let want_updated = updated
        .iter()
        .filter(|id| !gone.contains(id) && !new.contains(id))
        .count();
    let want_created = added.iter().filter(|id| !gone.contains(id)).count();
    let want_deleted = deleted.iter().filter(|id| !new.contains(id)).count();
    ok &= check(
        (incremental.updated, incremental.created, incremental.deleted)
            == (want_updated as u64, want_created as u64, want_deleted as u64),
        &format!(
            "incremental sync updated {}, created {}, deleted {} (the DAM changed {want_updated}, added {want_created}, deleted {want_deleted})",
            incremental.updated, incremental.created, incremental.deleted
        ),
    );
    ok &= check(
        idle.pim_writes == 0,
        &format!(
            "the sync with nothing changed made {} write requests to Akeneo (its request log)",
            idle.pim_writes
        ),
    );
    ok &= check(
        full.failed + incremental.failed + idle.failed == 0,
        "no asset failed",
    );
    println!("\nDone in {:.1}s.", started.elapsed().as_secs_f64());
    println!(
        "\nTry it for real:\n  1. Copy examples/assetbridge.toml, point [akeneo] at your PIM (a Connection's client id, secret,\n     username, password) and [dam] at your DAM's API; map your fields in [[families]].\n  2. assetbridge check --config assetbridge.toml    # validates the file, the PIM and the DAM\n  3. assetbridge sync  --config assetbridge.toml    # one pass\n  4. assetbridge run   --config assetbridge.toml    # keeps them in step\n  The configuration this demo ran with is a working example: {}",
        if args.keep { config_path.display().to_string() } else { "run with --keep to keep it".to_owned() }
    );
    if args.keep {
        let kept = dir.keep();
        println!("  (kept in {})", kept.display());
    }
    drop(dam_server);
    drop(akeneo_server);
    if ok {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Failure::Fatal(anyhow::anyhow!("the demo's checks failed")))
    }
}

async fn step(
    engine: &assetbridge_engine::Engine,
    akeneo: &AkeneoEmulator,
) -> Result<SyncReport, Failure> {
    let before = akeneo.counters();
    let t = Instant::now();
    let rows = super::sync::sync_all(engine, &[], false).await?;
    let secs = t.elapsed().as_secs_f64();
    let after = akeneo.counters();
    print!("{}", summary(&rows));
    let mut total = SyncReport::default();
    for (_, r) in &rows {
        total += r;
    }
    let batches = after.asset_batch_requests - before.asset_batch_requests;
    // What Akeneo saw, not what the engine believes it sent.
    total.pim_writes = write_requests(&after) - write_requests(&before);
    println!(
        "   {:.2}s · {:.0} assets/s · {} batch PATCH requests to Akeneo ({} assets written)",
        secs,
        total.seen as f64 / secs.max(1e-9),
        batches,
        total.written()
    );
    Ok(total)
}

/// Requests that change something in Akeneo, from the emulator's own counters: every request but
/// reads and token grants.
pub fn write_requests(c: &assetbridge_emulators::akeneo::Counters) -> u64 {
    c.requests
        .iter()
        .filter(|(route, _)| !route.starts_with("GET ") && !route.contains("/oauth/"))
        .map(|(_, by_status)| by_status.values().sum::<u64>())
        .sum()
}

fn check(ok: bool, what: &str) -> bool {
    println!("  {} {what}", if ok { "✓" } else { "✗" });
    ok
}
