//! Quick end-to-end smoke test of the Akeneo emulator over real HTTP.

use assetbridge_emulators::akeneo::{demo_structure, AkeneoEmulator, AkeneoEmulatorConfig};
use serde_json::{json, Value};

#[tokio::test]
async fn token_structure_batch_list_and_log() {
    let emu = AkeneoEmulator::new(AkeneoEmulatorConfig::default());
    for f in demo_structure() {
        emu.add_asset_family(f);
    }
    let running = emu.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = running.base_url.clone();
    let http = reqwest::Client::new();

    let tok: Value = http
        .post(format!("{base}/api/oauth/v1/token"))
        .basic_auth("assetbridge", Some("secret"))
        .json(&json!({"grant_type": "password", "username": "admin", "password": "admin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tok["access_token"].as_str().unwrap().to_owned();

    let fams: Value = http
        .get(format!("{base}/api/rest/v1/asset-families"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fams["_embedded"]["items"].as_array().unwrap().len(), 2);

    let attrs: Value = http
        .get(format!("{base}/api/rest/v1/asset-families/packshots/attributes"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(attrs.as_array().unwrap().len(), 8);

    let batch: Vec<Value> = (0..3)
        .map(|i| {
            json!({"code": format!("a{i}"), "values": {
                "media": [{"locale": null, "channel": null, "data": format!("a{i}.jpg")}],
                "title": [{"locale": "en_US", "channel": null, "data": "T"}],
                "tags": [{"locale": null, "channel": null, "data": ["summer"]}]
            }})
        })
        .chain([json!({"code": "bad", "values": {"tags": [{"locale": null, "channel": null, "data": ["nope"]}]}})])
        .collect();
    let resp = http
        .patch(format!("{base}/api/rest/v1/asset-families/packshots/assets"))
        .bearer_auth(&token)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let res: Value = resp.json().await.unwrap();
    assert_eq!(res[0], json!({"code": "a0", "status_code": 201}));
    assert_eq!(res[3]["status_code"], 422);
    assert_eq!(
        res[3]["errors"][0]["message"],
        "The following option codes don't exist for this attribute : \"nope\""
    );

    let list: Value = http
        .get(format!("{base}/api/rest/v1/asset-families/packshots/assets"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = list["_embedded"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(
        items[0]["values"]["media"][0]["linked_data"]["full_url"],
        "https://dam.local/files/a0.jpg"
    );
    assert!(list["_links"].get("next").is_none());
    assert_eq!(emu.asset_count("packshots"), 3);
    let log = emu.request_log();
    assert_eq!(log.len(), 5);
    assert_eq!(log[3].items, Some(4));
    running.shutdown().await;
}
