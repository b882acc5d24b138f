#!/usr/bin/env python3
"""Compares Patron's `clv-compare` run with `clv_lifetimes.py run` on the same data set.

  clv_compare.py --patron-json P.json --patron-csv P.csv --lifetimes-json L.json \
                 --lifetimes-csv L.csv [--tolerance 1e-4] [--json-out report.json]

Checks, each as a maximum relative difference |x - y| / max(|x|, |y|) over all customers:

1. summaries: frequency, recency and T identical per customer, monetary value equal (lifetimes
   sums floats, Patron sums whole cents);
2. fitted parameters (r, alpha, a, b; p, q, v), and the log-likelihood each parameter set reaches
   on the same data (computed with lifetimes' own likelihood functions) together with the
   gradient norm of lifetimes' objective there, to tell which optimiser stopped closer to the
   maximum;
3. per-customer predictions (P(alive), expected purchases, expected spend, CLV):
   (i) each with its own fitted parameters;
   (ii) lifetimes' prediction functions evaluated at Patron's fitted parameters (params_ set by
   hand) against Patron's predictions: the math alone, without the optimisers' stopping points.

Also prints the speed ratio (lifetimes time / Patron time) per stage and in total. Prints a
report; the last line is one JSON object. Exits 0 whether or not the tolerance is met.
"""

import argparse
import json
import sys

import numpy as np
import pandas as pd

PREDICTIONS = ["p_alive", "expected_purchases", "expected_spend", "clv"]
STAGES = ["summary", "fit_bgnbd", "fit_gamma_gamma", "fit", "predict", "total"]


def rel_diff(x, y):
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    both_nan = np.isnan(x) & np.isnan(y)
    one_nan = np.isnan(x) ^ np.isnan(y)
    denom = np.maximum(np.abs(x), np.abs(y))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denom == 0, 0.0, np.abs(x - y) / denom)
    r = np.where(both_nan, 0.0, r)
    r = np.where(one_nan, np.inf, r)
    return r


def worst(ids, x, y, tol):
    r = rel_diff(x, y)
    if r.size == 0:
        return {"max_rel": 0.0}
    i = int(np.nanargmax(r))
    return {
        "max_rel": float(r[i]),
        "over_tolerance": int((r > tol).sum()),
        "nan": int(np.isnan(np.asarray(x, float)).sum() + np.isnan(np.asarray(y, float)).sum()),
        "worst_customer": str(ids[i]),
        "values": [float(np.asarray(x, float)[i]), float(np.asarray(y, float)[i])],
    }


def lifetimes_fitters(bg, gg):
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    bgf = BetaGeoFitter()
    bgf.params_ = pd.Series({k: float(bg[k]) for k in ["r", "alpha", "a", "b"]})
    bgf.predict = bgf.conditional_expected_number_of_purchases_up_to_time
    ggf = GammaGammaFitter()
    ggf.params_ = pd.Series({k: float(gg[k]) for k in ["p", "q", "v"]})
    return bgf, ggf


def lifetimes_predictions(bgf, ggf, s, horizon_months, discount):
    f, r, T, m = s["frequency"], s["recency"], s["T"], s["monetary_value"]
    return {
        "p_alive": np.asarray(bgf.conditional_probability_alive(f, r, T)),
        "expected_purchases": np.asarray(
            bgf.conditional_expected_number_of_purchases_up_to_time(30.0 * horizon_months, f, r, T)
        ),
        "expected_spend": np.asarray(ggf.conditional_expected_average_profit(f, m)),
        "clv": np.asarray(
            ggf.customer_lifetime_value(bgf, f, r, T, m, time=horizon_months, discount_rate=discount, freq="D")
        ),
    }


def objective_checks(s, bg, gg):
    """Log-likelihood and lifetimes' objective gradient at a parameter set (lifetimes' code)."""
    from autograd import grad
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    f = s["frequency"].to_numpy().astype(int)
    rec = s["recency"].to_numpy()
    T = s["T"].to_numpy()
    w = np.ones_like(rec)
    scale = 1.0 / T.max()  # lifetimes._scale_time
    out = {}
    theta = np.log([bg["r"], bg["alpha"] * scale, bg["a"], bg["b"]])
    nll = BetaGeoFitter._negative_log_likelihood
    out["bgnbd_log_likelihood"] = float(-nll(np.log([bg["r"], bg["alpha"], bg["a"], bg["b"]]), f, rec, T, w, 0.0) * len(f))
    g = grad(nll)(theta, f, rec * scale, T * scale, w, 0.0)
    out["bgnbd_objective_gradient_norm"] = float(np.max(np.abs(g)))
    rb = (s["frequency"] > 0) & (s["monetary_value"] > 0)
    x = s.loc[rb, "frequency"].to_numpy().astype(float)
    m = s.loc[rb, "monetary_value"].to_numpy()
    w = np.ones_like(x)
    nll = GammaGammaFitter._negative_log_likelihood
    theta = np.log([gg["p"], gg["q"], gg["v"]])
    out["gamma_gamma_log_likelihood"] = float(-nll(theta, x, m, w, 0.0) * len(x))
    out["gamma_gamma_objective_gradient_norm"] = float(np.max(np.abs(grad(nll)(theta, x, m, w, 0.0))))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patron-json", required=True)
    ap.add_argument("--patron-csv", required=True)
    ap.add_argument("--lifetimes-json", required=True)
    ap.add_argument("--lifetimes-csv", required=True)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--json-out")
    args = ap.parse_args()
    tol = args.tolerance

    with open(args.patron_json) as fh:
        pj = json.loads(fh.read().strip().splitlines()[-1])
    with open(args.lifetimes_json) as fh:
        lj = json.loads(fh.read().strip().splitlines()[-1])
    pc = pd.read_csv(args.patron_csv, dtype={"customer_id": str}, float_precision="round_trip").set_index("customer_id").sort_index()
    lc = pd.read_csv(args.lifetimes_csv, dtype={"customer_id": str}, float_precision="round_trip").set_index("customer_id").sort_index()
    report = {"tolerance": tol, "customers": {"patron": len(pc), "lifetimes": len(lc)}}
    same_ids = pc.index.equals(lc.index)
    report["same_customers"] = bool(same_ids)
    if not same_ids:
        common = pc.index.intersection(lc.index)
        report["customers"]["common"] = len(common)
        pc, lc = pc.loc[common], lc.loc[common]
    ids = pc.index.to_numpy()

    # 1. summaries
    summ = {}
    for col in ["frequency", "recency", "T"]:
        summ[col + "_mismatches"] = int((pc[col].to_numpy() != lc[col].to_numpy()).sum())
    summ["monetary_value"] = worst(ids, pc["monetary_value"], lc["monetary_value"], tol)
    summ["identical"] = (
        all(summ[c + "_mismatches"] == 0 for c in ["frequency", "recency", "T"])
        and summ["monetary_value"]["max_rel"] <= 1e-12
    )
    report["summary"] = summ

    # 2. parameters
    pb, lb = pj["bgnbd"], lj["bgnbd"]
    pg, lg = pj.get("gamma_gamma") or {}, lj["gamma_gamma"]
    params = {}
    for k in ["r", "alpha", "a", "b"]:
        params[k] = {"patron": pb[k], "lifetimes": lb[k], "rel": float(rel_diff(pb[k], lb[k]))}
    for k in ["p", "q", "v"]:
        if k in pg:
            params[k] = {"patron": pg[k], "lifetimes": lg[k], "rel": float(rel_diff(pg[k], lg[k]))}
    report["parameters"] = params
    report["parameters_max_rel"] = max(v["rel"] for v in params.values())
    report["optimisers"] = {
        "patron": {
            "bgnbd": {k: pb.get(k) for k in ["iterations", "evaluations", "converged", "termination", "gradient_norm"]},
            "gamma_gamma": {k: pg.get(k) for k in ["iterations", "evaluations", "converged", "termination", "gradient_norm"]},
            "bfgs": pj.get("bfgs"),
        },
        # scipy.optimize.minimize without bounds picks BFGS; lifetimes passes tol (default 1e-7),
        # which becomes BFGS's gtol on the mean objective in rescaled time.
        "lifetimes": {"method": "BFGS", "tol": lj.get("tol", 1e-7)},
    }
    summary_frame = lc[["frequency", "recency", "T", "monetary_value"]]
    try:
        at_patron = objective_checks(summary_frame, pb, pg)
        at_lifetimes = objective_checks(summary_frame, lb, lg)
        report["objective"] = {"at_patron_params": at_patron, "at_lifetimes_params": at_lifetimes}
    except Exception as e:  # noqa: BLE001 - diagnostics only
        report["objective"] = {"error": repr(e)}

    # 3. predictions
    horizon = int(pj["horizon_months"])
    discount = float(pj["monthly_discount_rate"])
    own = {c: worst(ids, pc[c], lc[c], tol) for c in PREDICTIONS}
    report["predictions_own_params"] = own
    bgf, ggf = lifetimes_fitters(pb, pg)
    with np.errstate(all="ignore"):
        lt_at_patron = lifetimes_predictions(bgf, ggf, summary_frame, horizon, discount)
    same = {c: worst(ids, pc[c], lt_at_patron[c], tol) for c in PREDICTIONS}
    report["predictions_same_params"] = same

    # speed
    def ratios(pt, lt):
        return {
            s: {"patron": pt[s], "lifetimes": lt[s], "ratio": lt[s] / pt[s] if pt[s] and pt[s] > 0 else None}
            for s in STAGES
        }

    report["times"] = ratios(pj["times"], lj["times"])
    if "cpu" in pj and "cpu" in lj:
        report["cpu"] = ratios(pj["cpu"], lj["cpu"])
    report["threads_patron"] = pj.get("threads")
    report["service_fit"] = pj.get("service_fit")

    ok_summary = summ["identical"]
    ok_params = report["parameters_max_rel"] <= tol
    ok_own = all(v["max_rel"] <= tol for v in own.values())
    ok_same = all(v["max_rel"] <= tol for v in same.values())
    report["within_tolerance"] = {
        "summaries": ok_summary,
        "parameters": ok_params,
        "predictions_own_params": ok_own,
        "predictions_same_params": ok_same,
        "all": ok_summary and ok_params and ok_own and ok_same,
    }

    # human report
    w = sys.stdout.write
    w(f"customers: Patron {len(pc)}, lifetimes {len(lc)}, same ids: {same_ids}\n")
    w(f"summaries identical: {ok_summary} (frequency/recency/T mismatches "
      f"{summ['frequency_mismatches']}/{summ['recency_mismatches']}/{summ['T_mismatches']}, "
      f"monetary max rel {summ['monetary_value']['max_rel']:.2e})\n\n")
    w(f"{'wall time':<16}{'Patron s':>12}{'lifetimes s':>14}{'ratio':>10}"
      f"{'Patron CPU s':>16}{'lifetimes CPU s':>18}{'ratio':>10}\n")
    for s in STAGES:
        t = report["times"][s]
        c = report.get("cpu", {}).get(s)
        ratio = f"{t['ratio']:.1f}x" if t["ratio"] is not None else "-"
        line = f"{s:<16}{t['patron']:>12.4f}{t['lifetimes']:>14.4f}{ratio:>10}"
        if c is not None:
            cr = f"{c['ratio']:.1f}x" if c["ratio"] is not None else "-"
            line += f"{c['patron']:>16.2f}{c['lifetimes']:>18.2f}{cr:>10}"
        w(line + "\n")
    w(f"(Patron threads: {pj.get('threads')}; lifetimes: numpy/scipy, one thread; "
      f"CPU = process CPU time of the stage, Patron's in 10 ms ticks)\n")
    sf = pj.get("service_fit")
    if sf:
        w(f"FitValueModel's computation on the same {sf['customers']} customers (patron_scoring::model::fit: "
          f"both fits, population distributions, a CLV per customer; no store): {sf['seconds']:.3f} s\n")
    w("\n")
    w(f"{'param':<8}{'Patron':>22}{'lifetimes':>22}{'rel diff':>12}\n")
    for k, v in params.items():
        w(f"{k:<8}{v['patron']:>22.15g}{v['lifetimes']:>22.15g}{v['rel']:>12.2e}\n")
    obj = report.get("objective", {})
    if "at_patron_params" in obj:
        a, b = obj["at_patron_params"], obj["at_lifetimes_params"]
        w(f"BG/NBD log-likelihood at Patron's params {a['bgnbd_log_likelihood']:.10f} (|grad| "
          f"{a['bgnbd_objective_gradient_norm']:.1e}), at lifetimes' {b['bgnbd_log_likelihood']:.10f} "
          f"(|grad| {b['bgnbd_objective_gradient_norm']:.1e})\n")
        w(f"Gamma-Gamma log-likelihood at Patron's params {a['gamma_gamma_log_likelihood']:.10f} (|grad| "
          f"{a['gamma_gamma_objective_gradient_norm']:.1e}), at lifetimes' {b['gamma_gamma_log_likelihood']:.10f} "
          f"(|grad| {b['gamma_gamma_objective_gradient_norm']:.1e})\n")
    w(f"Patron BG/NBD: {pb.get('iterations')} iterations, {pb.get('termination')}; "
      f"Gamma-Gamma: {pg.get('iterations')} iterations, {pg.get('termination')}\n\n")
    w(f"{'prediction':<20}{'own params max rel':>20}{'same params max rel':>22}\n")
    for c in PREDICTIONS:
        w(f"{c:<20}{own[c]['max_rel']:>20.2e}{same[c]['max_rel']:>22.2e}\n")
    w(f"\nwithin {tol:g} relative: {report['within_tolerance']}\n")
    line = json.dumps(report, default=float)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            fh.write(line + "\n")
    w(line + "\n")
    if not report["within_tolerance"]["all"]:
        sys.exit(f"clv_compare: numbers differ by more than {tol:g} relative")


if __name__ == "__main__":
    main()
