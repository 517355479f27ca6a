use std::fmt::Write as _;
use std::process::ExitCode;

use assetbridge_engine::{FieldChange, PlanAction, PlanEntry};
use clap::Args;
use serde::Serialize;

use super::ConfigArg;
use crate::exit::Failure;
use crate::logging::{self, LogArgs};
use crate::{config, wiring, CliResult};

/// Dry run: what `sync` would do, without writing anything.
///
/// For each configured family, reads the DAM's changes since the family's cursor (as `sync`
/// does) and lists what a sync would create, update (each changed value, old → new, the old
/// read from Akeneo), delete, mark or skip, and why. Nothing is written to Akeneo, and the
/// cursor, hashes and inbox stay as they are. Changes waiting in the inbox are not listed.
///
/// Example:
///   assetbridge plan --config assetbridge.toml
///   assetbridge plan --config assetbridge.toml --family packshots --full --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PlanArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only these families (repeatable). Default: all configured families.
    #[arg(long = "family", value_name = "CODE")]
    pub families: Vec<String>,
    /// Plan from the beginning of the DAM instead of the cursor.
    #[arg(long)]
    pub full: bool,
    /// Machine-readable output: one JSON document `{"families": [{"family", "counts",
    /// "entries"}]}` on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The plan of one family, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct FamilyDryRun {
    pub family: String,
    pub counts: Counts,
    pub entries: Vec<PlanEntry>,
}

/// Entries by action.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub create: u64,
    pub update: u64,
    pub delete: u64,
    pub mark: u64,
    pub skip: u64,
}

impl Counts {
    fn of(entries: &[PlanEntry]) -> Self {
        let mut c = Counts::default();
        for e in entries {
            *match e.action {
                PlanAction::Create => &mut c.create,
                PlanAction::Update => &mut c.update,
                PlanAction::Delete => &mut c.delete,
                PlanAction::Mark => &mut c.mark,
                PlanAction::Skip => &mut c.skip,
            } += 1;
        }
        c
    }
}

pub async fn run(args: PlanArgs, log: LogArgs) -> CliResult {
    let loaded = config::load(&args.config.config)?;
    logging::init(&log, Some(&loaded.value.log));
    for f in &args.families {
        if !loaded.value.families.iter().any(|c| &c.code == f) {
            return Err(Failure::Config(format!(
                "--family {f}: no such family in the configuration"
            )));
        }
    }
    let engine = wiring::engine(&loaded).await?;
    let mut out = Vec::new();
    for plan in engine.families() {
        if !args.families.is_empty() && !args.families.contains(&plan.code) {
            continue;
        }
        let entries = engine
            .plan_family(plan, args.full)
            .await
            .map_err(|e| Failure::Fatal(anyhow::anyhow!("family `{}`: {e}", plan.code)))?;
        out.push(FamilyDryRun {
            family: plan.code.clone(),
            counts: Counts::of(&entries),
            entries,
        });
    }
    if args.json {
        let doc = serde_json::json!({ "families": out });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc)
                .map_err(|e| Failure::Fatal(anyhow::anyhow!("cannot write the plan: {e}")))?
        );
    } else {
        print!("{}", human(&out));
    }
    Ok(ExitCode::SUCCESS)
}

fn action(a: PlanAction) -> &'static str {
    match a {
        PlanAction::Create => "create",
        PlanAction::Update => "update",
        PlanAction::Delete => "delete",
        PlanAction::Mark => "mark",
        PlanAction::Skip => "skip",
    }
}

fn show(v: &Option<serde_json::Value>) -> String {
    match v {
        None => "∅".to_owned(),
        Some(v) => v.to_string(),
    }
}

fn field(c: &FieldChange) -> String {
    match (&c.locale, &c.channel) {
        (None, None) => c.attribute.clone(),
        (l, ch) => format!(
            "{}[{}{}]",
            c.attribute,
            l.as_deref().unwrap_or(""),
            ch.as_deref().map(|c| format!("/{c}")).unwrap_or_default()
        ),
    }
}

/// The plan for people: per family, one line per asset to write (skips are counted, not
/// listed), its changed values indented below, then the counts.
pub fn human(families: &[FamilyDryRun]) -> String {
    let mut s = String::new();
    for f in families {
        let _ = writeln!(s, "family {}", f.family);
        for e in f.entries.iter().filter(|e| e.action != PlanAction::Skip) {
            let _ = writeln!(
                s,
                "  {:<6} {} (DAM {}): {}",
                action(e.action),
                e.code.as_deref().unwrap_or("?"),
                e.dam_id,
                e.reason
            );
            for c in &e.changes {
                let _ = writeln!(s, "      {}: {} → {}", field(c), show(&c.old), show(&c.new));
            }
        }
        let c = &f.counts;
        let _ = writeln!(
            s,
            "  {} to create, {} to update, {} to delete, {} to mark, {} skipped",
            c.create, c.update, c.delete, c.mark, c.skip
        );
        let mut reasons: std::collections::BTreeMap<&str, u64> = Default::default();
        for e in f.entries.iter().filter(|e| e.action == PlanAction::Skip) {
            *reasons.entry(e.reason.as_str()).or_default() += 1;
        }
        for (r, n) in reasons {
            let _ = writeln!(s, "    skipped, {r}: {n}");
        }
    }
    s
}
