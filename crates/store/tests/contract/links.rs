//! The contract of explicit product links (pending links, link targets, per-product claims),
//! run on both backends by `contract_tests!` in `contract.rs`.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use assetbridge_core::{AssetChange, ChangeKind, DamAsset};
use assetbridge_store::{
    AssetLinks, DeadLetterFilter, DeadLetterPayload, DeadLetterReason, LinkDead, LinkOp,
    LinkRequest, LinkResults, LinkRetry, LinkTarget, WrittenAsset,
};
use serde_json::json;

use super::{h, strings, t, TestDb};

fn target(product: &str) -> LinkTarget {
    LinkTarget {
        product: product.into(),
        attribute: "images".into(),
        locale: None,
        scope: None,
    }
}

fn links(code: &str, products: &[&str]) -> AssetLinks {
    AssetLinks {
        dam_id: format!("dam-{code}"),
        code: code.into(),
        targets: products.iter().map(|p| target(p)).collect(),
    }
}

fn written(code: &str) -> WrittenAsset {
    WrittenAsset {
        dam_id: format!("dam-{code}"),
        code: code.into(),
        hash: h(&format!("hash-{code}")),
        version: None,
    }
}

/// (op, code, product) of every ready pending link, via a claim that is then released.
async fn pending(store: &assetbridge_store::Store) -> BTreeSet<(LinkOp, String, String)> {
    let claim = store.claim_links(1000).await.unwrap();
    let found = claim
        .links()
        .iter()
        .map(|l| {
            (
                l.request.op,
                l.request.code.clone(),
                l.request.target.product.clone(),
            )
        })
        .collect();
    claim.release().await.unwrap();
    found
}

fn set(items: &[(LinkOp, &str, &str)]) -> BTreeSet<(LinkOp, String, String)> {
    items
        .iter()
        .map(|(o, c, p)| (*o, c.to_string(), p.to_string()))
        .collect()
}

pub(crate) async fn product_links_are_recorded_with_writes(db: &TestDb) {
    let store = db.open().await;
    let n = store
        .record_written_linked(
            "packshots",
            &[written("a"), written("b")],
            &[links("a", &["P1", "P2", "P1"]), links("b", &["P1"])],
        )
        .await
        .unwrap();
    assert_eq!(n, 3, "one add per distinct target");
    // The write itself is recorded, as by record_written.
    let hashes = store
        .hashes("packshots", &strings(&["a", "b"]))
        .await
        .unwrap();
    assert_eq!(hashes["a"].as_str(), "hash-a");
    assert_eq!(
        store
            .asset_codes("packshots", &strings(&["dam-a"]))
            .await
            .unwrap()["dam-a"],
        "a"
    );
    assert_eq!(store.family_status().await.unwrap()[0].assets_written, 2);
    assert_eq!(
        pending(&store).await,
        set(&[
            (LinkOp::Add, "a", "P1"),
            (LinkOp::Add, "a", "P2"),
            (LinkOp::Add, "b", "P1")
        ])
    );
    let targets = store
        .link_targets("packshots", &strings(&["a", "b", "c"]))
        .await
        .unwrap();
    assert_eq!(targets["a"], vec![target("P1"), target("P2")]);
    assert_eq!(targets.len(), 2);
    let backlog = store.link_backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.delayed), (3, 0));

    // The asset moves from P1+P2 to P2+P3: P1 loses it, P2 and P3 get it (again).
    store
        .record_written_linked("packshots", &[], &[links("a", &["P3", "P2"])])
        .await
        .unwrap();
    assert_eq!(
        pending(&store).await,
        set(&[
            (LinkOp::Add, "a", "P1"),
            (LinkOp::Add, "a", "P2"),
            (LinkOp::Add, "b", "P1"),
            (LinkOp::Remove, "a", "P1"),
            (LinkOp::Add, "a", "P3"),
        ])
    );
    // Rows come in the order they were recorded: the remove of P1 after its add.
    let claim = store.claim_links(1000).await.unwrap();
    let p1_ops: Vec<LinkOp> = claim
        .links()
        .iter()
        .filter(|l| l.request.code == "a" && l.request.target.product == "P1")
        .map(|l| l.request.op)
        .collect();
    assert_eq!(p1_ops, vec![LinkOp::Add, LinkOp::Remove]);
    claim.release().await.unwrap();

    // Deleted: removed from every product it is linked to, and forgotten.
    let n = store
        .forget_assets_unlinked("packshots", &[("dam-a".into(), "a".into())])
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(store
        .hashes("packshots", &strings(&["a"]))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .asset_codes("packshots", &strings(&["dam-a"]))
        .await
        .unwrap()
        .is_empty());
    assert!(!store
        .link_targets("packshots", &strings(&["a"]))
        .await
        .unwrap()
        .contains_key("a"));
    let after = pending(&store).await;
    assert!(after.contains(&(LinkOp::Remove, "a".into(), "P2".into())));
    assert!(after.contains(&(LinkOp::Remove, "a".into(), "P3".into())));
    assert_eq!(store.link_backlog().await.unwrap().pending, 3 + 3 + 2);

    // An asset without products any more: its entry goes, its former products lose it.
    store
        .record_written_linked("packshots", &[], &[links("b", &[])])
        .await
        .unwrap();
    assert!(store
        .link_targets("packshots", &strings(&["b"]))
        .await
        .unwrap()
        .is_empty());
    assert!(pending(&store)
        .await
        .contains(&(LinkOp::Remove, "b".into(), "P1".into())));

    // Everything survives a reopen.
    drop(store);
    let store = db.open().await;
    assert_eq!(store.link_backlog().await.unwrap().pending, 9);
}

pub(crate) async fn product_link_claims_exclude_each_other(db: &TestDb) {
    let first = db.open().await;
    // A second handle on the same database: another pool (on PostgreSQL, as another process
    // would be).
    let second = db.open().await;
    first
        .record_written_linked(
            "f",
            &[],
            &[links("a", &["P1", "P2"]), links("b", &["P2", "P3"])],
        )
        .await
        .unwrap();
    let one = first.claim_links(2).await.unwrap();
    let held: HashSet<String> = one
        .links()
        .iter()
        .map(|l| l.request.target.product.clone())
        .collect();
    assert_eq!(held, HashSet::from(["P1".to_owned(), "P2".to_owned()]));
    assert_eq!(one.products(), 2);
    assert_eq!(
        one.links().len(),
        3,
        "every ready link of the claimed products"
    );

    // A link recorded now for a held product waits for a later claim.
    first
        .record_written_linked("f", &[], &[links("c", &["P1"])])
        .await
        .unwrap();
    let two = second.claim_links(10).await.unwrap();
    let other: HashSet<String> = two
        .links()
        .iter()
        .map(|l| l.request.target.product.clone())
        .collect();
    assert_eq!(other, HashSet::from(["P3".to_owned()]));
    assert!(two.busy() >= 2, "P1 and P2 were held: {}", two.busy());
    let three = second.claim_links(10).await.unwrap();
    assert!(three.is_empty(), "{three:?}");
    three.release().await.unwrap();

    // Finishing releases; the row recorded meanwhile is then claimable.
    let done: Vec<i64> = one.links().iter().map(|l| l.id).collect();
    one.finish(&LinkResults {
        done,
        ..Default::default()
    })
    .await
    .unwrap();
    let four = second.claim_links(10).await.unwrap();
    let codes: Vec<(String, String)> = four
        .links()
        .iter()
        .map(|l| (l.request.code.clone(), l.request.target.product.clone()))
        .collect();
    assert_eq!(codes, vec![("c".to_owned(), "P1".to_owned())]);
    // Releasing a claim changes nothing and gives the products back at once; dropping it does
    // too, a moment later (PostgreSQL rolls back when the connection returns to the pool).
    four.release().await.unwrap();
    drop(two);
    let mut five = first.claim_links(10).await.unwrap();
    for _ in 0..100 {
        if five.links().len() == 2 {
            break;
        }
        five.release().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        five = first.claim_links(10).await.unwrap();
    }
    assert_eq!(five.links().len(), 2, "{five:?}");

    // Many claimers at once never hold one product together.
    five.release().await.unwrap();
    let products: Vec<String> = (0..40).map(|i| format!("Q{i}")).collect();
    let product_refs: Vec<&str> = products.iter().map(String::as_str).collect();
    first
        .record_written_linked("f", &[], &[links("z", &product_refs)])
        .await
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(HashSet::<String>::new()));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let claim = store.claim_links(3).await.unwrap();
                if claim.is_empty() {
                    if claim.busy() == 0 {
                        return;
                    }
                    tokio::task::yield_now().await;
                    continue;
                }
                let mine: HashSet<String> = claim
                    .links()
                    .iter()
                    .map(|l| l.request.target.product.clone())
                    .collect();
                {
                    let mut s = seen.lock().unwrap();
                    for p in &mine {
                        assert!(s.insert(p.clone()), "{p} claimed twice at once");
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                {
                    let mut s = seen.lock().unwrap();
                    for p in &mine {
                        s.remove(p);
                    }
                }
                let done = claim.links().iter().map(|l| l.id).collect();
                claim
                    .finish(&LinkResults {
                        done,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(first.link_backlog().await.unwrap().pending, 0);
}

pub(crate) async fn product_link_outcomes(db: &TestDb) {
    let store = db.open().await;
    store
        .record_written_linked("f", &[], &[links("a", &["P1", "P2", "P3"])])
        .await
        .unwrap();
    let claim = store.claim_links(10).await.unwrap();
    let id_of = |p: &str| {
        claim
            .links()
            .iter()
            .find(|l| l.request.target.product == p)
            .unwrap()
            .id
    };
    let (p1, p2, p3) = (id_of("P1"), id_of("P2"), id_of("P3"));
    let request = claim
        .links()
        .iter()
        .find(|l| l.id == p3)
        .unwrap()
        .request
        .clone();
    let change = AssetChange {
        family: "__product_links".into(),
        event_id: None,
        source: "links".into(),
        kind: ChangeKind::Upsert {
            asset: DamAsset {
                id: "add:f:a:P3".into(),
                updated_at: t(1),
                record: serde_json::to_value(&request).unwrap(),
            },
        },
    };
    claim
        .finish(&LinkResults {
            done: vec![p1],
            retry: vec![LinkRetry {
                id: p2,
                error: "PIM status 503".into(),
                delay: Duration::from_secs(3600),
            }],
            dead: vec![LinkDead {
                id: p3,
                change: change.clone(),
                reason: DeadLetterReason {
                    kind: "product_missing".into(),
                    message: "no product `P3`".into(),
                    pim_status: Some(422),
                    pim_message: Some("gone".into()),
                    pim_errors: Some(json!([{"property": "values"}])),
                },
            }],
        })
        .await
        .unwrap();
    // P1 done, P3 dead-lettered, P2 waits an hour.
    let backlog = store.link_backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.delayed), (1, 1));
    assert!(store.claim_links(10).await.unwrap().is_empty());
    let dead = store
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].family.as_deref(), Some("__product_links"));
    assert_eq!(dead[0].dam_id.as_deref(), Some("add:f:a:P3"));
    assert_eq!(dead[0].reason.kind, "product_missing");
    assert_eq!(dead[0].reason.pim_status, Some(422));
    assert_eq!(dead[0].reason.pim_message.as_deref(), Some("gone"));
    assert_eq!(dead[0].payload, DeadLetterPayload::Change(change));
    // `dlq retry` brings it back to the inbox as it was.
    assert_eq!(
        store
            .retry_dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap(),
        1
    );
    let back = store.claim("w", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(back.len(), 1);
    let ChangeKind::Upsert { asset } = &back[0].change.kind else {
        panic!("an upsert")
    };
    let again: LinkRequest = serde_json::from_value(asset.record.clone()).unwrap();
    assert_eq!(again, request);
    // … and a request added as it is becomes ready at once.
    store
        .add_pending_links(std::slice::from_ref(&again))
        .await
        .unwrap();
    let claim = store.claim_links(10).await.unwrap();
    assert_eq!(claim.links().len(), 1);
    assert_eq!(claim.links()[0].request, again);
    assert_eq!(claim.links()[0].attempts, 0);
}
