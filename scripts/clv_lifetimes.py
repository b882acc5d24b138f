#!/usr/bin/env python3
"""The `lifetimes` side of the value-model comparison (scripts/bench-fit.sh runs it beside
`clv-compare`, Patron's side, on the same data).

  clv_lifetimes.py run DIR --out predictions.csv [--horizon-months 12] [--discount 0.01] [--tol 1e-7]
  clv_lifetimes.py make-cdnow DIR [--sample]
  clv_lifetimes.py make-synthetic DIR --customers N [--seed 1] [--days 730]

`run` reads DIR/transactions.csv (`patron generate --csv DIR`: customer_id, timestamp (RFC 3339
UTC), amount (major units), order_id) and the observation end from DIR/generate.json ("now"),
and times, with `lifetimes` 0.11.3 used the plain way:

  summary  pandas.read_csv + to_datetime + summary_data_from_transaction_data(freq="D",
           observation_period_end=now, monetary_value_col="amount")
  fit      BetaGeoFitter(penalizer_coef=0).fit(frequency, recency, T) on every customer;
           GammaGammaFitter(penalizer_coef=0).fit(frequency, monetary_value) on the repeat buyers
           with a positive monetary value (lifetimes refuses zero values)
  predict  conditional_probability_alive, conditional_expected_number_of_purchases_up_to_time
           (30 * horizon-months days), conditional_expected_average_profit and
           customer_lifetime_value(time=horizon-months, discount_rate, freq="D") for every customer

lifetimes' .fit also computes the Hessian and standard errors (autograd) after the optimiser stops;
that is part of the plain call, so it is in the fit time (Patron's FitValueModel skips standard
errors). --tol is passed to both fits (scipy's BFGS gtol; lifetimes' default 1e-7).

It writes the per-customer summary and predictions to --out and prints one JSON line (wall and
process CPU time per stage, fitted parameters).

`make-cdnow` writes lifetimes' CDNOW transactions (CDNOW_master.txt, 23,570 customers, or with
--sample CDNOW_sample.txt, 2,357) in that CSV format, observation end 1998-06-30T23:59:59Z.
`make-synthetic` simulates BG/NBD customers with Gamma-Gamma spend in the same format.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import pandas as pd

CSV_FLOAT = "%.17g"


def parse_times(col):
    """RFC 3339 UTC strings to naive UTC datetimes (lifetimes works on naive times)."""
    try:
        return pd.to_datetime(col, format="%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, TypeError):
        return pd.to_datetime(col, format="ISO8601", utc=True).dt.tz_convert(None)


def read_now(directory):
    """The observation end: its text and a naive UTC timestamp."""
    with open(os.path.join(directory, "generate.json")) as f:
        now = json.load(f)["now"]
    t = pd.Timestamp(now)
    return now, t.tz_convert(None) if t.tzinfo else t


def run(args):
    import lifetimes
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

    now_text, now = read_now(args.dir)
    times = {}
    cpu = {}
    clock = time.perf_counter
    c0 = time.process_time()

    t0 = clock()
    df = pd.read_csv(
        os.path.join(args.dir, "transactions.csv"),
        dtype={"customer_id": str, "timestamp": str, "order_id": str, "amount": float},
    )
    times["read_csv"] = clock() - t0
    t = clock()
    df["timestamp"] = parse_times(df["timestamp"])
    times["to_datetime"] = clock() - t
    t = clock()
    summary = summary_data_from_transaction_data(
        df,
        "customer_id",
        "timestamp",
        monetary_value_col="amount",
        observation_period_end=now,
        freq="D",
    )
    times["summary_data_from_transaction_data"] = clock() - t
    times["summary"] = clock() - t0
    c1 = time.process_time()
    rows = len(df)
    del df

    f, r, T, m = summary["frequency"], summary["recency"], summary["T"], summary["monetary_value"]
    t1 = clock()
    bgf = BetaGeoFitter(penalizer_coef=0.0)
    bgf.fit(f, r, T, tol=args.tol)
    times["fit_bgnbd"] = clock() - t1
    c2 = time.process_time()
    t = clock()
    repeat = summary[(f > 0) & (m > 0)]
    ggf = GammaGammaFitter(penalizer_coef=0.0)
    ggf.fit(repeat["frequency"], repeat["monetary_value"], tol=args.tol)
    times["fit_gamma_gamma"] = clock() - t
    times["fit"] = clock() - t1
    c3 = time.process_time()

    horizon_days = 30.0 * args.horizon_months
    t2 = clock()
    p_alive = bgf.conditional_probability_alive(f, r, T)
    times["p_alive"] = clock() - t2
    t = clock()
    expected = bgf.conditional_expected_number_of_purchases_up_to_time(horizon_days, f, r, T)
    times["expected_purchases"] = clock() - t
    t = clock()
    spend = ggf.conditional_expected_average_profit(f, m)
    times["expected_spend"] = clock() - t
    t = clock()
    clv = ggf.customer_lifetime_value(
        bgf, f, r, T, m, time=args.horizon_months, discount_rate=args.discount, freq="D"
    )
    times["clv"] = clock() - t
    times["predict"] = clock() - t2
    times["total"] = times["summary"] + times["fit"] + times["predict"]
    c4 = time.process_time()
    # Process CPU time per stage (all threads): on a shared machine, what the stage itself used.
    cpu = {
        "summary": c1 - c0,
        "fit_bgnbd": c2 - c1,
        "fit_gamma_gamma": c3 - c2,
        "fit": c3 - c1,
        "predict": c4 - c3,
        "total": c4 - c0,
    }

    if args.out:
        out = pd.DataFrame(
            {
                "frequency": f,
                "recency": r,
                "T": T,
                "monetary_value": m,
                "p_alive": np.asarray(p_alive),
                "expected_purchases": np.asarray(expected),
                "expected_spend": np.asarray(spend),
                "clv": np.asarray(clv),
            },
            index=summary.index,
        )
        out.index.name = "customer_id"
        out.to_csv(args.out, float_format=CSV_FLOAT)

    n = len(summary)
    bp = bgf.params_
    gp = ggf.params_
    report = {
        "tool": "lifetimes",
        "versions": {
            "lifetimes": lifetimes.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
            "scipy": __import__("scipy").__version__,
            "python": sys.version.split()[0],
        },
        "dir": args.dir,
        "now": now_text,
        "rows": rows,
        "customers": n,
        "horizon_months": args.horizon_months,
        "expected_purchases_days": horizon_days,
        "monthly_discount_rate": args.discount,
        "tol": args.tol,
        "times": times,
        "cpu": cpu,
        "bgnbd": {
            "r": bp["r"],
            "alpha": bp["alpha"],
            "a": bp["a"],
            "b": bp["b"],
            # lifetimes minimises the mean negative log-likelihood in rescaled time.
            "mean_nll_rescaled": float(bgf._negative_log_likelihood_),
        },
        "gamma_gamma": {
            "p": gp["p"],
            "q": gp["q"],
            "v": gp["v"],
            "customers": len(repeat),
            "mean_nll": float(ggf._negative_log_likelihood_),
        },
        "nan_predictions": {
            "p_alive": int(np.isnan(np.asarray(p_alive)).sum()),
            "expected_purchases": int(np.isnan(np.asarray(expected)).sum()),
            "clv": int(np.isnan(np.asarray(clv)).sum()),
        },
    }
    print(json.dumps(report))


def write_dataset(directory, df, now, extra):
    os.makedirs(directory, exist_ok=True)
    df.to_csv(os.path.join(directory, "transactions.csv"), index=False)
    meta = {"now": now, "customers": int(df["customer_id"].nunique()), "transactions": len(df)}
    meta.update(extra)
    with open(os.path.join(directory, "generate.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"wrote {len(df)} transactions of {meta['customers']} customers to {directory}")


def make_cdnow(args):
    import lifetimes

    base = os.path.join(os.path.dirname(lifetimes.__file__), "datasets")
    if args.sample:
        # columns: original id, new id, date, number of CDs, dollar value
        raw = pd.read_csv(
            os.path.join(base, "CDNOW_sample.txt"),
            sep=r"\s+",
            header=None,
            names=["orig", "id", "date", "cds", "value"],
            dtype={"orig": str, "id": str, "date": str},
        )
    else:
        raw = pd.read_csv(
            os.path.join(base, "CDNOW_master.txt"),
            sep=r"\s+",
            dtype={"customer_id": str, "date": str},
        ).rename(columns={"customer_id": "id", "dollar_value": "value"})
    n = len(raw)
    # A time of day per row (deterministic), so day truncation is exercised.
    seconds = (np.arange(n) * 7919) % 86400
    stamps = pd.to_datetime(raw["date"], format="%Y%m%d") + pd.to_timedelta(seconds, unit="s")
    df = pd.DataFrame(
        {
            "customer_id": "cdnow-" + raw["id"],
            "timestamp": stamps.dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "amount": raw["value"].map(lambda v: f"{v:.2f}"),
            "order_id": [f"o{i}" for i in range(n)],
        }
    )
    write_dataset(
        args.dir,
        df,
        "1998-06-30T23:59:59Z",
        {"source": "lifetimes " + lifetimes.__version__ + (" CDNOW_sample.txt" if args.sample else " CDNOW_master.txt")},
    )


def make_synthetic(args):
    """BG/NBD purchase days (CDNOW-like parameters in days) with Gamma-Gamma spend."""
    rng = np.random.default_rng(args.seed)
    n, days = args.customers, args.days
    r, alpha, a, b = 0.243, 30.9, 0.793, 2.426
    p_s, q_s, v_s = 6.25, 3.74, 15.44
    start = pd.Timestamp("2024-01-01")
    now = start + pd.Timedelta(days=days) - pd.Timedelta(seconds=1)
    first = rng.uniform(0, days - 1e-6, n)
    lam = rng.gamma(r, 1.0 / alpha, n)
    drop = rng.beta(a, b, n)
    nu = rng.gamma(q_s, 1.0 / v_s, n)
    cust, when = [np.arange(n)], [first]
    t = first.copy()
    active = np.arange(n)
    while active.size:
        t_a = t[active] + rng.exponential(1.0, active.size) / lam[active]
        inside = t_a < days
        active, t_a = active[inside], t_a[inside]
        t[active] = t_a
        cust.append(active)
        when.append(t_a)
        alive = rng.uniform(size=active.size) >= drop[active]
        active = active[alive]
    cust = np.concatenate(cust)
    when = np.concatenate(when)
    amount = rng.gamma(p_s, 1.0, cust.size) / nu[cust]
    cents = np.maximum(np.round(amount * 100.0), 1).astype(np.int64)
    order = np.lexsort((when, cust))
    cust, when, cents = cust[order], when[order], cents[order]
    stamps = start + pd.to_timedelta(np.floor(when * 86400.0), unit="s")
    df = pd.DataFrame(
        {
            "customer_id": pd.Series(cust).map(lambda i: f"cust-{i + 1:07d}"),
            "timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "amount": [f"{c // 100}.{c % 100:02d}" for c in cents],
            "order_id": [f"ord-{i}" for i in range(cust.size)],
        }
    )
    write_dataset(
        args.dir,
        df,
        now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        {
            "source": "clv_lifetimes.py make-synthetic",
            "seed": args.seed,
            "bgnbd_days": {"r": r, "alpha": alpha, "a": a, "b": b},
            "gamma_gamma": {"p": p_s, "q": q_s, "v": v_s},
        },
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("dir")
    p.add_argument("--out")
    p.add_argument("--horizon-months", type=int, default=12)
    p.add_argument("--discount", type=float, default=0.01)
    p.add_argument("--tol", type=float, default=1e-7, help="scipy.optimize.minimize tol (lifetimes' default 1e-7)")
    p.set_defaults(func=run)
    p = sub.add_parser("make-cdnow")
    p.add_argument("dir")
    p.add_argument("--sample", action="store_true")
    p.set_defaults(func=make_cdnow)
    p = sub.add_parser("make-synthetic")
    p.add_argument("dir")
    p.add_argument("--customers", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--days", type=int, default=730)
    p.set_defaults(func=make_synthetic)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
