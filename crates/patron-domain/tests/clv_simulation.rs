//! Parameter recovery on simulated data: BG/NBD and Gamma-Gamma data drawn from known
//! parameters with the crate's seeded generator, then fitted.
//!
//! Tolerance. The maximum-likelihood estimator is asymptotically normal with covariance the
//! inverse Fisher information, which the fit estimates (observed information, delta method) as
//! `standard_errors`. Each estimate must lie within 4 standard errors of the truth: for a random
//! seed a 4σ miss has probability 6e-5 per parameter, so the bar is not tuned to this seed, yet
//! it is tight because the standard errors shrink like 1/√N. With N = 20,000 customers they are
//! a few percent of the parameters (CDNOW's, N = 2,357, are 5–30 %; √(20,000 / 2,357) ≈ 2.9
//! times smaller here, and the longer observation windows below add information), which the
//! test also asserts so that "within 4σ" cannot pass vacuously with huge errors.

use patron_domain::clv::simulate::{Rng, simulate_bg_nbd, simulate_mean_spend};
use patron_domain::clv::{
    BgNbdFitOptions, BgNbdParams, CustomerRfm, GammaGammaFitOptions, GammaGammaParams, Weeks,
    fit_bg_nbd, fit_gamma_gamma,
};

const N: usize = 20_000;

fn simulated(
    seed: u64,
) -> (
    Vec<CustomerRfm<Weeks>>,
    BgNbdParams<Weeks>,
    GammaGammaParams,
) {
    let truth = BgNbdParams::<Weeks>::new(0.5, 5.0, 1.2, 3.0).expect("valid");
    let spend = GammaGammaParams::new(6.0, 4.0, 15.0).expect("valid");
    let mut rng = Rng::seed(seed);
    // Customers acquired uniformly over a year, observed until week 78.
    let ages: Vec<f64> = (0..N).map(|_| 26.0 + 52.0 * rng.uniform()).collect();
    let customers = simulate_bg_nbd(&truth, &ages, &mut rng)
        .expect("valid")
        .into_iter()
        .map(|c| {
            let m = simulate_mean_spend(&spend, c.frequency(), &mut rng);
            CustomerRfm::new(c.frequency(), c.recency(), c.age(), m).expect("valid")
        })
        .collect();
    (customers, truth, spend)
}

#[test]
fn bg_nbd_fit_recovers_simulation_parameters() {
    let (customers, truth, _) = simulated(20_240_601);
    let fit = fit_bg_nbd(&customers, &BgNbdFitOptions::default()).expect("fit");
    assert!(fit.converged, "{fit:?}");
    let se = fit.standard_errors.expect("standard errors");
    let got = [
        fit.params.r(),
        fit.params.alpha(),
        fit.params.a(),
        fit.params.b(),
    ];
    let want = [truth.r(), truth.alpha(), truth.a(), truth.b()];
    for (i, name) in ["r", "alpha", "a", "b"].iter().enumerate() {
        let z = (got[i] - want[i]) / se[i];
        eprintln!(
            "{name}: {} (truth {}, se {}, z {z:+.2})",
            got[i], want[i], se[i]
        );
        assert!(
            z.abs() < 4.0,
            "{name}: {} vs {} (se {})",
            got[i],
            want[i],
            se[i]
        );
        assert!(
            se[i] / want[i] < 0.15,
            "{name}: relative se {}",
            se[i] / want[i]
        );
    }
}

#[test]
fn gamma_gamma_fit_recovers_simulation_parameters() {
    let (customers, _, truth) = simulated(7);
    let fit = fit_gamma_gamma(&customers, &GammaGammaFitOptions::default()).expect("fit");
    assert!(fit.converged, "{fit:?}");
    let se = fit.standard_errors.expect("standard errors");
    let got = [fit.params.p(), fit.params.q(), fit.params.v()];
    let want = [truth.p(), truth.q(), truth.v()];
    for (i, name) in ["p", "q", "v"].iter().enumerate() {
        let z = (got[i] - want[i]) / se[i];
        eprintln!(
            "{name}: {} (truth {}, se {}, z {z:+.2}) on {} buyers",
            got[i], want[i], se[i], fit.customers
        );
        assert!(
            z.abs() < 4.0,
            "{name}: {} vs {} (se {})",
            got[i],
            want[i],
            se[i]
        );
        assert!(
            se[i] / want[i] < 0.25,
            "{name}: relative se {}",
            se[i] / want[i]
        );
    }
}
