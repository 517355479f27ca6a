//! Family routing: which Akeneo asset family a DAM asset belongs to, decided from its record.
//!
//! Used for changes that arrive without a family (webhooks, queue messages) and for one DAM
//! listing that feeds several families. Routes are tried in order; the first whose condition
//! holds gives the family; an asset no route matches goes to `default`, or, without a default,
//! is **skipped** (counted with [`SKIP_REASON`]), not failed.
//!
//! ```toml
//! [routing]
//! default = "lifestyle"          # optional
//! routes = [
//!   { family = "packshots", when = { pointer = "/path", prefix = "/content/dam/packshots/" } },
//!   { family = "videos",    when = { pointer = "/type", equals = "video" } },
//!   { family = "campaign",  when = { pointer = "/tags", equals = "campaign", ignore_case = true } },
//!   { family = "documents", when = { pointer = "/name", matches = "\\.(pdf|docx?)$" } },
//! ]
//! ```
//!
//! Conditions are those of value rules' `when` ([`crate::mapping::Condition`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::code::is_valid_code;
use crate::mapping::condition::Cond;
use crate::mapping::Condition;

/// Why an asset was not routed to any family (for skip counters and logs).
pub const SKIP_REASON: &str = "no route matches the asset and no default family is set";

/// One route: assets for which `when` holds belong to `family`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The Akeneo asset family code.
    pub family: String,
    /// The condition on the DAM record.
    pub when: Condition,
}

/// The `[routing]` table.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Routes, tried in order. Default: none.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The family of assets no route matches. Default: none (such assets are skipped).
    #[serde(default)]
    pub default: Option<String>,
}

/// A routing table that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RouteError {
    /// The key concerned, relative to the `[routing]` table (`routes[2].when`, `default`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "routing {}: {}", self.key, self.message)
    }
}

/// Where an asset goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed<'a> {
    /// Route number `index` matched.
    Route { index: usize, family: &'a str },
    /// No route matched; the default family applies.
    Default(&'a str),
    /// No route matched and there is no default: skip the asset ([`SKIP_REASON`]).
    Skipped,
}

impl<'a> Routed<'a> {
    /// The family, unless skipped.
    pub fn family(&self) -> Option<&'a str> {
        match *self {
            Routed::Route { family, .. } | Routed::Default(family) => Some(family),
            Routed::Skipped => None,
        }
    }
}

/// A routing table ready to use.
#[derive(Debug)]
pub struct CompiledRoutes {
    routes: Vec<(String, Cond)>,
    default: Option<String>,
}

impl CompiledRoutes {
    /// Compiles the conditions (pointers, regexes) and checks the family codes. A table with no
    /// route and no default is refused (it would skip everything).
    pub fn new(config: &RouteConfig) -> Result<Self, RouteError> {
        let check = |key: String, family: &str| {
            if is_valid_code(family) {
                Ok(())
            } else {
                Err(RouteError {
                    key,
                    message: format!(
                        "`{family}` is not an asset family code (letters, digits and `_`)"
                    ),
                })
            }
        };
        if config.routes.is_empty() && config.default.is_none() {
            return Err(RouteError {
                key: "routes".into(),
                message: "no route and no default family: every asset would be skipped".into(),
            });
        }
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            check(format!("routes[{i}].family"), &r.family)?;
            let cond = Cond::compile(&r.when).map_err(|message| RouteError {
                key: format!("routes[{i}].when"),
                message,
            })?;
            routes.push((r.family.clone(), cond));
        }
        if let Some(d) = &config.default {
            check("default".into(), d)?;
        }
        Ok(Self {
            routes,
            default: config.default.clone(),
        })
    }

    /// The family of the asset whose DAM record is `record`; `None`: skip it ([`SKIP_REASON`]).
    pub fn route(&self, record: &Value) -> Option<&str> {
        self.decide(record).family()
    }

    /// Where the asset goes and why (which route, the default, or skipped).
    pub fn decide(&self, record: &Value) -> Routed<'_> {
        for (index, (family, cond)) in self.routes.iter().enumerate() {
            if cond.eval(record) {
                return Routed::Route { index, family };
            }
        }
        match &self.default {
            Some(d) => Routed::Default(d),
            None => Routed::Skipped,
        }
    }

    /// Every family a route or the default can give, each once, in order of first mention.
    pub fn families(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in self
            .routes
            .iter()
            .map(|(f, _)| f.as_str())
            .chain(self.default.as_deref())
        {
            if !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }

    /// Fails on the first route (or the default) naming a family not in `known` (the configured
    /// families), so a typo is found at start-up.
    pub fn check_families<'k>(
        &self,
        known: impl IntoIterator<Item = &'k str> + Clone,
    ) -> Result<(), RouteError> {
        let is_known = |f: &str| known.clone().into_iter().any(|k| k == f);
        let list = || known.clone().into_iter().collect::<Vec<_>>().join(", ");
        for (i, (f, _)) in self.routes.iter().enumerate() {
            if !is_known(f) {
                return Err(RouteError {
                    key: format!("routes[{i}].family"),
                    message: format!("family `{f}` is not configured (configured: {})", list()),
                });
            }
        }
        if let Some(d) = &self.default {
            if !is_known(d) {
                return Err(RouteError {
                    key: "default".into(),
                    message: format!("family `{d}` is not configured (configured: {})", list()),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn routes(v: Value) -> Result<CompiledRoutes, RouteError> {
        let cfg: RouteConfig = serde_json::from_value(v).unwrap();
        CompiledRoutes::new(&cfg)
    }

    #[test]
    fn first_matching_route_wins_then_default() {
        let r = routes(json!({
            "default": "lifestyle",
            "routes": [
                {"family": "packshots", "when": {"pointer": "/path", "prefix": "/content/dam/packshots/"}},
                {"family": "videos", "when": {"pointer": "/type", "equals": "video"}},
                {"family": "campaign", "when": {"pointer": "/tags", "equals": "campaign", "ignore_case": true}},
            ]
        }))
        .unwrap();
        assert_eq!(
            r.route(&json!({"path": "/content/dam/packshots/a.jpg", "type": "video"})),
            Some("packshots")
        );
        assert_eq!(
            r.decide(&json!({"type": "video"})),
            Routed::Route {
                index: 1,
                family: "videos"
            }
        );
        assert_eq!(
            r.route(&json!({"tags": ["x", "Campaign"]})),
            Some("campaign")
        );
        assert_eq!(
            r.decide(&json!({"type": "image"})),
            Routed::Default("lifestyle")
        );
        assert_eq!(r.route(&json!("not an object")), Some("lifestyle"));
        assert_eq!(
            r.families(),
            vec!["packshots", "videos", "campaign", "lifestyle"]
        );
    }

    #[test]
    fn unmatched_is_skipped_without_default() {
        let r = routes(json!({"routes": [{"family": "videos", "when": {"pointer": "/type", "equals": "video"}}]}))
            .unwrap();
        assert_eq!(r.decide(&json!({"type": "image"})), Routed::Skipped);
        assert_eq!(r.route(&json!(null)), None);
    }

    #[test]
    fn bad_tables_are_refused_with_the_key() {
        let e = routes(json!({})).unwrap_err();
        assert_eq!(e.key, "routes");
        let e = routes(
            json!({"routes": [{"family": "a-b", "when": {"pointer": "/t", "exists": true}}]}),
        )
        .unwrap_err();
        assert_eq!(e.key, "routes[0].family");
        let e =
            routes(json!({"routes": [{"family": "a", "when": {"pointer": "/t", "matches": "("}}]}))
                .unwrap_err();
        assert_eq!(e.key, "routes[0].when");
        assert!(e.to_string().contains("invalid regular expression"), "{e}");
        let e = routes(json!({"default": "x y"})).unwrap_err();
        assert_eq!(e.key, "default");
        assert!(serde_json::from_value::<RouteConfig>(
            json!({"routes": [{"family": "a", "pointer": "/t"}]})
        )
        .is_err());
        assert!(serde_json::from_value::<RouteConfig>(json!({"fallback": "a"})).is_err());
    }

    #[test]
    fn families_are_checked_against_the_configuration() {
        let r = routes(json!({"default": "other", "routes": [{"family": "videos", "when": {"pointer": "/type", "equals": "video"}}]}))
            .unwrap();
        assert!(r.check_families(["videos", "other"]).is_ok());
        let e = r.check_families(["videos"]).unwrap_err();
        assert_eq!(e.key, "default");
        let e = r.check_families(["other"]).unwrap_err();
        assert_eq!(e.key, "routes[0].family");
        assert!(e.message.contains("configured: other"), "{e}");
    }
}
