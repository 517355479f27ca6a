//! Route templates (also the keys of the request counters and log) and the router.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use http::Method;

use super::state::Shared;
use super::{assets, families, gate, media, products, token};

pub const TOKEN: &str = "/api/oauth/v1/token";
pub const ROOT: &str = "/api/rest/v1";
pub const SYSTEM_INFORMATION: &str = "/api/rest/v1/system-information";
pub const FAMILIES: &str = "/api/rest/v1/asset-families";
pub const FAMILY: &str = "/api/rest/v1/asset-families/{family}";
pub const ATTRIBUTES: &str = "/api/rest/v1/asset-families/{family}/attributes";
pub const ATTRIBUTE: &str = "/api/rest/v1/asset-families/{family}/attributes/{attribute}";
pub const OPTIONS: &str = "/api/rest/v1/asset-families/{family}/attributes/{attribute}/options";
pub const OPTION: &str =
    "/api/rest/v1/asset-families/{family}/attributes/{attribute}/options/{option}";
pub const ASSETS: &str = "/api/rest/v1/asset-families/{family}/assets";
pub const ASSET: &str = "/api/rest/v1/asset-families/{family}/assets/{code}";
pub const MEDIA_FILES: &str = "/api/rest/v1/asset-media-files";
pub const MEDIA_FILE: &str = "/api/rest/v1/asset-media-files/{*code}";
pub const PRODUCTS_UUID: &str = "/api/rest/v1/products-uuid";
pub const PRODUCT_UUID: &str = "/api/rest/v1/products-uuid/{uuid}";
pub const PRODUCTS: &str = "/api/rest/v1/products";
pub const PRODUCT: &str = "/api/rest/v1/products/{code}";
pub const PRODUCT_ATTRIBUTES: &str = "/api/rest/v1/attributes";
pub const PRODUCT_ATTRIBUTE: &str = "/api/rest/v1/attributes/{code}";
/// Log / counter key of requests no route matched.
pub const UNMATCHED: &str = "<unmatched>";

const ALL: [(&str, &[Method]); 19] = [
    (TOKEN, &[Method::POST]),
    (ROOT, &[Method::GET]),
    (SYSTEM_INFORMATION, &[Method::GET]),
    (FAMILIES, &[Method::GET]),
    (FAMILY, &[Method::GET, Method::PATCH]),
    (ATTRIBUTES, &[Method::GET]),
    (ATTRIBUTE, &[Method::GET, Method::PATCH]),
    (OPTIONS, &[Method::GET]),
    (OPTION, &[Method::GET, Method::PATCH]),
    (ASSETS, &[Method::GET, Method::PATCH]),
    (ASSET, &[Method::GET, Method::PATCH, Method::DELETE]),
    (MEDIA_FILES, &[Method::POST]),
    (MEDIA_FILE, &[Method::GET]),
    (PRODUCTS_UUID, &[Method::GET, Method::PATCH]),
    (PRODUCT_UUID, &[Method::GET, Method::PATCH, Method::DELETE]),
    (PRODUCTS, &[Method::GET, Method::PATCH]),
    (PRODUCT, &[Method::GET, Method::PATCH, Method::DELETE]),
    (PRODUCT_ATTRIBUTES, &[Method::GET]),
    (PRODUCT_ATTRIBUTE, &[Method::GET]),
];

/// The static copy of a matched route template.
pub(crate) fn intern(matched: &str) -> &'static str {
    ALL.iter()
        .map(|(r, _)| *r)
        .find(|r| *r == matched)
        .unwrap_or(UNMATCHED)
}

pub(crate) fn allowed_methods(route: &str) -> Option<&'static [Method]> {
    ALL.iter().find(|(r, _)| *r == route).map(|(_, m)| *m)
}

/// Routes reachable without a token (§2.3).
pub(crate) fn is_public(route: &str) -> bool {
    route == ROOT || route == SYSTEM_INFORMATION || route == TOKEN
}

/// Large enough for 100 NDJSON lines of 1 000 000 characters; media uploads are streamed.
const BODY_LIMIT: usize = 128 * 1024 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    // The gate answers 405 itself (before authentication, like Symfony's router), from
    // `allowed_methods`, so axum's own 405 is never reached.
    Router::new()
        .route(TOKEN, post(token::token))
        .route(ROOT, get(token::endpoint_list))
        .route(SYSTEM_INFORMATION, get(token::system_information))
        .route(FAMILIES, get(families::list_families))
        .route(
            FAMILY,
            get(families::get_family).patch(families::patch_family),
        )
        .route(ATTRIBUTES, get(families::list_attributes))
        .route(
            ATTRIBUTE,
            get(families::get_attribute).patch(families::patch_attribute),
        )
        .route(OPTIONS, get(families::list_options))
        .route(
            OPTION,
            get(families::get_option).patch(families::patch_option),
        )
        .route(ASSETS, get(assets::list_assets).patch(assets::patch_assets))
        .route(
            ASSET,
            get(assets::get_asset)
                .patch(assets::patch_asset)
                .delete(assets::delete_asset),
        )
        .route(
            MEDIA_FILES,
            post(media::upload).layer(DefaultBodyLimit::disable()),
        )
        .route(MEDIA_FILE, get(media::download))
        .route(
            PRODUCTS_UUID,
            get(products::list_uuid).patch(products::batch_uuid),
        )
        .route(
            PRODUCT_UUID,
            get(products::get_uuid)
                .patch(products::patch_uuid)
                .delete(products::delete_uuid),
        )
        .route(
            PRODUCTS,
            get(products::list_identifier).patch(products::batch_identifier),
        )
        .route(
            PRODUCT,
            get(products::get_identifier)
                .patch(products::patch_identifier)
                .delete(products::delete_identifier),
        )
        .route(PRODUCT_ATTRIBUTES, get(products::list_attributes))
        .route(PRODUCT_ATTRIBUTE, get(products::get_attribute))
        .fallback(gate::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            gate::gate,
        ))
        .with_state(shared.clone())
        // Test control, outside the gate (added after the layers, so they do not apply).
        .merge(super::control::router(shared))
}
