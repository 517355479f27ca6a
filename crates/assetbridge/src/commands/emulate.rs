use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use assetbridge_emulators::akeneo::{AkeneoEmulator, AkeneoEmulatorConfig};
use assetbridge_emulators::dam::{DamEmulator, DamEmulatorConfig, PagingStyle};
use clap::{Args, Subcommand, ValueEnum};
use tracing::info;

use crate::logging::{self, LogArgs};
use crate::CliResult;

/// Runs one emulator alone, to try the connector or benchmark it without the real service.
///
/// Example:
///   assetbridge emulate dam --listen 127.0.0.1:8081 --assets 100000
///   assetbridge emulate akeneo --listen 127.0.0.1:8082 --latency-ms 50 --max-concurrency 4
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct EmulateArgs {
    #[command(subcommand)]
    pub which: Emulator,
}

#[derive(Debug, Subcommand)]
pub enum Emulator {
    /// The Akeneo PIM REST API (token, Asset Manager, media files, products).
    ///
    /// Credentials: client id `assetbridge`, secret `secret`, username `admin`, password `admin`
    /// (Basic client credentials + password grant on POST /api/oauth/v1/token).
    /// Asset families `packshots` and `lifestyle` are created with the demo's structure
    /// (media link, title, description, tags, width, height, sku, supplier).
    /// Example:
    ///   assetbridge emulate akeneo --listen 127.0.0.1:8082 --latency-ms 50 --max-concurrency 4
    #[command(verbatim_doc_comment)]
    Akeneo(AkeneoArgs),
    /// A generic REST DAM: GET /api/assets?updated_since=&limit= with page-number, cursor or
    /// Link-header paging; records with id, name (SKU-012345_front.jpg), type (the family),
    /// url, updated_at, deleted, checksum, metadata{title, title_fr, title_de, description,
    /// tags, width, height, sku, supplier}. Auth: `Authorization: Bearer dam-token`.
    /// Mutations: POST /_emulator/touch, /_emulator/add, /_emulator/delete (see the emulator's docs).
    /// Example:
    ///   assetbridge emulate dam --listen 127.0.0.1:8081 --assets 100000 --paging cursor
    #[command(verbatim_doc_comment)]
    Dam(DamArgs),
}

#[derive(Debug, Args)]
pub struct AkeneoArgs {
    /// Address to listen on. Default: 127.0.0.1:8082.
    #[arg(long, default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,
    /// Latency added to every API request, in milliseconds. Default: 0.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Concurrent requests above which the emulator answers 429 (the SaaS cap is 4).
    /// Default: no cap.
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// Share of requests answered 429 with Retry-After (0.0–1.0). Default: 0.
    #[arg(long, default_value_t = 0.0)]
    pub rate_429: f64,
    /// Share of requests answered 5xx (0.0–1.0). Default: 0.
    #[arg(long, default_value_t = 0.0)]
    pub rate_5xx: f64,
    /// Access-token lifetime in seconds. Default: 3600.
    #[arg(long, default_value_t = 3600)]
    pub token_ttl_secs: u64,
    /// Prefix of the `media` link attribute. Default: http://127.0.0.1:8081/files/ (the DAM
    /// emulator's default address).
    #[arg(long, default_value = "http://127.0.0.1:8081/files/")]
    pub media_prefix: String,
    /// More options of the `tags` attribute, created up front (comma-separated option codes),
    /// as a PIM admin would have set them up; benchmarks use it so that the connector does not
    /// create them during the measured sync. Default: only the four seasons.
    #[arg(long, value_delimiter = ',', value_name = "CODES")]
    pub tag_options: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Paging {
    Page,
    Cursor,
    Link,
}

#[derive(Debug, Args)]
pub struct DamArgs {
    /// Address to listen on. Default: 127.0.0.1:8081.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Assets seeded. Default: 10 000.
    #[arg(long, default_value_t = 10_000)]
    pub assets: usize,
    /// Seed of the generated data. Default: 42.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Paging style of the listing. Default: cursor.
    #[arg(long, value_enum, default_value = "cursor")]
    pub paging: Paging,
    /// Latency added to every request, in milliseconds. Default: 0.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
}

pub async fn run(args: EmulateArgs, log: LogArgs) -> CliResult {
    logging::init(&log, None);
    match args.which {
        Emulator::Akeneo(a) => {
            if let Some(bad) = a
                .tag_options
                .iter()
                .find(|o| o.is_empty() || !o.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            {
                return Err(crate::exit::Failure::Config(format!(
                    "--tag-options: `{bad}` is not an option code (letters, digits, underscores)"
                )));
            }
            let emu = AkeneoEmulator::new(AkeneoEmulatorConfig {
                latency: Duration::from_millis(a.latency_ms),
                max_concurrency: a.max_concurrency,
                rate_429: a.rate_429,
                rate_5xx: a.rate_5xx,
                token_ttl: Duration::from_secs(a.token_ttl_secs),
                ..AkeneoEmulatorConfig::default()
            });
            for f in ["packshots", "lifestyle"] {
                emu.add_asset_family(super::demo::family_structure(f, &a.media_prefix));
                for o in &a.tag_options {
                    emu.add_asset_attribute_option(f, "tags", o, Default::default());
                }
            }
            let running = emu
                .serve(a.listen)
                .await
                .context("cannot start the Akeneo emulator")?;
            info!(url = %running.base_url, "Akeneo emulator listening (client id assetbridge, secret secret, user admin/admin)");
            println!("Akeneo emulator on {}", running.base_url);
            wait_for_signal().await;
        }
        Emulator::Dam(d) => {
            let emu = DamEmulator::new(DamEmulatorConfig {
                assets: d.assets,
                seed: d.seed,
                paging: match d.paging {
                    Paging::Page => PagingStyle::PageNumber,
                    Paging::Cursor => PagingStyle::CursorToken,
                    Paging::Link => PagingStyle::LinkHeader,
                },
                latency: Duration::from_millis(d.latency_ms),
                ..DamEmulatorConfig::default()
            });
            let running = emu
                .serve(d.listen)
                .await
                .context("cannot start the DAM emulator")?;
            info!(url = %running.base_url, "DAM emulator listening (Authorization: Bearer dam-token)");
            println!("DAM emulator on {}", running.base_url);
            wait_for_signal().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    let token = tokio_util::sync::CancellationToken::new();
    super::run::spawn_signal_handler(token.clone());
    token.cancelled().await;
}
