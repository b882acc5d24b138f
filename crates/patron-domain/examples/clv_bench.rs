//! Timing of the CLV fits and predictions on 1,000,000 simulated customers.
//!
//! `cargo run --release -p patron-domain --example clv_bench [customers]`
//!
//! First it times the fits on the CDNOW sample (the test fixture, 2,357 customers in weeks).
//!
//! Prints to stderr; asserts nothing about time.

use std::time::Instant;

use patron_domain::clv::simulate::{Rng, simulate_bg_nbd_customer, simulate_mean_spend};
use patron_domain::clv::{
    BgNbdData, BgNbdFitOptions, BgNbdParams, ClvHorizon, CustomerRfm, Days, GammaGammaFitOptions,
    GammaGammaParams, Periods, TimeUnit, Weeks, customer_lifetime_value, fit_gamma_gamma,
};

fn run<U: TimeUnit>(label: &str, customers: &[CustomerRfm<U>], horizon_units: f64) {
    let start = Instant::now();
    let data = BgNbdData::from_customers(customers).expect("non-empty");
    let aggregate = start.elapsed();
    let start = Instant::now();
    let fit = data.fit(&BgNbdFitOptions::default()).expect("fit");
    let fit_time = start.elapsed();
    eprintln!(
        "{label}: {} customers, {} patterns; aggregation {aggregate:?}, BG/NBD fit {fit_time:?} \
         ({} iterations, {} evaluations, converged {}, |g| {:.1e}, ln L {:.3})\n  params r {:.4} alpha {:.4} a {:.4} b {:.4}",
        fit.customers,
        fit.patterns,
        fit.iterations,
        fit.evaluations,
        fit.converged,
        fit.gradient_norm,
        fit.log_likelihood,
        fit.params.r(),
        fit.params.alpha(),
        fit.params.a(),
        fit.params.b(),
    );
    let start = Instant::now();
    let gg = fit_gamma_gamma(customers, &GammaGammaFitOptions::default()).expect("fit");
    eprintln!(
        "  Gamma-Gamma fit {:?} on {} repeat buyers ({} iterations, converged {}): p {:.4} q {:.4} v {:.4}",
        start.elapsed(),
        gg.customers,
        gg.iterations,
        gg.converged,
        gg.params.p(),
        gg.params.q(),
        gg.params.v()
    );
    let bg = fit.model();
    let spend = gg.model().expect("q > 1");
    let t = Periods::<U>::new(horizon_units).expect("valid");
    let start = Instant::now();
    let mut total = 0.0;
    for c in customers {
        total += bg.probability_alive(c) + bg.conditional_expected_purchases(t, c).expect("ok");
    }
    let per = start.elapsed() / u32::try_from(customers.len()).unwrap_or(u32::MAX);
    eprintln!("  P(alive) + E[X(t)] per customer: {per:?} (checksum {total:.3})");
    let horizon = ClvHorizon::new(12, 0.01).expect("valid");
    let start = Instant::now();
    let sample = &customers[..customers.len().min(100_000)];
    let clv: f64 = sample
        .iter()
        .map(|c| customer_lifetime_value(&bg, &spend, c, &horizon).expect("ok"))
        .sum();
    let per = start.elapsed() / u32::try_from(sample.len()).unwrap_or(u32::MAX);
    eprintln!(
        "  12-month CLV per customer: {per:?} (mean {:.2})",
        clv / sample.len() as f64
    );
}

/// The CDNOW summary fixture: frequency, recency, T, monetary in weeks.
fn cdnow() -> Vec<CustomerRfm<Weeks>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cdnow_customers_summary.csv"
    );
    let text = std::fs::read_to_string(path).expect("CDNOW fixture");
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let num = |i: usize| f[i].parse::<f64>().expect("number");
            CustomerRfm::new(f[1].parse().expect("frequency"), num(2), num(3), num(4))
                .expect("valid")
        })
        .collect()
}

fn main() {
    let customers = cdnow();
    let start = Instant::now();
    let bg = patron_domain::clv::fit_bg_nbd(&customers, &BgNbdFitOptions::default()).expect("fit");
    let bg_time = start.elapsed();
    let start = Instant::now();
    let gg = fit_gamma_gamma(&customers, &GammaGammaFitOptions::default()).expect("fit");
    eprintln!(
        "CDNOW ({} customers): BG/NBD fit {bg_time:?} ({} iterations, converged {}), Gamma-Gamma fit {:?} ({} iterations)",
        customers.len(),
        bg.iterations,
        bg.converged,
        start.elapsed(),
        gg.iterations
    );
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let truth = BgNbdParams::<Weeks>::new(0.25, 4.4, 0.79, 2.4).expect("valid");
    let spend = GammaGammaParams::new(6.25, 3.74, 15.45).expect("valid");
    let mut rng = Rng::seed(42);
    let start = Instant::now();
    let mut weeks = Vec::with_capacity(n);
    let mut days = Vec::with_capacity(n);
    for _ in 0..n {
        // acquired uniformly over two years, observed to today
        let age_days = (730.0 * rng.uniform()).floor();
        let s = simulate_bg_nbd_customer(&truth, age_days / 7.0, &mut rng);
        let m = simulate_mean_spend(&spend, s.frequency, &mut rng);
        weeks.push(CustomerRfm::<Weeks>::new(s.frequency, s.recency, s.age, m).expect("valid"));
        // day resolution, as Patron's summaries are kept (recency rounded to whole days)
        let rec_days = (s.recency * 7.0).floor().min(age_days);
        days.push(CustomerRfm::<Days>::new(s.frequency, rec_days, age_days, m).expect("valid"));
    }
    eprintln!("simulated {n} customers in {:?}", start.elapsed());
    run("whole days", &days, 90.0);
    run("continuous recency, weeks", &weeks, 90.0 / 7.0);
}
