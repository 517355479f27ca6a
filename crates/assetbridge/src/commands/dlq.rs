//! `assetbridge dlq`: the dead letters — changes that failed for good — listed, shown, sent
//! back to the inbox, or deleted. Only the state store is touched (no PIM or DAM call).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use assetbridge_store::{
    DeadLetter, DeadLetterFilter, DeadLetterPayload, Store, DEFAULT_LISTING_LIMIT,
    MAX_LISTING_LIMIT,
};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::ConfigArg;
use crate::exit::Failure;
use crate::logging::{self, LogArgs};
use crate::{config, wiring, CliResult};

/// Lists, shows, retries or purges dead letters (changes that failed for good).
///
/// A dead letter is a change the PIM refused, whose mapping failed, or whose retries ran out;
/// it is kept with its reason until retried or purged. `retry` moves dead letters back into the inbox (attempts reset): the running `assetbridge run`
/// delivers them at once, or the next `assetbridge sync` does. Fix the cause first (e.g. add the
/// missing option in the PIM, fix the mapping). Filters combine (all must hold); without
/// filters, `retry` and `purge` take every dead letter. Only the state store is touched.
///
/// Exit codes: 0 ok · 1 fatal (the store failed, no such dead letter) · 2 usage or configuration.
///
/// Examples:
///   assetbridge dlq list --config assetbridge.toml
///   assetbridge dlq list --config assetbridge.toml --family packshots --error "option" --json
///   assetbridge dlq show --config assetbridge.toml 42
///   assetbridge dlq retry --config assetbridge.toml --family packshots
///   assetbridge dlq purge --config assetbridge.toml --error "does not exist" --yes
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
}

/// What to do with the dead letters.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Lists dead letters, oldest first (id, family, DAM id, reason, when).
    ///
    /// Pages of --limit (default 100, at most 10 000); the next page starts after the last id
    /// shown: --after <ID>.
    ///
    /// Examples:
    ///   assetbridge dlq list --config assetbridge.toml
    ///   assetbridge dlq list --config assetbridge.toml --error "422" --limit 20 --json
    #[command(verbatim_doc_comment)]
    List(ListArgs),
    /// Shows dead letters in full: the change (payload), the reason, the last transient error,
    /// and the PIM's status, message and per-field errors.
    ///
    /// Examples:
    ///   assetbridge dlq show --config assetbridge.toml 42
    ///   assetbridge dlq show --config assetbridge.toml 42 43 --json
    #[command(verbatim_doc_comment)]
    Show(ShowArgs),
    /// Moves dead letters back into the inbox (attempts reset, ready now): `assetbridge run`
    /// delivers them, or the next `assetbridge sync`. Each asset is read from the DAM again and
    /// written as it is now, never as the version that failed (a newer one may be in the PIM
    /// by now); one the DAM no longer has is not written (a dead letter again, `not_in_dam`).
    /// Dead letters of messages that never parsed (raw) cannot be retried; they stay.
    ///
    /// Examples:
    ///   assetbridge dlq retry --config assetbridge.toml
    ///   assetbridge dlq retry --config assetbridge.toml --family packshots --error "option"
    ///   assetbridge dlq retry --config assetbridge.toml --id 42 --id 43
    #[command(verbatim_doc_comment)]
    Retry(RetryArgs),
    /// Deletes dead letters for good. Asks for confirmation on a terminal; elsewhere --yes is
    /// required.
    ///
    /// Examples:
    ///   assetbridge dlq purge --config assetbridge.toml --family old_family --yes
    ///   assetbridge dlq purge --config assetbridge.toml --id 42
    #[command(verbatim_doc_comment)]
    Purge(PurgeArgs),
}

/// Which dead letters a command takes. All given conditions must hold.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only this asset family.
    #[arg(long, value_name = "CODE")]
    pub family: Option<String>,
    /// Only those whose error (message, PIM message or PIM errors) contains this text
    /// (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub error: Option<String>,
    /// Only this kind of reason: pim_rejected, pim_request_rejected, pim_delete_rejected,
    /// mapping, retries_exhausted, unknown_family, unparseable, not_in_dam, ...
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Only these ids (repeatable, or comma-separated).
    #[arg(long = "id", value_name = "ID", value_delimiter = ',')]
    pub ids: Vec<i64>,
}

impl FilterArgs {
    fn filter(&self, limit: Option<usize>, after: Option<i64>) -> DeadLetterFilter {
        DeadLetterFilter {
            ids: (!self.ids.is_empty()).then(|| self.ids.clone()),
            family: self.family.clone(),
            kind: self.kind.clone(),
            error_contains: self.error.clone(),
            after_id: after,
            limit,
        }
    }

    fn is_empty(&self) -> bool {
        self.family.is_none() && self.error.is_none() && self.kind.is_none() && self.ids.is_empty()
    }
}

/// `dlq list`
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most this many (1 to 10 000). Default: 100.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_LISTING_LIMIT as u64))]
    pub limit: Option<u64>,
    /// Only ids greater than this (the next page: the last id of the previous one).
    #[arg(long, value_name = "ID")]
    pub after: Option<i64>,
    /// One JSON array on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `dlq show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The dead letters to show (ids from `dlq list`).
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<i64>,
    /// JSON on stdout (an object for one id, an array for several).
    #[arg(long)]
    pub json: bool,
}

/// `dlq retry`
#[derive(Debug, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most this many (lowest ids first). Default: all that match.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// `dlq purge`
#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most this many (lowest ids first). Default: all that match.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Delete without asking (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub async fn run(args: DlqArgs, log: LogArgs) -> CliResult {
    match args.action {
        DlqAction::List(a) => list(a, log).await,
        DlqAction::Show(a) => show(a, log).await,
        DlqAction::Retry(a) => retry(a, log).await,
        DlqAction::Purge(a) => purge(a, log).await,
    }
}

/// Loads the configuration and opens the state store (nothing else is contacted).
async fn open(config: &ConfigArg, log: &LogArgs) -> Result<Store, Failure> {
    let loaded = config::load(&config.config)?;
    logging::init(log, Some(&loaded.value.log));
    wiring::open_store(&loaded.value).await
}

fn store_failure(e: assetbridge_store::StoreError) -> Failure {
    Failure::Fatal(anyhow::Error::new(e).context("state store"))
}

async fn list(args: ListArgs, log: LogArgs) -> CliResult {
    let store = open(&args.config, &log).await?;
    let limit = args
        .limit
        .map(|l| l as usize)
        .unwrap_or(DEFAULT_LISTING_LIMIT);
    let letters = store
        .dead_letters(&args.filter.filter(Some(limit), args.after))
        .await
        .map_err(store_failure)?;
    if args.json {
        let out: Vec<Value> = letters.iter().map(|d| to_json(d, false)).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("JSON output")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let total = store.dead_letter_count().await.map_err(store_failure)?;
    if letters.is_empty() {
        println!(
            "no dead letter matches ({total} dead letter{} in all)",
            plural(total)
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>8}  {:<16} {:<38} {:<20} {:>8}  {:<20}  error",
        "id", "family", "DAM id", "kind", "attempts", "failed at"
    );
    for d in &letters {
        println!(
            "{:>8}  {:<16} {:<38} {:<20} {:>8}  {:<20}  {}",
            d.id,
            clip(d.family.as_deref().unwrap_or("-"), 16),
            clip(d.dam_id.as_deref().unwrap_or("-"), 38),
            clip(&d.reason.kind, 20),
            d.attempts,
            d.failed_at.format("%Y-%m-%d %H:%M:%S"),
            clip(&one_line(&error_text(d)), 100),
        );
    }
    let shown = letters.len();
    println!(
        "\n{shown} shown ({total} dead letter{} in all).",
        plural(total)
    );
    if shown == limit {
        let last = letters.last().map(|d| d.id).unwrap_or_default();
        println!("More may follow: add --after {last}.");
    }
    println!("Details: assetbridge dlq show <ID> · send back: assetbridge dlq retry --id <ID>");
    Ok(ExitCode::SUCCESS)
}

async fn show(args: ShowArgs, log: LogArgs) -> CliResult {
    let store = open(&args.config, &log).await?;
    let mut found = Vec::with_capacity(args.ids.len());
    for id in &args.ids {
        match store.dead_letter_by_id(*id).await.map_err(store_failure)? {
            Some(d) => found.push(d),
            None => {
                return Err(Failure::Fatal(anyhow::anyhow!(
                    "no dead letter with id {id} (see `assetbridge dlq list`)"
                )))
            }
        }
    }
    if args.json {
        let out = if found.len() == 1 {
            to_json(&found[0], true)
        } else {
            Value::Array(found.iter().map(|d| to_json(d, true)).collect())
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("JSON output")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    for (i, d) in found.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", describe(d));
    }
    Ok(ExitCode::SUCCESS)
}

async fn retry(args: RetryArgs, log: LogArgs) -> CliResult {
    let store = open(&args.config, &log).await?;
    let filter = args.filter.filter(args.limit, None);
    let moved = store
        .retry_dead_letters(&filter)
        .await
        .map_err(store_failure)?;
    let scope = if args.filter.is_empty() && args.limit.is_none() {
        "every dead letter"
    } else {
        "the dead letters that match"
    };
    if moved == 0 {
        println!("nothing to retry: no retryable dead letter matches");
    } else {
        println!(
            "{moved} dead letter{} ({scope}) moved back into the inbox.\n\
             `assetbridge run` delivers them now; otherwise the next `assetbridge sync` does.",
            plural(moved)
        );
    }
    if !args.filter.ids.is_empty() && (moved as usize) < args.filter.ids.len() {
        eprintln!(
            "note: {} of the {} id(s) given were not retried (unknown ids, or raw messages that never parsed)",
            args.filter.ids.len() - moved as usize,
            args.filter.ids.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn purge(args: PurgeArgs, log: LogArgs) -> CliResult {
    if !args.yes && !std::io::stdin().is_terminal() {
        return Err(Failure::Config(
            "refusing to purge dead letters without --yes (stdin is not a terminal, so nobody can confirm)"
                .into(),
        ));
    }
    let store = open(&args.config, &log).await?;
    let mut filter = args.filter.filter(args.limit, None);
    if !args.yes {
        // Exactly the dead letters counted in the question: not ones that arrive (or match)
        // while it waits for the answer — a purge cannot be undone.
        let ids = matching_ids(&store, &args.filter, args.limit).await?;
        let n = ids.len() as u64;
        filter = DeadLetterFilter::ids(ids);
        if n == 0 {
            println!("nothing to purge: no dead letter matches");
            return Ok(ExitCode::SUCCESS);
        }
        if !confirm(&format!(
            "Delete {n} dead letter{} for good? [y/N] ",
            plural(n)
        ))? {
            println!("nothing deleted");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let purged = store
        .purge_dead_letters(&filter)
        .await
        .map_err(store_failure)?;
    println!("{purged} dead letter{} deleted", plural(purged));
    Ok(ExitCode::SUCCESS)
}

/// The ids of the dead letters that match, lowest first, at most `limit` (read a page at a
/// time: 8 bytes an id are kept, never the dead letters).
async fn matching_ids(
    store: &Store,
    filter: &FilterArgs,
    limit: Option<usize>,
) -> Result<Vec<i64>, Failure> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .dead_letters(&filter.filter(Some(MAX_LISTING_LIMIT), after))
            .await
            .map_err(store_failure)?;
        ids.extend(page.iter().map(|d| d.id));
        if let Some(l) = limit.filter(|&l| ids.len() >= l) {
            ids.truncate(l);
            return Ok(ids);
        }
        match page.last() {
            Some(last) if page.len() == MAX_LISTING_LIMIT => after = Some(last.id),
            _ => return Ok(ids),
        }
    }
}

fn confirm(question: &str) -> Result<bool, Failure> {
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// The error worth showing first: the PIM's message when there is one, else the reason.
fn error_text(d: &DeadLetter) -> String {
    match (&d.reason.pim_status, &d.reason.pim_message) {
        (Some(status), Some(m)) => format!("PIM {status}: {m}"),
        _ => d.reason.message.clone(),
    }
}

fn describe(d: &DeadLetter) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<14} {v}\n"));
    line("dead letter", &d.id.to_string());
    line("family", d.family.as_deref().unwrap_or("-"));
    line("DAM id", d.dam_id.as_deref().unwrap_or("-"));
    line("source", d.source.as_deref().unwrap_or("-"));
    line("event id", d.event_id.as_deref().unwrap_or("-"));
    line("kind", &d.reason.kind);
    line("reason", &d.reason.message);
    line(
        "PIM status",
        &d.reason
            .pim_status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into()),
    );
    line(
        "PIM message",
        d.reason.pim_message.as_deref().unwrap_or("-"),
    );
    line("attempts", &d.attempts.to_string());
    line("last error", d.last_error.as_deref().unwrap_or("-"));
    line(
        "enqueued at",
        &d.enqueued_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "-".into()),
    );
    line("failed at", &d.failed_at.to_rfc3339());
    if let Some(errors) = &d.reason.pim_errors {
        out.push_str("PIM errors\n");
        out.push_str(&indent(
            &serde_json::to_string_pretty(errors).unwrap_or_default(),
        ));
    }
    out.push_str("payload\n");
    out.push_str(&indent(&payload_text(&d.payload)));
    out
}

fn payload_text(p: &DeadLetterPayload) -> String {
    match p {
        DeadLetterPayload::Change(c) => serde_json::to_string_pretty(c).unwrap_or_default(),
        DeadLetterPayload::Raw(bytes) => format!(
            "(raw message, {} bytes, never parsed)\n{}",
            bytes.len(),
            String::from_utf8_lossy(bytes)
        ),
    }
}

/// A dead letter as JSON; `full` adds the payload.
fn to_json(d: &DeadLetter, full: bool) -> Value {
    let mut v = json!({
        "id": d.id,
        "family": d.family,
        "dam_id": d.dam_id,
        "event_id": d.event_id,
        "source": d.source,
        "kind": d.reason.kind,
        "message": d.reason.message,
        "pim_status": d.reason.pim_status,
        "pim_message": d.reason.pim_message,
        "pim_errors": d.reason.pim_errors,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "enqueued_at": d.enqueued_at.map(|t| t.to_rfc3339()),
        "failed_at": d.failed_at.to_rfc3339(),
        "retryable": matches!(d.payload, DeadLetterPayload::Change(_)),
    });
    if full {
        v["payload"] = match &d.payload {
            DeadLetterPayload::Change(c) => serde_json::to_value(c).unwrap_or(Value::Null),
            DeadLetterPayload::Raw(bytes) => json!({
                "raw": String::from_utf8_lossy(bytes),
                "bytes": bytes.len(),
            }),
        };
    }
    v
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A confirmed purge deletes the dead letters counted in its question, not one that
    /// arrived while it waited for the answer.
    #[tokio::test]
    async fn a_confirmed_purge_deletes_what_it_counted_only() {
        use assetbridge_core::{AssetChange, ChangeKind};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        let store = Store::open(&url).await.unwrap();
        let letter = |id: &str| AssetChange {
            family: "packshots".into(),
            event_id: None,
            source: "test".into(),
            kind: ChangeKind::Delete {
                dam_id: id.into(),
                deleted_at: None,
            },
        };
        let why = assetbridge_store::DeadLetterReason::new("pim_rejected", "no");
        for id in ["a", "b", "c"] {
            store.add_dead_letter(&letter(id), &why).await.unwrap();
        }
        let filter = FilterArgs {
            family: Some("packshots".into()),
            error: None,
            kind: None,
            ids: Vec::new(),
        };
        let counted = matching_ids(&store, &filter, None).await.unwrap();
        assert_eq!(counted.len(), 3);
        assert_eq!(
            matching_ids(&store, &filter, Some(2)).await.unwrap(),
            counted[..2]
        );
        // Arrives while the question waits.
        store.add_dead_letter(&letter("d"), &why).await.unwrap();
        let purged = store
            .purge_dead_letters(&DeadLetterFilter::ids(counted))
            .await
            .unwrap();
        assert_eq!(purged, 3);
        let left = store
            .dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].dam_id.as_deref(), Some("d"));
    }

    #[test]
    fn clipping_keeps_short_text_and_marks_cuts() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }
}
