//! A small dense BFGS minimiser with a strong-Wolfe line search (Nocedal & Wright, 2nd ed.,
//! algorithms 3.5 / 3.6 for the line search, 6.1 and eq. 6.20 for BFGS and its initial scaling).
//!
//! Meant for the handful of parameters of the CLV models (3 or 4), so the inverse Hessian
//! approximation is a dense `N × N` array. The objective returns its value and gradient; a
//! non-finite value is treated as +∞ (the line search backs off), never as an error, except at the
//! starting point.

use super::ClvError;

/// Why the minimiser stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// The largest gradient component fell below the gradient tolerance (converged).
    GradientTolerance,
    /// An accepted step changed the objective by less than the relative tolerance (converged:
    /// no further progress is possible in floating point).
    RelativeChange,
    /// The iteration limit was reached (not converged).
    MaxIterations,
    /// The line search found no acceptable step (not converged).
    LineSearchFailed,
}

impl Termination {
    /// Whether this termination means convergence.
    pub const fn converged(self) -> bool {
        matches!(
            self,
            Termination::GradientTolerance | Termination::RelativeChange
        )
    }
}

/// Stopping rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BfgsOptions {
    /// Maximum number of BFGS iterations (accepted steps).
    pub max_iterations: u32,
    /// Converged when `max |∂f/∂xᵢ| <= gradient_tolerance`.
    pub gradient_tolerance: f64,
    /// Converged when an accepted step decreases `f` by at most
    /// `relative_tolerance · max(|f|, 1)`.
    pub relative_tolerance: f64,
}

impl Default for BfgsOptions {
    fn default() -> Self {
        Self {
            max_iterations: 500,
            gradient_tolerance: 1e-9,
            relative_tolerance: 1e-15,
        }
    }
}

/// The result of [`minimize_bfgs`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Minimum<const N: usize> {
    /// The best point found.
    pub x: [f64; N],
    /// The objective there.
    pub f: f64,
    /// Its gradient there.
    pub gradient: [f64; N],
    /// Accepted steps.
    pub iterations: u32,
    /// Objective-and-gradient evaluations, line searches included.
    pub evaluations: u32,
    /// Why the iteration stopped.
    pub termination: Termination,
}

impl<const N: usize> Minimum<N> {
    /// `max |gᵢ|` at the returned point.
    pub fn gradient_norm(&self) -> f64 {
        norm_inf(&self.gradient)
    }
}

fn dot<const N: usize>(a: &[f64; N], b: &[f64; N]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm_inf<const N: usize>(a: &[f64; N]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn identity<const N: usize>() -> [[f64; N]; N] {
    let mut h = [[0.0; N]; N];
    for (i, row) in h.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    h
}

struct Point<const N: usize> {
    step: f64,
    x: [f64; N],
    f: f64,
    g: [f64; N],
    slope: f64,
}

struct LineSearch<'a, const N: usize, F> {
    objective: &'a mut F,
    x: [f64; N],
    p: [f64; N],
    f0: f64,
    slope0: f64,
    evaluations: u32,
}

const C1: f64 = 1e-4;
const C2: f64 = 0.9;
const MAX_LINE_EVALUATIONS: u32 = 60;
const APPROX_WOLFE_EPS: f64 = 1e-10;
const APPROX_WOLFE_DELTA: f64 = 0.1;

impl<const N: usize, F: FnMut(&[f64; N]) -> (f64, [f64; N])> LineSearch<'_, N, F> {
    fn eval(&mut self, step: f64) -> Point<N> {
        let mut x = self.x;
        for (xi, pi) in x.iter_mut().zip(&self.p) {
            *xi += step * pi;
        }
        self.evaluations += 1;
        let (f, g) = (self.objective)(&x);
        let ok = f.is_finite() && g.iter().all(|v| v.is_finite());
        let f = if ok { f } else { f64::INFINITY };
        let slope = if ok { dot(&g, &self.p) } else { f64::NAN };
        Point {
            step,
            x,
            f,
            g,
            slope,
        }
    }

    fn sufficient(&self, p: &Point<N>) -> bool {
        p.f <= self.f0 + C1 * p.step * self.slope0
    }

    fn curvature(&self, p: &Point<N>) -> bool {
        p.slope.abs() <= -C2 * self.slope0
    }

    /// Hager & Zhang's approximate Wolfe conditions: near the minimum, differences of `f` drown
    /// in rounding (a mean log-likelihood summed from millions of terms carries noise of order
    /// `1e-13 |f|`) while the gradient is still informative, so a step whose value is within
    /// `1e-10 |f0|` of `f0` is accepted on its slope alone (`σ φ'(0) <= φ'(α) <= (2δ - 1) φ'(0)`:
    /// the step lands near the minimum along the line).
    fn approximate_wolfe(&self, p: &Point<N>) -> bool {
        p.f <= self.f0 + APPROX_WOLFE_EPS * self.f0.abs()
            && p.slope >= C2 * self.slope0
            && p.slope <= (2.0 * APPROX_WOLFE_DELTA - 1.0) * self.slope0
    }

    /// Algorithm 3.5: bracket a step satisfying the strong Wolfe conditions, then zoom.
    fn search(&mut self, initial_step: f64) -> Option<Point<N>> {
        let mut prev = Point {
            step: 0.0,
            x: self.x,
            f: self.f0,
            g: [0.0; N],
            slope: self.slope0,
        };
        let mut step = initial_step;
        let mut first = true;
        while self.evaluations < MAX_LINE_EVALUATIONS {
            let cur = self.eval(step);
            if !cur.f.is_finite() {
                // Outside the objective's domain: back off towards the last good point.
                step = prev.step + 0.2 * (step - prev.step);
                continue;
            }
            if self.approximate_wolfe(&cur) {
                return Some(cur);
            }
            if !self.sufficient(&cur) || (!first && cur.f >= prev.f) {
                return self.zoom(prev, cur);
            }
            if self.curvature(&cur) {
                return Some(cur);
            }
            if cur.slope >= 0.0 {
                return self.zoom(cur, prev);
            }
            first = false;
            step = cur.step * 2.0;
            prev = cur;
        }
        None
    }

    /// Algorithm 3.6 with safeguarded cubic interpolation.
    fn zoom(&mut self, mut lo: Point<N>, mut hi: Point<N>) -> Option<Point<N>> {
        while self.evaluations < MAX_LINE_EVALUATIONS {
            let step = interpolate(&lo, &hi);
            let cur = self.eval(step);
            if cur.f.is_finite() && self.approximate_wolfe(&cur) {
                return Some(cur);
            }
            if !cur.f.is_finite() || !self.sufficient(&cur) || cur.f >= lo.f {
                hi = cur;
                if (hi.step - lo.step).abs() <= 1e-16 * lo.step.abs().max(1e-300) {
                    break;
                }
                continue;
            }
            if self.curvature(&cur) {
                return Some(cur);
            }
            if cur.slope * (hi.step - lo.step) >= 0.0 {
                hi = lo;
            }
            lo = cur;
        }
        // Accept the best point with sufficient decrease if the bracket collapsed.
        if lo.step > 0.0 && lo.f < self.f0 {
            Some(lo)
        } else {
            None
        }
    }
}

/// Minimiser of the cubic through (lo, hi) with their slopes, kept inside the middle 80 % of
/// the bracket; bisection when the cubic is unusable.
fn interpolate<const N: usize>(lo: &Point<N>, hi: &Point<N>) -> f64 {
    let (a, b) = (lo.step, hi.step);
    let width = b - a;
    let (left, right) = if a < b { (a, b) } else { (b, a) };
    let margin = 0.1 * width.abs();
    let bisect = 0.5 * (a + b);
    if !hi.f.is_finite() || !hi.slope.is_finite() {
        return bisect;
    }
    let d1 = lo.slope + hi.slope - 3.0 * (lo.f - hi.f) / (a - b);
    let disc = d1 * d1 - lo.slope * hi.slope;
    if disc.is_nan() || disc < 0.0 {
        return bisect;
    }
    let d2 = (b - a).signum() * disc.sqrt();
    let denom = hi.slope - lo.slope + 2.0 * d2;
    if denom == 0.0 {
        return bisect;
    }
    let t = b - (b - a) * (hi.slope + d2 - d1) / denom;
    if t.is_finite() && t >= left + margin && t <= right - margin {
        t
    } else {
        bisect
    }
}

/// Minimises `objective` (returning value and gradient) from `x0` with BFGS.
///
/// Errors only when the objective is not finite at `x0`; otherwise the returned
/// [`Minimum::termination`] tells whether it converged.
pub fn minimize_bfgs<const N: usize, F>(
    mut objective: F,
    x0: [f64; N],
    options: &BfgsOptions,
) -> Result<Minimum<N>, ClvError>
where
    F: FnMut(&[f64; N]) -> (f64, [f64; N]),
{
    let (mut f, mut g) = objective(&x0);
    if !f.is_finite() || g.iter().any(|v| !v.is_finite()) {
        return Err(ClvError::NotFinite {
            field: "objective at the starting point",
        });
    }
    let mut x = x0;
    let mut h = identity::<N>();
    let mut evaluations = 1;
    let mut iterations = 0;
    let mut first = true;
    let termination = loop {
        if norm_inf(&g) <= options.gradient_tolerance {
            break Termination::GradientTolerance;
        }
        if iterations >= options.max_iterations {
            break Termination::MaxIterations;
        }
        // p = -H g
        let mut p = [0.0; N];
        for (pi, row) in p.iter_mut().zip(&h) {
            *pi = -dot(row, &g);
        }
        let mut slope = dot(&p, &g);
        if slope.is_nan() || slope >= 0.0 {
            // Not a descent direction (lost positive definiteness): restart from steepest descent.
            h = identity::<N>();
            first = true;
            p = g.map(|v| -v);
            slope = dot(&p, &g);
        }
        let initial_step = if first {
            (1.0 / norm_inf(&g)).min(1.0)
        } else {
            1.0
        };
        let mut search = LineSearch {
            objective: &mut objective,
            x,
            p,
            f0: f,
            slope0: slope,
            evaluations: 0,
        };
        let found = search.search(initial_step);
        evaluations += search.evaluations;
        let Some(next) = found else {
            break Termination::LineSearchFailed;
        };
        iterations += 1;
        let mut s = [0.0; N];
        let mut y = [0.0; N];
        for i in 0..N {
            s[i] = next.x[i] - x[i];
            y[i] = next.g[i] - g[i];
        }
        let decrease = f - next.f;
        x = next.x;
        f = next.f;
        g = next.g;
        let sy = dot(&s, &y);
        if sy > 0.0 {
            if first {
                // N&W eq. 6.20: scale the initial inverse Hessian.
                let scale = sy / dot(&y, &y);
                h = identity::<N>();
                for (i, row) in h.iter_mut().enumerate() {
                    row[i] = scale;
                }
                first = false;
            }
            bfgs_update(&mut h, &s, &y, sy);
        }
        // (A step accepted on the approximate Wolfe conditions may raise f by rounding noise:
        // that is not "no progress", so only a small non-negative decrease stops the loop.)
        if (0.0..=options.relative_tolerance * f.abs().max(1.0)).contains(&decrease) {
            break if norm_inf(&g) <= options.gradient_tolerance {
                Termination::GradientTolerance
            } else {
                Termination::RelativeChange
            };
        }
    };
    Ok(Minimum {
        x,
        f,
        gradient: g,
        iterations,
        evaluations,
        termination,
    })
}

/// H ← (I - ρ s yᵀ) H (I - ρ y sᵀ) + ρ s sᵀ, ρ = 1 / (yᵀ s).
fn bfgs_update<const N: usize>(h: &mut [[f64; N]; N], s: &[f64; N], y: &[f64; N], sy: f64) {
    let rho = 1.0 / sy;
    let mut hy = [0.0; N];
    for (v, row) in hy.iter_mut().zip(h.iter()) {
        *v = dot(row, y);
    }
    let yhy = dot(y, &hy);
    for i in 0..N {
        for j in 0..N {
            h[i][j] += -rho * (hy[i] * s[j] + s[i] * hy[j]) + (rho * rho * yhy + rho) * s[i] * s[j];
        }
    }
}

/// The Hessian of the negative log-likelihood in log-parameters `θ` (the observed information),
/// by central differences (step `1e-4`) of the analytic `gradient` of `Σ ln L` with respect to
/// `θ`. Its inverse is the asymptotic covariance of `θ̂`. `None` when a gradient is not finite.
#[allow(clippy::needless_range_loop)] // index notation mirrors the formulas
pub(crate) fn log_scale_hessian<const N: usize>(
    theta: [f64; N],
    gradient: impl Fn([f64; N]) -> [f64; N],
) -> Option<[[f64; N]; N]> {
    let h = 1e-4;
    let mut hess = [[0.0; N]; N];
    for j in 0..N {
        let mut up = theta;
        let mut down = theta;
        up[j] += h;
        down[j] -= h;
        let gu = gradient(up);
        let gd = gradient(down);
        for i in 0..N {
            hess[i][j] = -(gu[i] - gd[i]) / (2.0 * h);
        }
    }
    hess.iter().flatten().all(|v| v.is_finite()).then_some(hess)
}

/// Inverse of a symmetric positive definite matrix (symmetrised first) by Cholesky.
#[allow(clippy::needless_range_loop)] // index notation mirrors the textbook algorithm
pub(crate) fn invert_spd<const N: usize>(m: [[f64; N]; N]) -> Option<[[f64; N]; N]> {
    let mut a = m;
    for i in 0..N {
        for j in 0..i {
            let v = 0.5 * (a[i][j] + a[j][i]);
            a[i][j] = v;
            a[j][i] = v;
        }
    }
    // Cholesky: a = L Lᵀ
    let mut l = [[0.0; N]; N];
    for i in 0..N {
        for j in 0..=i {
            let mut s = a[i][j];
            for k in 0..j {
                s -= l[i][k] * l[j][k];
            }
            if i == j {
                if s.is_nan() || s <= 0.0 {
                    return None;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    // Solve L Lᵀ X = I column by column.
    let mut inv = [[0.0; N]; N];
    for col in 0..N {
        let mut y = [0.0; N];
        for i in 0..N {
            let mut s = if i == col { 1.0 } else { 0.0 };
            for k in 0..i {
                s -= l[i][k] * y[k];
            }
            y[i] = s / l[i][i];
        }
        for i in (0..N).rev() {
            let mut s = y[i];
            for k in i + 1..N {
                s -= l[k][i] * inv[k][col];
            }
            inv[i][col] = s / l[i][i];
        }
    }
    inv.iter().flatten().all(|v| v.is_finite()).then_some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rosenbrock() {
        let f = |x: &[f64; 2]| {
            let (a, b) = (x[0], x[1]);
            let v = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            let g = [
                -2.0 * (1.0 - a) - 400.0 * a * (b - a * a),
                200.0 * (b - a * a),
            ];
            (v, g)
        };
        let m = minimize_bfgs(f, [-1.2, 1.0], &BfgsOptions::default()).expect("finite start");
        assert!(m.termination.converged(), "{m:?}");
        assert!(
            (m.x[0] - 1.0).abs() < 1e-8 && (m.x[1] - 1.0).abs() < 1e-8,
            "{m:?}"
        );
    }

    #[test]
    fn infinite_regions_are_avoided() {
        // ln barrier: f = x - ln(x) for x > 0, +inf elsewhere; minimum at x = 1.
        let f = |x: &[f64; 1]| {
            if x[0] <= 0.0 {
                (f64::INFINITY, [f64::NAN])
            } else {
                (x[0] - x[0].ln(), [1.0 - 1.0 / x[0]])
            }
        };
        let m = minimize_bfgs(f, [30.0], &BfgsOptions::default()).expect("finite start");
        assert!(m.termination.converged(), "{m:?}");
        assert!((m.x[0] - 1.0).abs() < 1e-8, "{m:?}");
        let bad = |_: &[f64; 1]| (f64::NAN, [0.0]);
        assert!(minimize_bfgs(bad, [0.0], &BfgsOptions::default()).is_err());
    }
}
