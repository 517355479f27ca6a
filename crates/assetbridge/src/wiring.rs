//! Builds the engine from the configuration: opens the store, connects the clients, reads each
//! family's structure from the PIM and compiles its mapping against it.

use std::sync::Arc;

use anyhow::Context;
use assetbridge_akeneo::AkeneoClient;
use assetbridge_config::Loaded;
use assetbridge_dam::aem::AemClient;
use assetbridge_dam::rest::RestDam;
use assetbridge_engine::{Engine, Enricher, FamilyPlan};
use assetbridge_store::Store;

use crate::config::AppConfig;
use crate::exit::Failure;

/// Opens the state store named by `[state] url`.
pub async fn open_store(cfg: &AppConfig) -> Result<Store, Failure> {
    Store::open(&cfg.state.url)
        .await
        .with_context(|| {
            format!(
                "cannot open the state store `{}`",
                assetbridge_config::redact_url(&cfg.state.url)
            )
        })
        .map_err(Failure::Fatal)
}

/// Everything wired: the engine, ready to sync.
pub async fn engine(loaded: &Loaded<AppConfig>) -> Result<Engine, Failure> {
    let cfg = &loaded.value;
    let store = open_store(cfg).await?;
    let pim = AkeneoClient::new(cfg.akeneo.clone())
        .map_err(|e| loaded.source.error_at("akeneo", e.to_string()))?;
    let dam =
        RestDam::new(cfg.dam.clone()).map_err(|e| loaded.source.error_at("dam", e.to_string()))?;
    let mut plans = plans(loaded, &pim).await?;
    for p in &mut plans {
        if p.query.is_empty() {
            // `[dam] family_param`: each family's listing filtered by its code.
            p.query = dam.family_query(&p.code);
        }
    }
    // `[enrichment]` (checked to come with `[aem]`): PIM → DAM enrichment of AEM metadata.
    let enricher = match (&cfg.enrichment, &cfg.aem) {
        (Some(enrichment), Some(aem)) => {
            let aem = AemClient::new(aem.clone())
                .map_err(|e| loaded.source.error_at("aem", e.to_string()))?;
            let enricher = Enricher::new(
                enrichment.clone(),
                pim.clone(),
                Arc::new(aem),
                store.clone(),
            )
            .map_err(|e| loaded.source.error_at("enrichment", e.to_string()))?;
            Some(Arc::new(enricher))
        }
        _ => None,
    };
    let mut engine = Engine::new(pim, store, dam, plans, cfg.sync.options());
    for (i, f) in cfg.families.iter().enumerate() {
        if let Some(pf) = &f.product_filter {
            let filter = pf.compile().map_err(|(key, message)| {
                loaded
                    .source
                    .error_at(&format!("families[{i}].product_filter.{key}"), message)
            })?;
            engine = engine.with_product_filter(&f.code, filter);
        }
        if let Some(link) = &f.link {
            // Checked against the PIM by `plans` above.
            let links = link.compile(Some(&f.maps)).map_err(|(key, message)| {
                loaded
                    .source
                    .error_at(&format!("families[{i}].link.{key}"), message)
            })?;
            engine = engine.with_product_links(&f.code, links);
        }
    }
    // `[routing] poll = true`: one DAM listing feeds the families the table names.
    if let Some(routing) = cfg.routing.as_ref().filter(|r| r.poll) {
        let routes = routing
            .compile()
            .map_err(|(key, message)| loaded.source.error_at(&key, message))?;
        engine = engine.with_routed_listing(routing.listing(Arc::new(routes)));
    }
    Ok(match enricher {
        Some(e) => engine.with_enrichment(e),
        None => engine,
    })
}

/// Reads each family's structure from the PIM and compiles its mapping against it. A mapping
/// that does not fit the family (unknown attribute, locale on a non-localizable attribute…) is a
/// configuration error naming the line of the rule.
pub async fn plans(
    loaded: &Loaded<AppConfig>,
    pim: &AkeneoClient,
) -> Result<Vec<FamilyPlan>, Failure> {
    let mut plans = Vec::new();
    for (i, f) in loaded.value.families.iter().enumerate() {
        let structure = pim.family_structure(&f.code).await.with_context(|| {
            format!(
                "cannot read the structure of asset family `{}` from Akeneo",
                f.code
            )
        })?;
        loaded
            .value
            .sync
            .deletion_policy()
            .check_against(&structure)
            .map_err(|message| {
                Failure::from(loaded.source.error_at("sync.mark_attribute", message))
            })?;
        let mapping = f
            .compile(
                i,
                Some(&structure),
                &loaded.value.akeneo.create_missing_options,
            )
            .map_err(|(key, message)| {
                Failure::from(
                    loaded
                        .source
                        .error_at(&key, format!("does not fit the PIM: {message}")),
                )
            })?;
        if let Some(link) = &f.link {
            // The product attribute: an asset collection of this family, locale and scope as
            // it needs them.
            let attribute = pim
                .product_attribute(&link.attribute)
                .await
                .with_context(|| {
                    format!(
                        "cannot read product attribute `{}` from Akeneo",
                        link.attribute
                    )
                })?;
            link.check_attribute(&f.code, attribute.as_ref())
                .map_err(|(key, message)| {
                    Failure::from(loaded.source.error_at(
                        &format!("families[{i}].link.{key}"),
                        format!("does not fit the PIM: {message}"),
                    ))
                })?;
        }
        plans.push(FamilyPlan {
            code: f.code.clone(),
            query: f
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            mapping: Arc::new(mapping),
        });
    }
    Ok(plans)
}
