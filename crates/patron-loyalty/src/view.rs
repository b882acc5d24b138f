//! The in-memory view of every membership, for `loyalty.*` segment rules: counting a segment over
//! a million customers reads points and tiers from memory, never the database. Kept current by
//! this server's writes (every applied `mutate_member` that changed a member) and loaded at start.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use patron_domain::loyalty::program::ProgramDef;
use patron_domain::loyalty::tier;
use patron_domain::{CustomerId, Timestamp};
use patron_scoring::engine::Engine;
use patron_segmentation::rules::{LoyaltyFacts, MemberFacts};
use patron_store::loyalty::MemberRow;
use patron_store::{Store, StoreResult};

/// One customer's memberships: (program id, member).
type Memberships = Vec<(String, Arc<MemberRow>)>;

/// Programs and members in memory.
#[derive(Debug)]
pub struct LoyaltyView {
    engine: Arc<Engine>,
    programs: RwLock<HashMap<String, Arc<ProgramDef>>>,
    /// Customer → (program id, member), few programs per customer.
    members: RwLock<HashMap<CustomerId, Memberships>>,
}

const PAGE: usize = 10_000;

impl LoyaltyView {
    /// Loads every program and member.
    pub async fn load(store: &dyn Store, engine: Arc<Engine>) -> StoreResult<Self> {
        let view = Self {
            engine,
            programs: RwLock::new(HashMap::new()),
            members: RwLock::new(HashMap::new()),
        };
        let mut after: Option<String> = None;
        loop {
            let page = store.list_programs(after.as_deref(), 500).await?;
            let done = page.len() < 500;
            after = page.last().map(|p| p.program_id.clone());
            for p in page {
                match serde_json::from_str::<ProgramDef>(&p.body) {
                    Ok(def) => view.put_program(&p.program_id, def),
                    Err(e) => {
                        tracing::error!(program = %p.program_id, error = %e, "stored program does not parse")
                    }
                }
            }
            if done {
                break;
            }
        }
        let mut cursor: Option<(CustomerId, String)> = None;
        let mut count = 0usize;
        loop {
            let page = store
                .scan_members(cursor.as_ref().map(|(c, p)| (c, p.as_str())), PAGE)
                .await?;
            let done = page.len() < PAGE;
            cursor = page.last().map(|(c, p, _)| (c.clone(), p.clone()));
            count += page.len();
            for (customer, program, member) in page {
                view.put_member(&customer, &program, member);
            }
            if done {
                break;
            }
        }
        tracing::info!(members = count, "loyalty view loaded");
        Ok(view)
    }

    pub fn put_program(&self, id: &str, def: ProgramDef) {
        write(&self.programs).insert(id.to_owned(), Arc::new(def));
    }

    pub fn put_member(&self, customer: &CustomerId, program: &str, mut member: MemberRow) {
        member.wallet.new_entries.clear();
        let member = Arc::new(member);
        let mut members = write(&self.members);
        let list = members.entry(customer.clone()).or_default();
        match list.iter_mut().find(|(p, _)| p == program) {
            Some(slot) => slot.1 = member,
            None => list.push((program.to_owned(), member)),
        }
    }

    /// Forgets an erased customer.
    pub fn remove_customer(&self, customer: &CustomerId) {
        write(&self.members).remove(customer);
    }
}

impl LoyaltyFacts for LoyaltyView {
    fn program_exists(&self, program: &str) -> bool {
        read(&self.programs).contains_key(program)
    }

    fn member(&self, customer: &CustomerId, program: &str, now: Timestamp) -> Option<MemberFacts> {
        let member = {
            let members = read(&self.members);
            members
                .get(customer)?
                .iter()
                .find(|(p, _)| p == program)
                .map(|(_, m)| Arc::clone(m))?
        };
        let def = read(&self.programs).get(program).cloned()?;
        let b = member.wallet.balances(now, 0);
        let since = self
            .engine
            .get(customer)
            .map(|row| {
                row.signed_up_at
                    .or(row.summary.totals.first_event_at)
                    .unwrap_or(row.create_time)
            })
            .unwrap_or(member.enrolled_at);
        let status = tier::evaluate(&def, &member.activity, since.day(), now.day());
        let tier_name = status
            .current
            .and_then(|i| def.tiers.get(i))
            .map(|t| t.name.clone());
        Some(MemberFacts {
            points: (b.available - b.debt).max(0),
            pending: b.pending,
            tier: tier_name,
            tier_rank: status.current.map(|i| i as i64 + 1),
        })
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
