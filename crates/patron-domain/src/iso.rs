//! ISO reference data: currency codes (ISO 4217) and country codes (ISO 3166-1 alpha-2).
//!
//! The tables are plain sorted constants so that lookups are a binary search with
//! no allocation and no dependencies beyond `std`.
//!
//! # Currencies (ISO 4217)
//!
//! Every alphabetic code in ISO 4217 List One that is in force and has a defined
//! number of minor-unit digits, including the fund codes that have one (BOV, CHE,
//! CHW, CLF, COU, MXV, USN, UYI, UYW). Codes whose minor unit is "N.A." are left
//! out: precious metals (XAU, XAG, XPT, XPD), XDR, the bond-market units
//! (XBA–XBD), XSU, XUA, the testing code XTS and XXX.
//!
//! Withdrawn codes are left out too: HRK (replaced by EUR, 2023), SLL (by SLE),
//! ZWL (by ZWG, 2024), ANG (by XCG, 2025) and BGN (replaced by EUR on
//! 2026-01-01). Recent additions VED, SLE, ZWG and XCG are in.
//!
//! # Countries (ISO 3166-1 alpha-2)
//!
//! The 249 officially assigned alpha-2 codes. Exceptionally, transitionally or
//! indeterminately reserved codes (e.g. `EU`, `UK`, `XK`) and user-assigned codes
//! (`AA`, `QM`–`QZ`, `XA`–`XZ`, `ZZ`) are not in the table.

/// ISO 4217 alphabetic codes with their number of minor-unit digits, sorted
/// strictly ascending by code (required by [`currency_minor_digits`]).
#[rustfmt::skip] // Eight entries a line keeps the table readable.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("AOA", 2), ("ARS", 2), ("AUD", 2), ("AWG", 2),
    ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BHD", 3), ("BIF", 0), ("BMD", 2), ("BND", 2),
    ("BOB", 2), ("BOV", 2), ("BRL", 2), ("BSD", 2), ("BTN", 2), ("BWP", 2), ("BYN", 2), ("BZD", 2),
    ("CAD", 2), ("CDF", 2), ("CHE", 2), ("CHF", 2), ("CHW", 2), ("CLF", 4), ("CLP", 0), ("CNY", 2),
    ("COP", 2), ("COU", 2), ("CRC", 2), ("CUC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2), ("DJF", 0),
    ("DKK", 2), ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2), ("EUR", 2), ("FJD", 2),
    ("FKP", 2), ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2), ("GMD", 2), ("GNF", 0), ("GTQ", 2),
    ("GYD", 2), ("HKD", 2), ("HNL", 2), ("HTG", 2), ("HUF", 2), ("IDR", 2), ("ILS", 2), ("INR", 2),
    ("IQD", 3), ("IRR", 2), ("ISK", 0), ("JMD", 2), ("JOD", 3), ("JPY", 0), ("KES", 2), ("KGS", 2),
    ("KHR", 2), ("KMF", 0), ("KPW", 2), ("KRW", 0), ("KWD", 3), ("KYD", 2), ("KZT", 2), ("LAK", 2),
    ("LBP", 2), ("LKR", 2), ("LRD", 2), ("LSL", 2), ("LYD", 3), ("MAD", 2), ("MDL", 2), ("MGA", 2),
    ("MKD", 2), ("MMK", 2), ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2), ("MWK", 2),
    ("MXN", 2), ("MXV", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2), ("NIO", 2), ("NOK", 2),
    ("NPR", 2), ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2), ("PHP", 2), ("PKR", 2),
    ("PLN", 2), ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2), ("RUB", 2), ("RWF", 0), ("SAR", 2),
    ("SBD", 2), ("SCR", 2), ("SDG", 2), ("SEK", 2), ("SGD", 2), ("SHP", 2), ("SLE", 2), ("SOS", 2),
    ("SRD", 2), ("SSP", 2), ("STN", 2), ("SVC", 2), ("SYP", 2), ("SZL", 2), ("THB", 2), ("TJS", 2),
    ("TMT", 2), ("TND", 3), ("TOP", 2), ("TRY", 2), ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2),
    ("UGX", 0), ("USD", 2), ("USN", 2), ("UYI", 0), ("UYU", 2), ("UYW", 4), ("UZS", 2), ("VED", 2),
    ("VES", 2), ("VND", 0), ("VUV", 0), ("WST", 2), ("XAF", 0), ("XCD", 2), ("XCG", 2), ("XOF", 0),
    ("XPF", 0), ("YER", 2), ("ZAR", 2), ("ZMW", 2), ("ZWG", 2),
];

/// ISO 3166-1 alpha-2 officially assigned codes, sorted strictly ascending
/// (required by [`is_country_code`]).
const COUNTRIES: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// Returns the number of minor-unit digits (digits after the decimal point) of an
/// active ISO 4217 currency, e.g. `Some(2)` for `"USD"`, `Some(0)` for `"JPY"`,
/// `Some(3)` for `"KWD"`, `Some(4)` for `"CLF"`.
///
/// `code` must be exactly three upper-case ASCII letters (`"USD"`); lower- or
/// mixed-case input, surrounding whitespace, other lengths, withdrawn codes and
/// codes without a defined minor unit (`"XAU"`, `"XDR"`, `"XXX"`, ...) give `None`.
pub fn currency_minor_digits(code: &str) -> Option<u8> {
    let bytes = code.as_bytes();
    if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    CURRENCIES
        .binary_search_by(|&(c, _)| c.cmp(code))
        .ok()
        .and_then(|i| CURRENCIES.get(i))
        .map(|&(_, digits)| digits)
}

/// Returns `true` if `code` is an officially assigned ISO 3166-1 alpha-2 country
/// code, e.g. `"DE"`, `"US"`, `"JP"`.
///
/// Only an exact match counts: the code must be two upper-case ASCII letters, so
/// `"de"`, `" DE"`, `"DEU"` and `""` give `false`, as do reserved and
/// user-assigned codes such as `"EU"`, `"UK"`, `"XK"` and `"XX"`.
pub fn is_country_code(code: &str) -> bool {
    let bytes = code.as_bytes();
    bytes.len() == 2
        && bytes.iter().all(u8::is_ascii_uppercase)
        && COUNTRIES.binary_search(&code).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_strictly_sorted() {
        for pair in CURRENCIES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} !< {}", pair[0].0, pair[1].0);
        }
    }

    #[test]
    fn countries_strictly_sorted() {
        for pair in COUNTRIES.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn table_counts() {
        assert_eq!(CURRENCIES.len(), 165);
        assert_eq!(COUNTRIES.len(), 249);
    }

    #[test]
    fn table_entries_well_formed() {
        for &(code, digits) in CURRENCIES {
            assert_eq!(code.len(), 3, "{code}");
            assert!(code.bytes().all(|b| b.is_ascii_uppercase()), "{code}");
            assert!(matches!(digits, 0 | 2 | 3 | 4), "{code} {digits}");
            assert_eq!(currency_minor_digits(code), Some(digits), "{code}");
        }
        for &code in COUNTRIES {
            assert_eq!(code.len(), 2, "{code}");
            assert!(code.bytes().all(|b| b.is_ascii_uppercase()), "{code}");
            assert!(is_country_code(code), "{code}");
        }
    }

    #[test]
    fn known_currencies() {
        assert_eq!(currency_minor_digits("USD"), Some(2));
        assert_eq!(currency_minor_digits("EUR"), Some(2));
        assert_eq!(currency_minor_digits("JPY"), Some(0));
        assert_eq!(currency_minor_digits("KRW"), Some(0));
        assert_eq!(currency_minor_digits("KWD"), Some(3));
        assert_eq!(currency_minor_digits("BHD"), Some(3));
        assert_eq!(currency_minor_digits("CLF"), Some(4));
        assert_eq!(currency_minor_digits("UYW"), Some(4));
        // First and last entries, to exercise the ends of the binary search.
        assert_eq!(currency_minor_digits("AED"), Some(2));
        assert_eq!(currency_minor_digits("ZWG"), Some(2));
    }

    #[test]
    fn rejected_currencies() {
        assert_eq!(currency_minor_digits("usd"), None);
        assert_eq!(currency_minor_digits("Usd"), None);
        assert_eq!(currency_minor_digits("US"), None);
        assert_eq!(currency_minor_digits("USDX"), None);
        assert_eq!(currency_minor_digits(" USD"), None);
        assert_eq!(currency_minor_digits(""), None);
        assert_eq!(currency_minor_digits("ÜSD"), None);
        assert_eq!(currency_minor_digits("XXX"), None);
        assert_eq!(currency_minor_digits("XTS"), None);
        assert_eq!(currency_minor_digits("XAU"), None);
        assert_eq!(currency_minor_digits("XAG"), None);
        assert_eq!(currency_minor_digits("XPT"), None);
        assert_eq!(currency_minor_digits("XPD"), None);
        assert_eq!(currency_minor_digits("XDR"), None);
        assert_eq!(currency_minor_digits("XUA"), None);
        assert_eq!(currency_minor_digits("XSU"), None);
        assert_eq!(currency_minor_digits("HRK"), None);
        assert_eq!(currency_minor_digits("AAA"), None);
        assert_eq!(currency_minor_digits("ZZZ"), None);
    }

    #[test]
    fn known_countries() {
        assert!(is_country_code("DE"));
        assert!(is_country_code("US"));
        assert!(is_country_code("JP"));
        assert!(is_country_code("AD"));
        assert!(is_country_code("ZW"));
    }

    #[test]
    fn rejected_countries() {
        assert!(!is_country_code("de"));
        assert!(!is_country_code("De"));
        assert!(!is_country_code("XX"));
        assert!(!is_country_code("EU"));
        assert!(!is_country_code("UK"));
        assert!(!is_country_code(""));
        assert!(!is_country_code("D"));
        assert!(!is_country_code("DEU"));
        assert!(!is_country_code(" DE"));
        assert!(!is_country_code("AA"));
        assert!(!is_country_code("ZZ"));
    }
}
