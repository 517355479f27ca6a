use std::sync::Arc;
use std::time::Duration;

use assetbridge_core::mapping::CompiledMapping;
use serde::{Deserialize, Serialize};

/// What to do in the PIM when an asset is deleted in the DAM.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionPolicy {
    /// Keep the PIM asset and say so in the log and the report (default: nothing is ever
    /// deleted silently, and nothing is deleted unless asked for).
    #[default]
    Keep,
    /// Delete the asset in the PIM.
    Delete,
    /// Keep the PIM asset and upsert it with `value` in `attribute` (a non-localizable,
    /// non-scopable attribute, e.g. a boolean `archived` set to `true`). An asset that comes
    /// back in the DAM later is written again with that value emptied (`null`), unless the
    /// mapping itself sets the attribute.
    Mark {
        /// The attribute code holding the mark.
        attribute: String,
        /// The value written. Usually `true` (a boolean attribute) or a text.
        value: serde_json::Value,
    },
}

impl DeletionPolicy {
    /// Checks a `mark` policy against a family's structure: the attribute exists, holds one
    /// value (neither localizable nor scopable), and the value fits its type (a boolean for a
    /// boolean attribute, a text for a text or single-option attribute). Other policies always
    /// fit.
    pub fn check_against(
        &self,
        structure: &assetbridge_core::FamilyStructure,
    ) -> Result<(), String> {
        use assetbridge_core::AttributeType as T;
        let DeletionPolicy::Mark { attribute, value } = self else {
            return Ok(());
        };
        let Some(a) = structure.attributes.get(attribute) else {
            return Err(format!(
                "the deletion mark attribute `{attribute}` is not an attribute of asset family `{}`",
                structure.code
            ));
        };
        if a.value_per_locale || a.value_per_channel {
            return Err(format!(
                "the deletion mark attribute `{attribute}` of asset family `{}` is localizable or scopable: it must hold a single value",
                structure.code
            ));
        }
        let fits = match a.kind {
            T::Boolean => value.is_boolean(),
            T::Text | T::SingleOption => value.is_string(),
            T::Unknown => true,
            _ => false,
        };
        if !fits {
            return Err(format!(
                "the deletion mark `{attribute}` = {value} does not fit the attribute's type ({:?}) in asset family `{}`",
                a.kind, structure.code
            ));
        }
        Ok(())
    }

    /// Whether the engine must remember which asset code each DAM id was written as (so that a
    /// deletion, which only knows the DAM id, finds the PIM asset): `delete` and `mark`.
    pub fn needs_codes(&self) -> bool {
        !matches!(self, DeletionPolicy::Keep)
    }
}

/// Tuning of the sync. Every field has a documented default.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// How far back before the cursor each poll asks the DAM, so that changes the DAM committed
    /// late with an earlier timestamp are still seen. Default: 5 minutes.
    pub overlap: chrono::Duration,
    /// DAM pages being written at once. Each page becomes one batch request of ≤ 100 assets, so
    /// 4 fills Akeneo's 4-concurrent-call budget. Default: 4.
    pub pages_in_flight: usize,
    /// Families polled at once by one `sync` pass (each with up to `pages_in_flight` pages in
    /// flight; the PIM client's concurrency cap still bounds the calls). A DAM whose cursor pages
    /// can only be read one after another is read faster family by family side by side.
    /// Default: 4.
    pub families_in_flight: usize,
    /// Attempts of a change before it goes to the dead-letter store. Default: 8.
    pub max_attempts: u32,
    /// First retry delay of a failed change; doubles each attempt, with jitter. Default: 5 s.
    pub retry_base: Duration,
    /// Longest retry delay. Default: 10 minutes.
    pub retry_max: Duration,
    /// Changes claimed from the inbox at once. Default: 500.
    pub claim_size: usize,
    /// How long a claim is held before another worker may take it over. Default: 5 minutes.
    pub claim_lease: Duration,
    /// Deleted DAM assets. Default: keep.
    pub deletions: DeletionPolicy,
    /// Backpressure of the poller: while the inbox holds this many entries or more (pending and
    /// in flight), a polling pass reads no further DAM page (it stops early; the cursor stays
    /// after the last page written) and a new pass does not start, so a PIM outage cannot make
    /// the poller pile up retries without bound. `0` disables the check. Default: 100 000.
    pub backlog_limit: u64,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            overlap: chrono::Duration::minutes(5),
            pages_in_flight: 4,
            families_in_flight: 4,
            max_attempts: 8,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            claim_size: 500,
            claim_lease: Duration::from_secs(300),
            deletions: DeletionPolicy::Keep,
            backlog_limit: 100_000,
        }
    }
}

impl SyncOptions {
    /// The delay before attempt `attempts + 1`: `retry_base * 2^attempts`, capped, with ±25 %
    /// jitter.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exp = self
            .retry_base
            .saturating_mul(1u32 << attempts.min(16))
            .min(self.retry_max);
        let jitter: f64 = rand::random::<f64>() * 0.5 + 0.75;
        exp.mul_f64(jitter).min(self.retry_max)
    }
}

/// One configured asset family: where its assets come from and how they map.
#[derive(Debug, Clone)]
pub struct FamilyPlan {
    /// Akeneo asset family code.
    pub code: String,
    /// Extra query parameters for this family's DAM listing (e.g. `type=packshots`).
    pub query: Vec<(String, String)>,
    pub mapping: Arc<CompiledMapping>,
}
