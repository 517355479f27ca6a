//! Contract suite of the Akeneo emulator, over real HTTP: every row is a request, the expected
//! status, key headers and body, and the section of `reference/akeneo-api.md` it checks.
//! Behavioural tests (paging, filters, batches, throttling, tokens, NDJSON, faults) follow.

use std::time::Duration;

use assetbridge_emulators::akeneo::{
    demo_product_attributes, demo_structure, AkeneoEmulator, AkeneoEmulatorConfig, Faults,
    ProductAttribute, RunningEmulator,
};
use chrono::{TimeZone, Utc};
use reqwest::Method;
use serde_json::{json, Value};

// -------------------------------------------------------------------------------------------
// Harness

struct Env {
    emu: AkeneoEmulator,
    _running: RunningEmulator,
    base: String,
    http: reqwest::Client,
    token: String,
    refresh: String,
}

const UUID_A: &str = "fc24e6c3-933c-4a93-8a81-e5c703d134d5";
const UUID_B: &str = "25566245-55c3-42ce-86d9-8610ac459fa8";
const UUID_NEW: &str = "0b9f2b2c-1111-4222-8333-944455556666";

async fn token_for(http: &reqwest::Client, base: &str) -> (String, String) {
    let v: Value = http
        .post(format!("{base}/api/oauth/v1/token"))
        .basic_auth("assetbridge", Some("secret"))
        .json(&json!({"grant_type": "password", "username": "admin", "password": "admin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        v["access_token"].as_str().unwrap().to_owned(),
        v["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn env_with(config: AkeneoEmulatorConfig) -> Env {
    let emu = AkeneoEmulator::new(config);
    emu.set_clock(Some(Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap()));
    for f in demo_structure() {
        emu.add_asset_family(f);
    }
    for a in demo_product_attributes() {
        emu.add_product_attribute(a);
    }
    emu.upsert_asset(
        "packshots",
        json!({"code": "house", "values": {
            "media": [{"locale": null, "channel": null, "data": "house.jpg"}],
            "title": [{"locale": "en_US", "channel": null, "data": "House"},
                      {"locale": "fr_FR", "channel": null, "data": "Maison"}],
            "tags": [{"locale": null, "channel": null, "data": ["summer", "red"]}],
            "width": [{"locale": null, "channel": null, "data": "640"}]
        }}),
    )
    .unwrap();
    emu.add_product(
        json!({"uuid": UUID_A, "identifier": "cap", "family": "hats",
        "categories": ["summer"],
        "values": {"packshots": [{"locale": null, "scope": null, "data": ["house"]}]}}),
    )
    .unwrap();
    emu.add_product(json!({"uuid": UUID_B, "values": {"sku": [{"locale": null, "scope": null, "data": "mug"}]}}))
        .unwrap();
    let running = emu.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = running.base_url.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (token, refresh) = token_for(&http, &base).await;
    Env {
        emu,
        _running: running,
        base,
        http,
        token,
        refresh,
    }
}

async fn env() -> Env {
    env_with(AkeneoEmulatorConfig::default()).await
}

enum Auth {
    Bearer,
    None,
    Header(&'static str),
}

enum Body {
    None,
    Json(Value),
    Raw(Option<&'static str>, String),
}

enum Expect {
    /// Exact JSON body.
    Json(Value),
    /// `{"code": <status>, "message": <this>}` exactly.
    Message(String),
    /// Every key of this object is present with this value (recursively for objects).
    Subset(Value),
    /// Empty body.
    Empty,
    /// Exact text body.
    Text(String),
}

enum HeaderCheck {
    Exact(String),
    Prefix(String),
    Present,
}

struct Case {
    reference: &'static str,
    method: Method,
    path: String,
    auth: Auth,
    headers: Vec<(&'static str, String)>,
    body: Body,
    status: u16,
    expect_headers: Vec<(&'static str, HeaderCheck)>,
    expect: Option<Expect>,
}

fn case(reference: &'static str, method: Method, path: impl Into<String>) -> Case {
    Case {
        reference,
        method,
        path: path.into(),
        auth: Auth::Bearer,
        headers: vec![],
        body: Body::None,
        status: 200,
        expect_headers: vec![],
        expect: None,
    }
}

impl Case {
    fn auth(mut self, a: Auth) -> Self {
        self.auth = a;
        self
    }
    fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    fn json(mut self, v: Value) -> Self {
        self.body = Body::Json(v);
        self
    }
    fn raw(mut self, ctype: Option<&'static str>, body: impl Into<String>) -> Self {
        self.body = Body::Raw(ctype, body.into());
        self
    }
    fn status(mut self, s: u16) -> Self {
        self.status = s;
        self
    }
    fn message(mut self, m: impl Into<String>) -> Self {
        self.expect = Some(Expect::Message(m.into()));
        self
    }
    fn body_json(mut self, v: Value) -> Self {
        self.expect = Some(Expect::Json(v));
        self
    }
    fn subset(mut self, v: Value) -> Self {
        self.expect = Some(Expect::Subset(v));
        self
    }
    fn empty(mut self) -> Self {
        self.expect = Some(Expect::Empty);
        self
    }
    fn text(mut self, t: impl Into<String>) -> Self {
        self.expect = Some(Expect::Text(t.into()));
        self
    }
    fn has_header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.expect_headers.push((k, HeaderCheck::Exact(v.into())));
        self
    }
    fn header_prefix(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.expect_headers.push((k, HeaderCheck::Prefix(v.into())));
        self
    }
    fn header_present(mut self, k: &'static str) -> Self {
        self.expect_headers.push((k, HeaderCheck::Present));
        self
    }
}

fn is_subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| is_subset(v, av))),
        _ => expected == actual,
    }
}

async fn run(env: &Env, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in cases {
        let url = format!("{}{}", env.base, c.path);
        let mut req = env.http.request(c.method.clone(), &url);
        req = match c.auth {
            Auth::Bearer => req.bearer_auth(&env.token),
            Auth::None => req,
            Auth::Header(h) => req.header("authorization", h),
        };
        for (k, v) in &c.headers {
            req = req.header(*k, v);
        }
        req = match &c.body {
            Body::None => req,
            Body::Json(v) => req.json(v),
            Body::Raw(ct, b) => {
                let r = match ct {
                    Some(ct) => req.header("content-type", *ct),
                    None => req,
                };
                r.body(b.clone())
            }
        };
        let what = format!("[{}] {} {}", c.reference, c.method, c.path);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{what}: request failed: {e}"));
                continue;
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        if status != c.status {
            failures.push(format!(
                "{what}: status {status}, expected {} — body {text}",
                c.status
            ));
            continue;
        }
        for (k, check) in &c.expect_headers {
            let got = headers.get(*k).and_then(|v| v.to_str().ok());
            let ok = match (check, got) {
                (HeaderCheck::Exact(e), Some(g)) => e == g,
                (HeaderCheck::Prefix(p), Some(g)) => g.starts_with(p.as_str()),
                (HeaderCheck::Present, Some(_)) => true,
                _ => false,
            };
            if !ok {
                failures.push(format!("{what}: header {k} = {got:?}"));
            }
        }
        let body: Option<Value> = serde_json::from_str(&text).ok();
        let ok = match &c.expect {
            None => true,
            Some(Expect::Empty) => text.is_empty(),
            Some(Expect::Text(t)) => &text == t,
            Some(Expect::Json(v)) => body.as_ref() == Some(v),
            Some(Expect::Message(m)) => {
                body.as_ref() == Some(&json!({"code": c.status, "message": m}))
            }
            Some(Expect::Subset(v)) => body.as_ref().is_some_and(|b| is_subset(v, b)),
        };
        if !ok {
            failures.push(format!("{what}: unexpected body {text}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} contract failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn v(locale: Option<&str>, channel: Option<&str>, data: Value) -> Value {
    json!({"locale": locale, "channel": channel, "data": data})
}

const FAM_SKU: &str = "/api/rest/v1/asset-families/packshots/assets";

// -------------------------------------------------------------------------------------------
// The table

#[tokio::test]
async fn contract_table() {
    let env = env().await;
    let b = env.base.clone();
    let bad_basic = "Basic YXNzZXRicmlkZ2U6d3Jvbmc="; // assetbridge:wrong
    let good_basic = "Basic YXNzZXRicmlkZ2U6c2VjcmV0"; // assetbridge:secret
    let token = |body: Value| {
        case("§2.1", Method::POST, "/api/oauth/v1/token")
            .auth(Auth::Header(good_basic))
            .json(body)
    };
    let house = json!({
        "code": "house",
        "values": {
            "media": [{"locale": null, "channel": null, "data": "house.jpg",
                       "linked_data": {"full_url": "https://dam.local/files/house.jpg", "prefix": "https://dam.local/files/", "suffix": null}}],
            "tags": [{"locale": null, "channel": null, "data": ["summer", "red"]}],
            "title": [{"locale": "en_US", "channel": null, "data": "House"},
                      {"locale": "fr_FR", "channel": null, "data": "Maison"}],
            "width": [{"locale": null, "channel": null, "data": "640"}]
        },
        "created": "2024-01-02T03:04:05+00:00",
        "updated": "2024-01-02T03:04:05+00:00"
    });
    let many: Vec<Value> = (0..101).map(|i| json!({"code": format!("x{i}")})).collect();

    let cases = vec![
        // ---- §2 authentication
        token(json!({"grant_type": "password", "username": "admin", "password": "admin"}))
            .subset(json!({"expires_in": 3600, "token_type": "bearer", "scope": null}))
            .has_header("cache-control", "no-store")
            .header_present("pragma")
            .has_header("content-type", "application/json"),
        case("§2.1 form body", Method::POST, "/api/oauth/v1/token")
            .auth(Auth::Header(good_basic))
            .raw(Some("application/x-www-form-urlencoded"), "grant_type=password&username=admin&password=admin")
            .subset(json!({"token_type": "bearer"})),
        token(json!({"grant_type": "password", "username": "admin"}))
            .status(422)
            .message("Parameter \"grant_type\", \"username\" or \"password\" is missing, empty or invalid"),
        token(json!({"grant_type": "pwd", "username": "admin", "password": "admin"}))
            .status(422)
            .message("Parameter \"grant_type\", \"username\" or \"password\" is missing, empty or invalid"),
        token(json!({"grant_type": "refresh_token"}))
            .status(422)
            .message("Parameter \"grant_type\" or \"refresh_token\" is missing or empty"),
        case("§2.2 invalid_client", Method::POST, "/api/oauth/v1/token")
            .auth(Auth::Header(bad_basic))
            .json(json!({"grant_type": "password", "username": "admin", "password": "admin"}))
            .status(422)
            .message("Parameter \"client_id\" is missing or does not match any client, or secret is invalid"),
        case("§2.2 invalid_client (no Basic)", Method::POST, "/api/oauth/v1/token")
            .auth(Auth::None)
            .json(json!({"grant_type": "password", "username": "admin", "password": "admin"}))
            .status(422)
            .message("Parameter \"client_id\" is missing or does not match any client, or secret is invalid"),
        token(json!({"grant_type": "client_credentials"}))
            .status(422)
            .message("This grant type is not authorized for this client"),
        token(json!({"grant_type": "password", "username": "admin", "password": "nope"}))
            .status(422)
            .message("No user found for the given username and password"),
        token(json!({"grant_type": "refresh_token", "refresh_token": "unknown"}))
            .status(422)
            .message("Refresh token is invalid or has expired"),
        token(json!({"grant_type": "password", "username": "admin", "password": "x".repeat(200)}))
            .status(422)
            .message("The request content size is too large"),
        case("§2.2 swagger 400", Method::POST, "/api/oauth/v1/token")
            .auth(Auth::Header(good_basic))
            .raw(Some("application/json"), "{\"grant_type\":")
            .status(400)
            .message("Invalid json message received"),
        case("§2.2 swagger 415", Method::POST, "/api/oauth/v1/token")
            .auth(Auth::Header(good_basic))
            .raw(Some("text/plain"), "grant_type=password")
            .status(415)
            .message("'text/plain' in 'Content-type' header is not valid.  Only 'application/json' is allowed."),
        case("§2.3 no token", Method::GET, "/api/rest/v1/asset-families")
            .auth(Auth::None)
            .status(401)
            .message("Authentication is required"),
        case("§2.3 Basic instead of Bearer", Method::GET, "/api/rest/v1/asset-families")
            .auth(Auth::Header(good_basic))
            .status(401)
            .message("Authentication is required"),
        case("§2.3 unknown token", Method::GET, "/api/rest/v1/asset-families")
            .auth(Auth::Header("Bearer nope"))
            .status(401)
            .message("Authentication is required"),
        case("§2.3 endpoint list without token", Method::GET, "/api/rest/v1")
            .auth(Auth::None)
            .subset(json!({"authentication": {"fos_oauth_server_token": {"route": "/api/oauth/v1/token"}}})),
        case("§2.3 system-information", Method::GET, "/api/rest/v1/system-information")
            .auth(Auth::None)
            .body_json(json!({"version": "20210521041041", "edition": "Serenity"})),
        // ---- §3.1 content negotiation, §3.3 405/404
        case("§3.1 415 missing", Method::PATCH, FAM_SKU)
            .raw(None, "[]")
            .status(415)
            .message("The 'Content-type' header is missing. 'application/json' has to specified as value."),
        case("§3.1 415 other", Method::PATCH, FAM_SKU)
            .raw(Some("text/csv"), "[]")
            .status(415)
            .message("'text/csv' in 'Content-type' header is not valid.  Only 'application/json' is allowed."),
        case("§3.1 406", Method::GET, "/api/rest/v1/asset-families")
            .header("accept", "text/html")
            .status(406)
            .message("'text/html' in 'Accept' header is not valid. Only 'application/json' is allowed."),
        case("§3.1 Accept */*", Method::GET, "/api/rest/v1/asset-families/packshots")
            .header("accept", "*/*")
            .status(200),
        case("§3.1 Accept application/json", Method::GET, "/api/rest/v1/asset-families/packshots")
            .header("accept", "application/json")
            .status(200),
        case("§3.3 405", Method::POST, "/api/rest/v1/asset-families/packshots/assets/house")
            .json(json!({}))
            .status(405)
            .has_header("allow", "GET, PATCH, DELETE")
            .message("No route found for 'POST /api/rest/v1/asset-families/packshots/assets/house': Method Not Allowed (Allow: GET, PATCH, DELETE)"),
        case("§3.1 only v1", Method::GET, "/api/rest/v2/asset-families")
            .status(404)
            .message("No route found for \"GET /api/rest/v2/asset-families\""),
        // ---- §5.1/§5.3 asset families
        case("§5.1 family list", Method::GET, "/api/rest/v1/asset-families")
            .subset(json!({"_links": {"self": {"href": format!("{b}/api/rest/v1/asset-families")},
                                      "first": {"href": format!("{b}/api/rest/v1/asset-families")}}})),
        case("§5.3 family", Method::GET, "/api/rest/v1/asset-families/packshots").body_json(json!({
            "code": "packshots", "labels": {}, "attribute_as_main_media": "media",
            "naming_convention": {}, "product_link_rules": [], "transformations": []
        })),
        case("§5.1 family code is case-sensitive", Method::GET, "/api/rest/v1/asset-families/PACKSHOTS")
            .status(404)
            .message("Asset family \"PACKSHOTS\" does not exist."),
        case("§5.1 family code rule", Method::GET, "/api/rest/v1/asset-families/pack-shots")
            .status(422)
            .message("Asset family identifier may contain only letters, numbers and underscores. \"pack-shots\" given"),
        case("§5.1 family upsert create", Method::PATCH, "/api/rest/v1/asset-families/videos")
            .json(json!({"code": "videos", "labels": {"en_US": "Videos"}}))
            .status(201)
            .has_header("location", format!("{b}/api/rest/v1/asset-families/videos"))
            .empty(),
        case("§5.1 family upsert update", Method::PATCH, "/api/rest/v1/asset-families/videos")
            .json(json!({"code": "videos", "labels": {"fr_FR": "Vidéos"}}))
            .status(204)
            .has_header("location", format!("{b}/api/rest/v1/asset-families/videos"))
            .empty(),
        case("§5.3 family after merge of labels", Method::GET, "/api/rest/v1/asset-families/videos")
            .subset(json!({"labels": {"en_US": "Videos", "fr_FR": "Vidéos"}, "attribute_as_main_media": "media"})),
        case("§5.1 family code mismatch", Method::PATCH, "/api/rest/v1/asset-families/videos")
            .json(json!({"code": "other"}))
            .status(422)
            .message("The code of the asset family provided in the URI must be the same as the one provided in the request body."),
        case("§5.1 family invalid format", Method::PATCH, "/api/rest/v1/asset-families/videos")
            .json(json!({"code": "videos", "labels": "x", "color": 1}))
            .status(422)
            .body_json(json!({"code": 422, "message": "The asset family has an invalid format.", "errors": [
                {"property": "labels", "message": "String value found, but an object is required"},
                {"property": "", "message": "The property color is not defined and the definition does not allow additional properties"}
            ]})),
        // ---- §5.6 attributes and options
        case("§5.6 attribute", Method::GET, "/api/rest/v1/asset-families/packshots/attributes/description")
            .body_json(json!({
                "code": "description", "labels": {}, "type": "text", "value_per_locale": true,
                "value_per_channel": false, "is_required_for_completeness": false, "is_read_only": false,
                "max_characters": 500, "is_textarea": false, "is_rich_text_editor": null,
                "validation_rule": null, "validation_regexp": null
            })),
        case("§5.6 media_link attribute", Method::GET, "/api/rest/v1/asset-families/packshots/attributes/media")
            .subset(json!({"type": "media_link", "prefix": "https://dam.local/files/", "suffix": null, "media_type": "image"})),
        case("§5.6 unknown attribute", Method::GET, "/api/rest/v1/asset-families/packshots/attributes/nope")
            .status(404)
            .message("Attribute \"nope\" does not exist for asset family \"packshots\"."),
        case("§5.6 attribute create", Method::PATCH, "/api/rest/v1/asset-families/packshots/attributes/season")
            .json(json!({"code": "season", "type": "single_option", "value_per_locale": false, "value_per_channel": false}))
            .status(201)
            .has_header("location", format!("{b}/api/rest/v1/asset-families/packshots/attributes/season"))
            .empty(),
        case("§5.6 attribute create, invalid format", Method::PATCH, "/api/rest/v1/asset-families/packshots/attributes/bad")
            .json(json!({"code": "bad", "type": "colour", "value_per_locale": false}))
            .status(422)
            .body_json(json!({"code": 422, "message": "The attribute has an invalid format.", "errors": [
                {"property": "value_per_channel", "message": "The property value_per_channel is required"},
                {"property": "type", "message": "Does not have a value in the enumeration [\"text\",\"media_link\",\"number\",\"media_file\",\"single_option\",\"multiple_options\",\"boolean\",\"date\",\"record\"]"}
            ]})),
        case("§5.6 attribute type is immutable", Method::PATCH, "/api/rest/v1/asset-families/packshots/attributes/season")
            .json(json!({"code": "season", "type": "text"}))
            .status(422)
            .body_json(json!({"code": 422, "message": "The attribute has data that does not comply with the business rules.", "errors": [
                {"property": "type", "message": "The property type is immutable."}
            ]})),
        case("§5.6 option create", Method::PATCH, "/api/rest/v1/asset-families/packshots/attributes/season/options/fall")
            .json(json!({"code": "fall", "labels": {"en_US": "Fall"}}))
            .status(201)
            .has_header("location", format!("{b}/api/rest/v1/asset-families/packshots/attributes/season/options/fall"))
            .empty(),
        case("§5.6 option update", Method::PATCH, "/api/rest/v1/asset-families/packshots/attributes/season/options/fall")
            .json(json!({"code": "fall", "labels": {"fr_FR": "Automne"}}))
            .status(204)
            .empty(),
        case("§5.6 options list", Method::GET, "/api/rest/v1/asset-families/packshots/attributes/season/options")
            .body_json(json!([{"code": "fall", "labels": {"en_US": "Fall", "fr_FR": "Automne"}}])),
        case("§5.6 option get", Method::GET, "/api/rest/v1/asset-families/packshots/attributes/tags/options/red")
            .body_json(json!({"code": "red", "labels": {}})),
        case("§5.6 option code regex", Method::PATCH, "/api/rest/v1/asset-families/packshots/attributes/season/options/late-fall")
            .json(json!({"code": "late-fall"}))
            .status(422)
            .message("Option code may contain only letters, numbers and underscores. \"late-fall\" given"),
        case("§5.6 options of a non-option attribute", Method::GET, "/api/rest/v1/asset-families/packshots/attributes/title/options")
            .status(404)
            .message("Attribute \"title\" does not support options."),
        // ---- §5.9 list
        case("§5.9 search not JSON", Method::GET, format!("{FAM_SKU}?search=nope"))
            .status(400)
            .message("The search query parameter must be a valid JSON."),
        case("§5.9 filter format", Method::GET, format!("{FAM_SKU}?search=%7B%22updated%22%3A%5B%7B%22operator%22%3A%22%3E%22%2C%22value%22%3A%222024-01-01%22%7D%5D%7D"))
            .status(422)
            .body_json(json!({"code": 422, "message": "The search filters have an invalid format.", "errors": [
                {"property": "/updated/0/value", "message": "The data must match the 'date-time' format"}
            ]})),
        case("§5.9 unknown family", Method::GET, "/api/rest/v1/asset-families/nope/assets")
            .status(404)
            .message("Asset family \"nope\" does not exist."),
        case("§5.9 list", Method::GET, FAM_SKU).subset(json!({
            "_links": {"self": {"href": format!("{b}{FAM_SKU}")}, "first": {"href": format!("{b}{FAM_SKU}")}},
        })),
        // ---- §5.10 get
        case("§5.10 get", Method::GET, format!("{FAM_SKU}/house")).body_json(house.clone()),
        case("§5.10 unknown asset", Method::GET, format!("{FAM_SKU}/nope"))
            .status(404)
            .message("Asset \"nope\" does not exist for the asset family \"packshots\"."),
        case("§5.10 unknown family", Method::GET, "/api/rest/v1/asset-families/nope/assets/house")
            .status(404)
            .message("Asset family \"nope\" does not exist."),
        // ---- §5.11 single PATCH
        case("§5.11 create", Method::PATCH, format!("{FAM_SKU}/boat"))
            .json(json!({"code": "boat", "values": {"title": [v(Some("en_US"), None, json!("Boat"))]}}))
            .status(201)
            .has_header("location", format!("{b}{FAM_SKU}/boat"))
            .empty(),
        case("§5.11 update", Method::PATCH, format!("{FAM_SKU}/boat"))
            .json(json!({"code": "boat", "values": {"title": [v(Some("fr_FR"), None, json!("Bateau"))]}}))
            .status(204)
            .has_header("location", format!("{b}{FAM_SKU}/boat"))
            .empty(),
        case("§5.8 merge per locale", Method::GET, format!("{FAM_SKU}/boat")).subset(json!({
            "values": {"title": [v(Some("en_US"), None, json!("Boat")), v(Some("fr_FR"), None, json!("Bateau"))]}
        })),
        case("§5.11 code mismatch", Method::PATCH, format!("{FAM_SKU}/boat"))
            .json(json!({"code": "ship"}))
            .status(422)
            .message("The code of the asset provided in the URI must be the same as the one provided in the request body."),
        case("§5.11 invalid JSON", Method::PATCH, format!("{FAM_SKU}/boat"))
            .raw(Some("application/json"), "{nope")
            .status(400)
            .message("Invalid json message received"),
        case("§5.11 unknown family", Method::PATCH, "/api/rest/v1/asset-families/nope/assets/boat")
            .json(json!({"code": "boat"}))
            .status(404)
            .message("Asset family \"nope\" does not exist."),
        case("§5.7 value needs locale/channel/data", Method::PATCH, format!("{FAM_SKU}/boat"))
            .json(json!({"code": "boat", "created": "x", "values": {"title": [{"locale": 1, "data": "B", "extra": true}]}}))
            .status(422)
            .body_json(json!({"code": 422, "message": "The asset has an invalid format.", "errors": [
                {"property": "values.title[0].channel", "message": "The property channel is required"},
                {"property": "values.title[0].locale", "message": "Integer value found, but a string or a null is required"},
                {"property": "values.title[0]", "message": "The property extra is not defined and the definition does not allow additional properties"},
                {"property": "", "message": "The property created is not defined and the definition does not allow additional properties"}
            ]})),
        case("§5.11 business rules", Method::PATCH, format!("{FAM_SKU}/boat"))
            .json(json!({"code": "boat", "values": {"title": [v(Some("en_AU"), None, json!("G'day"))]}}))
            .status(422)
            .body_json(json!({"code": 422, "message": "The asset has data that does not comply with the business rules.", "errors": [
                {"property": "values.title", "message": "The locale \"en_AU\" is not activated."}
            ]})),
        case("§5.11 unknown attribute", Method::PATCH, format!("{FAM_SKU}/boat"))
            .json(json!({"code": "boat", "values": {"colour": [v(None, None, json!("red"))]}}))
            .status(422)
            .message("Attribute \"colour\" does not exist for this asset family"),
        case("§5.10 malformed code", Method::PATCH, format!("{FAM_SKU}/bo-at"))
            .json(json!({"code": "bo-at"}))
            .status(422)
            .message("Asset code may contain only letters, numbers and underscores. \"bo-at\" given"),
        // ---- §5.12 batch PATCH: whole-request checks
        case("§5.12 unknown family", Method::PATCH, "/api/rest/v1/asset-families/nope/assets")
            .json(json!([]))
            .status(404)
            .message("Asset family \"nope\" does not exist."),
        case("§5.12 invalid JSON", Method::PATCH, FAM_SKU)
            .raw(Some("application/json"), "[{")
            .status(400)
            .message("Invalid json message received"),
        case("§5.12 not an array", Method::PATCH, FAM_SKU)
            .json(json!({"code": "x"}))
            .status(400)
            .body_json(json!({"code": 400, "message": "The list of assets has an invalid format.", "errors": [
                {"property": "", "message": "Object value found, but an array is required"}
            ]})),
        case("§5.12 items must be objects", Method::PATCH, FAM_SKU)
            .json(json!([{"code": "ok"}, "x"]))
            .status(400)
            .body_json(json!({"code": 400, "message": "The list of assets has an invalid format.", "errors": [
                {"property": "[1]", "message": "String value found, but an object is required"}
            ]})),
        case("§5.12 more than 100", Method::PATCH, FAM_SKU)
            .json(Value::Array(many))
            .status(413)
            .message("Too many resources to process, 100 is the maximum allowed."),
        case("§5.12 413 applied nothing", Method::GET, format!("{FAM_SKU}/x0"))
            .status(404)
            .message("Asset \"x0\" does not exist for the asset family \"packshots\"."),
        // ---- §5.12 per item
        case("§5.12 per-item results", Method::PATCH, FAM_SKU)
            .json(json!([
                {"code": 42, "values": {"description": {"locale": null}}},
                {"code": "house", "values": {"width": [v(None, None, json!("800"))]}},
                {"code": "phone", "values": {"title": [v(Some("en_AU"), None, json!("x"))]}},
                {"code": "foo-bar"},
                {"code": "flower", "values": {"colour": [v(None, None, json!("x"))]}},
                {"code": "lamp", "values": {"description": [v(Some("en_US"), None, json!("d".repeat(501)))]}},
                {"code": "desk", "values": {"width": [v(None, None, json!(12))]}},
                {"code": "desk", "values": {"width": [v(None, None, json!("12.5"))], "height": [v(None, None, json!("abc"))]}},
                {"code": "sofa", "values": {"media_file": [v(None, None, json!("1/2/3/4/nope_x.jpg"))]}},
                {"code": "sofa", "values": {"sku": [v(Some("en_US"), None, json!("S1"))],
                                            "title": [v(None, None, json!("Sofa"))],
                                            "tags": [v(None, Some("ecommerce"), json!(["red"]))]}},
                {"code": "chair", "values": {"tags": [v(None, None, json!(["red", "nope", "zzz"]))]}},
                {"code": "chair", "values": {"tags": [v(None, None, json!(["red"]))], "width": [v(None, None, json!(null))]}}
            ]))
            .body_json(json!([
                {"code": 42, "status_code": 422, "message": "The asset has an invalid format.", "errors": [
                    {"property": "code", "message": "Integer value found, but a string is required"},
                    {"property": "values.description", "message": "Object value found, but an array is required"}]},
                {"code": "house", "status_code": 204},
                {"code": "phone", "status_code": 422, "message": "The asset has data that does not comply with the business rules.", "errors": [
                    {"property": "values.title", "message": "The locale \"en_AU\" is not activated."}]},
                {"code": "foo-bar", "status_code": 422, "message": "Asset code may contain only letters, numbers and underscores. \"foo-bar\" given"},
                {"code": "flower", "status_code": 422, "message": "Attribute \"colour\" does not exist for this asset family"},
                {"code": "lamp", "status_code": 422, "message": "The asset has data that does not comply with the business rules.", "errors": [
                    {"property": "values.description", "message": "This value is too long. It should have 500 characters or less."}]},
                {"code": "desk", "status_code": 422, "message": "The asset has an invalid format.", "errors": [
                    {"property": "values.width[0].data", "message": "Integer value found, but a string or a null is required"}]},
                {"code": "desk", "status_code": 422, "message": "The asset has data that does not comply with the business rules.", "errors": [
                    {"property": "values.height", "message": "This field should be an integer"},
                    {"property": "values.width", "message": "This field should be an integer"}]},
                {"code": "sofa", "status_code": 422, "message": "The asset has data that does not comply with the business rules.", "errors": [
                    {"property": "values.media_file", "message": "The file \"1/2/3/4/nope_x.jpg\" was not found."}]},
                {"code": "sofa", "status_code": 422, "message": "The asset has data that does not comply with the business rules.", "errors": [
                    {"property": "values.sku", "message": "A locale is not expected for attribute \"sku\" because it has not a value per locale."},
                    {"property": "values.tags", "message": "A channel is not expected for attribute \"tags\" because it has not a value per channel."},
                    {"property": "values.title", "message": "A locale is expected for attribute \"title\" because it has a value per locale."}]},
                {"code": "chair", "status_code": 422, "message": "The asset has data that does not comply with the business rules.", "errors": [
                    {"property": "values.tags", "message": "The following option codes don't exist for this attribute : \"nope, zzz\""}]},
                {"code": "chair", "status_code": 201}
            ])),
        case("§5.12 item 204 wrote the value", Method::GET, format!("{FAM_SKU}/house"))
            .subset(json!({"values": {"width": [v(None, None, json!("800"))]}})),
        // ---- §5.13 delete
        case("§5.13 delete", Method::DELETE, format!("{FAM_SKU}/chair")).status(204).empty(),
        case("§5.13 delete unknown", Method::DELETE, format!("{FAM_SKU}/chair"))
            .status(404)
            .message("Resource `chair` does not exist."),
        // ---- §5.14 media files (upload in its own test; here the error rows)
        case("§5.14 415", Method::POST, "/api/rest/v1/asset-media-files")
            .json(json!({}))
            .status(415)
            .message("'application/json' in 'Content-type' header is not valid.  Only 'multipart/form-data' is allowed."),
        case("§5.14 no file part", Method::POST, "/api/rest/v1/asset-media-files")
            .raw(Some("multipart/form-data; boundary=XyZ"), "--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--XyZ--\r\n")
            .status(422)
            .message("Property \"file\" is required."),
        case("§5.14 download unknown", Method::GET, "/api/rest/v1/asset-media-files/1/2/3/4/nope.jpg")
            .status(404)
            .message("Media file \"1/2/3/4/nope.jpg\" not found."),
        // ---- §6 products
        case("§6.5 get by uuid", Method::GET, format!("/api/rest/v1/products-uuid/{UUID_A}")).subset(json!({
            "_links": {"self": {"href": format!("{b}/api/rest/v1/products-uuid/{UUID_A}")}},
            "uuid": UUID_A, "family": "hats", "enabled": true,
            "values": {"sku": [{"locale": null, "scope": null, "data": "cap"}],
                       "packshots": [{"locale": null, "scope": null, "data": ["house"]}]},
            "created": "2024-01-02T03:04:05+00:00"
        })),
        case("§6.5 unknown uuid", Method::GET, format!("/api/rest/v1/products-uuid/{UUID_NEW}"))
            .status(404)
            .message(format!("Product \"{UUID_NEW}\" does not exist or you do not have permission to access it.")),
        case("§6.2 get by identifier", Method::GET, "/api/rest/v1/products/mug")
            .subset(json!({"uuid": UUID_B, "identifier": "mug"})),
        case("§4.3 default list", Method::GET, "/api/rest/v1/products-uuid").subset(json!({
            "current_page": 1,
            "_links": {"self": {"href": format!("{b}/api/rest/v1/products-uuid?limit=10&page=1")},
                       "first": {"href": format!("{b}/api/rest/v1/products-uuid?limit=10&page=1")}}
        })),
        case("§4.3 limit 0", Method::GET, "/api/rest/v1/products-uuid?limit=0")
            .status(422).message("\"0\" is not a valid limit number."),
        case("§4.3 limit 101", Method::GET, "/api/rest/v1/products-uuid?limit=101")
            .status(422).message("You cannot request more than 100 items."),
        case("§4.3 page", Method::GET, "/api/rest/v1/products-uuid?page=x")
            .status(422).message("\"x\" is not a valid page number."),
        case("§4.3 with_count", Method::GET, "/api/rest/v1/products-uuid?with_count=yes")
            .status(422).message("Parameter \"with_count\" has to be a boolean. Only \"true\" or \"false\" allowed, \"yes\" given."),
        case("§4.3 pagination type", Method::GET, "/api/rest/v1/products-uuid?pagination_type=cursor")
            .status(422).message("Pagination type does not exist."),
        case("§4.3 depth", Method::GET, "/api/rest/v1/products-uuid?page=101&limit=100")
            .status(422).message("You have reached the maximum number of pages you can retrieve with the \"page\" pagination type. Please use the search after pagination type instead"),
        case("§4.3 with_count", Method::GET, "/api/rest/v1/products-uuid?with_count=true")
            .subset(json!({"items_count": 2})),
        case("§6.3 search not JSON", Method::GET, "/api/rest/v1/products-uuid?search=nope")
            .status(400).message("Search query parameter should be valid JSON."),
        case("§6.3 updated format", Method::GET, "/api/rest/v1/products-uuid?search=%7B%22updated%22%3A%5B%7B%22operator%22%3A%22%3E%22%2C%22value%22%3A%222024-01-01T00%3A00%3A00Z%22%7D%5D%7D")
            .status(422)
            .body_json(json!({"code": 422,
                "message": "Property \"updated\" expects a string with the format \"yyyy-mm-dd H:i:s\" as data, \"2024-01-01T00:00:00Z\" given.",
                "_links": {"documentation": {"href": "http://api.akeneo.com/documentation/filter.html"}}})),
        case("§6.5 PATCH create", Method::PATCH, format!("/api/rest/v1/products-uuid/{UUID_NEW}"))
            .json(json!({"values": {"sku": [{"locale": null, "scope": null, "data": "bag"}]}}))
            .status(201)
            .header_prefix("location", format!("{b}/api/rest/v1/products-uuid/"))
            .has_header("location", format!("{b}/api/rest/v1/products-uuid/{UUID_NEW}"))
            .empty(),
        case("§6.5 PATCH update", Method::PATCH, format!("/api/rest/v1/products-uuid/{UUID_NEW}"))
            .json(json!({"uuid": UUID_NEW, "family": "bags"}))
            .status(204)
            .empty(),
        case("§6.5 PATCH uuid mismatch", Method::PATCH, format!("/api/rest/v1/products-uuid/{UUID_NEW}"))
            .json(json!({"uuid": UUID_A}))
            .status(422)
            .message(format!("The uuid \"{UUID_A}\" provided in the request body must match the uuid \"{UUID_NEW}\" provided in the url.")),
        case("§6.5 PATCH unknown attribute", Method::PATCH, format!("/api/rest/v1/products-uuid/{UUID_NEW}"))
            .json(json!({"values": {"colour": [{"locale": null, "scope": null, "data": "red"}]}}))
            .status(422)
            .body_json(json!({"code": 422,
                "message": "Attribute \"colour\" does not exist. Check the expected format on the API documentation.",
                "_links": {"documentation": {"href": "http://api.akeneo.com/api-reference.html#patch_products_uuid__uuid_"}}})),
        case("§6.5 PATCH duplicate identifier", Method::PATCH, format!("/api/rest/v1/products-uuid/{UUID_NEW}"))
            .json(json!({"values": {"sku": [{"locale": null, "scope": null, "data": "cap"}]}}))
            .status(422)
            .body_json(json!({"code": 422, "message": "Validation failed.", "errors": [
                {"property": "identifier", "message": "The same identifier is already set on another product"}]})),
        case("§6.4 415", Method::PATCH, "/api/rest/v1/products-uuid")
            .json(json!({}))
            .status(415)
            .message("'application/json' in 'Content-type' header is not valid.  Only 'application/vnd.akeneo.collection+json' is allowed."),
        case("§6.4 413", Method::PATCH, "/api/rest/v1/products-uuid")
            .raw(Some("application/vnd.akeneo.collection+json"), vec![format!("{{\"uuid\":\"{UUID_A}\"}}"); 101].join("\n"))
            .status(413)
            .message("Too many resources to process, 100 is the maximum allowed."),
        case("§6.4 lines", Method::PATCH, "/api/rest/v1/products-uuid")
            .raw(Some("application/vnd.akeneo.collection+json"), [
                format!("{{\"uuid\":\"{UUID_A}\",\"values\":{{\"packshots\":[{{\"locale\":null,\"scope\":null,\"data\":[\"house\",\"boat\"]}}]}}}}"),
                "{\"uuid\":".to_owned(),
                "{\"values\":{}}".to_owned(),
                "{\"uuid\":\"9e4b7d39-0d8a-4bd2-9b7e-8f0c5d2b9a01\",\"values\":{\"sku\":[{\"locale\":null,\"scope\":null,\"data\":\"hat\"}]}}".to_owned(),
                format!("{{\"uuid\":\"{UUID_B}\",\"group\":\"x\"}}"),
            ].join("\n"))
            .has_header("content-type", "application/vnd.akeneo.collection+json")
            .text([
                format!("{{\"line\":1,\"uuid\":\"{UUID_A}\",\"status_code\":204}}"),
                "{\"line\":2,\"status_code\":400,\"message\":\"Invalid json message received\"}".to_owned(),
                "{\"line\":3,\"status_code\":422,\"message\":\"Uuid is missing.\"}".to_owned(),
                "{\"line\":4,\"uuid\":\"9e4b7d39-0d8a-4bd2-9b7e-8f0c5d2b9a01\",\"status_code\":201}".to_owned(),
                format!("{{\"line\":5,\"uuid\":\"{UUID_B}\",\"status_code\":422,\"message\":\"Property \\\"group\\\" does not exist. Check the expected format on the API documentation.\",\"_links\":{{\"documentation\":{{\"href\":\"http://api.akeneo.com/api-reference.html#patch_products_uuid__uuid_\"}}}}}}"),
            ].join("\n")),
        case("§6.1 asset collection replaced whole", Method::GET, format!("/api/rest/v1/products-uuid/{UUID_A}"))
            .subset(json!({"values": {"packshots": [{"locale": null, "scope": null, "data": ["house", "boat"]}]}})),
        case("§6.4 identifier lines", Method::PATCH, "/api/rest/v1/products")
            .raw(Some("application/vnd.akeneo.collection+json"), "{\"identifier\":\"mug\",\"family\":\"cups\"}\n{\"family\":\"x\"}")
            .text("{\"line\":1,\"identifier\":\"mug\",\"status_code\":204}\n{\"line\":2,\"status_code\":422,\"message\":\"Identifier is missing.\"}"),
        case("§6.1 product attributes by type", Method::GET,
             "/api/rest/v1/attributes?search=%7B%22type%22%3A%5B%7B%22operator%22%3A%22IN%22%2C%22value%22%3A%5B%22pim_catalog_asset_collection%22%5D%7D%5D%7D")
            .subset(json!({"current_page": 1})),
    ];
    run(&env, cases).await;

    // A few rows need the live state.
    let attrs: Value = env
        .http
        .get(format!("{b}/api/rest/v1/attributes?search=%7B%22type%22%3A%5B%7B%22operator%22%3A%22IN%22%2C%22value%22%3A%5B%22pim_catalog_asset_collection%22%5D%7D%5D%7D"))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let codes: Vec<&str> = attrs["_embedded"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["packshots", "lifestyle"],
        "§6.1 asset collection attributes"
    );
    assert_eq!(
        attrs["_embedded"]["items"][0]["reference_data_name"], "packshots",
        "§6.1 reference_data_name = family"
    );
}

// -------------------------------------------------------------------------------------------
// Behaviour

async fn get_json(env: &Env, url: &str) -> Value {
    let r = env
        .http
        .get(url)
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    r.json().await.unwrap()
}

async fn patch_batch(env: &Env, family: &str, items: &[Value]) -> Vec<Value> {
    let (status, text) = patch_batch_text(env, family, items).await;
    assert_eq!(status, 200);
    serde_json::from_str(&text).unwrap()
}

/// Follows `next` links; returns the items per page.
async fn walk(env: &Env, first: String) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut url = Some(first);
    while let Some(u) = url.take() {
        let page = get_json(env, &u).await;
        assert!(page["_links"].get("previous").is_none(), "§4.2 no previous");
        assert!(page.get("current_page").is_none(), "§4.2 no current_page");
        pages.push(page["_embedded"]["items"].as_array().unwrap().clone());
        url = page["_links"]["next"]["href"].as_str().map(str::to_owned);
        assert!(pages.len() < 20, "paging does not end");
    }
    pages
}

#[tokio::test]
async fn search_after_paging_over_250_then_300_assets() {
    let env = env().await;
    let fam = "lifestyle";
    let items: Vec<Value> = (0..250)
        .map(|i| json!({"code": format!("a{i:03}"), "values": {"sku": [v(None, None, json!(format!("S{i}")))]}}))
        .collect();
    for chunk in items.chunks(100) {
        let res = patch_batch(&env, fam, chunk).await;
        assert!(res.iter().all(|r| r["status_code"] == 201));
    }
    let first = format!(
        "{}/api/rest/v1/asset-families/{fam}/assets?channel=ecommerce&locales=en_US",
        env.base
    );
    let pages = walk(&env, first.clone()).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [100, 100, 50],
        "§4.2 next only while full"
    );
    let codes: Vec<String> = pages
        .iter()
        .flatten()
        .map(|a| a["code"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = codes.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(codes, sorted, "code order, no duplicates");
    assert_eq!(codes.len(), 250);
    // links echo channel/locales and items carry their self link
    let page1 = get_json(&env, &first).await;
    let next = page1["_links"]["next"]["href"].as_str().unwrap();
    assert!(
        next.contains("channel=ecommerce")
            && next.contains("locales=en_US")
            && next.contains("search_after=")
    );
    assert_eq!(
        page1["_embedded"]["items"][0]["_links"]["self"]["href"],
        format!("{}/api/rest/v1/asset-families/{fam}/assets/a000", env.base)
    );
    // 300 assets: a full third page, then an empty final page (§4.2, §8.4)
    let more: Vec<Value> = (250..300)
        .map(|i| json!({"code": format!("a{i:03}")}))
        .collect();
    patch_batch(&env, fam, &more).await;
    let pages = walk(&env, first).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [100, 100, 100, 0]
    );
}

/// Akeneo keeps asset codes in a MySQL column of collation `utf8mb4_unicode_ci`, unique per
/// family, looked up with `WHERE code = :code` (CE `SqlAssetRepository`): two codes that differ
/// only in case are one asset, which keeps the spelling it was created with.
#[tokio::test]
async fn asset_codes_differing_only_in_case_are_one_asset() {
    let env = env().await;
    let fam = "lifestyle";
    let res = patch_batch(
        &env,
        fam,
        &[json!({"code": "Chair_01", "values": {"sku": [v(None, None, json!("S1"))]}})],
    )
    .await;
    assert_eq!(res[0]["status_code"], 201);
    // Another spelling updates it (204), and the response line echoes the code sent.
    let res = patch_batch(
        &env,
        fam,
        &[json!({"code": "chair_01", "values": {"sku": [v(None, None, json!("S2"))]}})],
    )
    .await;
    assert_eq!(
        (&res[0]["code"], &res[0]["status_code"]),
        (&json!("chair_01"), &json!(204))
    );
    let url = |code: &str| {
        format!(
            "{}/api/rest/v1/asset-families/{fam}/assets/{code}",
            env.base
        )
    };
    let got = get_json(&env, &url("CHAIR_01")).await;
    assert_eq!(got["code"], "Chair_01", "the spelling it was created with");
    assert_eq!(got["values"]["sku"][0]["data"], "S2");
    let listed = walk(
        &env,
        format!("{}/api/rest/v1/asset-families/{fam}/assets", env.base),
    )
    .await;
    let codes: Vec<&Value> = listed.iter().flatten().map(|a| &a["code"]).collect();
    assert_eq!(codes, [&json!("Chair_01")]);
    // A deletion by another spelling deletes it.
    let r = env
        .http
        .delete(url("chair_01"))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = env
        .http
        .get(url("Chair_01"))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn updated_and_code_filters() {
    let env = env().await;
    let fam = "lifestyle";
    let at = |h: u32| Utc.with_ymd_and_hms(2024, 3, 1, h, 0, 0).unwrap();
    for (h, code) in [(8, "early"), (10, "middle"), (12, "late")] {
        env.emu.set_clock(Some(at(h)));
        patch_batch(&env, fam, &[json!({"code": code})]).await;
    }
    // an unchanged upsert keeps `updated`
    env.emu.set_clock(Some(at(20)));
    let res = patch_batch(&env, fam, &[json!({"code": "early"})]).await;
    assert_eq!(res[0]["status_code"], 204);
    let search = |filter: Value| {
        let q: String =
            url::form_urlencoded::byte_serialize(filter.to_string().as_bytes()).collect();
        format!(
            "{}/api/rest/v1/asset-families/{fam}/assets?search={q}",
            env.base
        )
    };
    let codes = |page: Value| -> Vec<String> {
        page["_embedded"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["code"].as_str().unwrap().to_owned())
            .collect()
    };
    let cases = [
        (
            json!({"updated": [{"operator": ">", "value": "2024-03-01T09:00:00Z"}]}),
            vec!["late", "middle"],
        ),
        (
            json!({"updated": [{"operator": ">", "value": "2024-03-01T10:00:00+00:00"}]}),
            vec!["late"],
        ),
        (
            json!({"updated": [{"operator": "<", "value": "2024-03-01T10:00:00Z"}]}),
            vec!["early"],
        ),
        (
            json!({"updated": [{"operator": "BETWEEN", "value": ["2024-03-01T09:00:00Z", "2024-03-01T12:00:00Z"]}]}),
            vec!["late", "middle"],
        ),
        (
            json!({"updated": [{"operator": "NOT BETWEEN", "value": ["2024-03-01T09:00:00Z", "2024-03-01T11:00:00Z"]}]}),
            vec!["early", "late"],
        ),
        (
            json!({"updated": [{"operator": ">", "value": "2024-03-01T07:00:00Z"}, {"operator": "<", "value": "2024-03-01T12:00:00Z"}]}),
            vec!["early", "middle"],
        ),
        (
            json!({"updated": [{"operator": "SINCE LAST N DAYS", "value": 1}]}),
            vec!["early", "late", "middle"],
        ),
        (
            json!({"code": [{"operator": "IN", "value": ["late", "early", "nope"]}]}),
            vec!["early", "late"],
        ),
        (
            json!({"code": [{"operator": "IN", "value": ["late", "early"]}], "updated": [{"operator": ">", "value": "2024-03-01T09:00:00Z"}]}),
            vec!["late"],
        ),
    ];
    for (filter, expected) in cases {
        let got = codes(get_json(&env, &search(filter.clone())).await);
        assert_eq!(got, expected, "§5.9 filter {filter}");
    }
    // SINCE LAST N DAYS is relative to the server clock
    env.emu
        .set_clock(Some(Utc.with_ymd_and_hms(2024, 3, 5, 0, 0, 0).unwrap()));
    let got = codes(
        get_json(
            &env,
            &search(json!({"updated": [{"operator": "SINCE LAST N DAYS", "value": 2}]})),
        )
        .await,
    );
    assert!(got.is_empty());
    // the filter is echoed in links
    let page = get_json(
        &env,
        &search(json!({"code": [{"operator": "IN", "value": ["late"]}]})),
    )
    .await;
    assert!(page["_links"]["self"]["href"]
        .as_str()
        .unwrap()
        .contains("search="));
}

#[tokio::test]
async fn batch_of_100_with_3_invalid_items() {
    let env = env().await;
    let items: Vec<Value> = (0..100)
        .map(|i| match i {
            10 => json!({"code": "bad-code"}),
            50 => json!({"code": "b50", "values": {"tags": [v(None, None, json!(["purple"]))]}}),
            90 => json!({"code": "b90", "values": {"title": [v(None, None, json!("no locale"))]}}),
            _ => json!({"code": format!("b{i}"), "values": {
                "media": [v(None, None, json!(format!("b{i}.jpg")))],
                "title": [v(Some("en_US"), None, json!(format!("Asset {i}"))), v(Some("de_DE"), None, json!(format!("Bild {i}")))],
                "tags": [v(None, None, json!(["summer", "studio"]))],
                "width": [v(None, None, json!("1024"))]
            }}),
        })
        .collect();
    env.emu.reset_counters();
    let res = patch_batch(&env, "packshots", &items).await;
    assert_eq!(res.len(), 100, "one result per item, in order");
    let failed: Vec<(usize, &Value)> = res
        .iter()
        .enumerate()
        .filter(|(_, r)| r["status_code"] != 201)
        .collect();
    assert_eq!(failed.len(), 3);
    assert_eq!(failed[0].0, 10);
    assert_eq!(
        failed[0].1["message"],
        "Asset code may contain only letters, numbers and underscores. \"bad-code\" given"
    );
    assert_eq!(failed[1].0, 50);
    assert_eq!(
        failed[1].1["errors"][0]["message"],
        "The following option codes don't exist for this attribute : \"purple\""
    );
    assert_eq!(failed[2].0, 90);
    assert_eq!(
        failed[2].1["errors"][0],
        json!({"property": "values.title", "message": "A locale is expected for attribute \"title\" because it has a value per locale."})
    );
    assert!(
        res.iter().all(|r| r.get("line").is_none()),
        "§5.12 no line field"
    );
    assert_eq!(env.emu.asset_count("packshots"), 1 + 97);
    let c = env.emu.counters();
    assert_eq!(c.assets_created, 97);
    assert_eq!(c.asset_items_rejected, 3);
    assert_eq!(c.asset_batch_requests, 1);
    assert_eq!(
        c.asset_batches_typed, 0,
        "a refused item: the general path answers the whole batch"
    );
    assert_eq!(
        c.requests_with_status("PATCH", "/api/rest/v1/asset-families/{family}/assets", 200),
        1
    );
    let a = env.emu.asset("packshots", "b7").unwrap();
    assert_eq!(a["values"]["title"].as_array().unwrap().len(), 2);
    // §5.8: sending one locale leaves the other; data null erases
    patch_batch(
        &env,
        "packshots",
        &[json!({"code": "b7", "values": {"title": [v(Some("de_DE"), None, json!(null))], "width": [v(None, None, json!("2048"))]}})],
    )
    .await;
    let a = env.emu.asset("packshots", "b7").unwrap();
    assert_eq!(
        a["values"]["title"],
        json!([v(Some("en_US"), None, json!("Asset 7"))])
    );
    assert_eq!(a["values"]["width"], json!([v(None, None, json!("2048"))]));
    assert_eq!(
        a["values"]["tags"],
        json!([v(None, None, json!(["summer", "studio"]))])
    );
    let log = env.emu.request_log();
    let last = log.last().unwrap();
    assert_eq!(last.route, "/api/rest/v1/asset-families/{family}/assets");
    assert_eq!(last.items, Some(1));
    assert_eq!(log[log.len() - 2].items, Some(100));
}

#[tokio::test]
async fn concurrency_cap_answers_429_with_retry_after() {
    let config = AkeneoEmulatorConfig {
        max_concurrency: Some(2),
        // The first two are still running when the other four arrive, even on a loaded
        // machine (six connections opened at once).
        latency: Duration::from_millis(1_500),
        retry_after_secs: 3,
        ..Default::default()
    };
    let env = env_with(config).await;
    let calls = (0..6).map(|_| {
        env.http
            .get(format!("{}/api/rest/v1/asset-families", env.base))
            .bearer_auth(&env.token)
            .send()
    });
    let results = futures::future::join_all(calls).await;
    let mut ok = 0;
    let mut throttled = 0;
    for r in results {
        let r = r.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                throttled += 1;
                assert_eq!(r.headers()["retry-after"], "3");
                let body: Value = r.json().await.unwrap();
                assert_eq!(
                    body,
                    json!({"code": 429, "message": "You have exceeded the limit of API requests per second."})
                );
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(ok, 2, "§3.4 at most the cap runs at once");
    assert_eq!(throttled, 4);
    let c = env.emu.counters();
    assert_eq!(c.throttled_concurrency, 4);
    assert!(c.max_in_flight >= 3);
    assert_eq!(env.emu.in_flight(), 0);
}

#[tokio::test]
async fn token_expiry_refresh_and_revocation() {
    // Long enough that a fresh token surely is used before it expires on a loaded machine.
    let config = AkeneoEmulatorConfig {
        token_ttl: Duration::from_secs(2),
        ..Default::default()
    };
    let env = env_with(config).await;
    let families = format!("{}/api/rest/v1/asset-families", env.base);
    let status = |t: String| {
        let http = env.http.clone();
        let url = families.clone();
        async move {
            http.get(url)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(env.token.clone()).await, 200);
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    assert_eq!(status(env.token.clone()).await, 401, "§2.3 expired token");

    let refresh = |rt: String| {
        env.http
            .post(format!("{}/api/oauth/v1/token", env.base))
            .basic_auth("assetbridge", Some("secret"))
            .json(&json!({"grant_type": "refresh_token", "refresh_token": rt}))
            .send()
    };
    let r = refresh(env.refresh.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let new_access = body["access_token"].as_str().unwrap().to_owned();
    let new_refresh = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(
        new_refresh, env.refresh,
        "§2.1 a new refresh token every time"
    );
    assert_eq!(status(new_access.clone()).await, 200);
    // refresh tokens are single-use
    let again = refresh(env.refresh.clone()).await.unwrap();
    assert_eq!(again.status(), 422);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["message"], "Refresh token is invalid or has expired");
    // revocation: access tokens die, refresh tokens still work
    env.emu
        .set_token_ttl(Duration::from_secs(3600), Duration::from_secs(3600));
    env.emu.revoke_tokens();
    assert_eq!(status(new_access).await, 401);
    assert_eq!(refresh(new_refresh).await.unwrap().status(), 200);
    let c = env.emu.counters();
    assert_eq!(c.token_grants, 1);
    assert_eq!(c.token_refreshes, 2);
    assert_eq!(c.token_failures, 1);
}

#[tokio::test]
async fn media_upload_download_and_media_file_values() {
    let env = env().await;
    let upload = |name: &'static str, bytes: Vec<u8>| {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(name)
            .mime_str("image/jpeg")
            .unwrap();
        env.http
            .post(format!("{}/api/rest/v1/asset-media-files", env.base))
            .bearer_auth(&env.token)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
    };
    let content = b"\xff\xd8\xff fake jpeg".to_vec();
    let r = upload("my house.jpg", content.clone()).await.unwrap();
    assert_eq!(r.status(), 201, "§5.14 upload");
    let code = r.headers()["asset-media-file-code"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        r.headers()["location"],
        format!("{}/api/rest/v1/asset-media-files/{code}", env.base)
    );
    assert!(r.text().await.unwrap().is_empty());
    let parts: Vec<&str> = code.split('/').collect();
    assert_eq!(parts.len(), 5, "a/b/c/d/<sha1>_<name>: {code}");
    let (sha, name) = parts[4].split_once('_').unwrap();
    assert_eq!(sha.len(), 40);
    assert_eq!(&sha[..4], parts[..4].concat());
    assert_eq!(name, "my_house.jpg");
    let info = env.emu.media_file(&code).unwrap();
    assert_eq!(info.size, content.len() as u64);
    assert_eq!(info.original_filename, "my house.jpg");

    let d = env
        .http
        .get(format!("{}/api/rest/v1/asset-media-files/{code}", env.base))
        .bearer_auth(&env.token)
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(d.status(), 200);
    assert_eq!(d.headers()["content-type"], "image/jpeg");
    assert_eq!(
        d.headers()["content-disposition"],
        "attachment; filename=\"my house.jpg\""
    );
    assert_eq!(d.bytes().await.unwrap().as_ref(), content.as_slice());

    // the code in a media_file value; a .gif is refused by the attribute's extensions
    let r = upload("anim.gif", b"GIF89a".to_vec()).await.unwrap();
    let gif = r.headers()["asset-media-file-code"]
        .to_str()
        .unwrap()
        .to_owned();
    let res = patch_batch(
        &env,
        "packshots",
        &[
            json!({"code": "pic", "values": {"media_file": [v(None, None, json!(code))]}}),
            json!({"code": "gif", "values": {"media_file": [v(None, None, json!(gif))]}}),
        ],
    )
    .await;
    assert_eq!(res[0]["status_code"], 201);
    assert_eq!(
        res[1]["errors"][0]["message"],
        "\".gif\" files are not allowed for this attribute. Allowed extensions are: jpg,png,pdf,tif"
    );
    let a = env.emu.asset("packshots", "pic").unwrap();
    assert_eq!(
        a["values"]["media_file"][0]["_links"]["download"]["href"],
        format!("{}/api/rest/v1/asset-media-files/{code}", env.base),
        "§5.7 download link"
    );
    assert_eq!(env.emu.counters().media_uploads, 2);
}

#[tokio::test]
async fn product_search_by_identifier_uuid_asset_and_updated() {
    let env = env().await;
    for i in 0..30 {
        env.emu
            .set_clock(Some(Utc.with_ymd_and_hms(2024, 5, 1, 0, i, 0).unwrap()));
        env.emu
            .add_product(json!({"identifier": format!("p{i:02}"),
                "values": {"packshots": [{"locale": null, "scope": null, "data": [format!("asset{}", i % 3)]}]}}))
            .unwrap();
    }
    let q = |filter: Value, extra: &str| {
        let s: String =
            url::form_urlencoded::byte_serialize(filter.to_string().as_bytes()).collect();
        format!("{}/api/rest/v1/products-uuid?search={s}{extra}", env.base)
    };
    let ids = |page: &Value| -> Vec<String> {
        let mut v: Vec<String> = page["_embedded"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["values"]["sku"][0]["data"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let page = get_json(
        &env,
        &q(
            json!({"sku": [{"operator": "IN", "value": ["p01", "p07", "cap"]}]}),
            "",
        ),
    )
    .await;
    assert_eq!(ids(&page), ["cap", "p01", "p07"]);
    let page = get_json(
        &env,
        &q(json!({"uuid": [{"operator": "IN", "value": [UUID_B]}]}), ""),
    )
    .await;
    assert_eq!(ids(&page), ["mug"]);
    let page = get_json(
        &env,
        &q(
            json!({"packshots": [{"operator": "IN", "value": ["asset1"]}]}),
            "&limit=100",
        ),
    )
    .await;
    assert_eq!(ids(&page).len(), 10);
    let page = get_json(
        &env,
        &q(
            json!({"updated": [{"operator": ">", "value": "2024-05-01 00:27:00"}]}),
            "",
        ),
    )
    .await;
    assert_eq!(ids(&page), ["p28", "p29"]);
    let too_many: Vec<String> = (0..101).map(|i| format!("x{i}")).collect();
    let r = env
        .http
        .get(q(
            json!({"sku": [{"operator": "IN", "value": too_many}]}),
            "",
        ))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        422,
        "§6.3 identifier IN is limited to 100 values"
    );
    // search_after over 32 products by 10
    let mut url = Some(format!(
        "{}/api/rest/v1/products-uuid?pagination_type=search_after&limit=10",
        env.base
    ));
    let mut sizes = Vec::new();
    while let Some(u) = url.take() {
        let page = get_json(&env, &u).await;
        sizes.push(page["_embedded"]["items"].as_array().unwrap().len());
        assert!(page.get("current_page").is_none());
        url = page["_links"]["next"]["href"].as_str().map(str::to_owned);
    }
    assert_eq!(sizes, [10, 10, 10, 2]);
    // offset paging: previous / next
    let page = get_json(
        &env,
        &format!("{}/api/rest/v1/products-uuid?page=2&limit=10", env.base),
    )
    .await;
    assert_eq!(page["current_page"], 2);
    assert!(page["_links"]["previous"]["href"]
        .as_str()
        .unwrap()
        .contains("page=1"));
    assert!(page["_links"]["next"]["href"]
        .as_str()
        .unwrap()
        .contains("page=3"));
}

#[tokio::test]
async fn injected_faults_and_outage() {
    let env = env().await;
    let url = format!("{}/api/rest/v1/asset-families", env.base);
    env.emu.set_fault_rates(0.0, 0.0, 1.0);
    let r = env.http.get(&url).bearer_auth(&env.token).send().await;
    assert!(r.is_err(), "dropped connection: no answer");
    env.emu.set_fault_rates(0.0, 1.0, 0.0);
    let r = env
        .http
        .get(&url)
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert!([500, 502, 503].contains(&r.status().as_u16()));
    env.emu.set_fault_rates(1.0, 0.0, 0.0);
    let r = env
        .http
        .get(&url)
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    env.emu.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    let r = env
        .http
        .get(&url)
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = env
        .http
        .post(format!("{}/api/oauth/v1/token", env.base))
        .basic_auth("assetbridge", Some("secret"))
        .json(&json!({"grant_type": "password", "username": "admin", "password": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "outage covers the token route");
    env.emu.set_outage(false);
    let r = env
        .http
        .get(&url)
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let c = env.emu.counters();
    assert_eq!(c.dropped_connections, 1);
    assert_eq!(c.injected_5xx, 3);
    assert_eq!(c.throttled, 1);
    let log = env.emu.request_log();
    assert!(
        log.iter().any(|l| l.status.is_none()),
        "dropped request logged without status"
    );
    // latency is added to API calls
    env.emu.set_latency(Duration::from_millis(150));
    let t = std::time::Instant::now();
    env.http
        .get(&url)
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn request_log_is_a_bounded_ring() {
    let config = AkeneoEmulatorConfig {
        request_log_capacity: 5,
        ..Default::default()
    };
    let env = env_with(config).await;
    for i in 0..8 {
        env.http
            .get(format!(
                "{}/api/rest/v1/asset-families/packshots/assets/n{i}",
                env.base
            ))
            .bearer_auth(&env.token)
            .send()
            .await
            .unwrap();
    }
    let log = env.emu.request_log();
    assert_eq!(log.len(), 5);
    assert_eq!(
        log[4].path,
        "/api/rest/v1/asset-families/packshots/assets/n7"
    );
    assert_eq!(log[4].status, Some(404));
    assert!(log[4].ended >= log[4].started);
    env.emu.reset_log();
    assert!(env.emu.request_log().is_empty());
    let _ = ProductAttribute::identifier("sku");
}

// -------------------------------------------------------------------------------------------
// §5.4 naming conventions and §5.5 product link rules

const FAM_PACKSHOTS: &str = "/api/rest/v1/asset-families/packshots";
const FAM_LIFESTYLE: &str = "/api/rest/v1/asset-families/lifestyle";
const FAMILY_BUSINESS: &str =
    "The asset family has data that does not comply with the business rules.";

fn family_errors(errors: Value) -> Value {
    json!({"code": 422, "message": FAMILY_BUSINESS, "errors": errors})
}

/// `packshots`: asset code `<sku>_<width>`, products linked by `sku`.
fn sku_width_convention(abort: bool) -> Value {
    json!({
        "source": {"property": "code", "locale": null, "channel": null},
        "pattern": "/^(?P<sku>[a-z]+)_(?P<width>\\d+)$/",
        "abort_asset_creation_on_error": abort
    })
}

fn sku_rule() -> Value {
    json!({
        "product_selections": [{"field": "sku", "operator": "EQUALS", "value": "{{sku}}"}],
        "assign_assets_to": [{"attribute": "packshots", "mode": "add", "locale": null, "channel": null}]
    })
}

#[tokio::test]
async fn naming_convention_and_link_rule_contract() {
    let env = env().await;
    let b = env.base.clone();
    let fam_patch = |reference: &'static str, path: &str, body: Value| {
        case(reference, Method::PATCH, path.to_owned()).json(body)
    };
    let nc = |pattern: &str| {
        json!({"source": {"property": "code", "locale": null, "channel": null},
               "pattern": pattern, "abort_asset_creation_on_error": true})
    };
    let rule_with =
        |sel: Value, asg: Value| json!({"product_selections": [sel], "assign_assets_to": [asg]});
    let add_to =
        |attr: &str| json!({"attribute": attr, "mode": "add", "locale": null, "channel": null});
    let sku_is = json!({"field": "sku", "operator": "EQUALS", "value": "x"});
    let cases = vec![
        // ---- family PATCH checks (§5.4)
        fam_patch("§5.4 malformed pattern", FAM_PACKSHOTS,
                  json!({"code": "packshots", "naming_convention": nc("/(/")}))
            .status(422)
            .body_json(family_errors(json!([{"property": "naming_convention.pattern",
                "message": "The regular expression \"/(/\" is malformed."}]))),
        fam_patch("§5.4 pattern without delimiters", FAM_PACKSHOTS,
                  json!({"code": "packshots", "naming_convention": nc("^(?P<sku>.*)$")}))
            .status(422)
            .body_json(family_errors(json!([{"property": "naming_convention.pattern",
                "message": "The regular expression \"^(?P<sku>.*)$\" is malformed."}]))),
        fam_patch("§5.4 source is the main media", FAM_PACKSHOTS, json!({"code": "packshots",
                  "naming_convention": {"source": {"property": "media_file", "locale": null, "channel": null},
                                        "pattern": "/(?P<sku>.*)/", "abort_asset_creation_on_error": false}}))
            .status(422)
            .body_json(family_errors(json!([{"property": "naming_convention.source",
                "message": "Property must match the code of the attribute defined as main media"}]))),
        fam_patch("§5.4 unknown source property", FAM_PACKSHOTS, json!({"code": "packshots",
                  "naming_convention": {"source": {"property": "nope", "locale": null, "channel": null},
                                        "pattern": "/(?P<sku>.*)/", "abort_asset_creation_on_error": false}}))
            .status(422)
            .body_json(family_errors(json!([{"property": "naming_convention.source",
                "message": "The property \"nope\" does not exist for this asset family"}]))),
        fam_patch("§5.4 source locale on a non-localizable main media", FAM_PACKSHOTS, json!({"code": "packshots",
                  "naming_convention": {"source": {"property": "media", "locale": "en_US", "channel": null},
                                        "pattern": "/(?P<sku>.*)/", "abort_asset_creation_on_error": false}}))
            .status(422)
            .body_json(family_errors(json!([{"property": "naming_convention.source",
                "message": "Attribute \"media\" is not localizable, you cannot define a locale"}]))),
        fam_patch("§5.4 mandatory keys", FAM_PACKSHOTS,
                  json!({"code": "packshots", "naming_convention": {"pattern": "/x/"}}))
            .status(422)
            .body_json(family_errors(json!([
                {"property": "naming_convention.source", "message": "This field is missing."},
                {"property": "naming_convention.abort_asset_creation_on_error", "message": "This field is missing."}]))),
        // ---- family PATCH checks (§5.5)
        fam_patch("§5.5 at most 2 rules", FAM_PACKSHOTS,
                  json!({"code": "packshots", "product_link_rules": [sku_rule(), sku_rule(), sku_rule()]}))
            .status(422)
            .body_json(family_errors(json!([{"property": "product_link_rules",
                "message": "You have reached the limit of 2 product link rules for the \"packshots\" asset family."}]))),
        fam_patch("§5.5 selections and assignments needed", FAM_PACKSHOTS,
                  json!({"code": "packshots", "product_link_rules": [{"product_selections": [], "assign_assets_to": []}]}))
            .status(422)
            .body_json(family_errors(json!([
                {"property": "product_link_rules[0].product_selections",
                 "message": "You must specify at least one product selection in your product link rule"},
                {"property": "product_link_rules[0].assign_assets_to",
                 "message": "You must specify at least one product assignment in your product link rule"}]))),
        fam_patch("§5.5 selection keys are mandatory", FAM_PACKSHOTS, json!({"code": "packshots",
                  "product_link_rules": [rule_with(json!({"field": "sku", "value": "x"}), add_to("packshots"))]}))
            .status(422)
            .body_json(family_errors(json!([{"property": "product_link_rules[0].product_selections[0].operator",
                "message": "This field is missing."}]))),
        fam_patch("§5.5 no locale on family", FAM_PACKSHOTS, json!({"code": "packshots",
                  "product_link_rules": [rule_with(json!({"field": "family", "operator": "IN", "value": ["hats"], "locale": null}), add_to("packshots"))]}))
            .status(422)
            .body_json(family_errors(json!([{"property": "product_link_rules[0].product_selections[0].locale",
                "message": "You cannot specify a locale for the field \"family\""}]))),
        fam_patch("§5.5 extrapolation of a localizable attribute", FAM_PACKSHOTS, json!({"code": "packshots",
                  "product_link_rules": [rule_with(json!({"field": "sku", "operator": "EQUALS", "value": "{{title}}"}), add_to("packshots"))]}))
            .status(422)
            .body_json(family_errors(json!([{"property": "product_link_rules[0].product_selections[0].value",
                "message": "The attribute \"title\" cannot be used for extrapolation because it has one value per locale"}]))),
        fam_patch("§5.5 extrapolation of an unknown attribute", FAM_PACKSHOTS, json!({"code": "packshots",
                  "product_link_rules": [rule_with(json!({"field": "sku", "operator": "EQUALS", "value": "{{ref}}"}), add_to("packshots"))]}))
            .status(422)
            .body_json(family_errors(json!([{"property": "product_link_rules[0].product_selections[0].value",
                "message": "The attribute \"ref\" does not exist for this asset family"}]))),
        fam_patch("§5.5 assignment mode", FAM_PACKSHOTS, json!({"code": "packshots",
                  "product_link_rules": [rule_with(sku_is.clone(), json!({"attribute": "packshots", "mode": "append"}))]}))
            .status(422)
            .body_json(family_errors(json!([{"property": "product_link_rules[0].assign_assets_to[0].mode",
                "message": "Invalid assignment mode \"append\" found in a product link rule, expected to be \"replace\" or \"add\""}]))),
        fam_patch("§5.5 assignment to a non asset collection", FAM_PACKSHOTS, json!({"code": "packshots",
                  "product_link_rules": [rule_with(sku_is.clone(), add_to("name"))]}))
            .status(422)
            .body_json(family_errors(json!([{"property": "product_link_rules[0].assign_assets_to[0].attribute",
                "message": "product attribute \"name\" is not an attribute of type asset collection"}]))),
        fam_patch("§5.5 assignment to another family's collection", FAM_PACKSHOTS, json!({"code": "packshots",
                  "product_link_rules": [rule_with(sku_is.clone(), add_to("lifestyle"))]}))
            .status(422)
            .body_json(family_errors(json!([{"property": "product_link_rules[0].assign_assets_to[0].attribute",
                "message": "The product attribute \"lifestyle\" cannot contain assets of asset family \"packshots\""}]))),
        fam_patch("§5.5 assignment to an unknown attribute", FAM_PACKSHOTS, json!({"code": "packshots",
                  "product_link_rules": [rule_with(sku_is.clone(), add_to("nope"))]}))
            .status(422)
            .body_json(family_errors(json!([{"property": "product_link_rules[0].assign_assets_to[0].attribute",
                "message": "product attribute \"nope\" does not exist"}]))),
        case("§5.4/§5.5 refused PATCHes changed nothing", Method::GET, FAM_PACKSHOTS)
            .subset(json!({"naming_convention": {}, "product_link_rules": []})),
        // ---- a valid convention and rule
        fam_patch("§5.3 family with naming convention and rule", FAM_PACKSHOTS, json!({"code": "packshots",
                  "naming_convention": sku_width_convention(true), "product_link_rules": [sku_rule()]}))
            .status(204).empty(),
        case("§5.3 family renders them", Method::GET, FAM_PACKSHOTS)
            .subset(json!({"naming_convention": sku_width_convention(true), "product_link_rules": [sku_rule()]})),
        // ---- execution on creation (§5.4, §5.11, §5.12)
        case("§5.4 creation runs the convention", Method::PATCH, format!("{FAM_SKU}/shirt_640"))
            .json(json!({"code": "shirt_640", "values": {}}))
            .status(201).empty(),
        case("§5.4 captures written to the asset", Method::GET, format!("{FAM_SKU}/shirt_640"))
            .subset(json!({"values": {"sku": [v(None, None, json!("shirt"))], "width": [v(None, None, json!("640"))]}})),
        case("§5.4 captures win over sent values", Method::PATCH, format!("{FAM_SKU}/hat_7"))
            .json(json!({"code": "hat_7", "values": {"sku": [v(None, None, json!("sent"))]}}))
            .status(201).empty(),
        case("§5.4 captures win over sent values (read)", Method::GET, format!("{FAM_SKU}/hat_7"))
            .subset(json!({"values": {"sku": [v(None, None, json!("hat"))]}})),
        case("§5.4 abort: no match refuses the creation", Method::PATCH, format!("{FAM_SKU}/SHIRT"))
            .json(json!({"code": "SHIRT"}))
            .status(422)
            .message("Error during naming convention execution: Naming convention pattern does not match"),
        case("§5.4 abort: nothing created", Method::GET, format!("{FAM_SKU}/SHIRT"))
            .status(404)
            .message("Asset \"SHIRT\" does not exist for the asset family \"packshots\"."),
        case("§5.4 updates do not run the convention", Method::PATCH, format!("{FAM_SKU}/house"))
            .json(json!({"code": "house", "values": {"width": [v(None, None, json!("800"))]}}))
            .status(204).empty(),
        case("§5.12 batch: 201 runs it, 204 does not, abort is the item's 422", Method::PATCH, FAM_SKU)
            .json(json!([{"code": "boot_12"}, {"code": "house"}, {"code": "BOOT"}]))
            .text("[{\"code\":\"boot_12\",\"status_code\":201},{\"code\":\"house\",\"status_code\":204},\
                   {\"code\":\"BOOT\",\"status_code\":422,\"message\":\"Error during naming convention execution: Naming convention pattern does not match\"}]"
                .replace("                   ", "")),
        // ---- abort = false, and business rules of the captures (lifestyle)
        fam_patch("§5.4 convention on lifestyle, no abort", FAM_LIFESTYLE, json!({"code": "lifestyle",
                  "naming_convention": {"source": {"property": "code", "locale": null, "channel": null},
                                        "pattern": "/^(?P<width>[a-z0-9]+)$/", "abort_asset_creation_on_error": false}}))
            .status(204).empty(),
        case("§5.4 no abort: no match creates the asset", Method::PATCH, "/api/rest/v1/asset-families/lifestyle/assets/a_b")
            .json(json!({"code": "a_b"}))
            .status(201).empty(),
        case("§5.4 no abort: nothing captured", Method::GET, "/api/rest/v1/asset-families/lifestyle/assets/a_b")
            .subset(json!({"code": "a_b", "values": {}})),
        case("§5.4 captured values must fit the attribute", Method::PATCH, "/api/rest/v1/asset-families/lifestyle/assets/abc")
            .json(json!({"code": "abc"}))
            .status(422)
            .body_json(json!({"code": 422,
                "message": "The asset data computed with naming convention do not comply with the business rules.",
                "errors": [{"property": "values.width", "message": "This field should be an integer"}]})),
        // ---- unknown group: accepted on the family, refused at execution (CE fixture)
        fam_patch("§5.4 a group naming no attribute is accepted", "/api/rest/v1/asset-families/videos",
                  json!({"code": "videos", "naming_convention": nc("/(?P<title>.+)/")}))
            .status(201).empty(),
        case("§5.4 ... and fails at execution", Method::PATCH, "/api/rest/v1/asset-families/videos/assets/intro")
            .json(json!({"code": "intro"}))
            .status(422)
            .message("Error during naming convention execution: Attribute \"title\" does not exist for this asset family"),
    ];
    run(&env, cases).await;
    assert!(env.emu.asset("packshots", "BOOT").is_none());
    assert_eq!(
        env.emu.asset("packshots", "boot_12").unwrap()["values"]["sku"],
        json!([v(None, None, json!("boot"))])
    );
    assert_eq!(env.emu.counters().naming_conventions_applied, 3);
    let _ = b;
}

fn packshots_of(emu: &AkeneoEmulator, identifier: &str) -> Value {
    emu.product_by_identifier(identifier).unwrap()["values"]["packshots"].clone()
}

#[tokio::test]
async fn link_rules_run_for_created_assets_only() {
    let env = env().await;
    for sku in ["shirt", "boot", "shoe"] {
        env.emu
            .add_product(json!({"identifier": sku, "family": "clothes"}))
            .unwrap();
    }
    // Assets that exist before the rule: seeding runs neither convention nor rules.
    env.emu
        .upsert_asset(
            "packshots",
            json!({"code": "mug_1", "values": {"sku": [v(None, None, json!("mug"))]}}),
        )
        .unwrap();
    let http = &env.http;
    let patch = |path: String, body: Value| {
        http.patch(format!("{}{path}", env.base))
            .bearer_auth(&env.token)
            .json(&body)
            .send()
    };
    // Rule 1: sku = {{sku}}, add. Rule 2: family IN hats AND sku STARTS WITH {{sku}}, replace.
    let second = json!({
        "product_selections": [
            {"field": "family", "operator": "IN", "value": ["hats"]},
            {"field": "sku", "operator": "STARTS WITH", "value": "{{sku}}", "locale": null, "channel": null}
        ],
        "assign_assets_to": [{"attribute": "packshots", "mode": "replace", "locale": null, "channel": null}]
    });
    let r = patch(
        FAM_PACKSHOTS.to_owned(),
        json!({"code": "packshots", "naming_convention": sku_width_convention(false),
               "product_link_rules": [sku_rule(), second]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    env.emu.reset_counters();

    // Batch: two creations, one update of an asset made before the rule.
    let res = patch_batch(
        &env,
        "packshots",
        &[
            json!({"code": "shirt_640"}),
            json!({"code": "mug_1", "values": {"width": [v(None, None, json!("10"))]}}),
            json!({"code": "boot_12"}),
        ],
    )
    .await;
    let statuses: Vec<&Value> = res.iter().map(|r| &r["status_code"]).collect();
    assert_eq!(statuses, [&json!(201), &json!(204), &json!(201)]);
    assert!(env.emu.wait_for_link_jobs(Duration::from_secs(10)).await);
    assert_eq!(
        packshots_of(&env.emu, "shirt"),
        json!([{"locale": null, "scope": null, "data": ["shirt_640"]}])
    );
    assert_eq!(
        packshots_of(&env.emu, "boot"),
        json!([{"locale": null, "scope": null, "data": ["boot_12"]}])
    );
    // mug_1 was updated (204), not created: its product is not linked.
    assert_eq!(packshots_of(&env.emu, "mug"), Value::Null);
    let c = env.emu.counters();
    assert_eq!(
        c.link_rule_runs,
        2 * 2,
        "two rules for each of the two created assets"
    );
    assert_eq!(c.products_linked, 2);

    // The rules also read through the API (eventual consistency is over once jobs are done).
    let shirt = get_json(&env, &format!("{}/api/rest/v1/products/shirt", env.base)).await;
    assert_eq!(
        shirt["values"]["packshots"][0]["data"],
        json!(["shirt_640"])
    );

    // `add` appends after what is there; an update of that asset does not link it again.
    let r = patch(format!("{FAM_SKU}/shirt_2"), json!({"code": "shirt_2"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = patch(
        format!("{FAM_SKU}/shirt_640"),
        json!({"code": "shirt_640", "values": {"width": [v(None, None, json!("641"))]}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    assert!(env.emu.wait_for_link_jobs(Duration::from_secs(10)).await);
    assert_eq!(
        packshots_of(&env.emu, "shirt")[0]["data"],
        json!(["shirt_640", "shirt_2"])
    );
    assert_eq!(env.emu.counters().link_rule_runs, 2 * 3);

    // Rule 2 (family hats, sku STARTS WITH "ca", replace): the cap's collection is replaced.
    assert_eq!(packshots_of(&env.emu, "cap")[0]["data"], json!(["house"]));
    let r = patch(format!("{FAM_SKU}/ca_1"), json!({"code": "ca_1"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(env.emu.wait_for_link_jobs(Duration::from_secs(10)).await);
    assert_eq!(packshots_of(&env.emu, "cap")[0]["data"], json!(["ca_1"]));
    // No product has the identifier "ca": rule 1 linked nothing; the others are untouched.
    assert_eq!(
        packshots_of(&env.emu, "boot")[0]["data"],
        json!(["boot_12"])
    );

    // A creation refused by the convention (abort = false here, so only a business error could
    // refuse it) links nothing; a creation without a capture (no match) has no {{sku}}: the
    // rules cannot extrapolate and link nothing.
    let before = env.emu.counters().products_linked;
    let r = patch(format!("{FAM_SKU}/nomatch"), json!({"code": "nomatch"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(env.emu.wait_for_link_jobs(Duration::from_secs(10)).await);
    assert_eq!(env.emu.counters().products_linked, before);

    // The main media as source (lifestyle: media_link `media`), linked by `sku`.
    let r = patch(
        FAM_LIFESTYLE.to_owned(),
        json!({"code": "lifestyle",
               "naming_convention": {"source": {"property": "media", "locale": null, "channel": null},
                                     "pattern": "/(?P<sku>[a-z]+)_\\w+\\.jpg$/",
                                     "abort_asset_creation_on_error": true},
               "product_link_rules": [{
                   "product_selections": [{"field": "sku", "operator": "IN", "value": ["{{sku}}"]}],
                   "assign_assets_to": [{"attribute": "lifestyle", "mode": "add"}]}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    let r = patch(
        "/api/rest/v1/asset-families/lifestyle/assets/look_1".to_owned(),
        json!({"code": "look_1", "values": {"media": [v(None, None, json!("2024/shoe_front.jpg"))]}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    assert!(env.emu.wait_for_link_jobs(Duration::from_secs(10)).await);
    assert_eq!(
        env.emu.product_by_identifier("shoe").unwrap()["values"]["lifestyle"][0]["data"],
        json!(["look_1"])
    );
    let stats: Value = http
        .get(format!("{}/_emulator/stats", env.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["link_jobs_pending"], 0);
    assert!(stats["link_rule_runs"].as_u64().unwrap() >= 8);
}

async fn patch_batch_text(env: &Env, family: &str, items: &[Value]) -> (u16, String) {
    let r = env
        .http
        .patch(format!(
            "{}/api/rest/v1/asset-families/{family}/assets",
            env.base
        ))
        .bearer_auth(&env.token)
        .json(items)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A valid batch is answered alike whichever path reads it: the typed fast path (a plain body)
/// or the general one (the same items with a top-level `_links`, which the fast path leaves to
/// it): the same response bytes, the same stored assets, the same counters — for creations,
/// an update, escaped strings and an erasing `null`.
#[tokio::test]
async fn a_valid_batch_reads_the_same_by_either_path() {
    let mut items: Vec<Value> = (1..100)
        .map(|i| {
            json!({"code": format!("p{i}"), "values": {
                "media": [v(None, None, json!(format!("p{i}.jpg")))],
                "title": [v(Some("en_US"), None, json!(format!("Asset \"{i}\" é\n"))),
                          v(Some("de_DE"), None, json!(null))],
                "tags": [v(None, None, json!(["summer", "studio"]))],
                "width": [v(None, None, json!("1024"))]
            }})
        })
        .collect();
    // `house` exists: an update (204), and `null` erases its French title.
    items.insert(
        0,
        json!({"code": "house", "values": {"width": [v(None, None, json!("640"))],
                                           "title": [v(Some("fr_FR"), None, json!(null))]}}),
    );
    let with_links: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut item = item.clone();
            item["_links"] = json!({});
            item
        })
        .collect();
    let (fast, general) = (env().await, env().await);
    fast.emu.reset_counters();
    general.emu.reset_counters();
    let (fast_status, fast_text) = patch_batch_text(&fast, "packshots", &items).await;
    let (general_status, general_text) = patch_batch_text(&general, "packshots", &with_links).await;
    assert_eq!(fast_status, 200);
    assert_eq!((fast_status, &fast_text), (general_status, &general_text));
    assert!(fast_text
        .starts_with(r#"[{"code":"house","status_code":204},{"code":"p1","status_code":201},"#));
    for code in ["house", "p1", "p50", "p99"] {
        let a = fast.emu.asset("packshots", code).unwrap();
        assert_eq!(
            Some(&a),
            general.emu.asset("packshots", code).as_ref(),
            "{code}"
        );
    }
    let house = fast.emu.asset("packshots", "house").unwrap();
    assert_eq!(
        house["values"]["title"].as_array().unwrap().len(),
        1,
        "{house}"
    );
    let (f, g) = (fast.emu.counters(), general.emu.counters());
    assert_eq!(
        (f.assets_created, f.assets_updated, f.asset_batch_requests),
        (99, 1, 1)
    );
    // Each path did answer its request.
    assert_eq!((f.asset_batches_typed, g.asset_batches_typed), (1, 0));
    assert_eq!(
        (f.assets_created, f.assets_updated, f.asset_batch_requests),
        (g.assets_created, g.assets_updated, g.asset_batch_requests)
    );
}

// -------------------------------------------------------------------------------------------
// Limits and shapes the emulator used to accept (audit against the reference)

/// §1 "Values" / §6.1: product values are keyed `locale`, `scope`, `data` — all three required,
/// as the server's `validateValueStructure` checks them. An asset-style `channel` in place of
/// `scope` is refused with 422, on the single and the NDJSON PATCH, and writes nothing.
#[tokio::test]
async fn product_values_need_the_locale_and_scope_keys() {
    let env = env().await;
    let doc = json!({"documentation": {"href": "http://api.akeneo.com/api-reference.html#patch_products_uuid__uuid_"}});
    run(
        &env,
        vec![
            case("§6.1 channel instead of scope", Method::PATCH, format!("/api/rest/v1/products-uuid/{UUID_NEW}"))
                .json(json!({"values": {"packshots": [{"locale": null, "channel": null, "data": ["house"]}]}}))
                .status(422)
                .body_json(json!({"code": 422,
                    "message": "Property \"packshots\" expects an array with the key \"scope\". Check the expected format on the API documentation.",
                    "_links": doc})),
            case("§6.1 no locale key", Method::PATCH, format!("/api/rest/v1/products-uuid/{UUID_NEW}"))
                .json(json!({"values": {"packshots": [{"scope": null, "data": ["house"]}]}}))
                .status(422)
                .body_json(json!({"code": 422,
                    "message": "Property \"packshots\" expects an array with the key \"locale\". Check the expected format on the API documentation.",
                    "_links": doc})),
            case("§6.1 nothing written", Method::GET, format!("/api/rest/v1/products-uuid/{UUID_NEW}"))
                .status(404),
            case("§6.4 channel instead of scope, NDJSON", Method::PATCH, "/api/rest/v1/products-uuid")
                .raw(Some("application/vnd.akeneo.collection+json"),
                     format!("{{\"uuid\":\"{UUID_A}\",\"values\":{{\"packshots\":[{{\"locale\":null,\"channel\":null,\"data\":[]}}]}}}}"))
                .text(format!("{{\"line\":1,\"uuid\":\"{UUID_A}\",\"status_code\":422,\"message\":\"Property \\\"packshots\\\" expects an array with the key \\\"scope\\\". Check the expected format on the API documentation.\",\"_links\":{{\"documentation\":{{\"href\":\"http://api.akeneo.com/api-reference.html#patch_products_uuid__uuid_\"}}}}}}")),
            case("§6.4 the asset collection is untouched", Method::GET, format!("/api/rest/v1/products-uuid/{UUID_A}"))
                .subset(json!({"values": {"packshots": [{"locale": null, "scope": null, "data": ["house"]}]}})),
        ],
    )
    .await;
}

/// §5.2: at most 10 transformations per asset family; an 11th is a business-rule 422 and
/// changes nothing.
#[tokio::test]
async fn family_transformations_are_limited_to_10() {
    let env = env().await;
    let transformation = |i: usize| {
        json!({"label": format!("t{i}"), "filename_suffix": format!("_t{i}"),
               "source": {"attribute": "media", "channel": null, "locale": null},
               "target": {"attribute": "media", "channel": null, "locale": null},
               "operations": [{"type": "thumbnail", "parameters": {"width": 150, "height": 150}}]})
    };
    let eleven: Vec<Value> = (0..11).map(transformation).collect();
    let ten: Vec<Value> = (0..10).map(transformation).collect();
    run(
        &env,
        vec![
            case("§5.2 11 transformations", Method::PATCH, "/api/rest/v1/asset-families/videos")
                .json(json!({"code": "videos", "transformations": eleven}))
                .status(422)
                .body_json(json!({"code": 422,
                    "message": "The asset family has data that does not comply with the business rules.",
                    "errors": [{"property": "transformations", "message": "You have reached the limit of 10 transformations"}]})),
            case("§5.2 refused creation stored nothing", Method::GET, "/api/rest/v1/asset-families/videos")
                .status(404),
            case("§5.2 10 transformations", Method::PATCH, "/api/rest/v1/asset-families/videos")
                .json(json!({"code": "videos", "transformations": ten}))
                .status(201),
            case("§5.2 11 on update", Method::PATCH, "/api/rest/v1/asset-families/packshots")
                .json(json!({"code": "packshots", "transformations": eleven}))
                .status(422),
            case("§5.2 refused update kept the family", Method::GET, "/api/rest/v1/asset-families/packshots")
                .subset(json!({"transformations": []})),
        ],
    )
    .await;
}

/// §5.2: at most 100 asset families per PIM: creating the 101st is a business-rule 422
/// (violation at `labels`, as the server reports it); updating an existing one still works.
#[tokio::test]
async fn asset_families_are_limited_to_100() {
    let env = env().await;
    let seeded = env.emu.family_codes().len();
    assert!(seeded < 99, "{seeded}");
    for i in seeded..99 {
        env.emu.add_asset_family(assetbridge_core::FamilyStructure {
            code: format!("family_{i}"),
            attribute_as_main_media: None,
            attributes: Default::default(),
        });
    }
    assert_eq!(env.emu.family_codes().len(), 99);
    run(
        &env,
        vec![
            case("§5.2 the 100th family", Method::PATCH, "/api/rest/v1/asset-families/videos")
                .json(json!({"code": "videos"}))
                .status(201),
            case("§5.2 the 101st family", Method::PATCH, "/api/rest/v1/asset-families/audio")
                .json(json!({"code": "audio", "labels": {"en_US": "Audio"}}))
                .status(422)
                .body_json(json!({"code": 422,
                    "message": "The asset family has data that does not comply with the business rules.",
                    "errors": [{"property": "labels", "message": "You cannot create the asset family \"audio\" because you have reached the limit of 100 asset families"}]})),
            case("§5.2 not created", Method::GET, "/api/rest/v1/asset-families/audio")
                .status(404),
            case("§5.2 updates still allowed", Method::PATCH, "/api/rest/v1/asset-families/videos")
                .json(json!({"code": "videos", "labels": {"en_US": "Videos"}}))
                .status(204),
        ],
    )
    .await;
    assert_eq!(env.emu.family_codes().len(), 100);
}
