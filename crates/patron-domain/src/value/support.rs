//! Support burden: contacts per 90 days of tenure, first-contact resolution and a level (rules in
//! the module docs of [`crate::value`]).

use serde::{Deserialize, Serialize};

/// `High` needs more than this many contacts per 90 days (or a low FCR rate).
pub const SUPPORT_HIGH_CONTACTS_PER_90_DAYS: f64 = 2.0;
/// `High` needs an FCR rate below this (or a high contact rate).
pub const SUPPORT_HIGH_FCR_BELOW: f64 = 0.5;
/// `High` needs at least this many contacts.
pub const SUPPORT_HIGH_MIN_CONTACTS: i64 = 3;
/// `Medium` needs more than this many contacts per 90 days (or a low FCR rate).
pub const SUPPORT_MEDIUM_CONTACTS_PER_90_DAYS: f64 = 1.0;
/// `Medium` needs an FCR rate below this (or a high contact rate).
pub const SUPPORT_MEDIUM_FCR_BELOW: f64 = 0.75;
/// `Medium` needs at least this many contacts.
pub const SUPPORT_MEDIUM_MIN_CONTACTS: i64 = 2;

/// How much support a customer needs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SupportLevel {
    /// Never contacted support.
    #[default]
    None,
    /// Some contact, no sign of trouble.
    Low,
    /// Regular contact or first contact often not enough.
    Medium,
    /// Frequent contact or mostly not resolved on first contact.
    High,
}

impl SupportLevel {
    /// Lower-case name: `none`, `low`, `medium`, `high`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// A customer's support burden.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SupportBurden {
    /// Support contacts (negative counts as 0).
    pub contacts: i64,
    /// Contacts resolved on first contact, 0 to `contacts`.
    pub first_contact_resolved: i64,
    /// `contacts / max(tenure_days, 1) × 90`.
    pub contacts_per_90_days: f64,
    /// `first_contact_resolved / contacts`, 0–1; `None` without contacts.
    pub first_contact_resolution_rate: Option<f64>,
    /// The level from the documented thresholds.
    pub level: SupportLevel,
}

/// The support burden of `contacts` support interactions, `first_contact_resolved` of them
/// resolved on first contact, over a tenure of `tenure_days` (under 1 day or NaN counts as 1).
pub fn support_burden(
    contacts: i64,
    first_contact_resolved: i64,
    tenure_days: f64,
) -> SupportBurden {
    let contacts = contacts.max(0);
    let resolved = first_contact_resolved.clamp(0, contacts);
    let tenure = if tenure_days.is_nan() || tenure_days < 1.0 {
        1.0
    } else {
        tenure_days
    };
    let rate = contacts as f64 / tenure * 90.0;
    let fcr = (contacts > 0).then(|| resolved as f64 / contacts as f64);
    let fcr_below = |cut: f64| fcr.is_some_and(|f| f < cut);
    let level = if contacts == 0 {
        SupportLevel::None
    } else if contacts >= SUPPORT_HIGH_MIN_CONTACTS
        && (rate > SUPPORT_HIGH_CONTACTS_PER_90_DAYS || fcr_below(SUPPORT_HIGH_FCR_BELOW))
    {
        SupportLevel::High
    } else if contacts >= SUPPORT_MEDIUM_MIN_CONTACTS
        && (rate > SUPPORT_MEDIUM_CONTACTS_PER_90_DAYS || fcr_below(SUPPORT_MEDIUM_FCR_BELOW))
    {
        SupportLevel::Medium
    } else {
        SupportLevel::Low
    };
    SupportBurden {
        contacts,
        first_contact_resolved: resolved,
        contacts_per_90_days: rate,
        first_contact_resolution_rate: fcr,
        level,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SupportLevel as L;

    #[test]
    fn support_levels_at_thresholds() {
        // (contacts, resolved, tenure days) → level
        let cases: &[(i64, i64, f64, SupportLevel)] = &[
            (0, 0, 100.0, L::None),
            (0, 5, 0.0, L::None),
            (-3, 0, 10.0, L::None),
            // One contact is always Low, even on day one (90 per 90 days).
            (1, 0, 0.0, L::Low),
            (1, 0, 1.0, L::Low),
            // Two contacts: Medium above 1 per 90 days (tenure < 180) or FCR < 75 %.
            (2, 2, 180.0, L::Low),     // exactly 1.0 per 90 days: not above
            (2, 2, 179.0, L::Medium),  // 1.006 per 90 days
            (2, 1, 1000.0, L::Medium), // FCR 50 %
            (2, 2, 10.0, L::Medium),   // 18 per 90 days, but two contacts are never High
            // Three contacts: High above 2 per 90 days (tenure < 135) or FCR < 50 %.
            (3, 3, 135.0, L::Medium), // exactly 2.0 per 90 days: Medium (2 > 1)
            (3, 3, 134.0, L::High),
            (3, 3, 270.0, L::Low),     // exactly 1.0 per 90 days, FCR 100 %
            (3, 2, 1000.0, L::Medium), // FCR 66.7 % < 75 %
            (3, 1, 1000.0, L::High),   // FCR 33 % < 50 %
            (4, 2, 1000.0, L::Medium), // FCR exactly 50 %: not below
            (4, 3, 1000.0, L::Low),    // FCR exactly 75 %: not below
            // Odd inputs.
            (3, 9, f64::NAN, L::High), // tenure NaN → 1 day; resolved clamped to 3
            (3, 3, f64::INFINITY, L::Low),
            (3, -1, 1000.0, L::High),
        ];
        for &(contacts, resolved, tenure, want) in cases {
            let b = support_burden(contacts, resolved, tenure);
            assert_eq!(b.level, want, "({contacts}, {resolved}, {tenure})");
        }
    }

    #[test]
    fn support_rates() {
        let b = support_burden(5, 2, 45.0);
        assert_eq!(b.contacts_per_90_days, 10.0);
        assert_eq!(b.first_contact_resolution_rate, Some(0.4));
        let b = support_burden(1, 1, 0.25);
        assert_eq!(b.contacts_per_90_days, 90.0);
        assert_eq!(
            support_burden(0, 0, 5.0).first_contact_resolution_rate,
            None
        );
        let b = support_burden(2, 7, 10.0);
        assert_eq!(b.first_contact_resolved, 2);
    }
}
