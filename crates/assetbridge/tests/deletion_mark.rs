//! `[sync] deletions = "mark"` through the real binary: the mark is checked against each
//! family's structure when the engine is wired, and a deletion in the DAM marks the PIM asset.

mod common;

use std::time::Duration;

use assetbridge_core::{sanitize_code, AssetAttribute, AttributeType};
use common::{config_arg, structure, text, Env, EnvOptions, FAMILIES};
use serde_json::json;

const T: Duration = Duration::from_secs(120);

fn with_sync(env: &Env, name: &str, sync: &str) -> String {
    let path = env.config(name, "", "", "5m");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("deletions = \"delete\""));
    std::fs::write(&path, text.replace("deletions = \"delete\"", sync)).unwrap();
    config_arg(&path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_marks_the_pim_asset_and_a_mark_that_does_not_fit_is_refused() {
    let env = Env::start(EnvOptions {
        assets: 60,
        ..EnvOptions::default()
    })
    .await;
    // The families get a boolean `archived`.
    let prefix = format!("{}/files/", env.dam_url);
    for f in FAMILIES {
        let mut s = structure(f, &prefix, &[]);
        let archived = AssetAttribute::new("archived", AttributeType::Boolean);
        s.attributes.insert("archived".into(), archived);
        env.akeneo.add_asset_family(s);
    }

    // Not an attribute, localizable, wrong type: configuration errors (exit 2) naming the key.
    for (name, sync, says) in [
        (
            "a.toml",
            "deletions = \"mark\"\nmark_attribute = \"gone\"",
            "`gone`",
        ),
        (
            "b.toml",
            "deletions = \"mark\"\nmark_attribute = \"title\"\nmark_value = \"x\"",
            "localizable",
        ),
        (
            "c.toml",
            "deletions = \"mark\"\nmark_attribute = \"archived\"\nmark_value = \"yes\"",
            "type",
        ),
    ] {
        let cfg = with_sync(&env, name, sync);
        let out = env
            .output(&["sync", "--config", &cfg, "--no-progress"], T)
            .await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sync}: {err}");
        assert!(
            err.contains("mark_attribute") && err.contains(says),
            "{sync}: {err}"
        );
    }
    assert_eq!(env.pim_count(), 0, "nothing written with a bad mark");

    let cfg = with_sync(
        &env,
        "ok.toml",
        "deletions = \"mark\"\nmark_attribute = \"archived\"",
    );
    let out = env
        .output(&["sync", "--config", &cfg, "--no-progress"], T)
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.pim_count(), 60);
    let gone = env.dam.delete_some(3);
    let out = env
        .output(&["sync", "--config", &cfg, "--no-progress"], T)
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("marked"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(env.pim_count(), 60, "nothing deleted");
    for id in &gone {
        let code = sanitize_code(id);
        let held = FAMILIES
            .iter()
            .find_map(|f| env.akeneo.asset(f, &code))
            .unwrap_or_else(|| panic!("{id} still in the PIM"));
        assert_eq!(held["values"]["archived"][0]["data"], json!(true), "{held}");
    }
}
