//! Customers: upsert, get, list with paging, delete.

use patron_proto::common::v1 as common;
use patron_proto::customers::v1 as pb;
use tonic::Code;

use crate::support::{Backend, assert_status, purchase, spawn_app, ts};

fn customer(id: &str) -> pb::Customer {
    let mut attributes = std::collections::HashMap::new();
    attributes.insert(
        "plan".to_owned(),
        common::AttributeValue {
            kind: Some(common::attribute_value::Kind::StringValue("gold".into())),
        },
    );
    attributes.insert(
        "anniversary".to_owned(),
        common::AttributeValue {
            kind: Some(common::attribute_value::Kind::DateValue(common::Date {
                year: 2020,
                month: 2,
                day: 29,
            })),
        },
    );
    pb::Customer {
        customer_id: id.into(),
        birth_date: Some(common::Date {
            year: 1985,
            month: 7,
            day: 14,
        }),
        gender: pb::Gender::Male.into(),
        country: "NL".into(),
        signed_up_at: Some(ts(-400, 5)),
        attributes,
        ..Default::default()
    }
}

async fn upsert_get_and_replace(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.customers.clone();
    let out = client
        .upsert_customers(pb::UpsertCustomersRequest {
            customers: vec![customer("ann"), customer("bea")],
        })
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!(out.created_count, 2);
    assert_eq!(out.customers.len(), 2);
    let got = app.customer("ann").await.expect("get");
    assert_eq!(got.country, "NL");
    assert_eq!(
        got.birth_date,
        Some(common::Date {
            year: 1985,
            month: 7,
            day: 14
        })
    );
    assert_eq!(got.gender, i32::from(pb::Gender::Male));
    assert_eq!(got.attributes, customer("ann").attributes);
    assert_eq!(got.signed_up_at, Some(ts(-400, 5)));
    assert!(got.create_time.is_some());
    assert_eq!(got.summary.as_ref().map(|s| s.event_count), Some(0));

    // Upserting again replaces the profile and creates nothing.
    let mut changed = customer("ann");
    changed.country = "BE".into();
    changed.attributes.clear();
    let out = client
        .upsert_customers(pb::UpsertCustomersRequest {
            customers: vec![changed],
        })
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!(out.created_count, 0);
    let got = app.customer("ann").await.expect("get");
    assert_eq!(got.country, "BE");
    assert!(got.attributes.is_empty());

    let missing = app.customer("nobody").await.expect_err("not found");
    assert_status(&missing, Code::NotFound, "CUSTOMER_NOT_FOUND", None);
}

async fn list_pages_through_everyone(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.customers.clone();
    let customers: Vec<pb::Customer> = (0..57).map(|i| customer(&format!("cust-{i:03}"))).collect();
    client
        .upsert_customers(pb::UpsertCustomersRequest { customers })
        .await
        .expect("upsert");
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_customers(pb::ListCustomersRequest {
                page_size: 10,
                page_token: token,
            })
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        assert!(page.customers.len() <= 10);
        seen.extend(page.customers.into_iter().map(|c| c.customer_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 6);
    let want: Vec<String> = (0..57).map(|i| format!("cust-{i:03}")).collect();
    assert_eq!(seen, want);
    // page_size 0 means the default (100): everyone on one page.
    let page = client
        .list_customers(pb::ListCustomersRequest {
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.customers.len(), 57);
    assert!(page.next_page_token.is_empty());
}

async fn delete_erases_profile_and_events(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.customers.clone();
    client
        .upsert_customers(pb::UpsertCustomersRequest {
            customers: vec![customer("gone"), customer("kept")],
        })
        .await
        .expect("upsert");
    app.record(vec![
        purchase("gone", "e1", ts(1, 0), "o1", 100),
        purchase("gone", "e2", ts(2, 0), "o2", 100),
        purchase("kept", "e1", ts(1, 0), "o1", 100),
    ])
    .await
    .expect("record");
    let out = client
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: "gone".into(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(out.deleted_event_count, 2);
    assert_status(
        &app.customer("gone").await.expect_err("erased"),
        Code::NotFound,
        "CUSTOMER_NOT_FOUND",
        None,
    );
    let err = client
        .list_customer_events(pb::ListCustomerEventsRequest {
            customer_id: "gone".into(),
            ..Default::default()
        })
        .await
        .expect_err("erased");
    assert_status(&err, Code::NotFound, "CUSTOMER_NOT_FOUND", None);
    let err = client
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: "gone".into(),
        })
        .await
        .expect_err("already gone");
    assert_status(&err, Code::NotFound, "CUSTOMER_NOT_FOUND", None);
    assert_eq!(app.all_events("kept").await.len(), 1);
    assert_eq!(app.all_customer_ids().await, vec!["kept".to_owned()]);
}

crate::both_backends!(
    upsert_get_and_replace,
    list_pages_through_everyone,
    delete_erases_profile_and_events
);

// A stored value no write could have stored (a gender the schema does not know, a birth date
// past year 9999) fails loudly with INTERNAL, never read as "unspecified" or "no birth date".
#[tokio::test]
async fn corrupt_stored_values_fail_loudly() {
    use sqlx::{Connection, Executor};
    let (url, guard) = crate::support::fresh_database(Backend::Sqlite).await;
    let app = crate::support::spawn_app_on(&url, crate::support::DbGuard::Borrowed, |_| {}).await;
    let mut client = app.customers.clone();
    client
        .upsert_customers(pb::UpsertCustomersRequest {
            customers: vec![customer("ann"), customer("bea"), customer("cid")],
        })
        .await
        .expect("upsert");
    let mut raw = sqlx::SqliteConnection::connect(&url).await.expect("raw");
    for sql in [
        "UPDATE customers SET gender = 'femal' WHERE customer_id = 'ann'",
        "UPDATE customers SET birth_date = 5000000 WHERE customer_id = 'bea'",
    ] {
        raw.execute(sql).await.expect("corrupt");
    }
    drop(raw);
    for id in ["ann", "bea"] {
        let status = app.customer(id).await.expect_err("corrupt row");
        assert_eq!(status.code(), Code::Internal, "{id}: {status:?}");
        assert!(
            !status.message().contains("femal") && !status.message().contains("5000000"),
            "no stored value reaches the client: {}",
            status.message()
        );
    }
    assert_eq!(app.customer("cid").await.expect("intact").country, "NL");
    drop(app);
    drop(guard);
}
