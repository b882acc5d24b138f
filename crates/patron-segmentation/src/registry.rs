//! The segments a server knows: the built-in RFM and tier segments, and the stored definitions,
//! compiled once and kept in memory (refreshed on this server's writes and by a periodic reload,
//! so definitions written by another server sharing the database arrive within seconds).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use patron_domain::clv::RfmSegment;
use patron_domain::value::TierPolicy;
use patron_store::{SegmentRecord, StoreResult};

use crate::rules::{self, LoyaltyFacts, Program, SegmentCatalog, SegmentResolver};

/// A stored segment with its compiled rule.
#[derive(Debug, Clone)]
pub struct StoredSegment {
    pub record: SegmentRecord,
    pub program: Arc<Program>,
}

/// A built-in segment.
#[derive(Debug, Clone)]
pub struct BuiltIn {
    pub segment_id: String,
    pub display_name: String,
    pub description: String,
    pub program: Arc<Program>,
}

/// Prefixes reserved for built-in segment ids.
pub const RESERVED_PREFIXES: [&str; 2] = ["rfm-", "tier-"];

/// The id of a tier's built-in segment: `tier-` and the tier name in lower case with every run of
/// other characters than letters and digits replaced by `-`.
pub fn tier_segment_id(tier: &str) -> String {
    let mut out = String::from("tier-");
    let mut dash = false;
    for c in tier.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
            dash = false;
        } else if !dash && out.len() > 5 {
            out.push('-');
            dash = true;
        }
    }
    while out.ends_with('-') && out.len() > 5 {
        out.pop();
    }
    out
}

fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn no_segments(_: &str) -> bool {
    false
}

/// The 11 RFM built-ins, in the order of [`RfmSegment::ALL`].
pub fn rfm_builtins() -> Vec<BuiltIn> {
    RfmSegment::ALL
        .iter()
        .filter_map(|s| {
            let name = s.name();
            let rule = format!("rfm.segment == {}", quote(name));
            let program = rules::compile(&rule, &no_segments).ok()?;
            Some(BuiltIn {
                segment_id: format!("rfm-{}", name.replace('_', "-")),
                display_name: format!("RFM: {}", name.replace('_', " ")),
                description: format!(
                    "Customers whose RFM scores map to the {} segment (see RfmSegment).",
                    name.replace('_', " ")
                ),
                program: Arc::new(program),
            })
        })
        .collect()
}

/// One built-in per tier of `policy`, best first.
pub fn tier_builtins(policy: &TierPolicy) -> Vec<BuiltIn> {
    policy
        .tiers
        .iter()
        .filter_map(|t| {
            let rule = format!("value.tier == {}", quote(&t.name));
            let program = rules::compile(&rule, &no_segments).ok()?;
            Some(BuiltIn {
                segment_id: tier_segment_id(&t.name),
                display_name: format!("Tier: {}", t.name),
                description: format!("Customers in the value tier {:?}.", t.name),
                program: Arc::new(program),
            })
        })
        .collect()
}

/// Every segment at one moment: built-ins for the policy in force and the stored definitions.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub builtins: Vec<BuiltIn>,
    pub stored: BTreeMap<String, StoredSegment>,
    /// Loyalty state for `loyalty.*`, when the loyalty service runs.
    pub loyalty: Option<Arc<dyn LoyaltyFacts>>,
}

impl Snapshot {
    pub fn builtin(&self, id: &str) -> Option<&BuiltIn> {
        self.builtins.iter().find(|b| b.segment_id == id)
    }

    pub fn exists(&self, id: &str) -> bool {
        self.builtin(id).is_some() || self.stored.contains_key(id)
    }

    pub fn program_of(&self, id: &str) -> Option<Arc<Program>> {
        self.builtin(id)
            .map(|b| Arc::clone(&b.program))
            .or_else(|| self.stored.get(id).map(|s| Arc::clone(&s.program)))
    }
}

impl SegmentResolver for Snapshot {
    fn program(&self, id: &str) -> Option<&Program> {
        self.builtin(id)
            .map(|b| &*b.program)
            .or_else(|| self.stored.get(id).map(|s| &*s.program))
    }

    fn loyalty(&self) -> Option<&dyn LoyaltyFacts> {
        self.loyalty.as_deref()
    }
}

impl SegmentCatalog for Snapshot {
    fn exists(&self, id: &str) -> bool {
        Snapshot::exists(self, id)
    }

    fn program_exists(&self, id: &str) -> Option<bool> {
        self.loyalty.as_ref().map(|l| l.program_exists(id))
    }
}

/// A catalog in which one more segment id (the one being saved) counts as existing, so a rule
/// naming itself reaches the store's cycle check.
#[derive(Debug)]
pub struct WithSelf<'a>(pub &'a Snapshot, pub &'a str);

impl SegmentCatalog for WithSelf<'_> {
    fn exists(&self, id: &str) -> bool {
        id == self.1 || self.0.exists(id)
    }

    fn program_exists(&self, id: &str) -> Option<bool> {
        SegmentCatalog::program_exists(self.0, id)
    }
}

/// Compiles a stored definition. Stored rules were checked when saved; one that no longer
/// compiles (a referenced segment deleted by a race, a rule language change) is kept out of
/// evaluation and logged.
pub fn compile_stored(
    record: SegmentRecord,
    exists: &dyn Fn(&str) -> bool,
) -> Option<StoredSegment> {
    match rules::compile(&record.rule, &exists) {
        Ok(program) => Some(StoredSegment {
            record,
            program: Arc::new(program),
        }),
        Err(e) => {
            tracing::error!(segment = %record.segment_id, error = %e, "stored segment rule does not compile");
            None
        }
    }
}

/// The registry of segments.
#[derive(Debug)]
pub struct Registry {
    rfm: Vec<BuiltIn>,
    /// Stored definitions; built-in tier segments are derived per snapshot from the policy.
    stored: RwLock<BTreeMap<String, StoredSegment>>,
    /// Tier built-ins of the last policy seen, keyed by the policy revision.
    tiers: RwLock<(i64, Arc<Vec<BuiltIn>>)>,
}

impl Registry {
    pub fn new(policy: &TierPolicy, policy_revision: i64) -> Self {
        Self {
            rfm: rfm_builtins(),
            stored: RwLock::new(BTreeMap::new()),
            tiers: RwLock::new((policy_revision, Arc::new(tier_builtins(policy)))),
        }
    }

    /// Replaces every stored definition with `records` (a full reload).
    pub fn load(&self, records: Vec<SegmentRecord>) {
        let ids: std::collections::BTreeSet<String> =
            records.iter().map(|r| r.segment_id.clone()).collect();
        let builtins = self.builtin_ids();
        let exists = |id: &str| {
            ids.contains(id) || builtins.iter().any(|b| b == id) || id.starts_with("tier-")
        };
        let map: BTreeMap<String, StoredSegment> = records
            .into_iter()
            .filter_map(|r| compile_stored(r, &exists))
            .map(|s| (s.record.segment_id.clone(), s))
            .collect();
        *write(&self.stored) = map;
    }

    fn builtin_ids(&self) -> Vec<String> {
        self.rfm.iter().map(|b| b.segment_id.clone()).collect()
    }

    pub fn put(&self, segment: StoredSegment) {
        write(&self.stored).insert(segment.record.segment_id.clone(), segment);
    }

    pub fn remove(&self, id: &str) {
        write(&self.stored).remove(id);
    }

    /// Every segment now, with tier built-ins for `policy` (revision `policy_revision`).
    pub fn snapshot(
        &self,
        policy: &TierPolicy,
        policy_revision: i64,
        loyalty: Option<Arc<dyn LoyaltyFacts>>,
    ) -> Snapshot {
        let tiers = {
            let cached = read(&self.tiers);
            if cached.0 == policy_revision {
                Some(Arc::clone(&cached.1))
            } else {
                None
            }
        };
        let tiers = tiers.unwrap_or_else(|| {
            let fresh = Arc::new(tier_builtins(policy));
            *write(&self.tiers) = (policy_revision, Arc::clone(&fresh));
            fresh
        });
        let mut builtins = self.rfm.clone();
        builtins.extend(tiers.iter().cloned());
        Snapshot {
            builtins,
            stored: read(&self.stored).clone(),
            loyalty,
        }
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    match l.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    match l.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Loads every stored definition, page by page.
pub async fn load_all(store: &dyn patron_store::Store) -> StoreResult<Vec<SegmentRecord>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_segments(after.as_deref(), 1000).await?;
        let done = page.len() < 1000;
        after = page.last().map(|r| r.segment_id.clone());
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_ids() {
        let ids: Vec<String> = rfm_builtins().into_iter().map(|b| b.segment_id).collect();
        assert_eq!(ids.len(), 11);
        assert!(ids.contains(&"rfm-cant-lose-them".to_owned()));
        assert!(ids.contains(&"rfm-potential-loyalist".to_owned()));
        assert_eq!(tier_segment_id("Gold"), "tier-gold");
        assert_eq!(tier_segment_id("Top 2 %"), "tier-top-2");
        let policy = TierPolicy::default();
        assert_eq!(tier_builtins(&policy).len(), policy.tiers.len());
    }
}
