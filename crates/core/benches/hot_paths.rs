//! Micro-benchmarks of the connector's per-asset hot paths (pure core, no I/O):
//!
//! - `map_dam_record`: mapping one DAM record (the DAM emulator's record shape) with the demo's
//!   10-rule family mapping, compiled against the family structure (coercion included);
//! - `content_hash`: the content hash of the mapped asset;
//! - `serialise_batch_100`: a batch of 100 mapped assets to the JSON body of a batch PATCH.
//!
//! `cargo bench -p assetbridge-core` (short warm-up and measurement times: well under a minute).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use assetbridge_core::mapping::{CompiledMapping, FamilyMapping, ValueRule};
use assetbridge_core::{
    content_hash, AssetAttribute, AttributeType, DamAsset, FamilyStructure, PimAsset,
};
use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};

/// The Akeneo structure of `assetbridge demo` (media link, localised title and description,
/// tags, width, height, sku, supplier).
fn structure() -> FamilyStructure {
    let mut media = AssetAttribute::new("media", AttributeType::MediaLink);
    media.prefix = Some("http://127.0.0.1:8081/files/".into());
    let mut title = AssetAttribute::new("title", AttributeType::Text);
    title.value_per_locale = true;
    title.max_characters = Some(255);
    let mut description = AssetAttribute::new("description", AttributeType::Text);
    description.value_per_locale = true;
    description.max_characters = Some(1000);
    let mut tags = AssetAttribute::new("tags", AttributeType::MultipleOptions);
    tags.options = Some(
        [
            "summer", "winter", "spring", "autumn", "red", "studio", "outdoor", "new", "sale",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    let mut width = AssetAttribute::new("width", AttributeType::Number);
    width.decimals_allowed = Some(false);
    let mut height = AssetAttribute::new("height", AttributeType::Number);
    height.decimals_allowed = Some(false);
    let attributes: BTreeMap<String, AssetAttribute> = [
        media,
        title,
        description,
        tags,
        width,
        height,
        AssetAttribute::new("sku", AttributeType::Text),
        AssetAttribute::new("supplier", AttributeType::Text),
    ]
    .into_iter()
    .map(|a| (a.code.clone(), a))
    .collect();
    FamilyStructure {
        code: "packshots".into(),
        attribute_as_main_media: Some("media".into()),
        attributes,
    }
}

/// The 10 value rules of the demo's (and the benchmark harness's) configuration.
fn mapping() -> CompiledMapping {
    let rules: Vec<ValueRule> = serde_json::from_value(json!([
        {"attribute": "media", "from": "/url"},
        {"attribute": "title", "from": "/metadata/title", "locale": "en_US"},
        {"attribute": "title", "from": "/metadata/title_fr", "locale": "fr_FR"},
        {"attribute": "title", "from": "/metadata/title_de", "locale": "de_DE"},
        {"attribute": "description", "from": "/metadata/description", "locale": "en_US"},
        {"attribute": "tags", "from": "/metadata/tags"},
        {"attribute": "width", "from": "/metadata/width"},
        {"attribute": "height", "from": "/metadata/height"},
        {"attribute": "sku", "from": "/metadata/sku"},
        {"attribute": "supplier", "from": "/metadata/supplier"}
    ]))
    .expect("valid rules");
    let mapping = FamilyMapping {
        values: rules,
        ..FamilyMapping::default()
    };
    CompiledMapping::new(&mapping, Some(&structure())).expect("the mapping fits the structure")
}

/// A record shaped like the DAM emulator's (`GET /api/assets` items).
fn record(i: u32) -> DamAsset {
    let id = format!("3F2A9C1B-77E0-0C4D-9A1E-{i:012X}");
    let record: Value = json!({
        "id": id,
        "name": format!("SKU-{:06}_front.jpg", i % 5000),
        "type": "packshots",
        "url": format!("http://127.0.0.1:8081/files/{id}/SKU-{:06}_front.jpg", i % 5000),
        "created_at": "2025-12-20T08:00:00Z",
        "updated_at": "2026-01-01T00:00:07Z",
        "deleted": false,
        "checksum": "5d41402abc4b2a76b9719d911017c592a1b2c3d4",
        "size": 2817,
        "metadata": {
            "title": "Classic red shirt",
            "title_fr": "chemise rouge",
            "title_de": "Hemd rot",
            "description": "Classic shirt in red, front view, for the summer collection.",
            "tags": ["summer", "red", "new"],
            "width": 1200,
            "height": 800,
            "sku": format!("SKU-{:06}", i % 5000),
            "supplier": "Acme Textiles",
            "color": "red"
        }
    });
    DamAsset {
        id,
        updated_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 7).unwrap(),
        record,
    }
}

fn hot_paths(c: &mut Criterion) {
    let mapping = mapping();
    let asset = record(12_345);
    let mapped: PimAsset = mapping.map(&asset).expect("maps");
    assert_eq!(mapped.values.len(), 8, "every attribute filled");

    let mut g = c.benchmark_group("per_asset");
    g.throughput(Throughput::Elements(1));
    g.bench_function("map_dam_record_10_rules", |b| {
        b.iter(|| mapping.map(black_box(&asset)).expect("maps"))
    });
    g.bench_function("content_hash", |b| {
        b.iter(|| content_hash(black_box(&mapped)))
    });
    g.finish();

    let batch: Vec<PimAsset> = (0..100)
        .map(|i| mapping.map(&record(i)).expect("maps"))
        .collect();
    let mut g = c.benchmark_group("per_batch");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("serialise_batch_100", |b| {
        b.iter(|| {
            // As the Akeneo client builds a batch PATCH body (a buffer sized up front).
            let mut body = Vec::with_capacity(100 * 1024);
            assetbridge_core::json::write_assets(&mut body, black_box(&batch));
            body
        })
    });
    g.bench_function("serialise_batch_100_serde_json", |b| {
        b.iter(|| {
            // The same bytes by serde_json (the reference `json::write_assets` is tested against).
            let body: Vec<&PimAsset> = black_box(&batch).iter().collect();
            serde_json::to_vec(&body).expect("serialisable")
        })
    });
    // A DAM listing page of 100 records, as the DAM client reads it.
    let page = serde_json::to_string(&serde_json::json!({
        "items": (0..100).map(|i| record(i).record).collect::<Vec<_>>(),
        "next_cursor": "abc",
    }))
    .expect("serialisable");
    g.bench_function("parse_dam_page_100", |b| {
        b.iter(|| assetbridge_core::json::parse_value(black_box(&page)).expect("JSON"))
    });
    g.bench_function("parse_dam_page_100_serde_json", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(&page)).expect("JSON"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = hot_paths
}
criterion_main!(benches);
