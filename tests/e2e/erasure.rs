//! DeleteCustomer with loyalty history, over real gRPC: the customer is gone from every read, the
//! books they leave (redemptions and the stock they took) stay, and the same id starts over with
//! no history.

use patron_proto::customers::v1 as cpb;
use patron_proto::loyalty::v1 as pb;
use patron_proto::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{Backend, TestApp, assert_status, purchase, spawn_app};

fn loyalty(app: &TestApp) -> LoyaltyServiceClient<Channel> {
    LoyaltyServiceClient::new(app.channel.clone())
}

/// An instant `days` days ago (and a minute), as the server's clock sees it.
fn ago(days: i64) -> prost_types::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    prost_types::Timestamp {
        seconds: now - days * 86_400 - 60,
        nanos: 0,
    }
}

async fn stock(app: &TestApp, reward: &str) -> Option<i64> {
    loyalty(app)
        .get_reward(pb::GetRewardRequest {
            reward_id: reward.into(),
        })
        .await
        .expect("get reward")
        .into_inner()
        .reward
        .expect("reward")
        .stock
}

async fn membership(
    app: &TestApp,
    program: &str,
    customer: &str,
) -> Result<pb::Membership, tonic::Status> {
    loyalty(app)
        .get_membership(pb::GetMembershipRequest {
            program_id: program.into(),
            customer_id: customer.into(),
        })
        .await
        .map(|r| r.into_inner().membership.expect("membership"))
}

async fn balances(app: &TestApp, program: &str, customer: &str) -> pb::Balances {
    membership(app, program, customer)
        .await
        .expect("membership")
        .balances
        .expect("balances")
}

/// Every ledger entry of a member, newest first.
async fn ledger(app: &TestApp, program: &str, customer: &str) -> Vec<pb::LedgerEntry> {
    let mut entries = Vec::new();
    let mut token = String::new();
    loop {
        let page = loyalty(app)
            .list_ledger_entries(pb::ListLedgerEntriesRequest {
                program_id: program.into(),
                customer_id: customer.into(),
                page_size: 100,
                page_token: token,
            })
            .await
            .expect("ledger")
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            return entries;
        }
        token = page.next_page_token;
    }
}

async fn redeem(app: &TestApp, customer: &str, request: &str) -> pb::RedeemRewardResponse {
    loyalty(app)
        .redeem_reward(pb::RedeemRewardRequest {
            program_id: "rewards".into(),
            customer_id: customer.into(),
            reward_id: "mug".into(),
            request_id: request.into(),
        })
        .await
        .expect("redeem")
        .into_inner()
}

async fn erasure_keeps_the_books_and_frees_the_id(backend: Backend) {
    let app = spawn_app(backend).await;
    loyalty(&app)
        .create_program(pb::CreateProgramRequest {
            program: Some(crate::loyalty::program("rewards")),
        })
        .await
        .expect("create program");
    loyalty(&app)
        .create_reward(pb::CreateRewardRequest {
            reward: Some(pb::Reward {
                reward_id: "mug".into(),
                program_id: "rewards".into(),
                display_name: "Mug".into(),
                cost: 40,
                stock: Some(10),
                ..Default::default()
            }),
        })
        .await
        .expect("create reward");

    // Two customers earn (a purchase: 100 bonus points at once, the rest pending) and redeem.
    let history = |c: &str| {
        vec![
            purchase(c, "p1", ago(2), "o1", 12_000),
            cpb::Event {
                event_id: "rv1".into(),
                customer_id: c.into(),
                occurred_at: Some(ago(1)),
                kind: Some(cpb::event::Kind::Custom(cpb::CustomEvent {
                    name: "review".into(),
                    properties: Default::default(),
                })),
                record_time: None,
            },
        ]
    };
    for c in ["ana", "ben"] {
        app.record(history(c)).await.expect("record");
        redeem(&app, c, &format!("{c}-req-1")).await;
        redeem(&app, c, &format!("{c}-req-2")).await;
    }
    let fresh = balances(&app, "rewards", "ana").await;
    assert_eq!(
        (fresh.available, fresh.pending, fresh.lifetime_redeemed),
        (125 - 80, 120, 80)
    );
    assert_eq!(stock(&app, "mug").await, Some(6));
    let ben = (
        membership(&app, "rewards", "ben").await.expect("ben"),
        ledger(&app, "rewards", "ben").await,
    );

    let erased = app
        .customers
        .clone()
        .delete_customer(cpb::DeleteCustomerRequest {
            customer_id: "ana".into(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(erased.deleted_event_count, 2);

    // Gone from every read, the pseudonym is no customer; the stock taken stays taken.
    let status = app.customer("ana").await.expect_err("erased");
    assert_status(&status, Code::NotFound, "CUSTOMER_NOT_FOUND", None);
    let status = membership(&app, "rewards", "ana")
        .await
        .expect_err("no membership");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(app.all_customer_ids().await, ["ben"]);
    let status = app
        .customers
        .clone()
        .list_customer_events(cpb::ListCustomerEventsRequest {
            customer_id: "ana".into(),
            page_size: 10,
            page_token: String::new(),
            kinds: vec![],
        })
        .await
        .expect_err("no events");
    assert_status(&status, Code::NotFound, "CUSTOMER_NOT_FOUND", None);
    assert_eq!(stock(&app, "mug").await, Some(6));
    // The other customer is untouched.
    assert_eq!(
        (
            membership(&app, "rewards", "ben").await.expect("ben"),
            ledger(&app, "rewards", "ben").await,
        ),
        ben
    );

    // The same id, recorded again, is a new customer: its events earn again from zero, as the
    // first time, and its redemptions count from zero.
    app.record(history("ana")).await.expect("record again");
    let again = app.customer("ana").await.expect("a new customer");
    assert_eq!(
        again.summary.as_ref().map(|s| s.event_count),
        Some(2),
        "{again:?}"
    );
    let b = balances(&app, "rewards", "ana").await;
    assert_eq!(
        (
            b.available,
            b.pending,
            b.lifetime_earned,
            b.lifetime_redeemed
        ),
        (125, 120, 245, 0)
    );
    assert_eq!(ledger(&app, "rewards", "ana").await.len(), 3);
    // An old request id is new for the new customer.
    let r = redeem(&app, "ana", "ana-req-1").await;
    assert!(!r.replayed);
    assert_eq!(stock(&app, "mug").await, Some(5));
}

crate::both_backends!(erasure_keeps_the_books_and_frees_the_id);
