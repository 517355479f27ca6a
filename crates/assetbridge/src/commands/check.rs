use std::process::ExitCode;

use assetbridge_akeneo::AkeneoClient;
use assetbridge_dam::rest::RestDam;
use clap::Args;
use futures::StreamExt;

use super::ConfigArg;
use crate::exit::Failure;
use crate::logging::{self, LogArgs};
use crate::{config, wiring, CliResult};

/// Validates a configuration file, then checks the PIM and the DAM.
///
/// First the file itself: syntax, unknown keys, types, schedules, templates (every error names
/// the file, line and key; exit code 2). Then, unless --offline: that Akeneo accepts the
/// credentials and every configured asset family exists with the attributes the mapping writes
/// (a mapping that does not fit is a configuration error, exit 2), and that the DAM answers a
/// listing for each family. Unreachable services: exit 1.
///
/// Example:
///   assetbridge check --config assetbridge.toml
///   assetbridge check --config assetbridge.toml --offline
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only validate the file; contact nothing.
    #[arg(long)]
    pub offline: bool,
}

pub async fn run(args: CheckArgs, log: LogArgs) -> CliResult {
    let loaded = config::load(&args.config.config)?;
    logging::init(&log, Some(&loaded.value.log));
    let cfg = &loaded.value;
    println!(
        "✓ {}: valid ({} famil{})",
        args.config.config.display(),
        cfg.families.len(),
        if cfg.families.len() == 1 { "y" } else { "ies" }
    );
    if args.offline {
        return Ok(ExitCode::SUCCESS);
    }

    let pim = AkeneoClient::new(cfg.akeneo.clone())
        .map_err(|e| Failure::from(loaded.source.error_at("akeneo", e.to_string())))?;
    wiring::plans(&loaded, &pim).await?;
    println!(
        "✓ Akeneo at {}: credentials accepted; every family exists and its mapping fits",
        assetbridge_config::redact_url(&cfg.akeneo.url)
    );

    let dam = RestDam::new(cfg.dam.clone())
        .map_err(|e| Failure::from(loaded.source.error_at("dam", e.to_string())))?;
    for f in &cfg.families {
        let mut query: Vec<(String, String)> = f
            .query
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if query.is_empty() {
            query = dam.family_query(&f.code);
        }
        let mut pages = dam.changes(None, &query);
        match pages.next().await {
            Some(Ok(page)) => println!(
                "✓ DAM at {}: family `{}` lists ({} change(s) on the first page)",
                assetbridge_config::redact_url(&cfg.dam.base_url),
                f.code,
                page.changes.len()
            ),
            Some(Err(e)) => {
                return Err(Failure::Fatal(anyhow::anyhow!(
                    "DAM listing for family `{}` failed: {e}",
                    f.code
                )))
            }
            None => println!("✓ DAM: family `{}` lists (empty)", f.code),
        }
    }
    let store = wiring::open_store(cfg).await?;
    drop(store);
    println!(
        "✓ state store `{}` opens",
        assetbridge_config::redact_url(&cfg.state.url)
    );
    Ok(ExitCode::SUCCESS)
}
