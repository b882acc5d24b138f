//! Loyalty: programs, rewards and members' points, changed through [`MemberOp`]s.

use patron_domain::{CustomerId, Day, EventId, OrderId, Timestamp};

use patron_domain::loyalty::ledger::days_after;
use patron_domain::loyalty::tier::DayActivity;
use patron_domain::loyalty::{Entry, EntryKind, Meta, Points, Source, Wallet};

use super::segments::segment;
use super::{cid, now};
use crate::loyalty::{
    Changes, Loaded, LoyaltyOrder, MemberOp, MemberRow, MutateOutcome, Needs, ProgramRecord,
    RedemptionRecord, RedemptionStatus, Refusal, RewardRecord,
};
use crate::{Store, StoreError};

/// What a suite operation decides from what was loaded.
type Decide = dyn Fn(&Loaded, Timestamp) -> Result<Changes, Refusal> + Send + Sync;
/// A [`MemberOp`] made of its needs and a closure: the suite's stand-in for patron-loyalty's
/// operations.
pub(super) struct Op {
    needs: Needs,
    decide: Box<Decide>,
}
impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op").field("needs", &self.needs).finish()
    }
}
impl MemberOp for Op {
    fn needs(&self) -> Needs {
        self.needs.clone()
    }

    fn apply(&self, loaded: &Loaded, now: Timestamp) -> Result<Changes, Refusal> {
        (self.decide)(loaded, now)
    }
}
pub(super) fn op(
    needs: Needs,
    decide: impl Fn(&Loaded, Timestamp) -> Result<Changes, Refusal> + Send + Sync + 'static,
) -> Op {
    Op {
        needs,
        decide: Box::new(decide),
    }
}
/// `days` days after the suite's now.
pub(super) fn later(days: i64) -> Timestamp {
    days_after(now(), days)
}
/// The loaded member, to change; refused when not a member.
pub(super) fn member_of(loaded: &Loaded) -> Result<MemberRow, Refusal> {
    loaded.member.clone().ok_or(Refusal::NotEnrolled)
}
fn meta(now: Timestamp, source: Source) -> Meta {
    Meta::system(now, source, "conformance")
}
/// Makes the customer a member (refused if they are one).
pub(super) fn enrol() -> Op {
    op(Needs::default(), |loaded, now| {
        if loaded.member.is_some() {
            return Err(Refusal::Internal("already a member".into()));
        }
        Ok(Changes {
            member: Some(MemberRow {
                enrolled_at: now,
                wallet: Wallet::new(),
                first_purchase_done: false,
                activity: Vec::new(),
            }),
            ..Changes::default()
        })
    })
}
/// Credits `points`, pending for `pending_days` (EARN when 0, else PENDING), expiring after
/// `expiry_days` (never when `None`).
pub(super) fn credit(points: Points, pending_days: i64, expiry_days: Option<i64>) -> Op {
    op(Needs::default(), move |loaded, now| {
        let mut m = member_of(loaded)?;
        let kind = if pending_days > 0 {
            EntryKind::Pending
        } else {
            EntryKind::Earn
        };
        m.wallet
            .credit(
                kind,
                points,
                days_after(now, pending_days),
                expiry_days.map(|d| days_after(now, d)),
                meta(now, Source::default()),
            )
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        Ok(Changes {
            member: Some(m),
            ..Changes::default()
        })
    })
}
/// Spends `points` available points (refused when fewer are available).
pub(super) fn debit(points: Points) -> Op {
    op(Needs::default(), move |loaded, now| {
        let mut m = member_of(loaded)?;
        m.wallet
            .debit(EntryKind::Adjust, points, meta(now, Source::default()))
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        Ok(Changes {
            member: Some(m),
            ..Changes::default()
        })
    })
}
/// Settles expiry and activation.
pub(super) fn settle() -> Op {
    op(Needs::default(), |loaded, now| {
        let mut m = member_of(loaded)?;
        m.wallet.settle(now);
        Ok(Changes {
            member: Some(m),
            ..Changes::default()
        })
    })
}
/// Redeems `reward` for `cost` points as `redemption` (request `request`), taking a unit of
/// stock; refused if the request was seen.
pub(super) fn redeem(reward: &str, request: &str, redemption: &str, cost: Points) -> Op {
    let (reward, request, redemption) =
        (reward.to_owned(), request.to_owned(), redemption.to_owned());
    let needs = Needs {
        reward_id: Some(reward.clone()),
        request_id: Some(request.clone()),
        ..Needs::default()
    };
    op(needs, move |loaded, now| {
        if loaded.redemption.is_some() {
            return Err(Refusal::RequestIdReused);
        }
        let mut m = member_of(loaded)?;
        let source = Source {
            redemption_id: Some(redemption.clone()),
            ..Source::default()
        };
        let lots = m
            .wallet
            .debit(EntryKind::Redeem, cost, meta(now, source))
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        Ok(Changes {
            member: Some(m),
            redemption: Some(RedemptionRecord {
                redemption_id: redemption.clone(),
                request_id: request.clone(),
                reward_id: reward.clone(),
                cost,
                lots,
                fingerprint: format!("{reward}/{cost}"),
                status: RedemptionStatus::Completed,
                created_at: now,
                cancelled_at: None,
            }),
            take_stock: true,
            ..Changes::default()
        })
    })
}
/// Cancels a completed redemption: its points back in their lots, its unit back in stock.
pub(super) fn cancel(reward: &str, redemption: &str) -> Op {
    let needs = Needs {
        reward_id: Some(reward.to_owned()),
        redemption_id: Some(redemption.to_owned()),
        ..Needs::default()
    };
    op(needs, |loaded, now| {
        let r = loaded
            .redemption
            .clone()
            .ok_or(Refusal::RedemptionNotFound)?;
        if r.status != RedemptionStatus::Completed {
            return Err(Refusal::RedemptionNotFound);
        }
        let mut m = member_of(loaded)?;
        let source = Source {
            redemption_id: Some(r.redemption_id.clone()),
            ..Source::default()
        };
        m.wallet.restore(&r.lots, meta(now, source));
        Ok(Changes {
            member: Some(m),
            redemption: Some(RedemptionRecord {
                status: RedemptionStatus::Cancelled,
                cancelled_at: Some(now),
                ..r
            }),
            return_stock: true,
            ..Changes::default()
        })
    })
}
/// Loads `needs` and writes nothing.
fn look(needs: Needs) -> Op {
    op(needs, |_, _| Ok(Changes::default()))
}
pub(super) async fn mutate(
    store: &impl Store,
    program: &str,
    customer: &str,
    when: Timestamp,
    op: &Op,
) -> MutateOutcome {
    store
        .mutate_member(program, &cid(customer), when, op)
        .await
        .expect("mutate_member")
}
/// The loaded state and changes of an applied operation.
pub(super) fn applied(outcome: MutateOutcome) -> (Loaded, Changes) {
    match outcome {
        MutateOutcome::Applied { loaded, changes } => (loaded, changes),
        other => panic!("expected Applied, got {other:?}"),
    }
}
/// What [`look`] loads.
pub(super) async fn load(
    store: &impl Store,
    program: &str,
    customer: &str,
    needs: Needs,
) -> Loaded {
    applied(mutate(store, program, customer, now(), &look(needs)).await).0
}
pub(super) async fn member(store: &impl Store, program: &str, customer: &str) -> Option<MemberRow> {
    store
        .get_member(program, &cid(customer))
        .await
        .expect("get_member")
}
pub(super) async fn all_entries(store: &impl Store, program: &str, customer: &str) -> Vec<Entry> {
    store
        .list_entries(program, &cid(customer), None, 10_000)
        .await
        .expect("list_entries")
}
/// A program written at `now() + t` seconds.
pub(super) fn program(id: &str, segment: Option<&str>, t: i64) -> ProgramRecord {
    let when = Timestamp::from_micros(now().as_micros() + t * 1_000_000);
    ProgramRecord {
        program_id: id.into(),
        body: format!("{{\"program\":\"{id}\",\"t\":{t}}}"),
        target_segment: segment.map(str::to_owned),
        revision: 0,
        create_time: when,
        update_time: when,
    }
}
/// A reward written at `now() + t` seconds.
pub(super) fn reward(
    id: &str,
    program: &str,
    segment: Option<&str>,
    stock: Option<i64>,
    t: i64,
) -> RewardRecord {
    let when = Timestamp::from_micros(now().as_micros() + t * 1_000_000);
    RewardRecord {
        reward_id: id.into(),
        program_id: program.into(),
        body: format!("{{\"reward\":\"{id}\",\"t\":{t}}}"),
        required_segment: segment.map(str::to_owned),
        stock_remaining: stock,
        revision: 0,
        create_time: when,
        update_time: when,
    }
}
pub async fn loyalty_programs_and_rewards_are_stored(store: &impl Store) {
    assert_eq!(store.get_program("p1").await.expect("get"), None);
    assert!(
        store
            .list_programs(None, 10)
            .await
            .expect("list")
            .is_empty()
    );
    let mut created = Vec::new();
    for (id, t) in [("p2", 1), ("p1", 2), ("p3", 3)] {
        let p = store
            .create_program(&program(id, None, t))
            .await
            .expect("create");
        assert_eq!(
            p,
            ProgramRecord {
                revision: 1,
                ..program(id, None, t)
            }
        );
        created.push(p);
    }
    let (p2, p1, p3) = (created[0].clone(), created[1].clone(), created[2].clone());
    assert_eq!(
        store.get_program("p1").await.expect("get"),
        Some(p1.clone())
    );
    let r = store.create_program(&program("p1", Some("vip"), 9)).await;
    assert!(matches!(r, Err(StoreError::AlreadyExists(_))), "{r:?}");
    assert_eq!(
        store.get_program("p1").await.expect("get"),
        Some(p1.clone())
    );

    // In id order, in pages.
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_programs(after.as_deref(), 2)
            .await
            .expect("list");
        let Some(last) = page.last() else { break };
        after = Some(last.program_id.clone());
        pages.push(page);
    }
    assert_eq!(pages, [vec![p1.clone(), p2.clone()], vec![p3.clone()]]);
    assert_eq!(
        store.list_programs(Some("p1"), 10).await.expect("list"),
        [p2.clone(), p3.clone()]
    );

    // Updates: the next revision, create_time kept; stale or future revisions refused.
    let t = later(1);
    let p2b = store
        .update_program("p2", "{\"v\":2}", Some("vip"), t, Some(1))
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        p2b,
        ProgramRecord {
            body: "{\"v\":2}".into(),
            target_segment: Some("vip".into()),
            revision: 2,
            update_time: t,
            ..p2.clone()
        }
    );
    for expected in [1, 3] {
        let r = store
            .update_program("p2", "{}", None, later(2), Some(expected))
            .await;
        assert!(matches!(r, Err(StoreError::PreconditionFailed(_))), "{r:?}");
    }
    assert_eq!(
        store.get_program("p2").await.expect("get"),
        Some(p2b.clone())
    );
    let p2c = store
        .update_program("p2", "{\"v\":3}", None, later(3), None)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!((p2c.revision, p2c.target_segment.clone()), (3, None));
    assert_eq!(store.get_program("p2").await.expect("get"), Some(p2c));
    assert_eq!(
        store
            .update_program("nope", "{}", None, later(3), None)
            .await
            .expect("update"),
        None
    );
    assert_eq!(store.get_program("nope").await.expect("get"), None);

    // Rewards need their program.
    let r = store
        .create_reward(&reward("r1", "nope", None, None, 1))
        .await;
    match r {
        Err(StoreError::MissingDependency(id)) => assert_eq!(id, "nope"),
        other => panic!("expected a missing program, got {other:?}"),
    }
    assert_eq!(store.get_reward("r1").await.expect("get"), None);
    let r2 = store
        .create_reward(&reward("r2", "p1", Some("vip"), Some(5), 1))
        .await
        .expect("create");
    assert_eq!(
        r2,
        RewardRecord {
            revision: 1,
            ..reward("r2", "p1", Some("vip"), Some(5), 1)
        }
    );
    let r1 = store
        .create_reward(&reward("r1", "p1", None, None, 2))
        .await
        .expect("create");
    let r3 = store
        .create_reward(&reward("r3", "p2", None, Some(0), 3))
        .await
        .expect("create");
    for taken in [
        reward("r1", "p1", None, None, 4),
        reward("r1", "nope", None, None, 4),
    ] {
        let r = store.create_reward(&taken).await;
        assert!(matches!(r, Err(StoreError::AlreadyExists(_))), "{r:?}");
    }
    assert_eq!(store.get_reward("r1").await.expect("get"), Some(r1.clone()));
    assert_eq!(
        store.list_rewards("p1", None, 1).await.expect("list"),
        std::slice::from_ref(&r1)
    );
    assert_eq!(
        store.list_rewards("p1", Some("r1"), 1).await.expect("list"),
        std::slice::from_ref(&r2)
    );
    assert!(
        store
            .list_rewards("p1", Some("r2"), 1)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        store.list_rewards("p2", None, 10).await.expect("list"),
        std::slice::from_ref(&r3)
    );
    assert!(
        store
            .list_rewards("p3", None, 10)
            .await
            .expect("list")
            .is_empty()
    );

    // Stock: `None` keeps it, `Some(None)` makes it unlimited, `Some(Some(n))` sets it.
    let r2b = store
        .update_reward("r2", "{\"v\":2}", None, None, later(1), Some(1))
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        r2b,
        RewardRecord {
            body: "{\"v\":2}".into(),
            required_segment: None,
            revision: 2,
            update_time: later(1),
            ..r2.clone()
        }
    );
    let r2c = store
        .update_reward("r2", "{}", Some("vip"), Some(None), later(2), None)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        (
            r2c.stock_remaining,
            r2c.revision,
            r2c.required_segment.clone()
        ),
        (None, 3, Some("vip".into()))
    );
    let r2d = store
        .update_reward("r2", "{}", None, Some(Some(7)), later(3), Some(3))
        .await
        .expect("update")
        .expect("exists");
    assert_eq!((r2d.stock_remaining, r2d.revision), (Some(7), 4));
    for expected in [3, 5] {
        let r = store
            .update_reward("r2", "{}", None, Some(Some(1)), later(4), Some(expected))
            .await;
        assert!(matches!(r, Err(StoreError::PreconditionFailed(_))), "{r:?}");
    }
    assert_eq!(store.get_reward("r2").await.expect("get"), Some(r2d));
    assert_eq!(
        store
            .update_reward("nope", "{}", None, None, later(4), None)
            .await
            .expect("update"),
        None
    );
}
pub async fn member_changes_round_trip(store: &impl Store) {
    const P: &str = "points";
    let c = "member";
    assert_eq!(member(store, P, c).await, None);
    assert!(
        store
            .member_programs(&cid(c))
            .await
            .expect("programs")
            .is_empty()
    );
    store
        .create_program(&program(P, None, 0))
        .await
        .expect("program");
    let shop = store
        .create_reward(&reward("mug", P, None, None, 0))
        .await
        .expect("reward");

    // Enrolment creates the member row.
    let (loaded, changes) = applied(mutate(store, P, c, now(), &enrol()).await);
    assert_eq!(loaded, Loaded::default());
    let enrolled = changes.member.expect("member");
    assert_eq!(member(store, P, c).await, Some(enrolled.clone()));
    assert_eq!(
        mutate(store, P, c, now(), &enrol()).await,
        MutateOutcome::Refused(Refusal::Internal("already a member".into()))
    );

    // One operation writing everything there is to write.
    let day = now().day();
    let needs = Needs {
        order_id: Some(OrderId::parse("o1").expect("id")),
        bonus: Some(("review".into(), day)),
        reward_id: Some("mug".into()),
        request_id: Some("req1".into()),
        redemption_id: None,
        event_id: Some(EventId::parse("e1").expect("id")),
    };
    let everything = op(needs.clone(), move |loaded, now| {
        let mut m = member_of(loaded)?;
        let purchase = Source {
            event_id: Some("e1".into()),
            redemption_id: None,
            rule: Some("purchase".into()),
        };
        let w = &mut m.wallet;
        w.credit(
            EntryKind::Pending,
            100,
            days_after(now, 14),
            Some(days_after(now, 365)),
            meta(now, purchase),
        )
        .map_err(|e| Refusal::Internal(e.to_string()))?;
        w.credit(EntryKind::Earn, 50, now, None, meta(now, Source::default()))
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        let source = Source {
            redemption_id: Some("red1".into()),
            ..Source::default()
        };
        let lots = w
            .debit(EntryKind::Redeem, 30, meta(now, source))
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        m.first_purchase_done = true;
        Ok(Changes {
            member: Some(m),
            order: Some(LoyaltyOrder {
                order_id: "o1".into(),
                amount: 10_000,
                refunded: 250,
                purchased: true,
                day: Some(now.day()),
                multiplier_percent: 150,
                points: 100,
            }),
            bonus_count: Some(1),
            activity: vec![
                DayActivity {
                    day: now.day(),
                    points: 100,
                    spend: 10_000,
                },
                DayActivity {
                    day: Day::from_days(now.day().as_days() - 3),
                    points: 7,
                    spend: -20,
                },
                DayActivity {
                    day: now.day(),
                    points: 50,
                    spend: 0,
                },
            ],
            take_stock: true,
            return_stock: false,
            redemption: Some(RedemptionRecord {
                redemption_id: "red1".into(),
                request_id: "req1".into(),
                reward_id: "mug".into(),
                cost: 30,
                lots,
                fingerprint: "mug/30".into(),
                status: RedemptionStatus::Completed,
                created_at: now,
                cancelled_at: None,
            }),
            mark_event_applied: true,
        })
    });
    let (loaded, changes) = applied(mutate(store, P, c, now(), &everything).await);
    assert_eq!(
        loaded,
        Loaded {
            member: Some(enrolled.clone()),
            reward: Some(shop.clone()),
            ..Loaded::default()
        }
    );
    let written = changes.member.clone().expect("member");
    assert_eq!(written.wallet.new_entries.len(), 3);

    // What was written is what is loaded next time.
    let activity = vec![
        DayActivity {
            day: Day::from_days(day.as_days() - 3),
            points: 7,
            spend: -20,
        },
        DayActivity {
            day,
            points: 150,
            spend: 10_000,
        },
    ];
    let stored = MemberRow {
        wallet: Wallet {
            new_entries: Vec::new(),
            ..written.wallet.clone()
        },
        activity: activity.clone(),
        ..written.clone()
    };
    let again = load(store, P, c, needs.clone()).await;
    assert_eq!(
        again,
        Loaded {
            member: Some(stored.clone()),
            order: changes.order.clone(),
            bonus_count: 1,
            reward: Some(shop.clone()),
            reward_redemptions: 1,
            redemption: changes.redemption.clone(),
            event_applied: true,
        }
    );
    assert_eq!(member(store, P, c).await, Some(stored.clone()));
    // The same count by a plain read, per reward; other members and programs count nothing.
    let counts = store
        .completed_redemptions(P, &cid(c))
        .await
        .expect("counts");
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [(shop.reward_id.clone(), 1)]
    );
    assert!(
        store
            .completed_redemptions("elsewhere", &cid(c))
            .await
            .expect("counts")
            .is_empty()
    );
    // The redemption also by its id; other keys load nothing.
    let by_id = load(
        store,
        P,
        c,
        Needs {
            redemption_id: Some("red1".into()),
            ..Needs::default()
        },
    )
    .await;
    assert_eq!(by_id.redemption, changes.redemption);
    let others = load(
        store,
        P,
        c,
        Needs {
            order_id: Some(OrderId::parse("o2").expect("id")),
            bonus: Some(("review".into(), Day::from_days(day.as_days() + 1))),
            reward_id: Some("missing".into()),
            request_id: Some("req2".into()),
            redemption_id: Some("red2".into()),
            event_id: Some(EventId::parse("e2").expect("id")),
        },
    )
    .await;
    assert_eq!(
        others,
        Loaded {
            member: Some(stored.clone()),
            ..Loaded::default()
        }
    );
    assert_eq!(
        store.get_redemption(P, &cid(c), "red1").await.expect("get"),
        changes.redemption
    );
    assert_eq!(
        store.get_redemption(P, &cid(c), "red2").await.expect("get"),
        None
    );
    let mut entries = all_entries(store, P, c).await;
    entries.reverse();
    assert_eq!(entries, written.wallet.new_entries);

    // Counters go on; a second write adds to the activity and updates the rest in place.
    let (_, changes) = applied(mutate(store, P, c, later(20), &cancel("mug", "red1")).await);
    let cancelled = changes.redemption.clone().expect("redemption");
    assert_eq!(cancelled.status, RedemptionStatus::Cancelled);
    let (_, changes) = applied(mutate(store, P, c, later(20), &settle()).await);
    let settled = changes.member.expect("member");
    assert!(settled.wallet.lots.iter().all(|l| l.activated));
    let reloaded = load(store, P, c, needs).await;
    assert_eq!(
        reloaded.reward_redemptions, 0,
        "the redemption is cancelled"
    );
    assert!(
        store
            .completed_redemptions(P, &cid(c))
            .await
            .expect("counts")
            .is_empty(),
        "a cancelled redemption is not counted"
    );
    assert_eq!(reloaded.redemption, Some(cancelled.clone()));
    let m = reloaded.member.expect("member");
    assert_eq!(m.wallet.lots, settled.wallet.lots);
    assert_eq!(m.wallet.next_entry_id, 6);
    let entries = all_entries(store, P, c).await;
    assert_eq!(
        entries.iter().map(|e| e.entry_id).collect::<Vec<_>>(),
        [5, 4, 3, 2, 1]
    );
    assert_eq!(
        (entries[0].kind, entries[1].kind),
        (EntryKind::Activate, EntryKind::CancelRedemption)
    );
    m.wallet.check(&entries).expect("ledger invariant");
    assert_eq!(m.wallet.balances(later(20), 0).available, 150);
    assert_eq!(
        store.get_reward("mug").await.expect("get"),
        Some(shop),
        "an unlimited reward's stock stays unlimited"
    );

    // Programs of the customer, in id order.
    applied(mutate(store, "another", c, now(), &enrol()).await);
    assert_eq!(
        store.member_programs(&cid(c)).await.expect("programs"),
        ["another", P]
    );
    assert!(
        store
            .member_programs(&cid("someone"))
            .await
            .expect("programs")
            .is_empty()
    );
}
pub async fn refused_member_changes_write_nothing(store: &impl Store) {
    const P: &str = "points";
    let c = "refused";
    let refuse_after = |needs: Needs, inner: Op| {
        op(needs, move |loaded, now| {
            // Decide everything, then refuse.
            inner.apply(loaded, now)?;
            Err(Refusal::Internal("changed my mind".into()))
        })
    };
    // Not a member: nothing is created.
    assert_eq!(
        mutate(store, P, c, now(), &refuse_after(Needs::default(), enrol())).await,
        MutateOutcome::Refused(Refusal::Internal("changed my mind".into()))
    );
    assert_eq!(member(store, P, c).await, None);
    assert!(
        store
            .member_programs(&cid(c))
            .await
            .expect("programs")
            .is_empty()
    );

    applied(mutate(store, P, c, now(), &enrol()).await);
    applied(mutate(store, P, c, now(), &credit(100, 0, None)).await);
    let before = member(store, P, c).await;
    let entries = all_entries(store, P, c).await;
    let needs = Needs {
        order_id: Some(OrderId::parse("o1").expect("id")),
        bonus: Some(("review".into(), now().day())),
        event_id: Some(EventId::parse("e1").expect("id")),
        ..Needs::default()
    };
    let everything = op(needs.clone(), |loaded, now| {
        let mut m = member_of(loaded)?;
        m.wallet
            .debit(EntryKind::Adjust, 60, meta(now, Source::default()))
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        Ok(Changes {
            member: Some(m),
            order: Some(LoyaltyOrder {
                order_id: "o1".into(),
                amount: 5,
                ..LoyaltyOrder::default()
            }),
            bonus_count: Some(3),
            activity: vec![DayActivity {
                day: now.day(),
                points: 1,
                spend: 1,
            }],
            mark_event_applied: true,
            ..Changes::default()
        })
    });
    assert_eq!(
        mutate(store, P, c, now(), &refuse_after(needs.clone(), everything)).await,
        MutateOutcome::Refused(Refusal::Internal("changed my mind".into()))
    );
    // A debit beyond the balance is refused by the ledger.
    assert!(matches!(
        mutate(store, P, c, now(), &debit(101)).await,
        MutateOutcome::Refused(_)
    ));
    assert_eq!(member(store, P, c).await, before);
    assert_eq!(all_entries(store, P, c).await, entries);
    let loaded = load(store, P, c, needs).await;
    assert_eq!(
        (loaded.order, loaded.bonus_count, loaded.event_applied),
        (None, 0, false)
    );

    // A second redemption under a taken request id is a conflict, and writes nothing.
    store
        .create_program(&program(P, None, 0))
        .await
        .expect("program");
    store
        .create_reward(&reward("mug", P, None, None, 0))
        .await
        .expect("reward");
    applied(mutate(store, P, c, now(), &redeem("mug", "req", "red-a", 10)).await);
    let before = member(store, P, c).await;
    let entries = all_entries(store, P, c).await;
    let reuse = op(Needs::default(), |loaded, now| {
        let mut m = member_of(loaded)?;
        let lots = m
            .wallet
            .debit(EntryKind::Redeem, 10, meta(now, Source::default()))
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        Ok(Changes {
            member: Some(m),
            redemption: Some(RedemptionRecord {
                redemption_id: "red-b".into(),
                request_id: "req".into(),
                reward_id: "mug".into(),
                cost: 10,
                lots,
                fingerprint: "other".into(),
                status: RedemptionStatus::Completed,
                created_at: now,
                cancelled_at: None,
            }),
            ..Changes::default()
        })
    });
    let r = store.mutate_member(P, &cid(c), now(), &reuse).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_eq!(member(store, P, c).await, before);
    assert_eq!(all_entries(store, P, c).await, entries);
    assert_eq!(
        store
            .get_redemption(P, &cid(c), "red-b")
            .await
            .expect("get"),
        None
    );
}
pub async fn reward_stock_is_taken_once(store: &impl Store) {
    const P: &str = "shop";
    store
        .create_program(&program(P, None, 0))
        .await
        .expect("program");
    for r in [
        reward("last", P, None, Some(1), 0),
        reward("free", P, None, None, 0),
    ] {
        store.create_reward(&r).await.expect("reward");
    }
    for c in ["first", "second"] {
        applied(mutate(store, P, c, now(), &enrol()).await);
        applied(mutate(store, P, c, now(), &credit(100, 0, None)).await);
    }

    let (loaded, _) =
        applied(mutate(store, P, "first", now(), &redeem("last", "q1", "d1", 10)).await);
    assert_eq!(
        loaded.reward.and_then(|r| r.stock_remaining),
        Some(1),
        "loaded before the take"
    );
    assert_eq!(
        store
            .get_reward("last")
            .await
            .expect("get")
            .and_then(|r| r.stock_remaining),
        Some(0)
    );

    // None left: nothing of the redemption is written.
    let before = member(store, P, "second").await;
    let entries = all_entries(store, P, "second").await;
    let reward_before = store.get_reward("last").await.expect("get");
    assert_eq!(
        mutate(store, P, "second", now(), &redeem("last", "q2", "d2", 10)).await,
        MutateOutcome::OutOfStock
    );
    assert_eq!(member(store, P, "second").await, before);
    assert_eq!(all_entries(store, P, "second").await, entries);
    assert_eq!(
        store
            .get_redemption(P, &cid("second"), "d2")
            .await
            .expect("get"),
        None
    );
    assert_eq!(store.get_reward("last").await.expect("get"), reward_before);

    // A cancellation gives the unit back; then the second member gets it.
    applied(mutate(store, P, "first", now(), &cancel("last", "d1")).await);
    assert_eq!(
        store
            .get_reward("last")
            .await
            .expect("get")
            .and_then(|r| r.stock_remaining),
        Some(1)
    );
    applied(mutate(store, P, "second", now(), &redeem("last", "q2", "d2", 10)).await);
    assert_eq!(
        store
            .get_reward("last")
            .await
            .expect("get")
            .and_then(|r| r.stock_remaining),
        Some(0)
    );
    let m = member(store, P, "second").await.expect("member");
    assert_eq!(m.wallet.balances(now(), 0).available, 90);

    // Unlimited stays unlimited, until a stock is set.
    for (i, c) in ["first", "second", "first"].into_iter().enumerate() {
        let q = format!("free{i}");
        applied(mutate(store, P, c, now(), &redeem("free", &q, &q, 1)).await);
    }
    let free = store
        .get_reward("free")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((free.stock_remaining, free.revision), (None, 1));
    store
        .update_reward("free", "{}", None, Some(Some(0)), now(), None)
        .await
        .expect("update");
    assert_eq!(
        mutate(
            store,
            P,
            "first",
            now(),
            &redeem("free", "free9", "free9", 1)
        )
        .await,
        MutateOutcome::OutOfStock
    );
}
pub async fn events_are_applied_once(store: &impl Store) {
    let mark = |event: &str| {
        let needs = Needs {
            event_id: Some(EventId::parse(event).expect("id")),
            ..Needs::default()
        };
        op(needs, |loaded, _| {
            if loaded.event_applied {
                return Err(Refusal::Internal("already applied".into()));
            }
            Ok(Changes {
                mark_event_applied: true,
                ..Changes::default()
            })
        })
    };
    let (loaded, _) = applied(mutate(store, "p", "c1", now(), &mark("e1")).await);
    assert!(!loaded.event_applied);
    assert_eq!(
        mutate(store, "p", "c1", now(), &mark("e1")).await,
        MutateOutcome::Refused(Refusal::Internal("already applied".into()))
    );
    // Per event, per customer, per program.
    applied(mutate(store, "p", "c1", now(), &mark("e2")).await);
    applied(mutate(store, "p", "c2", now(), &mark("e1")).await);
    applied(mutate(store, "q", "c1", now(), &mark("e1")).await);
    assert_eq!(
        mutate(store, "q", "c1", now(), &mark("e1")).await,
        MutateOutcome::Refused(Refusal::Internal("already applied".into()))
    );
}
pub async fn members_to_settle_finds_expired_and_matured_lots(store: &impl Store) {
    const P: &str = "settle";
    let setup: [(&str, &str, &[Op]); 6] = [
        (P, "expiring", &[credit(100, 0, Some(10))]),
        (P, "maturing", &[credit(100, 14, None)]),
        (P, "spent", &[credit(50, 0, Some(10)), debit(50)]),
        (P, "later", &[credit(100, 60, Some(90))]),
        (P, "never", &[credit(10, 0, None)]),
        ("a-first", "expiring", &[credit(5, 0, Some(5))]),
    ];
    for (program, customer, ops) in &setup {
        applied(mutate(store, program, customer, now(), &enrol()).await);
        for o in *ops {
            applied(mutate(store, program, customer, now(), o).await);
        }
    }
    let due = |members: Vec<(String, CustomerId)>| {
        members
            .into_iter()
            .map(|(p, c)| format!("{p}/{c}"))
            .collect::<Vec<_>>()
    };
    let after_at = |t: Timestamp, after: Option<(&'static str, &'static str)>, limit: usize| async move {
        let after = after.map(|(p, c)| (p, CustomerId::parse(c).expect("id")));
        due(store
            .members_to_settle(t, after.as_ref().map(|(p, c)| (*p, c)), limit)
            .await
            .expect("members_to_settle"))
    };
    let at = |t: Timestamp, limit: usize| after_at(t, None, limit);
    assert!(at(now(), 100).await.is_empty());
    assert!(at(later(4), 100).await.is_empty());
    assert_eq!(at(later(5), 100).await, ["a-first/expiring"]);
    // Expiry and maturity are inclusive.
    assert_eq!(
        at(later(14), 100).await,
        ["a-first/expiring", "settle/expiring", "settle/maturing"]
    );
    assert_eq!(
        at(later(14), 2).await,
        ["a-first/expiring", "settle/expiring"]
    );
    // Pages follow (program id, customer id), strictly after the cursor.
    assert_eq!(
        after_at(later(14), Some(("a-first", "expiring")), 100).await,
        ["settle/expiring", "settle/maturing"]
    );
    assert_eq!(
        after_at(later(14), Some((P, "expiring")), 1).await,
        ["settle/maturing"]
    );
    assert!(
        after_at(later(14), Some((P, "maturing")), 100)
            .await
            .is_empty()
    );
    assert_eq!(
        at(later(20), 100).await,
        ["a-first/expiring", "settle/expiring", "settle/maturing"]
    );

    // Settled members are done.
    for (p, c) in [(P, "expiring"), (P, "maturing"), ("a-first", "expiring")] {
        let (_, changes) = applied(mutate(store, p, c, later(20), &settle()).await);
        assert_eq!(changes.member.expect("member").wallet.new_entries.len(), 1);
    }
    assert!(at(later(20), 100).await.is_empty());
    let m = member(store, P, "expiring").await.expect("member");
    assert_eq!(m.wallet.balances(later(20), 0).available, 0);
    m.wallet
        .check(&all_entries(store, P, "expiring").await)
        .expect("ledger invariant");
    // A pending lot that expires unspent is due once it has expired.
    assert_eq!(at(later(100), 100).await, ["settle/later"]);
}
pub async fn loyalty_entries_are_listed_newest_first(store: &impl Store) {
    const P: &str = "points";
    for (program, c) in [(P, "lister"), (P, "other"), ("elsewhere", "lister")] {
        applied(mutate(store, program, c, now(), &enrol()).await);
    }
    let mut written = Vec::new();
    for i in 1..=5 {
        let (_, changes) = applied(mutate(store, P, "lister", now(), &credit(i, 0, Some(i))).await);
        written.extend(changes.member.expect("member").wallet.new_entries);
        applied(mutate(store, P, "other", now(), &credit(100, 0, None)).await);
    }
    applied(mutate(store, "elsewhere", "lister", now(), &credit(100, 0, None)).await);
    written.reverse();
    assert_eq!(all_entries(store, P, "lister").await, written);
    let page = |before: Option<i64>, limit: usize| async move {
        store
            .list_entries(P, &cid("lister"), before, limit)
            .await
            .expect("list_entries")
            .into_iter()
            .map(|e| e.entry_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(page(None, 2).await, [5, 4]);
    assert_eq!(page(Some(4), 2).await, [3, 2]);
    assert_eq!(page(Some(2), 10).await, [1]);
    assert!(page(Some(1), 10).await.is_empty());
    assert!(
        store
            .list_entries(P, &cid("nobody"), None, 10)
            .await
            .expect("list_entries")
            .is_empty()
    );
}
pub async fn scan_members_pages_in_key_order_with_lots_and_activity(store: &impl Store) {
    assert!(
        store
            .scan_members(None, 10)
            .await
            .expect("scan_members")
            .is_empty()
    );
    // Keys whose tuple order differs from the order of their concatenation ("a"+"z" vs "ab"+"a")
    // and members with nothing, lots only, activity only and both.
    let members = [
        ("b", "p1"),
        ("a", "z"),
        ("ab", "a"),
        ("a", "p1"),
        ("b", "p2"),
        ("c", "p1"),
        ("a", "p2"),
        ("ab", "p1"),
        ("c", "z"),
    ];
    for (i, &(c, p)) in members.iter().enumerate() {
        applied(mutate(store, p, c, now(), &enrol()).await);
        let i = i64::try_from(i).expect("small");
        if i % 3 != 1 {
            for n in 0..=(i % 4) {
                let credit = credit(10 * i + n + 1, n % 2, Some(30 + n));
                applied(mutate(store, p, c, now(), &credit).await);
            }
        }
        if i % 2 == 0 {
            let day = now().day().as_days();
            let days: Vec<DayActivity> = (0..=(i % 3))
                .map(|d| DayActivity {
                    day: Day::from_days(day - 5 + i32::try_from(d * 2).expect("small")),
                    points: i + d,
                    spend: 100 * i - d,
                })
                .collect();
            let record = op(Needs::default(), move |loaded, _| {
                member_of(loaded)?;
                Ok(Changes {
                    activity: days.clone(),
                    ..Changes::default()
                })
            });
            applied(mutate(store, p, c, now(), &record).await);
        }
    }
    let mut want = Vec::new();
    for (c, p) in members {
        let row = member(store, p, c).await.expect("a member");
        want.push((cid(c), p.to_owned(), row));
    }
    want.sort_by(|x, y| (x.0.as_str(), &x.1).cmp(&(y.0.as_str(), &y.1)));
    assert!(want.iter().any(|m| m.2.wallet.lots.len() > 1));
    assert!(want.iter().any(|m| m.2.activity.len() > 1));
    assert!(
        want.iter()
            .any(|m| m.2.wallet.lots.is_empty() && m.2.activity.is_empty())
    );

    for limit in [1, 2, 4, want.len(), want.len() + 1] {
        let mut got = Vec::new();
        let mut cursor: Option<(CustomerId, String)> = None;
        loop {
            let page = store
                .scan_members(cursor.as_ref().map(|(c, p)| (c, p.as_str())), limit)
                .await
                .expect("scan_members");
            assert!(page.len() <= limit);
            let done = page.len() < limit;
            cursor = page.last().map(|(c, p, _)| (c.clone(), p.clone()));
            got.extend(page);
            if done {
                break;
            }
        }
        assert_eq!(got, want, "limit {limit}");
    }

    // After a key that is not a member's: the members strictly after it.
    let after = |c: &str, p: &str| {
        let c = cid(c);
        let p = p.to_owned();
        async move {
            store
                .scan_members(Some((&c, p.as_str())), 100)
                .await
                .expect("scan_members")
                .into_iter()
                .map(|(c, p, _)| (c.as_str().to_owned(), p))
                .collect::<Vec<_>>()
        }
    };
    let keys = |ks: &[(&str, &str)]| {
        ks.iter()
            .map(|&(c, p)| (c.to_owned(), p.to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        after("a", "zz").await,
        keys(&[
            ("ab", "a"),
            ("ab", "p1"),
            ("b", "p1"),
            ("b", "p2"),
            ("c", "p1"),
            ("c", "z"),
        ])
    );
    assert_eq!(
        after("b", "p10").await,
        keys(&[("b", "p2"), ("c", "p1"), ("c", "z")])
    );
    assert!(after("c", "z").await.is_empty());
}
pub async fn segments_named_by_loyalty_cannot_be_deleted(store: &impl Store) {
    for s in [segment("vip", &[], 1), segment("zeta", &["vip"], 2)] {
        store.create_segment(&s).await.expect("create");
    }
    store
        .create_program(&program("p", Some("vip"), 1))
        .await
        .expect("program");
    store
        .create_program(&program("q", Some("zeta"), 1))
        .await
        .expect("program");
    store
        .create_reward(&reward("r", "q", Some("vip"), None, 1))
        .await
        .expect("reward");
    let in_use = |r: crate::StoreResult<bool>, want: &[&str]| match r {
        Err(StoreError::InUse(ids)) => assert_eq!(ids, want),
        other => panic!("expected in use by {want:?}, got {other:?}"),
    };
    in_use(
        store.delete_segment("vip").await,
        &["program:p", "reward:r", "zeta"],
    );
    in_use(store.delete_segment("zeta").await, &["program:q"]);
    assert!(store.get_segment("vip").await.expect("get").is_some());

    store
        .update_program("p", "{}", None, now(), None)
        .await
        .expect("update");
    store
        .update_reward("r", "{}", Some("zeta"), None, now(), None)
        .await
        .expect("update");
    in_use(store.delete_segment("vip").await, &["zeta"]);
    in_use(
        store.delete_segment("zeta").await,
        &["program:q", "reward:r"],
    );
    store
        .update_program("q", "{}", None, now(), None)
        .await
        .expect("update");
    store
        .update_reward("r", "{}", None, None, now(), None)
        .await
        .expect("update");
    assert!(store.delete_segment("zeta").await.expect("delete"));
    assert!(store.delete_segment("vip").await.expect("delete"));
}
pub async fn concurrent_member_changes_are_serialized(store: &impl Store) {
    const P: &str = "points";
    const K: i64 = 23;
    const CALLS: usize = 64;
    let c = "busy";
    let customer = cid(c);
    // Concurrent enrolments of a new member: the lock holds before the row exists.
    let enrolment = enrol();
    let results = futures::future::join_all(
        (0..8).map(|_| store.mutate_member(P, &customer, now(), &enrolment)),
    )
    .await;
    let mut enrolled = 0;
    for r in results {
        match r.expect("concurrent enrolment") {
            MutateOutcome::Applied { .. } => enrolled += 1,
            MutateOutcome::Refused(reason) => {
                assert_eq!(reason, Refusal::Internal("already a member".into()))
            }
            MutateOutcome::OutOfStock => panic!("no stock was taken"),
        }
    }
    assert_eq!(enrolled, 1);

    // 10·K points in lots of different expiries, then CALLS debits of 10 at once.
    for o in [
        credit(10 * (K - 13), 0, Some(30)),
        credit(100, 0, None),
        credit(30, 0, Some(10)),
    ] {
        applied(mutate(store, P, c, now(), &o).await);
    }
    let spend = debit(10);
    let results = futures::future::join_all(
        (0..CALLS).map(|_| store.mutate_member(P, &customer, now(), &spend)),
    )
    .await;
    let mut applied_count = 0;
    let mut refused = 0;
    for r in results {
        match r.expect("concurrent mutate_member") {
            MutateOutcome::Applied { .. } => applied_count += 1,
            MutateOutcome::Refused(_) => refused += 1,
            MutateOutcome::OutOfStock => panic!("no stock was taken"),
        }
    }
    assert_eq!((applied_count, refused), (K as usize, CALLS - K as usize));
    let m = member(store, P, c).await.expect("member");
    assert_eq!(m.wallet.balances(now(), 0).available, 0);
    assert!(m.wallet.lots.iter().all(|l| l.remaining == 0));
    let entries = all_entries(store, P, c).await;
    assert_eq!(entries.len(), 3 + K as usize);
    let ids: Vec<i64> = entries.iter().map(|e| e.entry_id).collect();
    assert_eq!(ids, (1..=3 + K).rev().collect::<Vec<_>>());
    assert_eq!(entries.iter().map(|e| e.amount).sum::<Points>(), 0);
    m.wallet.check(&entries).expect("ledger invariant");
}
