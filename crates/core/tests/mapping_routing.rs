//! Family routing from a `[routing]` table as written in the configuration.

use assetbridge_core::routing::{CompiledRoutes, RouteConfig, Routed, SKIP_REASON};
use serde_json::json;

fn routes(toml_text: &str) -> CompiledRoutes {
    let cfg: RouteConfig = toml::from_str(toml_text).unwrap();
    CompiledRoutes::new(&cfg).unwrap()
}

const TABLE: &str = r#"
default = "lifestyle"

[[routes]]
family = "packshots"
when = { pointer = "/data/repositoryMetadata/repo:path", prefix = "/content/dam/packshots/" }

[[routes]]
family = "videos"
when = { pointer = "/data/repositoryMetadata/dc:format", matches = "^video/" }

[[routes]]
family = "campaign"
when = { any = [
  { pointer = "/tags", equals = "campaign", ignore_case = true },
  { pointer = "/folder", in = ["campaigns", "ads"] },
] }
"#;

#[test]
fn routes_by_path_prefix_type_tag_and_folder() {
    let r = routes(TABLE);
    let aem = |path: &str, format: &str| json!({"data": {"repositoryMetadata": {"repo:path": path, "dc:format": format}}});
    assert_eq!(
        r.route(&aem("/content/dam/packshots/shoe.png", "image/png")),
        Some("packshots")
    );
    assert_eq!(
        r.route(&aem("/content/dam/packshots/clip.mp4", "video/mp4")),
        Some("packshots")
    );
    assert_eq!(
        r.route(&aem("/content/dam/misc/clip.mp4", "video/mp4")),
        Some("videos")
    );
    assert_eq!(
        r.route(&json!({"tags": ["Spring", "CAMPAIGN"]})),
        Some("campaign")
    );
    assert_eq!(r.route(&json!({"folder": "ads"})), Some("campaign"));
    assert_eq!(
        r.decide(&json!({"folder": "misc"})),
        Routed::Default("lifestyle")
    );
    assert_eq!(
        r.decide(&aem("/content/dam/misc/clip.mp4", "video/mp4")),
        Routed::Route {
            index: 1,
            family: "videos"
        }
    );
}

#[test]
fn without_a_default_unmatched_assets_are_skipped_with_a_reason() {
    let r = routes(
        r#"routes = [{ family = "videos", when = { pointer = "/type", equals = "video" } }]"#,
    );
    let d = r.decide(&json!({"type": "image"}));
    assert_eq!(d, Routed::Skipped);
    assert_eq!(d.family(), None);
    assert!(SKIP_REASON.contains("no route"));
}

#[test]
fn arbitrary_records_never_fail_routing() {
    let r = routes(TABLE);
    for v in [
        json!(null),
        json!(1),
        json!("x"),
        json!([]),
        json!({"data": 1}),
        json!({"tags": {"a": 1}}),
    ] {
        assert_eq!(r.route(&v), Some("lifestyle"), "{v}");
    }
}

#[test]
fn configuration_errors() {
    let bad = |t: &str| {
        let cfg: RouteConfig = toml::from_str(t).unwrap();
        CompiledRoutes::new(&cfg).unwrap_err()
    };
    assert_eq!(bad("").key, "routes");
    assert_eq!(bad(r#"default = "Life Style""#).key, "default");
    let e = bad(r#"routes = [{ family = "a", when = { pointer = "type", equals = "v" } }]"#);
    assert_eq!(e.key, "routes[0].when");
    assert_eq!(e.to_string(), "routing routes[0].when: `type` is not a JSON pointer: it must start with `/` (e.g. `/metadata/title`)");
    // Typos are refused when the table is read.
    for (t, want) in [
        (r#"defaults = "a""#, "unknown field `defaults`"),
        (
            r#"routes = [{ family = "a", when = { pointer = "/t", equal = "v" } }]"#,
            "unknown condition key `equal`",
        ),
        (
            r#"routes = [{ family = "a", pointer = "/t", equals = "v" }]"#,
            "unknown field `pointer`",
        ),
        (r#"routes = [{ family = "a" }]"#, "missing field `when`"),
    ] {
        let e = toml::from_str::<RouteConfig>(t).unwrap_err().to_string();
        assert!(e.contains(want), "{want} not in {e}");
    }
}

#[test]
fn configured_families_are_checked() {
    let r = routes(TABLE);
    assert_eq!(
        r.families(),
        vec!["packshots", "videos", "campaign", "lifestyle"]
    );
    assert!(r
        .check_families(["packshots", "videos", "campaign", "lifestyle", "other"])
        .is_ok());
    let e = r
        .check_families(["packshots", "videos", "lifestyle"])
        .unwrap_err();
    assert_eq!(e.key, "routes[2].family");
}
