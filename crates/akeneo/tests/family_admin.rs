//! Asset family administration against the Akeneo emulator over real HTTP: reading a family,
//! its attributes and options, upserts answered 201 / 204, the PIM's 422 surfaced with its
//! message and errors, and the structure cache forgotten
//! after a write.

use assetbridge_akeneo::{AkeneoClient, AkeneoConfig, AkeneoError, Upserted};
use assetbridge_emulators::akeneo::{AkeneoEmulator, AkeneoEmulatorConfig, ROUTE_FAMILY};
use serde_json::json;

#[tokio::test]
async fn families_attributes_and_options_are_read_and_upserted() {
    let emulator = AkeneoEmulator::new(AkeneoEmulatorConfig::default());
    let running = emulator
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config =
        AkeneoConfig::new(&running.base_url, "assetbridge", "secret", "admin", "admin");
    config.retry_base_ms = 2;
    config.retry_max_ms = 20;
    config.timeout_secs = 10;
    config.option_writes_per_second = 1000.0;
    let pim = AkeneoClient::new(config).unwrap();

    assert_eq!(pim.asset_family("videos").await.unwrap(), None);
    let created = pim
        .upsert_asset_family(
            "videos",
            &json!({"code": "videos", "labels": {"en_US": "Videos"}}),
        )
        .await
        .unwrap();
    assert_eq!(created, Upserted::Created);
    let family = pim.asset_family("videos").await.unwrap().unwrap();
    assert_eq!(family["labels"], json!({"en_US": "Videos"}));
    assert_eq!(
        pim.upsert_asset_family(
            "videos",
            &json!({"code": "videos", "labels": {"fr_FR": "Vidéos"}})
        )
        .await
        .unwrap(),
        Upserted::Updated
    );

    // Attributes: the two Akeneo creates with a family, then ours.
    let codes = |attrs: &[serde_json::Value]| -> Vec<String> {
        attrs
            .iter()
            .map(|a| a["code"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        codes(&pim.asset_attributes("videos").await.unwrap()),
        ["label", "media"]
    );
    let body = json!({"code": "kind", "type": "single_option", "value_per_locale": false,
                      "value_per_channel": false, "labels": {"en_US": "Kind"}});
    assert_eq!(
        pim.upsert_asset_attribute("videos", "kind", &body)
            .await
            .unwrap(),
        Upserted::Created
    );
    assert_eq!(
        codes(&pim.asset_attributes("videos").await.unwrap()),
        ["label", "media", "kind"]
    );

    // A refusal keeps the PIM's message and errors.
    let err = pim
        .upsert_asset_attribute("videos", "kind", &json!({"code": "kind", "type": "text"}))
        .await
        .unwrap_err();
    match &err {
        AkeneoError::Request {
            status,
            message,
            errors,
        } => {
            assert_eq!(*status, 422);
            assert_eq!(
                message,
                "The attribute has data that does not comply with the business rules."
            );
            assert_eq!(
                errors.as_ref().unwrap()[0]["message"],
                "The property type is immutable."
            );
        }
        other => panic!("{other:?}"),
    }

    // The structure cache is forgotten after a write: a new option shows at once.
    let before = pim.family_structure("videos").await.unwrap();
    assert_eq!(
        before
            .attribute("kind")
            .unwrap()
            .options
            .as_ref()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        pim.upsert_asset_attribute_option(
            "videos",
            "kind",
            "trailer",
            &json!({"code": "trailer", "labels": {"en_US": "Trailer"}})
        )
        .await
        .unwrap(),
        Upserted::Created
    );
    let after = pim.family_structure("videos").await.unwrap();
    assert!(after
        .attribute("kind")
        .unwrap()
        .options
        .as_ref()
        .unwrap()
        .contains("trailer"));
    assert_eq!(
        pim.asset_attribute_options("videos", "kind").await.unwrap(),
        vec![json!({"code": "trailer", "labels": {"en_US": "Trailer"}})]
    );
    assert_eq!(
        pim.upsert_asset_attribute_option(
            "videos",
            "kind",
            "trailer",
            &json!({"code": "trailer", "labels": {"fr_FR": "Bande-annonce"}})
        )
        .await
        .unwrap(),
        Upserted::Updated
    );
    assert!(matches!(
        pim.asset_attribute_options("videos", "nope").await,
        Err(AkeneoError::Request { status: 404, .. })
    ));

    // One token for every call: they share the client's transport.
    assert_eq!(emulator.counters().token_grants, 1);
    assert!(
        emulator
            .counters()
            .requests_with_status("GET", ROUTE_FAMILY, 200)
            >= 1
    );
}
