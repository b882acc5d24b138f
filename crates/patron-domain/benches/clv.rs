//! Criterion micro-benchmarks of the CLV model math: BG/NBD and Gamma-Gamma log-likelihoods,
//! ₂F₁, P(alive), conditional expected purchases, discounted CLV, and the fits.
//!
//! `cargo bench -p patron-domain --bench clv` (full run, about two minutes);
//! `cargo bench -p patron-domain --bench clv -- --warm-up-time 0.1 --measurement-time 0.2`
//! (smoke run, seconds). Method and results: `docs/benchmarks.md`.
//!
//! The data set is CDNOW-like: 5,000 customers simulated (seeded) from the BG/NBD parameters
//! fitted on CDNOW in weeks (r 0.243, α 4.414, a 0.793, b 2.426) and the Gamma-Gamma ones
//! (p 6.25, q 3.74, v 15.45), acquired uniformly over 12 weeks and observed up to week 39, with
//! purchase times rounded to whole days as Patron's summaries keep them. Predictions use the
//! same (true) parameters, so the benchmarks do not depend on a fit.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use patron_domain::clv::simulate::{Rng, simulate_bg_nbd_customer, simulate_mean_spend};
use patron_domain::clv::special::hyp2f1;
use patron_domain::clv::{
    BgNbdData, BgNbdFitOptions, BgNbdModel, BgNbdParams, ClvHorizon, CustomerRfm, Days,
    GammaGammaData, GammaGammaFitOptions, GammaGammaModel, GammaGammaParams, Periods, Weeks,
    customer_lifetime_value, fit_bg_nbd, fit_gamma_gamma,
};

const CUSTOMERS: usize = 5_000;
const SEED: u64 = 20_261_123;
/// The service's default horizon: 12 months of 4.345 weeks.
const HORIZON_WEEKS: f64 = 12.0 * 4.345;

fn bg_params() -> BgNbdParams<Weeks> {
    BgNbdParams::new(0.243, 4.414, 0.793, 2.426).expect("valid parameters")
}

fn gg_params() -> GammaGammaParams {
    GammaGammaParams::new(6.25, 3.74, 15.45).expect("valid parameters")
}

/// CDNOW-like summaries in weeks (see the file docs).
fn customers() -> Vec<CustomerRfm<Weeks>> {
    let bg = bg_params();
    let gg = gg_params();
    let mut rng = Rng::seed(SEED);
    (0..CUSTOMERS)
        .map(|_| {
            // First purchase on one of the first 84 days; observation ends on day 273.
            let age_days = 273.0 - (84.0 * rng.uniform()).floor();
            let s = simulate_bg_nbd_customer(&bg, age_days / 7.0, &mut rng);
            let recency_days = (s.recency * 7.0).round().min(age_days);
            let m = simulate_mean_spend(&gg, s.frequency, &mut rng);
            CustomerRfm::new(s.frequency, recency_days / 7.0, age_days / 7.0, m)
                .expect("valid summary")
        })
        .collect()
}

fn elements(n: usize) -> Throughput {
    Throughput::Elements(u64::try_from(n).expect("fits u64"))
}

fn bg_nbd_likelihood(c: &mut Criterion) {
    let cs = customers();
    let data = BgNbdData::from_customers(&cs).expect("non-empty");
    let params = bg_params();
    let model = BgNbdModel::new(params);
    let mut g = c.benchmark_group("bgnbd_log_likelihood");
    g.throughput(elements(cs.len()));
    g.bench_function("aggregated_value", |b| {
        b.iter(|| black_box(&data).log_likelihood(black_box(&params)));
    });
    g.bench_function("aggregated_value_and_gradient", |b| {
        b.iter(|| black_box(&data).log_likelihood_and_gradient(black_box(&params)));
    });
    g.bench_function("per_customer_model", |b| {
        b.iter(|| {
            black_box(&cs)
                .iter()
                .map(|c| model.log_likelihood(c))
                .sum::<f64>()
        });
    });
    g.finish();
}

fn gamma_gamma_likelihood(c: &mut Criterion) {
    let cs = customers();
    let data = GammaGammaData::from_customers(&cs).expect("repeat buyers");
    let params = gg_params();
    let buyers = usize::try_from(data.customers()).expect("fits usize");
    let mut g = c.benchmark_group("gamma_gamma_log_likelihood");
    g.throughput(elements(buyers));
    g.bench_function("value", |b| {
        b.iter(|| black_box(&data).log_likelihood(black_box(&params)));
    });
    g.bench_function("value_and_gradient", |b| {
        b.iter(|| black_box(&data).log_likelihood_and_gradient(black_box(&params)));
    });
    g.finish();
}

fn hypergeometric(c: &mut Criterion) {
    let p = bg_params();
    let (r, alpha, a, b) = (p.r(), p.alpha(), p.a(), p.b());
    // CDNOW customer 1: x = 2, T = 38.86 weeks.
    let x = 2.0;
    let age = 38.86;
    let z = |t: f64| t / (alpha + age + t);
    // (name, a, b, c, z). The BG/NBD expectation's ₂F₁ in its Euler-transformed form
    // F(a - 1, a + b - 1 - r; a + b + x - 1; z) (the model sums this series itself and calls
    // `hyp2f1` only when 1 - z < 2e-4), the untransformed F(r + x, b + x; a + b + x - 1; z) of
    // eq. 10, and hard cases.
    let cases: [(&str, f64, f64, f64, f64); 9] = [
        (
            "euler_1_month",
            a - 1.0,
            a + b - 1.0 - r,
            a + b + x - 1.0,
            z(4.345),
        ),
        (
            "euler_12_months",
            a - 1.0,
            a + b - 1.0 - r,
            a + b + x - 1.0,
            z(HORIZON_WEEKS),
        ),
        (
            "eq10_12_months",
            r + x,
            b + x,
            a + b + x - 1.0,
            z(HORIZON_WEEKS),
        ),
        (
            "euler_new_customer_12_months",
            a - 1.0,
            a + b - 1.0 - r,
            a + b - 1.0,
            HORIZON_WEEKS / (alpha + HORIZON_WEEKS),
        ),
        ("pfaff_z_-1000", 0.5, 1.5, 2.0, -1000.0),
        (
            "hard_z_1-1e-4",
            a - 1.0,
            a + b - 1.0 - r,
            a + b - 1.0,
            1.0 - 1e-4,
        ),
        (
            "hard_z_1-1e-6",
            a - 1.0,
            a + b - 1.0 - r,
            a + b - 1.0,
            1.0 - 1e-6,
        ),
        ("hard_z_1-1e-10", 0.25, 0.75, 1.25, 1.0 - 1e-10),
        ("hard_large_params_z_0.999", 50.0, 60.0, 120.3, 0.999),
    ];
    let mut g = c.benchmark_group("hyp2f1");
    for (name, pa, pb, pc, pz) in cases {
        hyp2f1(pa, pb, pc, pz).expect("in domain");
        g.bench_with_input(
            BenchmarkId::from_parameter(name),
            &(pa, pb, pc, pz),
            |bch, &(pa, pb, pc, pz)| {
                bch.iter(|| hyp2f1(black_box(pa), black_box(pb), black_box(pc), black_box(pz)));
            },
        );
    }
    g.finish();
}

fn predictions(c: &mut Criterion) {
    let cs = customers();
    let model = BgNbdModel::new(bg_params());
    let spend = GammaGammaModel::new(gg_params()).expect("q > 1");
    let horizon = ClvHorizon::new(12, 0.01).expect("valid horizon");
    let t = Periods::<Weeks>::new(HORIZON_WEEKS).expect("valid");

    let mut g = c.benchmark_group("per_customer");
    g.throughput(elements(cs.len()));
    g.bench_function("probability_alive", |b| {
        b.iter(|| {
            black_box(&cs)
                .iter()
                .map(|c| model.probability_alive(c))
                .sum::<f64>()
        });
    });
    g.bench_function("conditional_expected_purchases_12_months", |b| {
        b.iter(|| {
            black_box(&cs)
                .iter()
                .map(|c| model.conditional_expected_purchases(t, c).expect("finite"))
                .sum::<f64>()
        });
    });
    // 12 calls of the expectation per customer, as the service computes predicted CLV.
    g.sample_size(30);
    g.bench_function("clv_12_months", |b| {
        b.iter(|| {
            black_box(&cs)
                .iter()
                .map(|c| customer_lifetime_value(&model, &spend, c, &horizon).expect("finite"))
                .sum::<f64>()
        });
    });
    g.finish();

    // Single calls where the expectation's series is long: a customer first seen today (T = 0)
    // on a day model with a small α, where z = t / (α + t) approaches 1 and the series needs
    // about 40 / (1 - z) terms. α = 30: 1 - z = 0.077; α = 1: 2.8e-3 (~14,000 terms);
    // α = 0.08: 2.2e-4, just inside the 200,000-term series budget (the worst case);
    // α = 0.01: past the budget, so the general ₂F₁ (continuation) is used instead.
    let mut g = c.benchmark_group("conditional_expected_purchases_single");
    let typical = CustomerRfm::<Weeks>::new(2, 30.43, 38.86, 22.35).expect("valid");
    g.bench_function("cdnow_customer_1_12_months", |b| {
        b.iter(|| model.conditional_expected_purchases(black_box(t), black_box(&typical)));
    });
    let new_today = CustomerRfm::<Days>::new(0, 0.0, 0.0, 0.0).expect("valid");
    let year = Periods::<Days>::new(360.0).expect("valid");
    for alpha in [30.0, 1.0, 0.08, 0.01] {
        let m = BgNbdModel::new(BgNbdParams::<Days>::new(0.243, alpha, 0.793, 2.426).expect("ok"));
        m.conditional_expected_purchases(year, &new_today)
            .expect("finite");
        g.bench_with_input(
            BenchmarkId::new("new_customer_360_days_alpha_days", alpha),
            &m,
            |b, m| {
                b.iter(|| m.conditional_expected_purchases(black_box(year), black_box(&new_today)));
            },
        );
    }
    g.finish();
}

fn fits(c: &mut Criterion) {
    let cs = customers();
    // As the service fits (`patron_views::model::fit`): no standard errors; one thread (5,000
    // customers are one block of the parallel sums anyway).
    let bg_options = BgNbdFitOptions::<Weeks> {
        threads: 1,
        standard_errors: false,
        ..BgNbdFitOptions::default()
    };
    let gg_options = GammaGammaFitOptions {
        threads: 1,
        standard_errors: false,
        ..GammaGammaFitOptions::default()
    };
    let mut g = c.benchmark_group("fit");
    g.throughput(elements(cs.len()));
    g.sample_size(20);
    g.bench_function("bg_nbd", |b| {
        b.iter(|| fit_bg_nbd(black_box(&cs), &bg_options).expect("fit"));
    });
    g.bench_function("gamma_gamma", |b| {
        b.iter(|| fit_gamma_gamma(black_box(&cs), &gg_options).expect("fit"));
    });
    g.finish();
}

criterion_group!(
    benches,
    bg_nbd_likelihood,
    gamma_gamma_likelihood,
    hypergeometric,
    predictions,
    fits
);
criterion_main!(benches);
