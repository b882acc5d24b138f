#!/usr/bin/env python3
"""The `lifetimes` side of the hold-out benchmark (scripts/bench-holdout.sh runs it beside
Patron's FitValueModel with `calibration_end` and `holdout_end`, on the same SQLite file).

  holdout_lifetimes.py DB [--calibration-end 2026-08-03] [--holdout-end 2026-11-01]
                          [--no-check] [--out predictions.csv]

Reads the purchase events (kind 1) of a Patron SQLite store (`events`: customer_id, occurred_at
in microseconds since the epoch, kind, JSON data: {"purchase": {"order_id", "amount", …}},
refunds, kind 2, {"refund": {"order_id", "amount"}}) and times, with `lifetimes` 0.11.3 used the
plain way:

  read      SELECT customer_id, occurred_at FROM events WHERE kind = 1, into a pandas DataFrame
            (customer_id, date: naive UTC datetimes)
  holdout   calibration_and_holdout_data(calibration_period_end=CAL, observation_period_end=END,
            freq="D")
  fit       BetaGeoFitter(penalizer_coef=0).fit(frequency_cal, recency_cal, T_cal)
  predict   conditional_expected_number_of_purchases_up_to_time(duration_holdout, frequency_cal,
            recency_cal, T_cal) for every customer

Refunds are ignored in the timed run (every purchase counts). The calibration end is passed as
the date "2026-08-03", which pandas reads as 2026-08-03T00:00:00: lifetimes compares the full
timestamps (`date <= calibration_period_end`), so the calibration holds exactly the purchases at
or before Patron's `calibration_end` instant, and T_cal counts whole days to 2026-08-03 as
Patron's does. ("2026-08-02" would drop 2 August's purchases, which are in Patron's calibration,
and shorten every T by a day.)

Then, untimed (unless --no-check), the same figures under Patron's rules, to check agreement:
  - orders wholly refunded are not purchases (Patron's "active orders"): in the calibration,
    by the refunds made by the calibration end; in the hold-out, by every refund;
  - the hold-out counts the purchase days of orders after the calibration instant, up to the
    hold-out end's day (as lifetimes does; before commit "Hold-out: a purchase on the calibration
    end's day after the instant counts in the hold-out" Patron skipped the calibration end's own
    day, so purchases made during 3 August fell in neither of its periods);
and, with lifetimes' own fit, a hold-out report under those rules (fit again on the adjusted
calibration summary).

Prints one JSON object: times per stage (wall and process CPU), the fitted parameters and the
report figures (customers, sum of frequency_holdout, sum of predictions, MAE, RMSE).
"""

import argparse
import json
import sqlite3
import sys
import time

import numpy as np
import pandas as pd

PURCHASE = 1
REFUND = 2
DAY_US = 86_400_000_000


def report(summary, predicted):
    actual = summary["frequency_holdout"].to_numpy(dtype=float)
    diff = predicted - actual
    return {
        "customers": int(len(summary)),
        "actual_purchases": float(actual.sum()),
        "predicted_purchases": float(predicted.sum()),
        "mean_absolute_error": float(np.abs(diff).mean()),
        "root_mean_squared_error": float(np.sqrt((diff * diff).mean())),
        "aggregate_error_percent": float(100.0 * (predicted.sum() - actual.sum()) / actual.sum()),
    }


def params(bgf):
    return {k: float(v) for k, v in bgf.params_.items()}


class Stages:
    def __init__(self):
        self.times = {}

    def run(self, name, fn):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        self.times[name] = {
            "wall_s": round(time.perf_counter() - w0, 3),
            "cpu_s": round(time.process_time() - c0, 3),
        }
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db")
    ap.add_argument("--calibration-end", default="2026-08-03")
    ap.add_argument("--holdout-end", default="2026-11-01")
    ap.add_argument("--no-check", action="store_true", help="skip the untimed check under Patron's rules")
    ap.add_argument("--out", help="per-customer calibration summary and predictions (CSV)")
    args = ap.parse_args()

    import lifetimes
    from lifetimes import BetaGeoFitter
    from lifetimes.utils import calibration_and_holdout_data

    st = Stages()

    def read():
        con = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
        rows = con.execute(
            "SELECT customer_id, occurred_at FROM events WHERE kind = ?", (PURCHASE,)
        ).fetchall()
        con.close()
        df = pd.DataFrame(rows, columns=["customer_id", "occurred_at"])
        df["date"] = pd.to_datetime(df["occurred_at"], unit="us")
        return df[["customer_id", "date"]]

    tx = st.run("read", read)

    summary = st.run(
        "holdout",
        lambda: calibration_and_holdout_data(
            tx,
            "customer_id",
            "date",
            calibration_period_end=args.calibration_end,
            observation_period_end=args.holdout_end,
            freq="D",
        ),
    )

    def fit():
        bgf = BetaGeoFitter(penalizer_coef=0.0)
        bgf.fit(summary["frequency_cal"], summary["recency_cal"], summary["T_cal"])
        return bgf

    bgf = st.run("fit", fit)

    predicted = st.run(
        "predict",
        lambda: np.asarray(
            bgf.conditional_expected_number_of_purchases_up_to_time(
                summary["duration_holdout"], summary["frequency_cal"], summary["recency_cal"], summary["T_cal"]
            ),
            dtype=float,
        ),
    )
    times = st.times
    times["total_without_read_s"] = round(sum(times[s]["wall_s"] for s in ("holdout", "fit", "predict")), 3)
    times["total_s"] = round(times["total_without_read_s"] + times["read"]["wall_s"], 3)

    out = {
        "lifetimes_version": lifetimes.__version__,
        "db": args.db,
        "calibration_period_end": args.calibration_end,
        "observation_period_end": args.holdout_end,
        "purchase_events": int(len(tx)),
        "times": times,
        "bg_nbd": params(bgf),
        "holdout_days": float(summary["duration_holdout"].iloc[0]),
        "report": report(summary, predicted),
    }
    if args.out:
        s = summary.copy()
        s["predicted"] = predicted
        s.to_csv(args.out, float_format="%.17g")

    if not args.no_check:
        out["patron_rules"] = check(args, tx, summary, bgf, calibration_and_holdout_data, BetaGeoFitter)

    json.dump(out, sys.stdout, indent=1)
    print()


def check(args, tx, summary, bgf, calibration_and_holdout_data, BetaGeoFitter):
    """The report under Patron's rules (see the module doc), untimed."""
    cal_us = pd.Timestamp(args.calibration_end).value // 1000
    end_us = pd.Timestamp(args.holdout_end).value // 1000
    con = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    ev = pd.DataFrame(
        con.execute(
            "SELECT customer_id, kind, occurred_at,"
            " coalesce(json_extract(data, '$.purchase.order_id'), json_extract(data, '$.refund.order_id')),"
            " coalesce(json_extract(data, '$.purchase.amount'), json_extract(data, '$.refund.amount'))"
            " FROM events WHERE kind IN (?, ?)",
            (PURCHASE, REFUND),
        ).fetchall(),
        columns=["customer_id", "kind", "occurred_at", "order_id", "amount"],
    )
    con.close()
    if ev["order_id"].isna().any() or ev["amount"].isna().any():
        raise SystemExit("holdout_lifetimes: purchase/refund data without order_id or amount")
    purchases = ev[ev["kind"] == PURCHASE].drop_duplicates(["customer_id", "order_id"])
    refunds = ev[ev["kind"] == REFUND]
    key = ["customer_id", "order_id"]

    def active(refunds_until_us):
        r = refunds if refunds_until_us is None else refunds[refunds["occurred_at"] <= refunds_until_us]
        refunded = r.groupby(key)["amount"].sum().rename("refunded")
        p = purchases.join(refunded, on=key)
        wholly = p["refunded"].fillna(0) >= p["amount"]
        return p[~wholly]

    cal = active(cal_us)
    cal = cal[cal["occurred_at"] <= cal_us]
    now = active(None)
    now_day = now["occurred_at"] // DAY_US
    hold = now[(now["occurred_at"] > cal_us) & (now_day <= end_us // DAY_US)]
    # Calibration summary from the calibration's active orders (its hold-out part is unused).
    cal_tx = pd.DataFrame(
        {"customer_id": cal["customer_id"].to_numpy(), "date": pd.to_datetime(cal["occurred_at"].to_numpy(), unit="us")}
    )
    # One dummy hold-out row so lifetimes accepts the frame; its counts are replaced below.
    probe = pd.DataFrame(
        {"customer_id": cal_tx["customer_id"].iloc[:1].to_numpy(), "date": pd.to_datetime([end_us], unit="us")}
    )
    s = calibration_and_holdout_data(
        pd.concat([cal_tx, probe], ignore_index=True),
        "customer_id",
        "date",
        calibration_period_end=args.calibration_end,
        observation_period_end=args.holdout_end,
        freq="D",
    )
    days = (hold["occurred_at"] // DAY_US).rename("day")
    per_customer = pd.concat([hold["customer_id"], days], axis=1).drop_duplicates().groupby("customer_id").size()
    s["frequency_holdout"] = per_customer.reindex(s.index).fillna(0).to_numpy(dtype=float)
    refit = BetaGeoFitter(penalizer_coef=0.0)
    refit.fit(s["frequency_cal"], s["recency_cal"], s["T_cal"])
    pred = np.asarray(
        refit.conditional_expected_number_of_purchases_up_to_time(
            s["duration_holdout"], s["frequency_cal"], s["recency_cal"], s["T_cal"]
        ),
        dtype=float,
    )
    # What each rule changes, one at a time, on the timed run's customers.
    on_cal_day = tx[(tx["date"] > pd.Timestamp(args.calibration_end))
                    & (tx["date"] < pd.Timestamp(args.calibration_end) + pd.Timedelta(days=1))]
    return {
        "purchase_orders": int(len(purchases)),
        "orders_wholly_refunded_by_calibration_end": int(len(purchases) - len(active(cal_us))),
        "orders_wholly_refunded_now": int(len(purchases) - len(now)),
        "customers_buying_on_calibration_end_day_after_it": int(
            on_cal_day[on_cal_day["customer_id"].isin(summary.index)]["customer_id"].nunique()
        ),
        "bg_nbd": params(refit),
        "report": report(s, pred),
    }


if __name__ == "__main__":
    main()
