//! `[routing]`: which asset family an asset belongs to when the source does not say — webhook
//! and queue message shapes without `family` / `family_pointer`, and (with `poll = true`) one
//! DAM listing that feeds every family the table names. The table itself is the core's
//! ([`assetbridge_core::routing`]); this module adds the routed listing's keys, the checks
//! against the rest of the file, and attaches the compiled table to the message shapes.

use std::collections::BTreeMap;
use std::sync::Arc;

use assetbridge_core::routing::{CompiledRoutes, Route, RouteConfig};
use assetbridge_engine::RoutedListing;
use serde::Deserialize;

use crate::config::AppConfig;
use crate::schedule::Schedule;

/// The `[routing]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Routes, tried in order: `{ family = "videos", when = { pointer = "/type", equals =
    /// "video" } }`. Default: none.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The family of assets no route matches. Default: none (such assets are skipped and
    /// counted).
    #[serde(default)]
    pub default: Option<String>,
    /// Poll one DAM listing (no family filter) for every family the table names, instead of
    /// one listing per family. Default: `false`.
    #[serde(default)]
    pub poll: bool,
    /// How often `run` polls the routed listing (same syntax as a family's `schedule`).
    /// Default: `"5m"`.
    #[serde(default = "d_schedule")]
    pub schedule: String,
    /// Query parameters of the routed listing (besides `[dam] extra_query`). Default: none.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// How often `run` reconciles the routed listing's families (`"off"` = never). Default:
    /// `[sync] reconcile_schedule`.
    #[serde(default)]
    pub reconcile_schedule: Option<String>,
}

fn d_schedule() -> String {
    "5m".to_owned()
}

impl RoutingConfig {
    /// The core's table.
    pub fn table(&self) -> RouteConfig {
        RouteConfig {
            routes: self.routes.clone(),
            default: self.default.clone(),
        }
    }

    /// The compiled table (pointers and regexes compiled).
    pub fn compile(&self) -> Result<CompiledRoutes, (String, String)> {
        CompiledRoutes::new(&self.table()).map_err(|e| (format!("routing.{}", e.key), e.message))
    }

    pub fn schedule(&self) -> Result<Schedule, String> {
        Schedule::parse(&self.schedule)
    }

    /// The routed listing the engine polls (when `poll`).
    pub fn listing(&self, routes: Arc<CompiledRoutes>) -> RoutedListing {
        RoutedListing {
            routes,
            query: self
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// The message shapes of the file, with their keys.
fn shapes(cfg: &AppConfig) -> Vec<(String, &assetbridge_sources::message::MessageShape)> {
    let mut out = Vec::new();
    if let Some(w) = &cfg.webhooks {
        for (i, g) in w.generic.iter().enumerate() {
            out.push((format!("webhooks.generic[{i}].shape"), &g.shape));
        }
    }
    for (i, q) in cfg.queues.amqp.iter().enumerate() {
        out.push((format!("queues.amqp[{i}].shape"), &q.shape));
    }
    for (i, q) in cfg.queues.nats.iter().enumerate() {
        out.push((format!("queues.nats[{i}].shape"), &q.shape));
    }
    out
}

/// Checks `[routing]` against the rest of the file: the table compiles, every family it names
/// is a configured `[[families]]` code, its schedules parse; a message shape without a family
/// needs the table; with `poll`, the routed families have no listing query of their own.
/// Returns (key, message).
pub fn validate(cfg: &AppConfig) -> Result<(), (String, String)> {
    let Some(routing) = &cfg.routing else {
        if let Some((key, _)) = shapes(cfg).into_iter().find(|(_, s)| s.is_routed()) {
            return Err((
                key,
                "set `family` (a fixed asset family code) or `family_pointer`, or add a top-level [routing] table to route each item".into(),
            ));
        }
        return Ok(());
    };
    let compiled = routing.compile()?;
    let known: Vec<&str> = cfg.families.iter().map(|f| f.code.as_str()).collect();
    compiled
        .check_families(known.iter().copied())
        .map_err(|e| (format!("routing.{}", e.key), e.message))?;
    routing
        .schedule()
        .map_err(|e| ("routing.schedule".to_owned(), e))?;
    if let Some(s) = &routing.reconcile_schedule {
        Schedule::parse_optional(s).map_err(|e| ("routing.reconcile_schedule".to_owned(), e))?;
    }
    if routing.poll {
        let routed = compiled.families();
        for (i, f) in cfg.families.iter().enumerate() {
            if !routed.contains(&f.code.as_str()) {
                continue;
            }
            if !f.query.is_empty() {
                return Err((
                    format!("families[{i}].query"),
                    format!(
                        "family `{}` is fed by the routed listing ([routing] poll = true): its own listing query is not used (set [routing] query)",
                        f.code
                    ),
                ));
            }
            if f.reconcile_schedule.is_some() {
                return Err((
                    format!("families[{i}].reconcile_schedule"),
                    format!(
                        "family `{}` is fed by the routed listing ([routing] poll = true): set [routing] reconcile_schedule instead",
                        f.code
                    ),
                ));
            }
        }
    } else if !routing.query.is_empty() {
        return Err((
            "routing.query".into(),
            "only used with poll = true (the routed listing)".into(),
        ));
    }
    Ok(())
}

/// Attaches the compiled table to every message shape that routes (run after [`validate`]).
pub fn attach(cfg: &mut AppConfig) -> Result<(), (String, String)> {
    let Some(routing) = &cfg.routing else {
        return Ok(());
    };
    let routes = Arc::new(routing.compile()?);
    if let Some(w) = &mut cfg.webhooks {
        for g in &mut w.generic {
            g.shape.routes = Some(assetbridge_sources::message::SharedRoutes(routes.clone()));
        }
    }
    for q in &mut cfg.queues.amqp {
        q.shape.routes = Some(assetbridge_sources::message::SharedRoutes(routes.clone()));
    }
    for q in &mut cfg.queues.nats {
        q.shape.routes = Some(assetbridge_sources::message::SharedRoutes(routes.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config;

    fn load_text(
        text: &str,
    ) -> Result<assetbridge_config::Loaded<AppConfig>, assetbridge_config::ConfigError> {
        let loaded = assetbridge_config::load_str::<AppConfig>(
            text,
            "assetbridge.toml",
            &|_: &str| None,
            Path::new("."),
        )?;
        config::validate(&loaded)?;
        Ok(loaded)
    }

    const BASE: &str = r#"
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

[[families]]
code = "videos"
"#;

    const ROUTING: &str = r#"
[routing]
routes = [
  { family = "packshots", when = { pointer = "/path", prefix = "/dam/packshots/" } },
  { family = "videos", when = { pointer = "/type", equals = "video" } },
]
"#;

    #[test]
    fn a_routing_table_loads_and_its_families_must_be_configured() {
        let c = load_text(&format!("{BASE}{ROUTING}")).unwrap().value;
        let r = c.routing.as_ref().unwrap();
        assert!(!r.poll, "polling stays per family unless asked");
        assert_eq!(r.schedule, "5m");
        assert_eq!(r.compile().unwrap().families(), vec!["packshots", "videos"]);
        assert!(load_text(BASE).unwrap().value.routing.is_none());

        let bad = format!("{BASE}{}", ROUTING.replace("\"videos\"", "\"video\""));
        let e = load_text(&bad).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("routing.routes[1].family"), "{e}");
        assert_eq!(e.line, Some(21), "{e}");
        assert!(e.to_string().contains("not configured"), "{e}");
        let e = load_text(&format!(
            "{BASE}{}",
            ROUTING.replace("prefix = \"/dam/packshots/\"", "matches = \"(\"")
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("routing.routes[0].when"), "{e}");
        let e = load_text(&format!("{BASE}\n[routing]\ndefault = \"x\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("routing.default"), "{e}");
        let e = load_text(&format!("{BASE}\n[routing]\nroute = []\n")).unwrap_err();
        assert!(e.to_string().contains("route"), "{e}");
        let e = load_text(&format!("{BASE}{ROUTING}schedule = \"soon\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("routing.schedule"), "{e}");
        let e = load_text(&format!("{BASE}{ROUTING}query = {{ a = \"b\" }}\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("routing.query"), "{e}");
    }

    #[test]
    fn a_routed_listing_takes_over_the_families_listings() {
        let c = load_text(&format!(
            "{BASE}{ROUTING}poll = true\nschedule = \"1m\"\nquery = {{ status = \"published\" }}\n"
        ))
        .unwrap()
        .value;
        let r = c.routing.as_ref().unwrap();
        let listing = r.listing(Arc::new(r.compile().unwrap()));
        assert_eq!(listing.families(), vec!["packshots", "videos"]);
        assert_eq!(listing.query, vec![("status".into(), "published".into())]);
        let own_query = BASE.replace(
            "code = \"videos\"",
            "code = \"videos\"\nquery = { type = \"video\" }",
        );
        let e = load_text(&format!("{own_query}{ROUTING}poll = true\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("families[1].query"), "{e}");
        let own_schedule = BASE.replace(
            "code = \"videos\"",
            "code = \"videos\"\nreconcile_schedule = \"1h\"",
        );
        let e = load_text(&format!("{own_schedule}{ROUTING}poll = true\n")).unwrap_err();
        assert_eq!(
            e.key.as_deref(),
            Some("families[1].reconcile_schedule"),
            "{e}"
        );
        // Without `poll`, a family keeps its own listing and schedules.
        assert!(load_text(&format!("{own_query}{ROUTING}")).is_ok());
    }

    #[test]
    fn a_message_shape_without_a_family_needs_the_table_and_gets_it() {
        let nats = "\n[[queues.nats]]\nstream = \"dam\"\nshape = { items_pointer = \"/assets\" }\n";
        let e = load_text(&format!("{BASE}{nats}")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("queues.nats[0].shape"), "{e}");
        assert!(e.to_string().contains("[routing]"), "{e}");
        // With the table, `load` attaches it to the shape.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("assetbridge.toml");
        std::fs::write(&path, format!("{BASE}{ROUTING}{nats}")).unwrap();
        let loaded = config::load(&path).unwrap();
        let shape = &loaded.value.queues.nats[0].shape;
        assert!(shape.is_routed() && shape.routes.is_some());
        let parsed = shape
            .parse(
                br#"{"assets": [{"id": "a", "updated_at": 1, "type": "video"}]}"#,
                "nats",
                None,
            )
            .unwrap();
        assert_eq!(parsed[0].change().unwrap().family, "videos");
    }

    #[test]
    fn reconcile_schedules_default_to_daily_and_can_be_off() {
        let c = load_text(BASE).unwrap().value;
        assert_eq!(c.sync.reconcile_schedule, "1d");
        let s = c.families[0].reconcile_schedule(&c.sync).unwrap().unwrap();
        assert!(matches!(s, Schedule::Every(d) if d.as_secs() == 86_400));
        let c = load_text(&BASE.replace(
            "code = \"videos\"",
            "code = \"videos\"\nreconcile_schedule = \"off\"",
        ))
        .unwrap()
        .value;
        assert!(c.families[1].reconcile_schedule(&c.sync).unwrap().is_none());
        assert!(c.families[0].reconcile_schedule(&c.sync).unwrap().is_some());
        let e =
            load_text(&BASE.replace("[dam]", "[sync]\nreconcile_schedule = \"daily\"\n\n[dam]"))
                .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sync.reconcile_schedule"), "{e}");
        let e = load_text(&BASE.replace(
            "code = \"videos\"",
            "code = \"videos\"\nreconcile_schedule = \"0 3 * *\"",
        ))
        .unwrap_err();
        assert_eq!(
            e.key.as_deref(),
            Some("families[1].reconcile_schedule"),
            "{e}"
        );
    }
}
