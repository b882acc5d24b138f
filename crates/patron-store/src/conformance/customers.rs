//! Customers: profiles written and read back, paged lists, and customers created by their first
//! event.

use patron_domain::{Customer, CustomerId, CustomerProfile, Timestamp};

use super::{at, cid, now, profile_customer, purchase};
use crate::Store;

pub async fn upsert_and_get_round_trip(store: &impl Store) {
    let c = profile_customer("alice", "DE");
    let first = store
        .upsert_customers(std::slice::from_ref(&c), now())
        .await
        .expect("upsert");
    assert_eq!(first.len(), 1);
    assert!(first[0].created);
    assert_eq!(first[0].record.customer, c);
    let got = store
        .get_customer(&c.customer_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.customer, c);
    assert_eq!(got.create_time, now());
    assert_eq!(got.update_time, Some(now()));

    // Replacing the profile keeps create_time and moves update_time.
    let later = Timestamp::from_micros(now().as_micros() + 5_000_000);
    let mut changed = profile_customer("alice", "FR");
    changed.profile.attributes.clear();
    changed.profile.birth_date = None;
    let second = store
        .upsert_customers(std::slice::from_ref(&changed), later)
        .await
        .expect("upsert");
    assert!(!second[0].created);
    let got = store
        .get_customer(&c.customer_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.customer, changed);
    assert_eq!(got.create_time, now());
    assert_eq!(got.update_time, Some(later));
    assert!(
        store
            .get_customer(&cid("nobody"))
            .await
            .expect("get")
            .is_none()
    );
}
pub async fn list_customers_pages_in_id_order(store: &impl Store) {
    let customers: Vec<Customer> = (0..25)
        .rev()
        .map(|i| profile_customer(&format!("c{i:03}"), "US"))
        .collect();
    store
        .upsert_customers(&customers, now())
        .await
        .expect("upsert");
    let mut seen = Vec::new();
    let mut after: Option<CustomerId> = None;
    loop {
        let page = store
            .list_customers(after.as_ref(), 10)
            .await
            .expect("list");
        assert!(page.len() <= 10);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.customer.customer_id.clone());
        seen.extend(
            page.into_iter()
                .map(|r| r.customer.customer_id.into_string()),
        );
    }
    let want: Vec<String> = (0..25).map(|i| format!("c{i:03}")).collect();
    assert_eq!(seen, want);
}
pub async fn unknown_customers_are_created_by_events(store: &impl Store) {
    store
        .upsert_customers(&[profile_customer("known", "US")], now())
        .await
        .expect("upsert");
    let out = store
        .record_events(
            &[
                purchase("known", "k1", at(10, 0), "o1", 1),
                purchase("new1", "n1", at(10, 0), "o1", 1),
                purchase("new2", "n2", at(10, 0), "o1", 1),
                purchase("new2", "n3", at(11, 0), "o2", 1),
            ],
            now(),
        )
        .await
        .expect("record");
    assert_eq!(out.created_customers, 2);
    let new = store
        .get_customer(&cid("new2"))
        .await
        .expect("get")
        .expect("created");
    assert_eq!(new.customer.profile, CustomerProfile::default());
    assert_eq!(new.update_time, None);
    assert_eq!(new.create_time, now());
    // An upsert of an event-created customer keeps its summary.
    store
        .upsert_customers(&[profile_customer("new2", "JP")], now())
        .await
        .expect("upsert");
    let new = store
        .get_customer(&cid("new2"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(new.summary.purchases.purchase_days, 2);
    assert_eq!(new.customer.profile.country.as_deref(), Some("JP"));
}
