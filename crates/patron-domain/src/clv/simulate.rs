//! Seeded simulation of BG/NBD and Gamma-Gamma data, for tests and benchmarks.
//!
//! The generator is xoshiro256++ (Blackman & Vigna) seeded through SplitMix64; the samplers are
//! the textbook ones: exponential by inversion, normal by Box–Muller, Gamma by Marsaglia & Tsang
//! (2000) with the `U^(1/k)` boost for shapes below 1, Beta as `X / (X + Y)` of two Gammas.
//! The BG/NBD process is the one of `lifetimes.generate_data.beta_geometric_nbd_model`: repeat
//! purchases arrive at Poisson rate `λ ~ Gamma(r, α)`, and after each repeat purchase the customer
//! drops out with probability `p ~ Beta(a, b)`.

use super::{BgNbdParams, ClvError, CustomerRfm, GammaGammaParams, TimeUnit};

/// xoshiro256++ pseudo-random generator (not cryptographic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded from one `u64` through SplitMix64.
    pub fn seed(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform on the open interval (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Exponential with the given rate (infinite when the rate is 0).
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -self.uniform().ln() / rate
    }

    /// Gamma with the given shape (`> 0`) and rate 1 (Marsaglia & Tsang).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if !(shape > 0.0 && shape.is_finite()) {
            return f64::NAN;
        }
        if shape < 1.0 {
            let boost = self.uniform().powf(1.0 / shape);
            return self.gamma(shape + 1.0) * boost;
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// Beta(a, b).
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        x / (x + y)
    }
}

/// One simulated customer: `(frequency, recency, T)` and the latent rate and dropout
/// probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulatedCustomer {
    /// Repeat purchases in `(0, T]`.
    pub frequency: u32,
    /// Time of the last repeat purchase (0 when none).
    pub recency: f64,
    /// Observation length `T`.
    pub age: f64,
    /// Latent purchase rate λ.
    pub rate: f64,
    /// Latent dropout probability p.
    pub dropout: f64,
}

/// Simulates one BG/NBD customer observed for `age` units.
pub fn simulate_bg_nbd_customer<U: TimeUnit>(
    params: &BgNbdParams<U>,
    age: f64,
    rng: &mut Rng,
) -> SimulatedCustomer {
    let rate = rng.gamma(params.r()) / params.alpha();
    let dropout = rng.beta(params.a(), params.b());
    let mut t = 0.0;
    let mut frequency = 0u32;
    let mut recency = 0.0;
    loop {
        t += rng.exponential(rate);
        if t.is_nan() || t > age || frequency == u32::MAX {
            break;
        }
        frequency += 1;
        recency = t;
        if rng.uniform() < dropout {
            break;
        }
    }
    SimulatedCustomer {
        frequency,
        recency,
        age,
        rate,
        dropout,
    }
}

/// Simulates BG/NBD summaries, one per entry of `ages` (each finite and `>= 0`).
pub fn simulate_bg_nbd<U: TimeUnit>(
    params: &BgNbdParams<U>,
    ages: &[f64],
    rng: &mut Rng,
) -> Result<Vec<CustomerRfm<U>>, ClvError> {
    ages.iter()
        .map(|&age| {
            let s = simulate_bg_nbd_customer(params, age, rng);
            CustomerRfm::new(s.frequency, s.recency, s.age, 0.0)
        })
        .collect()
}

/// Simulates the mean of `x` transaction values of one Gamma-Gamma customer (0 when `x = 0`).
pub fn simulate_mean_spend(params: &GammaGammaParams, x: u32, rng: &mut Rng) -> f64 {
    if x == 0 {
        return 0.0;
    }
    let nu = rng.gamma(params.q()) / params.v();
    let total: f64 = (0..x).map(|_| rng.gamma(params.p()) / nu).sum();
    total / f64::from(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_moments() {
        let mut rng = Rng::seed(7);
        let n = 200_000;
        for shape in [0.3, 1.0, 4.5] {
            let xs: Vec<f64> = (0..n).map(|_| rng.gamma(shape)).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            // mean = var = shape; 5 standard errors of the mean
            let se = (shape / n as f64).sqrt();
            assert!(
                (mean - shape).abs() < 5.0 * se,
                "shape {shape}: mean {mean}"
            );
            assert!((var / shape - 1.0).abs() < 0.05, "shape {shape}: var {var}");
        }
        let b: f64 = (0..n).map(|_| rng.beta(2.0, 6.0)).sum::<f64>() / n as f64;
        assert!((b - 0.25).abs() < 0.002, "beta mean {b}");
        let u: f64 = (0..n).map(|_| rng.uniform()).sum::<f64>() / n as f64;
        assert!((u - 0.5).abs() < 0.003);
        assert!(rng.gamma(f64::NAN).is_nan());
    }
}
