//! The configuration file schema: one TOML file, composed of each part's own table.
//!
//! Loading (interpolation of `${VAR}`, `*_file` secrets, errors with file, line and key) is done
//! by `assetbridge-config`; this module only says what the file may contain. The reference is
//! `docs/configuration.md`; a fully commented example is `examples/assetbridge.toml`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use assetbridge_akeneo::AkeneoConfig;
use assetbridge_core::mapping::{
    CompileContext, CompiledMapping, FamilyMapping, ValueMaps, ValueRule,
    DEFAULT_ASSET_CODE_TEMPLATE,
};
use assetbridge_core::FamilyStructure;
use assetbridge_dam::aem::AemConfig;
use assetbridge_dam::rest::RestDamConfig;
use assetbridge_engine::{
    DeletionPolicy, EnrichmentConfig, ProductFilterConfig, ProductLinkConfig, SyncOptions,
};
use assetbridge_sources::amqp::AmqpConfig;
use assetbridge_sources::journal::JournalSourceConfig;
use assetbridge_sources::nats::NatsConfig;
use assetbridge_sources::webhook::WebhookConfig;
use serde::Deserialize;

use crate::schedule::Schedule;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Where the connector keeps its state. Default: SQLite file `assetbridge-state.db` next to
    /// the working directory.
    #[serde(default)]
    pub state: StateConfig,
    /// The PIM.
    pub akeneo: AkeneoConfig,
    /// The DAM's REST API (polling).
    pub dam: RestDamConfig,
    /// Sync tuning.
    #[serde(default)]
    pub sync: SyncConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The webhook receiver `run` serves (generic DAM webhooks, Adobe I/O Events). Default: none.
    #[serde(default)]
    pub webhooks: Option<WebhookConfig>,
    /// Message-queue consumers `run` starts. Default: none.
    #[serde(default)]
    pub queues: QueuesConfig,
    /// The Adobe I/O Events journal poller `run` starts (pull instead of webhooks). Default:
    /// none.
    #[serde(default)]
    pub adobe_journal: Option<JournalSourceConfig>,
    /// One table per Akeneo asset family to fill.
    pub families: Vec<FamilyConfig>,
    /// `[routing]`: the family of an asset whose source does not say (message shapes without a
    /// family) and, with `poll = true`, one DAM listing for every family it names. Default:
    /// none.
    #[serde(default)]
    pub routing: Option<crate::routing_config::RoutingConfig>,
    /// AEM as a Cloud Service: allowed author hosts and the IMS credential (used by
    /// enrichment). Default: none.
    #[serde(default)]
    pub aem: Option<AemConfig>,
    /// PIM → DAM enrichment of AEM asset metadata from product data (needs `[aem]`; see
    /// `docs/enrichment.md`). Default: none (off).
    #[serde(default)]
    pub enrichment: Option<EnrichmentConfig>,
    /// The admin HTTP server `run` starts (health, readiness, metrics, status page). Default:
    /// on, listening on `127.0.0.1:9090`, without an admin token.
    #[serde(default)]
    pub server: ServerConfig,
}

/// `[server]`: the admin HTTP server of `assetbridge run` (`/healthz`, `/readyz`, `/metrics`,
/// the status page `/` and `POST /dead-letters/retry`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default: `127.0.0.1:9090` (this machine only); when the default
    /// is taken (another instance on this machine), `run` logs a warning and goes on without
    /// the admin server, while a configured address that cannot be bound is a fatal error.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// Token required by the write actions (the status page's retry button, as the form field
    /// `token` or `Authorization: Bearer <token>`). Default: none — the actions answer 403.
    #[serde(default)]
    pub admin_token: Option<secrecy::SecretString>,
    /// Host names (without port) the admin server answers besides `localhost`, `127.x.x.x` and
    /// `[::1]` while it listens on a loopback address — e.g. the name a reverse proxy on this
    /// machine passes on in `Host`. Any other `Host` gets 421 (DNS rebinding). Default: none.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl ServerConfig {
    /// The default address: `127.0.0.1:9090`.
    pub const DEFAULT_LISTEN: std::net::SocketAddr =
        std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);
}

/// `[queues]`: `[[queues.amqp]]` and `[[queues.nats]]` consumers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuesConfig {
    /// RabbitMQ (AMQP 0-9-1) consumers. Default: none.
    #[serde(default)]
    pub amqp: Vec<AmqpConfig>,
    /// NATS JetStream consumers. Default: none.
    #[serde(default)]
    pub nats: Vec<NatsConfig>,
}

/// `[state]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `sqlite://path/to/file.db` (or a plain path) or `postgres://user@host/db`.
    /// Default: `sqlite://assetbridge-state.db`.
    #[serde(default = "default_state_url")]
    pub url: String,
}

fn default_state_url() -> String {
    "sqlite://assetbridge-state.db".to_owned()
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            url: default_state_url(),
        }
    }
}

/// `[sync]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Seconds each poll goes back before the cursor. Default: 300.
    #[serde(default = "d_overlap")]
    pub overlap_secs: u64,
    /// DAM pages written at once. Default: 4.
    #[serde(default = "d_pages")]
    pub pages_in_flight: usize,
    /// Families a `sync` pass polls at once. Default: 4.
    #[serde(default = "d_families")]
    pub families_in_flight: usize,
    /// Attempts before a change is dead-lettered. Default: 8.
    #[serde(default = "d_attempts")]
    pub max_attempts: u32,
    /// First retry delay in seconds (doubles each attempt). Default: 5.
    #[serde(default = "d_retry_base")]
    pub retry_base_secs: u64,
    /// Longest retry delay in seconds. Default: 600.
    #[serde(default = "d_retry_max")]
    pub retry_max_secs: u64,
    /// Inbox entries claimed at once. Default: 500.
    #[serde(default = "d_claim")]
    pub claim_size: usize,
    /// Seconds a claim is held before another worker may take it over. Default: 300.
    #[serde(default = "d_lease")]
    pub claim_lease_secs: u64,
    /// `keep` (default), `delete` or `mark`: what a deletion in the DAM does in the PIM.
    #[serde(default)]
    pub deletions: DeletionMode,
    /// With `deletions = "mark"`: the attribute that marks an asset deleted in the DAM
    /// (non-localizable, non-scopable, e.g. a boolean `archived`). Required then; default: none.
    #[serde(default)]
    pub mark_attribute: Option<String>,
    /// With `deletions = "mark"`: the value written to `mark_attribute` (a boolean or a text).
    /// Default: `true`.
    #[serde(default = "d_mark_value")]
    pub mark_value: serde_json::Value,
    /// Backpressure: while the inbox holds this many changes or more, the pollers read no
    /// further DAM page until it drains (`0`: no bound). Default: 100000.
    #[serde(default = "d_backlog_limit")]
    pub backlog_limit: u64,
    /// How often `run` reconciles each family (DAM ⇄ PIM compared in full, like
    /// `sync --full`): an interval or a cron expression, or `"off"`. Default: `"1d"`.
    #[serde(default = "d_reconcile_schedule")]
    pub reconcile_schedule: String,
}

fn d_reconcile_schedule() -> String {
    "1d".to_owned()
}

/// `[sync] deletions`: what a deletion in the DAM does in the PIM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionMode {
    /// Keep the PIM asset (logged, counted as `kept`). The default.
    #[default]
    Keep,
    /// Delete the PIM asset.
    Delete,
    /// Keep the PIM asset and write `mark_value` to its `mark_attribute`.
    Mark,
}

fn d_mark_value() -> serde_json::Value {
    serde_json::Value::Bool(true)
}

fn d_overlap() -> u64 {
    300
}
fn d_pages() -> usize {
    4
}
fn d_families() -> usize {
    4
}
fn d_attempts() -> u32 {
    8
}
fn d_retry_base() -> u64 {
    5
}
fn d_retry_max() -> u64 {
    600
}
fn d_claim() -> usize {
    500
}
fn d_lease() -> u64 {
    300
}
fn d_backlog_limit() -> u64 {
    100_000
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            overlap_secs: d_overlap(),
            pages_in_flight: d_pages(),
            families_in_flight: d_families(),
            max_attempts: d_attempts(),
            retry_base_secs: d_retry_base(),
            retry_max_secs: d_retry_max(),
            claim_size: d_claim(),
            claim_lease_secs: d_lease(),
            deletions: DeletionMode::default(),
            mark_attribute: None,
            mark_value: d_mark_value(),
            backlog_limit: d_backlog_limit(),
            reconcile_schedule: d_reconcile_schedule(),
        }
    }
}

impl SyncConfig {
    /// The engine's deletion policy (`validate` checked that `mark` comes with its attribute).
    pub fn deletion_policy(&self) -> DeletionPolicy {
        match (self.deletions, &self.mark_attribute) {
            (DeletionMode::Keep, _) => DeletionPolicy::Keep,
            (DeletionMode::Delete, _) => DeletionPolicy::Delete,
            (DeletionMode::Mark, Some(attribute)) => DeletionPolicy::Mark {
                attribute: attribute.clone(),
                value: self.mark_value.clone(),
            },
            (DeletionMode::Mark, None) => DeletionPolicy::Keep,
        }
    }

    /// `deletions = "mark"` needs a valid `mark_attribute` and a boolean or text `mark_value`;
    /// the mark keys without `mark` are a mistake. Returns (key, message).
    fn validate(&self) -> Result<(), (String, String)> {
        match (self.deletions, &self.mark_attribute) {
            (DeletionMode::Mark, None) => Err((
                "sync.deletions".into(),
                "deletions = \"mark\" needs `mark_attribute` (the attribute that marks an asset deleted in the DAM, e.g. \"archived\")".into(),
            )),
            (DeletionMode::Mark, Some(a)) if !assetbridge_core::code::is_valid_code(a) => Err((
                "sync.mark_attribute".into(),
                format!("`{a}` is not an Akeneo attribute code"),
            )),
            (DeletionMode::Mark, Some(_)) => match &self.mark_value {
                serde_json::Value::Bool(_) | serde_json::Value::String(_) => Ok(()),
                other => Err((
                    "sync.mark_value".into(),
                    format!("must be a boolean or a text, not `{other}`"),
                )),
            },
            (_, Some(_)) => Err((
                "sync.mark_attribute".into(),
                "only used with deletions = \"mark\"".into(),
            )),
            (_, None) => Ok(()),
        }
    }

    pub fn options(&self) -> SyncOptions {
        SyncOptions {
            overlap: chrono::Duration::seconds(self.overlap_secs as i64),
            pages_in_flight: self.pages_in_flight.max(1),
            families_in_flight: self.families_in_flight.max(1),
            max_attempts: self.max_attempts.max(1),
            retry_base: Duration::from_secs(self.retry_base_secs),
            retry_max: Duration::from_secs(self.retry_max_secs.max(self.retry_base_secs)),
            claim_size: self.claim_size.max(1),
            claim_lease: Duration::from_secs(self.claim_lease_secs.max(1)),
            deletions: self.deletion_policy(),
            backlog_limit: self.backlog_limit,
        }
    }
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `assetbridge=debug,info`. Default: `info`
    /// (`RUST_LOG` wins when set).
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// `[[families]]`: one Akeneo asset family.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyConfig {
    /// Akeneo asset family code.
    pub code: String,
    /// Extra query parameters of this family's DAM listing, e.g. `{ type = "packshots" }`.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// How often `run` polls: an interval (`30s`, `5m`, `1h`, `7d`) or a cron expression
    /// (`0 */5 * * * *`, with seconds). Default: `5m`.
    #[serde(default = "d_schedule")]
    pub schedule: String,
    /// Template of the asset code (sanitised to `^[a-zA-Z0-9_]+$`). Default: `{{ dam_id }}`.
    #[serde(default = "d_code")]
    pub asset_code: String,
    /// The values, one rule per (attribute, locale, channel). See docs/mapping.md.
    #[serde(default)]
    pub values: Vec<ValueRule>,
    /// Named value maps (DAM value → option code), used by `{ map = "<name>" }` transforms:
    /// `[families.maps.tag_codes]`. Default: none.
    #[serde(default)]
    pub maps: ValueMaps,
    /// Only assets whose product exists in the PIM are synchronised:
    /// `product_filter = { sku_from = "/metadata/sku" }` (see docs/configuration.md).
    /// Default: none (every asset).
    #[serde(default)]
    pub product_filter: Option<ProductFilterConfig>,
    /// How often `run` reconciles this family (`"off"` = never). Default: `[sync]
    /// reconcile_schedule`.
    #[serde(default)]
    pub reconcile_schedule: Option<String>,
    /// Explicit product links: after an asset is written, its code is added to its product's
    /// asset collection, `link = { product = "/metadata/sku", attribute = "packshots" }` (see
    /// docs/configuration.md, "Product links"). Default: none.
    #[serde(default)]
    pub link: Option<ProductLinkConfig>,
    /// What the PIM's asset family must look like (labels, attributes, options, naming
    /// convention, product link rules), applied by `assetbridge structure apply`; `sync` and
    /// `run` do not use it. Default: none.
    #[serde(default)]
    pub structure: Option<crate::structure_config::StructureConfig>,
}

fn d_schedule() -> String {
    "5m".to_owned()
}
fn d_code() -> String {
    DEFAULT_ASSET_CODE_TEMPLATE.to_owned()
}

impl FamilyConfig {
    pub fn mapping(&self) -> FamilyMapping {
        FamilyMapping {
            asset_code: self.asset_code.clone(),
            values: self.values.clone(),
        }
    }

    pub fn schedule(&self) -> Result<Schedule, String> {
        Schedule::parse(&self.schedule)
    }

    /// When `run` reconciles this family: its own `reconcile_schedule`, else `[sync]`'s;
    /// `None` = never.
    pub fn reconcile_schedule(&self, sync: &SyncConfig) -> Result<Option<Schedule>, String> {
        Schedule::parse_optional(
            self.reconcile_schedule
                .as_deref()
                .unwrap_or(&sync.reconcile_schedule),
        )
    }

    /// Compiles the mapping (checked against `structure` when given). An error comes with the
    /// key of the offending setting, e.g. `families[1].values[3].transform[0]`.
    pub fn compile(
        &self,
        index: usize,
        structure: Option<&FamilyStructure>,
        create_missing_options: &[String],
    ) -> Result<CompiledMapping, (String, String)> {
        let ctx = CompileContext {
            structure,
            maps: Some(&self.maps),
            create_missing_options,
        };
        CompiledMapping::compile(&self.mapping(), &ctx).map_err(|e| {
            let key = match &e.key {
                Some(k) => format!("families[{index}].{k}"),
                None => format!("families[{index}]"),
            };
            (key, e.to_string())
        })
    }
}

/// Loads and validates the file; every error names the file, line and key.
pub fn load(
    path: &Path,
) -> Result<assetbridge_config::Loaded<AppConfig>, assetbridge_config::ConfigError> {
    let mut loaded = assetbridge_config::load_with::<AppConfig>(path, load_options())?;
    validate(&loaded)?;
    if let Err((key, message)) = crate::routing_config::attach(&mut loaded.value) {
        return Err(loaded.source.error_at(&key, message));
    }
    Ok(loaded)
}

/// Keys ending in `_file` that are paths the program opens itself, not secrets to read in.
pub const LITERAL_FILE_KEYS: &[&str] = &[
    "tls_cert_file",
    "tls_key_file",
    "tls_ca_file",
    "tls_client_cert_file",
    "tls_client_key_file",
];

fn load_options() -> assetbridge_config::LoadOptions<'static> {
    assetbridge_config::LoadOptions {
        literal_file_keys: LITERAL_FILE_KEYS,
        ..Default::default()
    }
}

/// Checks what serde cannot: schedules parse, family codes are unique and valid, mapping
/// templates compile.
pub fn validate(
    loaded: &assetbridge_config::Loaded<AppConfig>,
) -> Result<(), assetbridge_config::ConfigError> {
    let cfg = &loaded.value;
    let err = |key: String, message: String| loaded.source.error_at(&key, message);
    if cfg.families.is_empty() {
        return Err(err(
            "families".into(),
            "at least one [[families]] table is needed".into(),
        ));
    }
    for (i, q) in cfg.queues.amqp.iter().enumerate() {
        q.validate()
            .map_err(|e| err(format!("queues.amqp[{i}]"), e.to_string()))?;
    }
    for (i, q) in cfg.queues.nats.iter().enumerate() {
        q.validate()
            .map_err(|e| err(format!("queues.nats[{i}]"), e.to_string()))?;
    }
    cfg.sync
        .validate()
        .map_err(|(key, message)| err(key, message))?;
    let mut seen = std::collections::BTreeSet::new();
    for (i, f) in cfg.families.iter().enumerate() {
        if !assetbridge_core::code::is_valid_code(&f.code) {
            return Err(err(
                format!("families[{i}].code"),
                format!(
                    "`{}` is not an Akeneo code (letters, digits and `_`, at most 255)",
                    f.code
                ),
            ));
        }
        if !seen.insert(f.code.clone()) {
            return Err(err(
                format!("families[{i}].code"),
                format!("family `{}` is configured twice", f.code),
            ));
        }
        if let Err(e) = f.schedule() {
            return Err(err(format!("families[{i}].schedule"), e));
        }
        if let Err(e) = f.reconcile_schedule(&cfg.sync) {
            let key = match f.reconcile_schedule {
                Some(_) => format!("families[{i}].reconcile_schedule"),
                None => "sync.reconcile_schedule".to_owned(),
            };
            return Err(err(key, e));
        }
        if let Some(pf) = &f.product_filter {
            pf.compile().map_err(|(key, message)| {
                err(format!("families[{i}].product_filter.{key}"), message)
            })?;
            if pf.attribute != cfg.akeneo.product_identifier_attribute {
                return Err(err(
                    format!("families[{i}].product_filter.attribute"),
                    format!(
                        "`{}` is not the PIM's product identifier attribute (`[akeneo] product_identifier_attribute` = `{}`): products are searched by their identifier",
                        pf.attribute, cfg.akeneo.product_identifier_attribute
                    ),
                ));
            }
        }
        if let Err((key, message)) = f.compile(i, None, &cfg.akeneo.create_missing_options) {
            return Err(err(key, message));
        }
        if let Some(link) = &f.link {
            link.compile(Some(&f.maps))
                .map_err(|(key, message)| err(format!("families[{i}].link.{key}"), message))?;
        }
        if let Some(structure) = &f.structure {
            structure
                .validate()
                .map_err(|(key, message)| err(format!("families[{i}].structure.{key}"), message))?;
        }
    }
    crate::routing_config::validate(cfg).map_err(|(key, message)| err(key, message))?;
    if let Some(enrichment) = &cfg.enrichment {
        if cfg.aem.is_none() {
            return Err(err(
                "enrichment".into(),
                "enrichment writes to AEM: add an [aem] table (allowed_hosts, ims)".into(),
            ));
        }
        if let Err(e) = enrichment.validate() {
            return Err(err(format!("enrichment.{}", e.key), e.message));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load_text(
        text: &str,
    ) -> Result<assetbridge_config::Loaded<AppConfig>, assetbridge_config::ConfigError> {
        let env = |name: &str| match name {
            "AKENEO_CLIENT_ID" | "AKENEO_SECRET" | "AKENEO_USERNAME" | "DAM_TOKEN" => {
                Some("x".to_owned())
            }
            _ => None,
        };
        let loaded = assetbridge_config::load_str_with::<AppConfig>(
            text,
            "assetbridge.toml",
            &env,
            Path::new("."),
            load_options(),
        )?;
        validate(&loaded)?;
        Ok(loaded)
    }

    const MINIMAL: &str = r#"
[akeneo]
url = "http://127.0.0.1:1"
client_id = "c"
secret = "s"
username = "u"
password = "p"

[dam]
base_url = "http://127.0.0.1:2"

[[families]]
code = "packshots"
values = [
  { attribute = "media", from = "/url" },
  { attribute = "title", from = "/metadata/title", locale = "en_US" },
]
"#;

    #[test]
    fn a_minimal_file_loads_with_defaults() {
        let c = load_text(MINIMAL).unwrap().value;
        assert_eq!(c.state.url, "sqlite://assetbridge-state.db");
        assert_eq!(c.sync.pages_in_flight, 4);
        assert_eq!(c.families[0].schedule, "5m");
        assert_eq!(c.families[0].asset_code, "{{ dam_id }}");
        assert_eq!(c.akeneo.max_concurrency, 4);
        assert_eq!(c.server.listen, None);
        assert!(c.server.admin_token.is_none());
        assert_eq!(ServerConfig::DEFAULT_LISTEN.to_string(), "127.0.0.1:9090");
    }

    #[test]
    fn the_server_table_reads_its_address_and_hides_its_token() {
        let text = MINIMAL.replace(
            "[dam]",
            "[server]\nlisten = \"0.0.0.0:9191\"\nadmin_token = \"t0k3n\"\n\n[dam]",
        );
        let c = load_text(&text).unwrap().value;
        assert_eq!(c.server.listen, Some("0.0.0.0:9191".parse().unwrap()));
        assert!(!format!("{:?}", c.server).contains("t0k3n"));
        assert!(c.server.allowed_hosts.is_empty());
        let text = MINIMAL.replace(
            "[dam]",
            "[server]\nallowed_hosts = [\"status.example.com\"]\n\n[dam]",
        );
        let c = load_text(&text).unwrap().value;
        assert_eq!(c.server.allowed_hosts, ["status.example.com"]);
        let bad = MINIMAL.replace("[dam]", "[server]\nlisten = \"localhost\"\n\n[dam]");
        let e = load_text(&bad).unwrap_err();
        assert!(e.to_string().contains("server"), "{e}");
    }

    #[test]
    fn a_queue_ca_file_is_a_path_checked_at_load() {
        // `tls_ca_file` is a path the consumer opens (not a secret read into `tls_ca`): a
        // missing file is an error naming the consumer and the key, at load.
        let text = format!(
            "{MINIMAL}\n[[queues.amqp]]\nurl = \"amqps://u:p@broker.example/%2f\"\nqueue = \"q\"\n\
             tls_ca_file = \"no-such-ca.pem\"\nshape = {{ family = \"packshots\" }}\n\n\
             [[queues.nats]]\nstream = \"S\"\ntls_ca_file = \"no-such-ca.pem\"\n\
             shape = {{ family = \"packshots\" }}\n"
        );
        let e = load_text(&text).unwrap_err();
        let shown = e.to_string();
        assert_eq!(e.key.as_deref(), Some("queues.amqp[0]"), "{shown}");
        assert!(
            shown.contains("`tls_ca_file` = `no-such-ca.pem` cannot be read"),
            "{shown}"
        );
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            include_str!("../../sources/tests/fixtures/localhost-cert.pem"),
        )
        .unwrap();
        let c = load_text(&text.replace("no-such-ca.pem", ca.to_str().unwrap()))
            .unwrap()
            .value;
        assert_eq!(c.queues.amqp[0].tls_ca_file.as_deref(), Some(ca.as_path()));
        assert_eq!(c.queues.nats[0].tls_ca_file.as_deref(), Some(ca.as_path()));
    }

    #[test]
    fn a_typo_in_a_value_rule_names_the_line_and_the_key() {
        let bad = MINIMAL.replace(
            r#"{ attribute = "title", from"#,
            r#"{ attribut = "title", from"#,
        );
        let e = load_text(&bad).unwrap_err();
        let shown = e.to_string();
        assert_eq!(e.line, Some(16), "{shown}");
        assert_eq!(
            e.key.as_deref(),
            Some("families[0].values[1].attribut"),
            "{shown}"
        );
        assert!(shown.starts_with("assetbridge.toml:16:5:"), "{shown}");
        assert!(shown.contains("attribut"), "{shown}");
    }

    #[test]
    fn an_unknown_table_and_a_wrong_type_are_errors_with_lines() {
        let e = load_text(&format!("{MINIMAL}\n[sinc]\noverlap_secs = 1\n")).unwrap_err();
        assert!(e.line.is_some(), "{e}");
        assert!(e.to_string().contains("sinc"), "{e}");
        let e = load_text(&MINIMAL.replace("[dam]", "[sync]\npages_in_flight = \"many\"\n\n[dam]"))
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sync.pages_in_flight"), "{e}");
        assert_eq!(e.line, Some(10), "{e}");
    }

    #[test]
    fn bad_schedules_templates_and_duplicate_families_point_at_their_key() {
        let e = load_text(&MINIMAL.replace(
            r#"code = "packshots""#,
            "code = \"packshots\"\nschedule = \"soon\"",
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("families[0].schedule"), "{e}");
        assert_eq!(e.line, Some(14), "{e}");
        let e =
            load_text(&MINIMAL.replace(r#"from = "/url""#, r#"template = "{{ oops""#)).unwrap_err();
        assert_eq!(
            e.key.as_deref(),
            Some("families[0].values[0].template"),
            "{e}"
        );
        let twice = format!("{MINIMAL}\n[[families]]\ncode = \"packshots\"\n");
        let e = load_text(&twice).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("families[1].code"), "{e}");
    }

    #[test]
    fn deletion_mark_needs_its_attribute_and_defaults_to_true() {
        let with =
            |sync: &str| load_text(&MINIMAL.replace("[dam]", &format!("[sync]\n{sync}\n\n[dam]")));
        let c = with("deletions = \"mark\"\nmark_attribute = \"archived\"")
            .unwrap()
            .value;
        assert_eq!(
            c.sync.options().deletions,
            DeletionPolicy::Mark {
                attribute: "archived".into(),
                value: serde_json::json!(true)
            }
        );
        let c = with("deletions = \"mark\"\nmark_attribute = \"status\"\nmark_value = \"deleted\"")
            .unwrap()
            .value;
        assert_eq!(
            c.sync.deletion_policy(),
            DeletionPolicy::Mark {
                attribute: "status".into(),
                value: serde_json::json!("deleted")
            }
        );
        assert_eq!(
            load_text(MINIMAL).unwrap().value.sync.deletion_policy(),
            DeletionPolicy::Keep
        );
        let e = with("deletions = \"mark\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sync.deletions"), "{e}");
        assert!(e.to_string().contains("mark_attribute"), "{e}");
        let e = with("deletions = \"delete\"\nmark_attribute = \"archived\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sync.mark_attribute"), "{e}");
        let e = with("deletions = \"mark\"\nmark_attribute = \"archived\"\nmark_value = 3")
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sync.mark_value"), "{e}");
        let e = with("deletions = \"mark\"\nmark_attribute = \"not-a-code\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sync.mark_attribute"), "{e}");
        let e = with("deletions = \"archive\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sync.deletions"), "{e}");
    }

    #[test]
    fn a_product_filter_loads_and_its_mistakes_name_their_key() {
        let with = |pf: &str| {
            load_text(&MINIMAL.replace(
                "code = \"packshots\"",
                &format!("code = \"packshots\"\nproduct_filter = {pf}"),
            ))
        };
        let c = with(r#"{ sku_from = "/name", sku_regex = "^(SKU-\\d+)_" }"#)
            .unwrap()
            .value;
        let pf = c.families[0].product_filter.as_ref().unwrap();
        assert_eq!(pf.attribute, "sku");
        assert_eq!(pf.cache_ttl_secs, 300);
        assert!(load_text(MINIMAL).unwrap().value.families[0]
            .product_filter
            .is_none());
        let e = with(r#"{ sku_from = "metadata/sku" }"#).unwrap_err();
        assert_eq!(
            e.key.as_deref(),
            Some("families[0].product_filter.sku_from"),
            "{e}"
        );
        let e = with(r#"{ sku_from = "/name", sku_regex = "(" }"#).unwrap_err();
        assert_eq!(
            e.key.as_deref(),
            Some("families[0].product_filter.sku_regex"),
            "{e}"
        );
        let e = with(r#"{ sku_from = "/name", attribute = "ean" }"#).unwrap_err();
        assert_eq!(
            e.key.as_deref(),
            Some("families[0].product_filter.attribute"),
            "{e}"
        );
        let e = with(r#"{ sku_form = "/name" }"#).unwrap_err();
        assert!(e.to_string().contains("sku_form"), "{e}");
    }

    #[test]
    fn a_product_link_loads_and_its_mistakes_name_their_key() {
        let with = |link: &str| {
            load_text(&MINIMAL.replace(
                "code = \"packshots\"",
                &format!("code = \"packshots\"\nlink = {link}"),
            ))
        };
        let c = with(r#"{ product = "/metadata/sku", attribute = "packshot_images" }"#)
            .unwrap()
            .value;
        let link = c.families[0].link.as_ref().unwrap();
        assert_eq!(link.attribute, "packshot_images");
        assert_eq!(link.mode, assetbridge_engine::links::LinkMode::Add);
        assert_eq!(link.on_delete, assetbridge_engine::links::OnDelete::Unlink);
        assert!(load_text(MINIMAL).unwrap().value.families[0].link.is_none());
        let c = with(
            r#"{ product = { from = "/name", transform = [{ regex = '^(SKU-\d+)_' }] }, attribute = "images", scope = "ecommerce", on_delete = "keep" }"#,
        )
        .unwrap()
        .value;
        assert_eq!(
            c.families[0].link.as_ref().unwrap().scope.as_deref(),
            Some("ecommerce")
        );

        let e = with(r#"{ product = "metadata/sku", attribute = "images" }"#).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("families[0].link.product"), "{e}");
        assert_eq!(e.line, Some(14), "{e}");
        let e = with(r#"{ product = { from = "/name", transform = [{ regex = "(" }] }, attribute = "images" }"#)
            .unwrap_err();
        assert_eq!(
            e.key.as_deref(),
            Some("families[0].link.product.transform[0]"),
            "{e}"
        );
        let e =
            with(r#"{ product = "/sku", attribute = "images", mode = "replace" }"#).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("families[0].link.mode"), "{e}");
        let e = with(r#"{ product = { form = "/sku" }, attribute = "images" }"#).unwrap_err();
        assert!(e.to_string().contains("form"), "{e}");
        let e = with(r#"{ product = "/sku" }"#).unwrap_err();
        assert!(e.to_string().contains("attribute"), "{e}");
        let e = with(r#"{ product = "/sku", attribute = "not-a-code" }"#).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("families[0].link.attribute"), "{e}");
    }

    const AEM_AND_ENRICHMENT: &str = r#"
[aem]
allowed_hosts = ["author-p1-e2.adobeaemcloud.com"]

[aem.ims]
client_id = "cid"
client_secret = "shh"
scopes = ["openid", "aem.assets.author"]

[enrichment]
product_key = { from = "name", strip_extension = true }
locale = "en_US"

[[enrichment.fields]]
attribute = "sku"
target = "wknd-skuid"

[[enrichment.fields]]
attribute = "supplier"
target = "wknd-suppliername"
format = "option_label"
"#;

    #[test]
    fn enrichment_loads_with_defaults_and_checks_its_keys() {
        let c = load_text(&format!("{MINIMAL}{AEM_AND_ENRICHMENT}"))
            .unwrap()
            .value;
        let e = c.enrichment.as_ref().unwrap();
        assert_eq!(e.fields.len(), 2);
        assert_eq!(e.cache_ttl_secs, 60);
        assert_eq!(
            e.unknown_product,
            assetbridge_engine::enrich::UnknownProduct::Skip
        );
        assert_eq!(c.aem.as_ref().unwrap().ims.refresh_margin_secs, 300);
        let without = load_text(MINIMAL).unwrap().value;
        assert!(
            without.enrichment.is_none() && without.aem.is_none(),
            "off by default"
        );

        // A rule's mistake names its key and line.
        let bad = format!("{MINIMAL}{AEM_AND_ENRICHMENT}")
            .replace("target = \"wknd-suppliername\"", "target = \"wknd-skuid\"");
        let e = load_text(&bad).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("enrichment.fields[1].target"), "{e}");
        assert!(e.line.is_some(), "{e}");
        // A typo is an unknown field.
        let typo = format!("{MINIMAL}{AEM_AND_ENRICHMENT}").replace("locale = ", "locales = ");
        assert!(load_text(&typo)
            .unwrap_err()
            .to_string()
            .contains("locales"));
        // Enrichment without [aem] cannot write anywhere.
        let alone = format!(
            "{MINIMAL}{}",
            &AEM_AND_ENRICHMENT[AEM_AND_ENRICHMENT.find("[enrichment]").unwrap()..]
        );
        let e = load_text(&alone).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("enrichment"), "{e}");
    }

    #[test]
    fn a_structure_mistake_names_its_key_and_line() {
        let text = format!(
            "{MINIMAL}\n[families.structure]\nlabels = {{ en_US = \"Packshots\" }}\n\n[[families.structure.attributes]]\ncode = \"season\"\ntype = \"single_option\"\noptions = [ {{ code = \"late-fall\" }} ]\n"
        );
        let e = load_text(&text).unwrap_err();
        assert_eq!(
            e.key.as_deref(),
            Some("families[0].structure.attributes[0].options[0].code"),
            "{e}"
        );
        assert_eq!(e.line, Some(25), "{e}");
        let ok = text.replace("late-fall", "late_fall");
        let c = load_text(&ok).unwrap().value;
        let s = c.families[0].structure.as_ref().unwrap();
        assert_eq!(s.attributes[0].options[0].code, "late_fall");
        assert!(load_text(MINIMAL).unwrap().value.families[0]
            .structure
            .is_none());
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/assetbridge.toml"
        ))
        .unwrap();
        // `password_file` points at a secret file that does not exist here: drop that one line.
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("password_file"))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = load_text(&text).unwrap().value;
        assert_eq!(c.families.len(), 2);
        assert!(c.families.iter().all(|f| f.schedule().is_ok()));
    }
}
