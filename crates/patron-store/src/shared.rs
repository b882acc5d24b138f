//! Profile values shared between the summary rows a process reads.
//!
//! Every replica holds every customer's summary in memory, and most customers repeat the same
//! few countries and attribute maps (a plan, a channel, a newsletter flag): one `Arc` per
//! distinct value instead of one allocation per customer saves about 700 bytes per customer with
//! three attributes. Attribute maps are recognised by their stored JSON text (written from an
//! ordered map, so equal maps have equal text), which also skips parsing a map seen before.
//!
//! The tables are bounded: once [`MAX_ATTRIBUTE_MAPS`] distinct maps are kept, a map not seen
//! before is parsed into its own allocation and not remembered, so customers with unique
//! attributes cost what they did and the tables cannot grow with the customer count.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

use crate::{StoreResult, decode_attributes};
use patron_domain::Attributes;

/// Distinct attribute maps kept for sharing.
pub const MAX_ATTRIBUTE_MAPS: usize = 4096;
/// Distinct countries kept for sharing (ISO 3166-1 alpha-2 has fewer than 700 codes).
const MAX_COUNTRIES: usize = 1024;

/// The sharing tables; the process has one ([`country`], [`attributes`]).
#[derive(Default)]
struct Tables {
    countries: HashSet<Arc<str>>,
    attributes: HashMap<Box<str>, Arc<Attributes>>,
}

impl Tables {
    fn country(&mut self, code: &str, bound: usize) -> Arc<str> {
        if let Some(shared) = self.countries.get(code) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(code);
        if self.countries.len() < bound {
            self.countries.insert(Arc::clone(&shared));
        }
        shared
    }

    fn remember(&mut self, json: &str, parsed: &Arc<Attributes>, bound: usize) {
        if self.attributes.len() < bound {
            self.attributes
                .entry(json.into())
                .or_insert_with(|| Arc::clone(parsed));
        }
    }
}

static TABLES: LazyLock<Mutex<Tables>> = LazyLock::new(Mutex::default);
static NO_ATTRIBUTES: LazyLock<Arc<Attributes>> = LazyLock::new(Arc::default);

/// The shared copy of a country code.
pub fn country(code: &str) -> Arc<str> {
    // The tables hold no invariant a panic could break half-way.
    TABLES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .country(code, MAX_COUNTRIES)
}

/// The attribute map stored as `json`, shared with every other row whose map has the same text.
pub fn attributes(json: &str) -> StoreResult<Arc<Attributes>> {
    shared_attributes(&TABLES, json, MAX_ATTRIBUTE_MAPS)
}

fn shared_attributes(
    tables: &Mutex<Tables>,
    json: &str,
    bound: usize,
) -> StoreResult<Arc<Attributes>> {
    let lock = || tables.lock().unwrap_or_else(|p| p.into_inner());
    // Most customers have no attributes: no lock, no parse.
    if json == "{}" {
        return Ok(Arc::clone(&NO_ATTRIBUTES));
    }
    if let Some(shared) = lock().attributes.get(json) {
        return Ok(Arc::clone(shared));
    }
    // Parsed outside the lock; a racing reader of the same text may keep its own copy.
    let parsed = Arc::new(decode_attributes(json)?);
    lock().remember(json, &parsed, bound);
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_domain::{AttributeKey, AttributeValue};

    /// The stored JSON of a map of `(key, value)`.
    fn json(entries: &[(&str, AttributeValue)]) -> String {
        let map: Attributes = entries
            .iter()
            .map(|(k, v)| (AttributeKey::parse(*k).expect("key"), v.clone()))
            .collect();
        crate::encode_attributes(&map).expect("encode")
    }

    #[test]
    fn equal_values_share_one_allocation() {
        let gold = json(&[
            ("plan", AttributeValue::String("gold".into())),
            ("trial", AttributeValue::Bool(false)),
        ]);
        let a = attributes(&gold).expect("parses");
        let b = attributes(&gold).expect("parses");
        assert!(Arc::ptr_eq(&a, &b));
        let silver = json(&[
            ("plan", AttributeValue::String("silver".into())),
            ("trial", AttributeValue::Bool(false)),
        ]);
        let other = attributes(&silver).expect("parses");
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(a.len(), 2);
        assert_ne!(a, other);
        assert!(Arc::ptr_eq(
            &attributes("{}").expect("empty"),
            &attributes("{}").expect("empty")
        ));
        assert!(Arc::ptr_eq(&country("DE"), &country("DE")));
        assert_eq!(&*country("FR"), "FR");
    }

    #[test]
    fn a_bad_map_is_an_error_and_is_not_kept() {
        let own = Mutex::default();
        assert!(shared_attributes(&own, "{not json", 8).is_err());
        assert!(shared_attributes(&own, "{not json", 8).is_err());
        assert!(own.lock().expect("lock").attributes.is_empty());
    }

    #[test]
    fn the_tables_stop_growing_at_their_bound() {
        let own = Mutex::default();
        let json = |i: usize| json(&[("n", AttributeValue::Int(i as i64))]);
        for i in 0..12 {
            let map = shared_attributes(&own, &json(i), 8).expect("parses");
            assert_eq!(map.len(), 1);
        }
        assert_eq!(own.lock().expect("lock").attributes.len(), 8);
        // Kept maps are shared; a map past the bound reads back right, in its own allocation.
        let kept = shared_attributes(&own, &json(3), 8).expect("parses");
        assert!(Arc::ptr_eq(
            &kept,
            &shared_attributes(&own, &json(3), 8).expect("parses")
        ));
        let late = shared_attributes(&own, &json(11), 8).expect("parses");
        let again = shared_attributes(&own, &json(11), 8).expect("parses");
        assert!(!Arc::ptr_eq(&late, &again));
        assert_eq!(late, again);
        assert_eq!(late.values().next(), Some(&AttributeValue::Int(11)));
        let mut countries = Tables::default();
        let de = countries.country("DE", 1);
        assert!(Arc::ptr_eq(&de, &countries.country("DE", 1)));
        assert!(!Arc::ptr_eq(
            &countries.country("FR", 1),
            &countries.country("FR", 1)
        ));
    }
}
