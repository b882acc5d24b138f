//! BG/NBD and MBG/NBD at the `a, b → ∞` boundary (constant dropout probability
//! `p = a / (a + b)`): predictions against 50-digit `mpmath` values
//! (`tests/fixtures/large_ab_reference.csv`), against the closed-form limit, against simulation,
//! and a fit that runs to the boundary.

use std::path::Path;

use patron_domain::clv::simulate::Rng;
use patron_domain::clv::{
    BgNbdFitOptions, BgNbdModel, BgNbdParams, ClvHorizon, CustomerRfm, GammaGammaModel,
    GammaGammaParams, MbgNbdFitOptions, MbgNbdModel, MbgNbdParams, Periods, TransactionModel,
    Weeks, customer_lifetime_value, fit_bg_nbd, fit_mbg_nbd,
};

fn fixture(name: &str) -> Vec<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture readable");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

fn num(s: &str) -> f64 {
    s.parse().expect("number")
}

fn rel(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1e-300)
}

/// A BG/NBD (`mbg = false`) or MBG/NBD model behind the common trait.
fn model(mbg: bool, r: f64, alpha: f64, a: f64, b: f64) -> Box<dyn TransactionModel<Weeks>> {
    if mbg {
        Box::new(MbgNbdModel::new(
            MbgNbdParams::new(r, alpha, a, b).expect("valid"),
        ))
    } else {
        Box::new(BgNbdModel::new(
            BgNbdParams::new(r, alpha, a, b).expect("valid"),
        ))
    }
}

/// The `a, b → ∞` limit: `P(alive) · (1 - (1 + p t / (α + T))^-(r+x)) / p`, `p = a / (a + b)`.
fn limit(
    m: &dyn TransactionModel<Weeks>,
    r: f64,
    alpha: f64,
    p: f64,
    t: f64,
    c: &CustomerRfm<Weeks>,
) -> f64 {
    let k = r + f64::from(c.frequency());
    let beta = t / (alpha + c.age());
    m.probability_alive(c) * -(-k * (p * beta).ln_1p()).exp_m1() / p
}

#[test]
fn predictions_match_mpmath_from_moderate_to_huge_a_b() {
    let rows = fixture("large_ab_reference.csv");
    assert_eq!(rows.len(), 384);
    let mut worst_alive = 0.0f64;
    let mut worst_expected = 0.0f64;
    for row in &rows {
        let mbg = row[0] == "mbgnbd";
        let (r, alpha, a, b) = (num(&row[1]), num(&row[2]), num(&row[3]), num(&row[4]));
        let m = model(mbg, r, alpha, a, b);
        let c = CustomerRfm::<Weeks>::new(
            row[5].parse().expect("frequency"),
            num(&row[6]),
            num(&row[7]),
            0.0,
        )
        .expect("valid");
        let t = Periods::new(num(&row[8])).expect("ok");
        let p = m.probability_alive(&c);
        let e = m
            .conditional_expected_purchases(t, &c)
            .unwrap_or_else(|err| panic!("{row:?}: {err}"));
        let (dp, de) = (rel(p, num(&row[9])), rel(e, num(&row[10])));
        worst_alive = worst_alive.max(dp);
        worst_expected = worst_expected.max(de);
        assert!(dp < 1e-13, "{row:?}: P(alive) {p} ({dp:e})");
        assert!(de < 1e-10, "{row:?}: E[X(t)] {e} ({de:e})");
    }
    eprintln!(
        "max relative deviation vs mpmath: P(alive) {worst_alive:e}, E[X(t)] {worst_expected:e}"
    );
}

#[test]
fn predictions_tend_to_the_closed_form_limit() {
    let (r, alpha, p) = (0.25, 4.0, 0.2);
    let customers = [
        (0, 0.0, 0.0),
        (0, 0.0, 38.86),
        (2, 30.43, 38.86),
        (100, 38.0, 39.0),
    ];
    for mbg in [false, true] {
        let mut previous = f64::INFINITY;
        let mut s = 2.0;
        while s <= 16.0 {
            let total = 10f64.powf(s);
            let (a, b) = (p * total, (1.0 - p) * total);
            let m = model(mbg, r, alpha, a, b);
            let mut deviation = 0.0f64;
            for &(x, tx, age) in &customers {
                let c = CustomerRfm::<Weeks>::new(x, tx, age, 0.0).expect("valid");
                for t in [0.01, 1.0, 39.0, 520.0] {
                    let e = m
                        .conditional_expected_purchases(Periods::new(t).expect("ok"), &c)
                        .expect("finite");
                    let l = limit(m.as_ref(), r, alpha, a / (a + b), t, &c);
                    deviation = deviation.max(rel(e, l));
                }
            }
            // The limit is approached like 1 / a (the posterior of p narrows); no jump where
            // the evaluation switches method.
            eprintln!("mbg {mbg} a + b = 1e{s}: max |E / limit - 1| = {deviation:e}");
            assert!(deviation < 400.0 / a, "a + b = 1e{s}: {deviation:e}");
            assert!(
                deviation <= previous * 1.01 || deviation < 1e-13,
                "a + b = 1e{s}"
            );
            previous = deviation;
            s += 0.5;
        }
    }
}

/// One customer of the constant-`p` process (the `a, b → ∞` limit): rate `λ ~ Gamma(r, α)`,
/// dropout with probability `p` after each repeat purchase and, for MBG/NBD, also right after
/// the first purchase. Returns `(x, t_x, alive at T, purchases in (T, T + t])`.
fn simulate_constant_p(
    mbg: bool,
    r: f64,
    alpha: f64,
    p: f64,
    age: f64,
    t: f64,
    rng: &mut Rng,
) -> (u32, f64, bool, u32) {
    let rate = rng.gamma(r) / alpha;
    let mut alive = !(mbg && rng.uniform() < p);
    let (mut x, mut recency, mut future) = (0u32, 0.0, 0u32);
    let mut now = 0.0;
    while alive {
        now += rng.exponential(rate);
        if now > age + t {
            break;
        }
        if now <= age {
            x += 1;
            recency = now;
        } else {
            future += 1;
        }
        alive = rng.uniform() >= p;
    }
    // Alive at T: not dropped out at a purchase made by T.
    let alive_at_age = alive || now > age;
    (x, recency, alive_at_age, future)
}

#[test]
fn constant_dropout_predictions_match_simulation() {
    // The fit of the issue: a = 3.3e8, b = 2.6e9, so p = 0.1126; a higher r for more events.
    let (r, alpha, a, b) = (1.5, 4.0, 3.3e8, 2.6e9);
    let p = a / (a + b);
    let (age, t) = (20.0, 30.0);
    let n = 400_000;
    for (mbg, seed) in [(false, 11), (true, 12)] {
        let m = model(mbg, r, alpha, a, b);
        let mut rng = Rng::seed(seed);
        let (mut silent, mut silent_alive, mut silent_future, mut silent_future_sq) =
            (0.0, 0.0, 0.0, 0.0);
        for _ in 0..n {
            let (x, _, alive, future) = simulate_constant_p(mbg, r, alpha, p, age, t, &mut rng);
            if x == 0 {
                let f = f64::from(future);
                silent += 1.0;
                silent_alive += f64::from(u8::from(alive));
                silent_future += f;
                silent_future_sq += f * f;
            }
        }
        let c = CustomerRfm::<Weeks>::new(0, 0.0, age, 0.0).expect("valid");
        // P(alive | x = 0, T): exact in simulation (x = 0 fixes the likelihood).
        let share = silent_alive / silent;
        let want = m.probability_alive(&c);
        let se = (want * (1.0 - want) / silent).sqrt().max(1e-12);
        eprintln!("mbg {mbg}: P(alive | x = 0) simulated {share} vs {want} ({silent} customers)");
        assert!(
            (share - want).abs() <= 4.0 * se + 1e-12,
            "{share} vs {want}"
        );
        // E[X(t) | x = 0, T].
        let mean = silent_future / silent;
        let sd = (silent_future_sq / silent - mean * mean).sqrt();
        let want = m
            .conditional_expected_purchases(Periods::new(t).expect("ok"), &c)
            .expect("finite");
        eprintln!("mbg {mbg}: E[X({t}) | x = 0] simulated {mean} vs {want}");
        assert!(
            (mean - want).abs() < 4.0 * sd / silent.sqrt(),
            "{mean} vs {want}"
        );
    }
}

/// (name, model, a, b, gradient norm)
type Fitted = (
    &'static str,
    Box<dyn TransactionModel<Weeks>>,
    f64,
    f64,
    f64,
);

#[test]
fn a_fit_at_the_boundary_still_prices_every_customer() {
    // A short history from a constant-p process: the likelihood is maximised at a, b -> ∞.
    let (r, alpha, p) = (2.0, 4.0, 0.15);
    let mut rng = Rng::seed(5);
    let customers: Vec<CustomerRfm<Weeks>> = (0..400)
        .map(|i| {
            let age = 4.0 + f64::from(i % 9);
            let (x, tx, _, _) = simulate_constant_p(false, r, alpha, p, age, 0.0, &mut rng);
            CustomerRfm::new(x, tx, age, 25.0).expect("valid")
        })
        .collect();
    let gg = GammaGammaModel::new(GammaGammaParams::new(6.0, 4.0, 15.0).expect("ok")).expect("ok");
    let horizon = ClvHorizon::new(12, 0.01).expect("ok");
    let bg = fit_bg_nbd(&customers, &BgNbdFitOptions::default()).expect("fit");
    let mbg = fit_mbg_nbd(&customers, &MbgNbdFitOptions::default()).expect("fit");
    let fits: [Fitted; 2] = [
        (
            "BG/NBD",
            Box::new(bg.model()),
            bg.params.a(),
            bg.params.b(),
            bg.gradient_norm,
        ),
        (
            "MBG/NBD",
            Box::new(mbg.model()),
            mbg.params.a(),
            mbg.params.b(),
            mbg.gradient_norm,
        ),
    ];
    eprintln!("BG/NBD fit: {bg:?}");
    eprintln!("MBG/NBD fit: {mbg:?}");
    for (name, m, a, b, gradient_norm) in &fits {
        assert!(gradient_norm.is_finite(), "{name}");
        assert!(
            *a > 1e3 && *b > 1e3,
            "{name}: a = {a}, b = {b}: not at the boundary"
        );
        for c in &customers {
            let alive = m.probability_alive(c);
            assert!((0.0..=1.0).contains(&alive), "{name} {c:?}");
            let v = customer_lifetime_value(m.as_ref(), &gg, c, &horizon)
                .unwrap_or_else(|e| panic!("{name} {c:?}: {e}"));
            assert!(v.is_finite() && v > 0.0, "{name} {c:?}: {v}");
        }
    }
}

/// The likelihood at huge `a, b` tends to the constant-dropout limit
/// `ln Γ(r+x) - ln Γ(r) + r ln α + x ln(1-p) + ln((α+T)^-(r+x) + [x>0] p/(1-p) (α+t_x)^-(r+x))`,
/// and its gradient stays finite. (With `ln Γ` differences, `a, b ~ 1e63` gave a log-likelihood
/// of `+4e52`, and a fit stopped there as "converged".)
#[test]
fn the_likelihood_tends_to_the_constant_dropout_limit() {
    let lgamma_pos = |v: f64| patron_domain::clv::special::ln_gamma(v).expect("ln gamma");
    let (r, alpha) = (2.0, 5.0);
    let customers = [
        CustomerRfm::<Weeks>::new(0, 0.0, 20.0, 0.0).expect("valid"),
        CustomerRfm::<Weeks>::new(3, 10.0, 20.0, 1.0).expect("valid"),
        CustomerRfm::<Weeks>::new(40, 30.0, 31.0, 1.0).expect("valid"),
        CustomerRfm::<Weeks>::new(200, 50.0, 52.0, 1.0).expect("valid"),
    ];
    for scale in [1e9, 1e20, 1e63, 1e150] {
        let (a, b) = (scale, 5.0 * scale);
        let p: f64 = 1.0 / 6.0;
        let model = BgNbdModel::new(BgNbdParams::<Weeks>::new(r, alpha, a, b).expect("params"));
        for c in &customers {
            let x = f64::from(c.frequency());
            let k = r + x;
            let mut inner = (alpha + c.age()).powf(-k);
            if c.frequency() > 0 {
                inner += p / (1.0 - p) * (alpha + c.recency()).powf(-k);
            }
            let limit =
                lgamma_pos(k) - lgamma_pos(r) + r * alpha.ln() + x * (1.0 - p).ln() + inner.ln();
            let got = model.log_likelihood(c);
            // The approach to the limit is O(x² / b).
            let tol = 1e-12 * limit.abs() + 10.0 * x * x / b;
            assert!(
                (got - limit).abs() <= tol,
                "scale {scale:e}, x {x}: {got} vs limit {limit}"
            );
        }
        let data = patron_domain::clv::BgNbdData::from_customers(&customers).expect("data");
        let (ll, gradient) =
            data.log_likelihood_and_gradient(&BgNbdParams::new(r, alpha, a, b).expect("params"));
        assert!(ll.is_finite(), "scale {scale:e}: {ll}");
        // Along (ln a, ln b) together the likelihood is flat at the boundary: the two log-gradients
        // cancel to O(1 / b) (separately each is about ∓ x / 6 per customer).
        assert!(gradient.iter().all(|g| g.is_finite()), "{gradient:?}");
        assert!(
            (gradient[2] + gradient[3]).abs() <= 1e-6 * (gradient[2].abs() + 1.0),
            "scale {scale:e}: {gradient:?}"
        );
    }
}
