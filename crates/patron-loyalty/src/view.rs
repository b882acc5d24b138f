//! The in-memory view of every membership, for `loyalty.*` segment rules: counting a segment over
//! a million customers reads points and tiers from memory, never the database. Loaded at start and
//! kept current by the change feed (program and member changes of every process).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use patron_domain::loyalty::program::ProgramDef;
use patron_domain::loyalty::tier;
use patron_domain::{CustomerId, Timestamp};
use patron_feed::FeedView;
use patron_segmentation::rules::{LoyaltyFacts, MemberFacts};
use patron_store::feed::{Change, ChangeKind};
use patron_store::loyalty::MemberRow;
use patron_store::{Store, StoreResult};
use patron_views::engine::Engine;

/// One customer's memberships: (program id, member).
type Memberships = Vec<(String, Arc<MemberRow>)>;

/// Programs and members in memory.
#[derive(Debug)]
pub struct LoyaltyView {
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    programs: RwLock<HashMap<String, Arc<ProgramDef>>>,
    /// Customer → (program id, member), few programs per customer.
    members: RwLock<HashMap<CustomerId, Memberships>>,
}

const PAGE: usize = 10_000;

impl LoyaltyView {
    /// Loads every program and member.
    pub async fn load(store: Arc<dyn Store>, engine: Arc<Engine>) -> StoreResult<Self> {
        let view = Self {
            store,
            engine,
            programs: RwLock::new(HashMap::new()),
            members: RwLock::new(HashMap::new()),
        };
        view.load_all().await?;
        Ok(view)
    }

    /// Replaces every program and member with what the store holds.
    async fn load_all(&self) -> StoreResult<()> {
        let store = self.store.as_ref();
        let mut programs = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.list_programs(after.as_deref(), 500).await?;
            let done = page.len() < 500;
            after = page.last().map(|p| p.program_id.clone());
            for p in page {
                match serde_json::from_str::<ProgramDef>(&p.body) {
                    Ok(def) => {
                        programs.insert(p.program_id, Arc::new(def));
                    }
                    Err(e) => {
                        tracing::error!(program = %p.program_id, error = %e, "stored program does not parse")
                    }
                }
            }
            if done {
                break;
            }
        }
        let mut members: HashMap<CustomerId, Memberships> = HashMap::new();
        let mut cursor: Option<(CustomerId, String)> = None;
        let mut count = 0usize;
        loop {
            let page = store
                .scan_members(cursor.as_ref().map(|(c, p)| (c, p.as_str())), PAGE)
                .await?;
            let done = page.len() < PAGE;
            cursor = page.last().map(|(c, p, _)| (c.clone(), p.clone()));
            count += page.len();
            for (customer, program, mut member) in page {
                member.wallet.new_entries.clear();
                members
                    .entry(customer)
                    .or_default()
                    .push((program, Arc::new(member)));
            }
            if done {
                break;
            }
        }
        *write(&self.programs) = programs;
        *write(&self.members) = members;
        tracing::info!(members = count, "loyalty view loaded");
        Ok(())
    }

    /// Re-reads one program (created, updated) from the store.
    async fn refresh_program(&self, id: &str) -> StoreResult<()> {
        match self.store.get_program(id).await? {
            Some(p) => match serde_json::from_str::<ProgramDef>(&p.body) {
                Ok(def) => self.put_program(id, def),
                Err(e) => {
                    tracing::error!(program = %id, error = %e, "stored program does not parse")
                }
            },
            None => {
                write(&self.programs).remove(id);
            }
        }
        Ok(())
    }

    /// Re-reads one membership from the store (gone: erased).
    async fn refresh_member(&self, customer: &CustomerId, program: &str) -> StoreResult<()> {
        match self.store.get_member(program, customer).await? {
            Some(member) => self.put_member(customer, program, member),
            None => {
                let mut members = write(&self.members);
                if let Some(list) = members.get_mut(customer) {
                    list.retain(|(p, _)| p != program);
                    if list.is_empty() {
                        members.remove(customer);
                    }
                }
            }
        }
        Ok(())
    }

    /// Every program the view holds, in id order: what earning applies (one source of truth
    /// with `loyalty.*` rules; the view follows the change feed at least as far as the earner).
    pub fn programs(&self) -> Vec<(String, Arc<ProgramDef>)> {
        let mut out: Vec<(String, Arc<ProgramDef>)> = read(&self.programs)
            .iter()
            .map(|(id, def)| (id.clone(), Arc::clone(def)))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Whether any program exists (earning has work to do).
    pub fn has_programs(&self) -> bool {
        !read(&self.programs).is_empty()
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

/// Programs and members follow the change feed: a program change re-reads the program, a member
/// change re-reads the membership, whichever process made it.
#[async_trait::async_trait]
impl FeedView for LoyaltyView {
    async fn apply(&self, changes: &[Change]) -> StoreResult<()> {
        let mut programs: Vec<&str> = Vec::new();
        let mut members: Vec<(CustomerId, &str)> = Vec::new();
        for c in changes {
            match c.kind {
                ChangeKind::Program => programs.push(&c.key),
                ChangeKind::Member => {
                    if let Ok(id) = CustomerId::parse(&c.key) {
                        members.push((id, &c.scope));
                    }
                }
                _ => {}
            }
        }
        programs.sort_unstable();
        programs.dedup();
        members.sort_unstable();
        members.dedup();
        for p in programs {
            self.refresh_program(p).await?;
        }
        for (customer, program) in &members {
            self.refresh_member(customer, program).await?;
        }
        Ok(())
    }

    async fn reload(&self) -> StoreResult<()> {
        self.load_all().await
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
            .map(|row| row.since())
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
