#!/usr/bin/env python3
"""Which purchase model should Patron use by default: BG/NBD, MBG/NBD or Pareto/NBD? (issue 16)

  pip install "lifetimes==0.11.3" "setuptools<70" "numpy<2" "pandas<2.2"
  python3 scripts/model_choice.py [--patron target/debug/patron] [--customers 20000] [--seed 42]
                                  [--out docs/model-choice.md] [--skip-master] [--skip-patron]

Judged on hold-out error, with `lifetimes` 0.11.3's own fitters and prediction functions:
BetaGeoFitter (BG/NBD), ModifiedBetaGeoFitter (MBG/NBD), ParetoNBDFitter (Pareto/NBD).

Data sets
  * CDNOW, as shipped inside lifetimes (lifetimes/datasets/CDNOW_sample.txt: 2,357 customers, the
    1/10 sample of Fader, Hardie & Lee; CDNOW_master.txt: all 23,570 customers of the cohort that
    first bought in 1997 Q1), calibration 1997-01-01..1997-09-30, hold-out 1997-10-01..1998-06-30,
    with `calibration_and_holdout_data` in days (freq='D') and in weeks (freq='W').
  * Patron's generated data: `patron generate --customers N --seed S --now 2025-12-31T23:59:59Z`
    into a SQLite file in a temporary directory; purchase events (events.kind = 1) read from the
    database directly; refunds ignored; calibration ends so that the last 30 % of the span from the
    first purchase to the observation end is hold-out; freq='D'. A second run with 5,000 customers
    (the size `patron demo` generates; same simulation) shows how much the figures move with size.

For each data set and model: fit on the calibration summary (penalizer 0; if the fit raises
lifetimes' ConvergenceError or gives non-finite predictions, 0.001 then 0.01, recorded); the
parameters, the log-likelihood at penalizer 0 in the data set's own time unit, and hold-out figures
from conditional_expected_number_of_purchases_up_to_time(duration_holdout) against
frequency_holdout per customer: MAE, RMSE, aggregate % error, the same for one-time buyers
(frequency_cal == 0), mean predicted vs actual by calibration frequency (lifetimes'
calibration-vs-holdout plot as a table), and for one-time buyers by time since their purchase the
share with any hold-out purchase against each model's mean P(alive). A paired bootstrap over
customers (parameters held fixed) gives 95 % intervals of each model's MAE and RMSE minus
BG/NBD's; the AUC says how well each model's prediction ranks who buys again in the hold-out.

Pareto/NBD in lifetimes 0.11.3 is fitted with Nelder-Mead from a random start (seeded here) and no
convergence check; the script restarts it from its own solution until the log-likelihood stops
improving (at most 4 restarts) and records the gain.

Prints the report (markdown). With --out FILE it also writes it there: if FILE already holds the
markers <!-- results:begin --> and <!-- results:end -->, only the text between them is replaced
(the hand-written decision around them is kept); otherwise the whole file is written.
"""

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
MODELS = ["BG/NBD", "MBG/NBD", "Pareto/NBD"]
PENALIZERS = [0.0, 0.001, 0.01]
# One-time buyers by time since their only purchase (days).
AGE_BUCKETS = [(0, 90, "< 90 d"), (90, 180, "90-180 d"), (180, 365, "180-365 d"), (365, np.inf, "> 365 d")]
UNIT_DAYS = {"D": 1.0, "W": 7.0}


# ---------------------------------------------------------------------------------------------
# Data


def cdnow_transactions(master):
    import lifetimes

    base = os.path.join(os.path.dirname(lifetimes.__file__), "datasets")
    if master:
        raw = pd.read_csv(
            os.path.join(base, "CDNOW_master.txt"), sep=r"\s+", dtype={"customer_id": str, "date": str}
        ).rename(columns={"customer_id": "id"})
    else:
        # columns: original id, sample id, date, number of CDs, dollar value
        raw = pd.read_csv(
            os.path.join(base, "CDNOW_sample.txt"),
            sep=r"\s+",
            header=None,
            names=["orig", "id", "date", "cds", "value"],
            dtype={"orig": str, "id": str, "date": str},
        )
    return pd.DataFrame({"customer_id": raw["id"], "date": pd.to_datetime(raw["date"], format="%Y%m%d")})


def find_patron(explicit):
    if explicit:
        return explicit
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for p in ("target/release/patron", "target/debug/patron"):
        if os.access(os.path.join(here, p), os.X_OK):
            return os.path.join(here, p)
    found = shutil.which("patron")
    if found:
        return found
    sys.exit("no patron binary: build it (cargo build -p patron-server --bin patron) or pass --patron")


def patron_transactions(patron, customers, seed, now, workdir):
    db = os.path.join(workdir, f"gen-{customers}-{seed}.db")
    cmd = [
        patron, "generate", "--customers", str(customers), "--seed", str(seed), "--now", now,
        "--database", "sqlite://" + db, "--log-level", "warn",
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    gen_time = time.perf_counter() - t0
    con = sqlite3.connect(db)
    # kind 1 = purchase (its data is {"purchase": {...}}); refunds (kind 2) are left out.
    rows = con.execute(
        "SELECT customer_id, occurred_at FROM events WHERE kind = 1 AND data LIKE '{\"purchase\"%'"
    ).fetchall()
    n_kind1 = con.execute("SELECT count(*) FROM events WHERE kind = 1").fetchone()[0]
    n_cust = con.execute("SELECT count(*) FROM customers").fetchone()[0]
    con.close()
    assert n_kind1 == len(rows), "events of kind 1 that are not purchases"
    df = pd.DataFrame(rows, columns=["customer_id", "occurred_at"])
    # occurred_at: microseconds since the epoch, UTC; whole days are all the summaries use.
    df["date"] = pd.to_datetime(df["occurred_at"], unit="us").dt.normalize()
    info = {
        "command": " ".join(["patron"] + cmd[1:-4] + ["--database", "sqlite://TMP/gen.db"]),
        "customers": n_cust,
        "purchases": len(df),
        "buyers": df["customer_id"].nunique(),
        "generate_s": gen_time,
        "stdout": (out.stdout + out.stderr).strip().splitlines()[:1],
    }
    return df[["customer_id", "date"]], info


def split(df, cal_end, obs_end, freq):
    from lifetimes.utils import calibration_and_holdout_data

    return calibration_and_holdout_data(
        df, "customer_id", "date", calibration_period_end=cal_end, observation_period_end=obs_end, freq=freq
    )


# ---------------------------------------------------------------------------------------------
# Models


def log_likelihood(name, params, f, r, T):
    """Total log-likelihood at penalizer 0, unscaled time (lifetimes' own likelihood functions)."""
    from lifetimes import BetaGeoFitter, ModifiedBetaGeoFitter, ParetoNBDFitter

    w = np.ones_like(r, dtype=float)
    if name == "BG/NBD":
        return -BetaGeoFitter._negative_log_likelihood(np.log(params), f, r, T, w, 0.0) * len(f)
    if name == "MBG/NBD":
        return -ModifiedBetaGeoFitter._negative_log_likelihood(np.log(params), f, r, T, w, 0.0) * len(f)
    return -ParetoNBDFitter._negative_log_likelihood(np.asarray(params), f, r, T, w, 0.0)


def fit_model(name, f, r, T):
    from lifetimes import BetaGeoFitter, ModifiedBetaGeoFitter, ParetoNBDFitter
    from lifetimes.utils import ConvergenceError

    notes = []
    for pen in PENALIZERS:
        t0 = time.perf_counter()
        try:
            if name == "Pareto/NBD":
                np.random.seed(1)
                m = ParetoNBDFitter(penalizer_coef=pen).fit(f, r, T)
                nll = m._negative_log_likelihood_
                restarts = 0
                for _ in range(4):  # Nelder-Mead stops at 2,000 iterations or tol 1e-4: restart
                    start = m.params_.values.copy()
                    start[1] *= m._scale
                    start[3] *= m._scale
                    m2 = ParetoNBDFitter(penalizer_coef=pen).fit(f, r, T, initial_params=start)
                    gain = nll - m2._negative_log_likelihood_
                    if gain <= 0:
                        break
                    m, nll, restarts = m2, m2._negative_log_likelihood_, restarts + 1
                    if gain < 1e-6:
                        break
                if restarts:
                    notes.append(f"Nelder-Mead restarted {restarts}x from its own solution")
            elif name == "MBG/NBD":
                m = ModifiedBetaGeoFitter(penalizer_coef=pen).fit(f, r, T)
            else:
                m = BetaGeoFitter(penalizer_coef=pen).fit(f, r, T)
        except ConvergenceError:
            notes.append(f"penalizer {pen}: ConvergenceError")
            continue
        secs = time.perf_counter() - t0
        params = m.params_.values.astype(float)
        if not np.all(np.isfinite(params)):
            notes.append(f"penalizer {pen}: non-finite parameters")
            continue
        return m, pen, secs, notes
    return None, None, None, notes


def predict(m, d, unit):
    f, r, T = d["frequency_cal"].values, d["recency_cal"].values, d["T_cal"].values
    with np.errstate(all="ignore"):
        pred = np.asarray(m.conditional_expected_number_of_purchases_up_to_time(d["duration_holdout"].values, f, r, T), float)
        alive = np.asarray(m.conditional_probability_alive(f, r, T), float)
    return pred, alive


# ---------------------------------------------------------------------------------------------
# Figures


def errors(pred, act):
    e = pred - act
    return {
        "n": len(act),
        "mae": np.mean(np.abs(e)),
        "rmse": np.sqrt(np.mean(e * e)),
        "sum_pred": pred.sum(),
        "sum_act": act.sum(),
        "agg": 100.0 * (pred.sum() - act.sum()) / act.sum() if act.sum() else np.nan,
        "dev": poisson_deviance(pred, act),
    }


def poisson_deviance(pred, act):
    """Mean Poisson deviance: like squared error, a scoring rule the true mean minimises (MAE is
    minimised by the median, so it rewards predictions shrunk towards 0 on mostly-zero counts)."""
    mu = np.maximum(pred, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(act > 0, act * np.log(act / mu), 0.0)
    return 2.0 * np.mean(term - (act - mu))


def auc(score, label):
    """Mann-Whitney AUC of score for label (ties count one half)."""
    from scipy.stats import rankdata

    label = label.astype(bool)
    n1, n0 = label.sum(), (~label).sum()
    if n1 == 0 or n0 == 0:
        return np.nan
    ranks = rankdata(score)
    return (ranks[label].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def bootstrap_diff(pred, base, act, reps=1000, seed=7):
    """95 % intervals of MAE(pred) - MAE(base) and RMSE(pred) - RMSE(base), customers resampled."""
    rng = np.random.default_rng(seed)
    n = len(act)
    a1, a0 = np.abs(pred - act), np.abs(base - act)
    s1, s0 = (pred - act) ** 2, (base - act) ** 2
    dm, dr = np.empty(reps), np.empty(reps)
    for i in range(reps):
        w = np.bincount(rng.integers(0, n, n), minlength=n)
        dm[i] = (w @ a1 - w @ a0) / n
        dr[i] = np.sqrt(w @ s1 / n) - np.sqrt(w @ s0 / n)
    return np.percentile(dm, [2.5, 97.5]), np.percentile(dr, [2.5, 97.5])


def fmt(x, d=3):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    return f"{x:.{d}f}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def evaluate(label, d, unit, lines, summary):
    f, r, T = d["frequency_cal"].values.astype(int), d["recency_cal"].values.astype(float), d["T_cal"].values.astype(float)
    act = d["frequency_holdout"].values.astype(float)
    one = f == 0
    fits, preds, alives = {}, {}, {}
    for name in MODELS:
        m, pen, secs, notes = fit_model(name, f, r, T)
        if m is None:
            fits[name] = {"notes": notes}
            continue
        pred, alive = predict(m, d, unit)
        bad = ~np.isfinite(pred) | ~np.isfinite(alive)
        if bad.any():
            notes.append(f"{bad.sum()} non-finite predictions set to 0 / P(alive) 1")
            pred, alive = np.where(np.isfinite(pred), pred, 0.0), np.where(np.isfinite(alive), alive, 1.0)
        params = m.params_.values.astype(float)
        fits[name] = {
            "params": dict(zip(m.params_.index, params)),
            "ll": log_likelihood(name, params, f, r, T),
            "pen": pen,
            "secs": secs,
            "notes": notes,
        }
        preds[name], alives[name] = pred, alive

    n1 = int(one.sum())
    lines.append(f"#### {label}\n")
    lines.append(
        f"{len(d):,} customers in the calibration period ({n1:,} one-time buyers, {100 * n1 / len(d):.1f} %); "
        f"calibration T up to {T.max():.0f} {unit_name(unit)}, hold-out {d['duration_holdout'].iloc[0]:.0f} {unit_name(unit)}; "
        f"{act.sum():,.0f} hold-out repeat purchases (periods with a purchase), "
        f"{100 * (act > 0).mean():.1f} % of customers buy in the hold-out "
        f"({100 * (act[one] > 0).mean():.1f} % of one-time buyers).\n"
    )

    # Fits.
    rows = []
    for name in MODELS:
        ft = fits[name]
        if "params" not in ft:
            rows.append([name, "did not fit", "", "", "", "; ".join(ft["notes"])])
            continue
        p = ft["params"]
        ps = ", ".join(f"{k}={v:.4g}" for k, v in p.items())
        rows.append([name, ps, fmt(ft["ll"], 1), fmt(ft["pen"], 3), fmt(ft["secs"], 1), "; ".join(ft["notes"]) or ""])
    lines.append(table(["model", "parameters", "log-likelihood", "penalizer", "fit s", "notes"], rows) + "\n")

    # Hold-out errors.
    fitted = [n for n in MODELS if n in preds]
    base = preds.get("BG/NBD")
    rows, rows1 = [], []
    for name in fitted:
        a, o = errors(preds[name], act), errors(preds[name][one], act[one])
        ci = ci1 = ""
        if base is not None and name != "BG/NBD":
            (m_lo, m_hi), (r_lo, r_hi) = bootstrap_diff(preds[name], base, act)
            ci = f"{m_lo:+.4f}..{m_hi:+.4f} / {r_lo:+.4f}..{r_hi:+.4f}"
            (m_lo, m_hi), (r_lo, r_hi) = bootstrap_diff(preds[name][one], base[one], act[one])
            ci1 = f"{m_lo:+.4f}..{m_hi:+.4f} / {r_lo:+.4f}..{r_hi:+.4f}"
        rows.append([
            name, fmt(a["mae"], 4), fmt(a["rmse"], 4), fmt(a["dev"], 4), f"{a['sum_pred']:,.0f} / {a['sum_act']:,.0f}",
            fmt(a["agg"], 1) + " %", fmt(auc(preds[name], act > 0), 3), ci,
        ])
        rows1.append([
            name, fmt(o["mae"], 4), fmt(o["rmse"], 4), fmt(o["dev"], 4), f"{o['sum_pred']:,.0f} / {o['sum_act']:,.0f}",
            fmt(o["agg"], 1) + " %", fmt(auc(preds[name][one], act[one] > 0), 3), ci1,
        ])
        summary.append({"data": label, "model": name, "all": a, "one": o, "auc_one": auc(preds[name][one], act[one] > 0)})
    lines.append(
        "Hold-out, per customer (predicted = conditional expected purchases over the hold-out; Poisson dev = "
        "mean Poisson deviance; AUC = how well the prediction ranks who buys at all in the hold-out; "
        "ΔMAE / ΔRMSE = this model minus BG/NBD, 95 % bootstrap interval), all customers, then one-time buyers:\n"
    )
    hdr = ["model", "MAE", "RMSE", "Poisson dev", "Σ pred / Σ actual", "aggregate err", "AUC any", "ΔMAE / ΔRMSE vs BG/NBD"]
    lines.append(table(hdr, rows) + "\n")
    lines.append(table([h if h == "model" else h + " (1-time)" for h in hdr], rows1) + "\n")

    # Calibration vs hold-out by calibration frequency.
    rows = []
    for k in range(8):
        sel = f == k if k < 7 else f >= 7
        if not sel.any():
            continue
        rows.append([f"{k}" if k < 7 else "7+", f"{sel.sum():,}", fmt(act[sel].mean())] + [fmt(preds[n][sel].mean()) for n in fitted])
    lines.append("Mean hold-out purchases by calibration frequency (actual vs each model's prediction):\n")
    lines.append(table(["freq cal", "customers", "actual"] + fitted, rows) + "\n")

    # One-time buyers by time since their purchase.
    since = (T - r) * UNIT_DAYS[unit]
    rows = []
    for lo, hi, name in AGE_BUCKETS:
        sel = one & (since >= lo) & (since < hi)
        if not sel.any():
            continue
        rows.append(
            [name, f"{sel.sum():,}", fmt(100 * (act[sel] > 0).mean(), 1) + " %"]
            + [fmt(alives[n][sel].mean()) for n in fitted]
            + [fmt(act[sel].mean())]
            + [fmt(preds[n][sel].mean()) for n in fitted]
        )
    lines.append(
        "One-time buyers by time since their purchase at the calibration end: share with any hold-out "
        "purchase against mean P(alive), and mean hold-out purchases actual vs predicted:\n"
    )
    lines.append(
        table(
            ["since purchase", "customers", "any hold-out purchase"]
            + [f"P(alive) {n}" for n in fitted]
            + ["actual purchases"]
            + [f"pred {n}" for n in fitted],
            rows,
        )
        + "\n"
    )


    # The same by quartile of time since the purchase (CDNOW's one-time buyers all fall in one
    # fixed bucket: the cohort first bought in 1997 Q1).
    qs = np.unique(np.quantile(since[one], [0, 0.25, 0.5, 0.75, 1.0]))
    rows = []
    for i in range(len(qs) - 1):
        lo, hi = qs[i], qs[i + 1]
        sel = one & (since >= lo) & ((since < hi) if i < len(qs) - 2 else (since <= hi))
        if not sel.any():
            continue
        rows.append(
            [f"{lo:.0f}-{hi:.0f} d", f"{sel.sum():,}", fmt(100 * (act[sel] > 0).mean(), 1) + " %"]
            + [fmt(alives[n][sel].mean()) for n in fitted]
            + [fmt(act[sel].mean())]
            + [fmt(preds[n][sel].mean()) for n in fitted]
        )
    lines.append("The same by quartile of time since the purchase:\n")
    lines.append(
        table(
            ["since purchase", "customers", "any hold-out purchase"]
            + [f"P(alive) {n}" for n in fitted]
            + ["actual purchases"]
            + [f"pred {n}" for n in fitted],
            rows,
        )
        + "\n"
    )


def unit_name(unit):
    return {"D": "days", "W": "weeks"}[unit]


def overview(summary):
    rows = []
    for s in summary:
        a, o = s["all"], s["one"]
        rows.append([s["data"], s["model"], fmt(a["mae"], 4), fmt(a["rmse"], 4), fmt(a["dev"], 4), fmt(a["agg"], 1) + " %",
                     fmt(o["mae"], 4), fmt(o["rmse"], 4), fmt(o["dev"], 4), fmt(o["agg"], 1) + " %", fmt(s["auc_one"], 3)])
    out = [table(["data set", "model", "MAE", "RMSE", "Poisson dev", "aggregate err", "MAE 1-time", "RMSE 1-time",
                  "Poisson dev 1-time", "agg err 1-time", "AUC 1-time"], rows), ""]
    best = []
    for data in dict.fromkeys(s["data"] for s in summary):
        ss = [s for s in summary if s["data"] == data]
        pick = lambda key: min(ss, key=key)["model"]
        best.append([data, pick(lambda s: s["all"]["mae"]), pick(lambda s: s["all"]["rmse"]),
                     pick(lambda s: s["all"]["dev"]), pick(lambda s: abs(s["all"]["agg"])), pick(lambda s: s["one"]["mae"]),
                     pick(lambda s: s["one"]["rmse"]), pick(lambda s: s["one"]["dev"]), pick(lambda s: abs(s["one"]["agg"]))])
    out.append("Lowest per data set (the differences may be within noise: see the intervals below):\n")
    out.append(table(["data set", "MAE", "RMSE", "Poisson dev", "abs(aggregate err)", "MAE 1-time", "RMSE 1-time",
                      "Poisson dev 1-time", "abs(agg err) 1-time"], best))
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patron", help="patron binary (default: target/release, target/debug, PATH)")
    ap.add_argument("--customers", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--now", default="2025-12-31T23:59:59Z", help="observation end of the generated data")
    ap.add_argument("--holdout-share", type=float, default=0.30)
    ap.add_argument("--skip-master", action="store_true", help="leave out CDNOW_master (23,570 customers)")
    ap.add_argument("--skip-patron", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()

    import lifetimes
    import scipy

    t_start = time.perf_counter()
    lines, summary = [], []
    sets = []
    cd = cdnow_transactions(master=False)
    sets.append(("CDNOW sample, days", split(cd, "1997-09-30", "1998-06-30", "D"), "D"))
    sets.append(("CDNOW sample, weeks", split(cd, "1997-09-30", "1998-06-30", "W"), "W"))
    if not args.skip_master:
        cm = cdnow_transactions(master=True)
        sets.append(("CDNOW master, days", split(cm, "1997-09-30", "1998-06-30", "D"), "D"))
        sets.append(("CDNOW master, weeks", split(cm, "1997-09-30", "1998-06-30", "W"), "W"))
    gen_info = []
    if not args.skip_patron:
        patron = find_patron(args.patron)
        with tempfile.TemporaryDirectory() as tmp:
            for n in dict.fromkeys([args.customers, 5000]):
                df, info = patron_transactions(patron, n, args.seed, args.now, tmp)
                obs_end = pd.Timestamp(args.now).tz_convert(None).normalize()
                first = df["date"].min()
                span = (obs_end - first).days
                cal_end = obs_end - pd.Timedelta(days=int(round(args.holdout_share * span)))
                info.update({"first": first.date(), "cal_end": cal_end.date(), "obs_end": obs_end.date(), "span": span})
                gen_info.append(info)
                sets.append((f"Patron generate {n:,} (seed {args.seed}), days", split(df, cal_end, obs_end, "D"), "D"))

    for label, d, unit in sets:
        evaluate(label, d, unit, lines, summary)

    head = []
    head.append(
        f"Measured by `python3 scripts/model_choice.py` with lifetimes {lifetimes.__version__}, numpy {np.__version__}, "
        f"pandas {pd.__version__}, scipy {scipy.__version__}, Python {sys.version.split()[0]}; "
        f"{time.perf_counter() - t_start:.0f} s in all.\n"
    )
    if gen_info:
        head.append("Generated data (purchases read from the SQLite database, refunds left out):\n")
        head.append(
            table(
                ["command", "customers", "buyers", "purchases", "first purchase", "calibration end", "observation end", "hold-out share"],
                [[f"`{g['command']}`", f"{g['customers']:,}", f"{g['buyers']:,}", f"{g['purchases']:,}", g["first"], g["cal_end"],
                  g["obs_end"], f"{100 * (g['obs_end'] - g['cal_end']).days / g['span']:.0f} % of {g['span']} d"] for g in gen_info],
            )
            + "\n"
        )
    head.append("### Overview\n")
    head.append(overview(summary))
    head.append("### Per data set\n")
    report = "\n".join(head + lines).rstrip() + "\n"
    print(report)
    if args.out:
        text = None
        if os.path.exists(args.out):
            with open(args.out) as fh:
                old = fh.read()
            if BEGIN in old and END in old:
                text = old[: old.index(BEGIN) + len(BEGIN)] + "\n" + report + old[old.index(END):]
        if text is None:
            text = "# Purchase model choice (issue 16)\n\n" + BEGIN + "\n" + report + END + "\n"
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
