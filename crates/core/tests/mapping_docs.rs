//! Runs every example of `docs/mapping.md`.
//!
//! Fenced blocks are read in order by their info string:
//! - `json structure`: the family structure the examples map into;
//! - `toml mapping`: a family table (`asset_code`, `values`, `maps`), compiled against it;
//! - `json input`: a DAM record, mapped with the last mapping (or routed with the last routing);
//! - `json output`: the asset the last input must map to (exactly);
//! - `text error`: the error of the last input, or of the last mapping when it has no input;
//! - `toml routing`: a `[routing]` table; `text family`: the family of the last input;
//! - plain `toml`: must be valid TOML (fragments shown in the text).

mod mapping_common;

use assetbridge_core::routing::{CompiledRoutes, RouteConfig};
use assetbridge_core::FamilyStructure;
use mapping_common::{dam, FamilyTable};
use serde_json::Value;

struct Block {
    info: String,
    text: String,
    line: usize,
}

fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = md.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut text = String::new();
        for (_, l) in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            text.push_str(l);
            text.push('\n');
        }
        out.push(Block {
            info: info.trim().to_owned(),
            text,
            line: n + 1,
        });
    }
    out
}

enum Current {
    None,
    Mapping(Result<Box<assetbridge_core::mapping::CompiledMapping>, String>),
    Routing(CompiledRoutes),
}

#[test]
fn every_example_of_the_mapping_reference_holds() {
    let md = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/mapping.md"
    ))
    .expect("docs/mapping.md");
    let mut structure: Option<FamilyStructure> = None;
    let mut current = Current::None;
    let mut last: Option<Result<Value, String>> = None;
    let mut last_route: Option<String> = None;
    let mut input_checked = true;
    let (mut mappings, mut outputs, mut errors, mut routes) = (0, 0, 0, 0);
    for b in blocks(&md) {
        let at = format!("docs/mapping.md:{}", b.line);
        match b.info.as_str() {
            "json structure" => {
                structure =
                    Some(serde_json::from_str(&b.text).unwrap_or_else(|e| panic!("{at}: {e}")))
            }
            "toml mapping" => {
                assert!(input_checked, "{at}: the previous input has no output");
                let table = FamilyTable::parse(&b.text);
                current = Current::Mapping(
                    table
                        .compile(structure.as_ref())
                        .map(Box::new)
                        .map_err(|e| e.to_string()),
                );
                last = None;
                mappings += 1;
            }
            "toml routing" => {
                assert!(input_checked, "{at}: the previous input has no output");
                let cfg: RouteConfig =
                    toml::from_str(&b.text).unwrap_or_else(|e| panic!("{at}: {e}"));
                current = Current::Routing(
                    CompiledRoutes::new(&cfg).unwrap_or_else(|e| panic!("{at}: {e}")),
                );
            }
            "json input" => {
                assert!(input_checked, "{at}: the previous input has no output");
                let record: Value =
                    serde_json::from_str(&b.text).unwrap_or_else(|e| panic!("{at}: {e}"));
                match &current {
                    Current::Mapping(Ok(m)) => {
                        last = Some(
                            m.map(&dam(record))
                                .map(|a| serde_json::to_value(a).unwrap())
                                .map_err(|e| e.to_string()),
                        )
                    }
                    Current::Mapping(Err(e)) => {
                        panic!("{at}: the mapping above does not compile: {e}")
                    }
                    Current::Routing(r) => {
                        last_route = Some(r.route(&record).unwrap_or("skipped").to_owned())
                    }
                    Current::None => panic!("{at}: an input before any mapping"),
                }
                input_checked = false;
            }
            "json output" => {
                let want: Value =
                    serde_json::from_str(&b.text).unwrap_or_else(|e| panic!("{at}: {e}"));
                match last.take() {
                    Some(Ok(got)) => assert_eq!(
                        got,
                        want,
                        "{at}: the example's output differs; the mapping gives:\n{}",
                        serde_json::to_string_pretty(&got).unwrap()
                    ),
                    Some(Err(e)) => panic!("{at}: the example's input fails: {e}"),
                    None => panic!("{at}: an output without an input"),
                }
                input_checked = true;
                outputs += 1;
            }
            "text error" => {
                let want = b.text.trim_end();
                let got = match (last.take(), &current) {
                    (Some(Err(e)), _) => e,
                    (Some(Ok(v)), _) => panic!("{at}: the input maps fine: {v}"),
                    (None, Current::Mapping(Err(e))) => e.clone(),
                    (None, Current::Mapping(Ok(_))) => panic!("{at}: the mapping compiles"),
                    (None, _) => panic!("{at}: an error block without a mapping"),
                };
                assert_eq!(got, want, "{at}");
                input_checked = true;
                errors += 1;
            }
            "text family" => {
                let got = last_route
                    .take()
                    .unwrap_or_else(|| panic!("{at}: no input"));
                assert_eq!(got, b.text.trim(), "{at}");
                input_checked = true;
                routes += 1;
            }
            "toml" => {
                b.text
                    .parse::<toml::Table>()
                    .unwrap_or_else(|e| panic!("{at}: not valid TOML: {e}"));
            }
            other => panic!("{at}: unknown block kind `{other}`"),
        }
    }
    assert!(input_checked, "the last input has no output");
    assert!(structure.is_some());
    // The reference is only useful if its examples are many and varied.
    assert!(
        mappings >= 12 && outputs >= 10 && errors >= 4 && routes >= 4,
        "{mappings} {outputs} {errors} {routes}"
    );
}
