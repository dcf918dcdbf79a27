"""Churn against what happened next: the published churn_risk, BG/NBD and recency scored on held-out days.

`portrait evaluate --protocol temporal` (portrait/evaluate.py) calls `evaluate_churn` with the dataset's
churn events (the `model.churn_events` types, user ids pseudonymised as clean does) and the cut-off, the
run date of the pipeline it ran on the days up to it:

- users: everyone with a churn event (a purchase) on or before the cut-off: the customers the
  published churn_risk speaks about;
- label: churned = no churn event in the `model.churn_horizon_days` days after the cut-off,
  (cut-off, cut-off + horizon], the definition the churn head is trained on (docs/model.md);
- scorers, on the same users: the published `publish.user_profile.churn_risk` of the cut-off
  (`published`), the BG/NBD model of the `lifetimes` package fitted on the purchases up to the cut-off
  (`bgnbd`, a probability), and the days since the last purchase (`recency`, a ranking only: AUC, no ECE);
- figures: AUC (ml.evaluate.roc_auc), ECE and the reliability table over `evaluate.churn.bins` equal
  bins (ml.evaluate.calibration_table), and a reliability plot (PNG) of every probability.

Everything here is pandas and numpy over small frames; only `published_churn_risk` reads the lakehouse.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.common.errors import PortraitError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

    from jobs.common.config import Config

SCORERS = ("published", "bgnbd", "recency")
PROBABILITIES = ("published", "bgnbd")        # the scorers whose score is a churn probability (ECE, plot)
EVENT_COLUMNS = ("user_key", "event_date")


class ChurnEvaluationError(PortraitError):
    """The churn evaluation cannot be computed: names the dates, the users and what to do."""


@dataclass(frozen=True)
class ChurnParams:
    """The churn settings of the evaluated dataset (model.*) and of the evaluation (evaluate.churn.*)."""

    horizon_days: int             # model.churn_horizon_days: churned = no churn event in this many days
    churn_events: tuple[str, ...]  # model.churn_events: the event types that count as staying
    bins: int                     # evaluate.churn.bins: equal-width bins of the reliability table
    bgnbd_penalizer: float        # evaluate.churn.bgnbd_penalizer: L2 on BG/NBD's parameters (lifetimes)

    def __post_init__(self) -> None:
        if self.horizon_days < 1:
            raise ValueError(f"model.churn_horizon_days must be at least 1, got {self.horizon_days}")
        if self.bins < 1:
            raise ValueError(f"evaluate.churn.bins must be at least 1, got {self.bins}")

    @classmethod
    def from_config(cls, cfg: "Config") -> "ChurnParams":
        return cls(horizon_days=int(cfg.get("model.churn_horizon_days")),
                   churn_events=tuple(str(e) for e in cfg.get("model.churn_events")),
                   bins=int(cfg.get("evaluate.churn.bins")),
                   bgnbd_penalizer=float(cfg.get("evaluate.churn.bgnbd_penalizer")))


def _days(events: "pd.DataFrame") -> "pd.Series":
    import pandas as pd

    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"churn events lack column(s) {', '.join(missing)}; they need {', '.join(EVENT_COLUMNS)}")
    return pd.to_datetime(events["event_date"]).dt.date


def check_window(events: "pd.DataFrame", cutoff: dt.date, horizon_days: int,
                 last_day: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """(first, last) day of the data: the first churn event and `last_day` (the data's last day, events or
    not; default the last churn event). A ChurnEvaluationError unless the cut-off lies inside them and the
    horizon after it ends on or before the last day (a shorter window would call returning users churned)."""
    days = _days(events)
    if days.empty:
        raise ChurnEvaluationError(f"no churn event at all: nothing to label at the cut-off {cutoff}")
    first, last = min(days), max(max(days), last_day or min(days))
    end = cutoff + dt.timedelta(days=horizon_days)
    if cutoff < first:
        raise ChurnEvaluationError(f"the churn cut-off {cutoff} is before the first churn event {first} "
                                   f"(events {first}..{last}): no user is known yet; choose a later cut-off")
    if end > last:
        latest = last - dt.timedelta(days=horizon_days)
        raise ChurnEvaluationError(f"the churn cut-off {cutoff} + {horizon_days} days = {end} is past the last "
                                   f"day of the data {last} (data {first}..{last}): the horizon must lie inside "
                                   f"the data; choose a cut-off on or before {latest}")
    return first, last


def churn_labels(events: "pd.DataFrame", cutoff: dt.date, horizon_days: int,
                 last_day: dt.date | None = None) -> "pd.Series":
    """churned (bool) per user_key with a churn event on or before `cutoff`: True when the user has no
    event in (cutoff, cutoff + horizon_days]. Sorted by user_key; an error when the cut-off is before every
    event (nobody is known yet) or the window leaves the data (`check_window`)."""
    import pandas as pd

    check_window(events, cutoff, horizon_days, last_day)
    days = _days(events)
    users = pd.Index(sorted(set(events.loc[days <= cutoff, "user_key"])), name="user_key")   # never empty
    end = cutoff + dt.timedelta(days=horizon_days)
    returned = set(events.loc[(days > cutoff) & (days <= end), "user_key"])
    return pd.Series([u not in returned for u in users], index=users, name="churned")


def recency_days(events: "pd.DataFrame", cutoff: dt.date) -> "pd.Series":
    """Days from each user's last churn event on or before `cutoff` to the cut-off (0: bought that day)."""
    days = _days(events)
    known = events.assign(_day=days)[days <= cutoff]
    last = known.groupby("user_key")["_day"].max()
    return last.map(lambda d: float((cutoff - d).days)).rename("recency_days").sort_index()


def bgnbd_no_purchase_probability(params: Mapping[str, float], frequency: np.ndarray, recency: np.ndarray,
                                  age: np.ndarray, horizon: float) -> np.ndarray:
    """P(no purchase in the next `horizon` periods | x, t_x, T) under BG/NBD with parameters r, alpha, a, b.

    A customer still alive at T buys at rate lambda, whose posterior given alive and the history is
    Gamma(r + x, alpha + T); BG/NBD drops customers only right after a purchase, so an alive customer
    makes no purchase in the horizon with probability E[exp(-lambda h)] = ((alpha + T) / (alpha + T + h))^(r + x).
    A dead one makes none. Hence 1 - P(alive) + P(alive) ((alpha + T) / (alpha + T + h))^(r + x), with P(alive)
    of Fader, Hardie & Lee (2005), eq. 11 (1 for x = 0, as BG/NBD has no drop-out before a repeat purchase).
    """
    r, alpha, a, b = (float(params[k]) for k in ("r", "alpha", "a", "b"))
    x, t_x, big_t = (np.asarray(v, dtype=float) for v in (frequency, recency, age))
    with np.errstate(over="ignore", divide="ignore"):
        odds = (a / (b + x - 1)) * ((alpha + big_t) / (alpha + t_x)) ** (r + x)
        alive = np.where(x > 0, 1.0 / (1.0 + np.where(x > 0, odds, 0.0)), 1.0)
    silent = ((alpha + big_t) / (alpha + big_t + horizon)) ** (r + x)
    return np.clip(1.0 - alive + alive * silent, 0.0, 1.0)


def bgnbd_churn(events: "pd.DataFrame", cutoff: dt.date, horizon_days: int,
                penalizer: float = 0.0) -> tuple["pd.Series", dict[str, float]]:
    """(churn probability per user_key, fitted r/alpha/a/b): BetaGeoFitter of `lifetimes` fitted on the
    events up to the cut-off in days (frequency = repeat purchase days, recency = first to last purchase
    day, T = first purchase day to the cut-off, lifetimes.utils.summary_data_from_transaction_data with
    freq "D"), churn = P(no purchase in the horizon), `bgnbd_no_purchase_probability`."""
    import pandas as pd
    from lifetimes import BetaGeoFitter
    from lifetimes.utils import ConvergenceError, summary_data_from_transaction_data

    days = _days(events)
    known = pd.DataFrame({"user_key": events["user_key"].to_numpy(), "day": pd.to_datetime(days)})[
        (days <= cutoff).to_numpy()]
    if known.empty:
        raise ChurnEvaluationError(f"BG/NBD: no churn event on or before the cut-off {cutoff} to fit on")
    summary = summary_data_from_transaction_data(known, "user_key", "day", freq="D",
                                                 observation_period_end=pd.Timestamp(cutoff))
    if not (summary["frequency"] > 0).any():
        raise ChurnEvaluationError(f"BG/NBD: none of {len(summary):,} users bought on two days up to {cutoff}; "
                                   "the model cannot learn a purchase rate from single purchases")
    fitter = BetaGeoFitter(penalizer_coef=penalizer)
    try:
        fitter.fit(summary["frequency"], summary["recency"], summary["T"])
    except ConvergenceError:
        raise ChurnEvaluationError(f"BG/NBD did not converge on {len(summary):,} users up to {cutoff} with "
                                   f"evaluate.churn.bgnbd_penalizer {penalizer:g}; raise it "
                                   f"(try {max(10 * penalizer, 0.01):g})") from None
    params = {k: float(fitter.params_[k]) for k in ("r", "alpha", "a", "b")}
    churn = bgnbd_no_purchase_probability(params, summary["frequency"].to_numpy(), summary["recency"].to_numpy(),
                                          summary["T"].to_numpy(), float(horizon_days))
    return pd.Series(churn, index=summary.index.rename("user_key"), name="bgnbd").sort_index(), params


def churn_report(labels: "pd.Series", scores: "pd.Series", bins: int,
                 probability: bool = True) -> tuple[dict[str, float], "pd.DataFrame | None"]:
    """({users, churned, churn_rate, auc[, ece, mean_score]}, reliability table or None) over the users
    of `labels` that have a score; ECE and the table only for a probability."""
    from ml.evaluate import calibration_table, expected_calibration_error, roc_auc

    scored = scores.reindex(labels.index)
    keep = scored.notna().to_numpy()
    y, s = labels.to_numpy()[keep].astype(bool), scored.to_numpy()[keep].astype(float)
    figures = {"users": float(len(y)), "churned": float(y.sum()),
               "churn_rate": float(y.mean()) if len(y) else float("nan"), "auc": roc_auc(y, s)}
    if not probability:
        return figures, None
    figures.update({"ece": expected_calibration_error(y, s, bins) if len(y) else float("nan"),
                    "mean_score": float(s.mean()) if len(y) else float("nan")})
    return figures, calibration_table(y, s, bins)


def calibration_plot(tables: Mapping[str, "pd.DataFrame"], figures: Mapping[str, Mapping[str, float]],
                     path: Path, title: str) -> Path:
    """Reliability diagram (mean predicted churn against the observed churn rate per bin, the diagonal
    is perfect calibration) of every table, with the users per bin below; written as PNG to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    width = 1.0 / (len(next(iter(tables.values()))) if tables else 10) / max(len(tables), 1)
    for i, (name, table) in enumerate(tables.items()):
        filled = table[table["count"] > 0]
        f = figures.get(name, {})
        top.plot(filled["mean_score"], filled["observed_rate"], marker="o",
                 label=f"{name} (AUC {f.get('auc', float('nan')):.3f}, ECE {f.get('ece', float('nan')):.3f})")
        bottom.bar(table["lower"] + i * width, table["count"], width=width, align="edge", label=name)
    top.set(ylabel="observed churn rate", xlim=(0, 1), ylim=(0, 1), title=title)
    top.legend(loc="upper left", fontsize=8)
    bottom.set(xlabel="predicted churn probability", ylabel="users", yscale="log")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def churn_table_markdown(results: Mapping[str, Mapping[str, float]], horizon_days: int) -> str:
    """One row per scorer: users, churn rate, AUC, ECE and mean score (n/a: not a probability)."""
    def cell(value: float | None, digits: int = 4) -> str:
        return "n/a" if value is None or value != value else f"{value:.{digits}f}"

    lines = [f"| churn scorer ({horizon_days}-day horizon) | AUC | ECE | mean score | churn rate | users |",
             "|---|---|---|---|---|---|"]
    for name in [s for s in SCORERS if s in results]:
        r = results[name]
        lines.append(f"| {name} | {cell(r.get('auc'))} | {cell(r.get('ece'))} | {cell(r.get('mean_score'))} | "
                     f"{cell(r.get('churn_rate'))} | {int(r.get('users', 0)):,} |")
    return "\n".join(lines)


def published_churn_risk(spark: "SparkSession", lake: "Config", run_date: dt.date) -> "pd.Series":
    """churn_risk per user_key of publish.user_profile on `run_date` (null risks left out)."""
    import pandas as pd
    from pyspark.sql import functions as F

    from jobs.common.delta import read_table, table_exists

    if not table_exists(spark, lake, "publish.user_profile"):
        raise ChurnEvaluationError(f"publish.user_profile is missing under {lake.lakehouse_root}: "
                                   "the pipeline run did not publish a profile")
    rows = (read_table(spark, lake, "publish.user_profile").where(F.col("as_of_date") == F.lit(run_date))
            .where(F.col("churn_risk").isNotNull()).select("user_key", "churn_risk").toPandas())
    return pd.Series(rows["churn_risk"].astype(float).to_numpy(), index=pd.Index(rows["user_key"], name="user_key"),
                     name="published").sort_index()


def evaluate_churn(events: "pd.DataFrame", cutoff: dt.date, params: ChurnParams, out_dir: Path,
                   published: "pd.Series | None" = None, last_day: dt.date | None = None) -> dict[str, Any]:
    """The churn figures of every scorer on the same users, their reliability tables (CSV) and plot (PNG).

    `events`: user_key, event_date of every churn event, both sides of the cut-off (the baselines only
    read the days up to it). With `published`, every scorer is scored on the users that have a published
    risk (the users without one are counted); without, on every user known at the cut-off.
    Returns {"results": {scorer: figures}, "facts": {...}, "files": [paths], "table": markdown}.
    """
    import pandas as pd

    labels = churn_labels(events, cutoff, params.horizon_days, last_day)
    facts: dict[str, Any] = {"churn_cutoff": cutoff.isoformat(), "churn_horizon_days": params.horizon_days,
                             "churn_window_end": (cutoff + dt.timedelta(days=params.horizon_days)).isoformat(),
                             "churn_users_known": len(labels)}
    scores: dict[str, pd.Series] = {}
    if published is not None:
        facts["churn_users_without_published_risk"] = int((~labels.index.isin(published.index)).sum())
        facts["churn_published_users_unknown"] = int((~published.index.isin(labels.index)).sum())
        labels = labels[labels.index.isin(published.index)]
        if labels.empty:
            raise ChurnEvaluationError(f"no user known at the cut-off {cutoff} has a published churn_risk on that "
                                       "day: check that publish.user_profile holds the run date's profiles")
        scores["published"] = published
    bgnbd, fitted = bgnbd_churn(events, cutoff, params.horizon_days, params.bgnbd_penalizer)
    scores["bgnbd"] = bgnbd
    scores["recency"] = recency_days(events, cutoff)
    facts.update({f"bgnbd_{k}": v for k, v in fitted.items()})
    results: dict[str, dict[str, float]] = {}
    tables: dict[str, pd.DataFrame] = {}
    for name, score in scores.items():
        results[name], table = churn_report(labels, score, params.bins, probability=name in PROBABILITIES)
        if table is not None:
            tables[name] = table
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for name, table in tables.items():
        files.append(out_dir / f"churn_calibration_{name}.csv")
        table.to_csv(files[-1], index=False)
    files.append(calibration_plot(tables, results, out_dir / "churn_calibration.png",
                                  f"churn in {params.horizon_days} days after {cutoff} ({len(labels):,} users)"))
    return {"results": results, "facts": facts, "files": files,
            "table": churn_table_markdown(results, params.horizon_days)}


def churn_skip_reason(protocol: str, leave_last_out: bool, test_days: int, horizon_days: int) -> str | None:
    """Why churn cannot be scored under this split (None: it can): only the temporal protocol's last days
    are a window after one cut-off, and that window must cover the churn horizon."""
    if protocol != "temporal" or leave_last_out:
        return (f"churn is scored only under --protocol temporal (held-out days after one cut-off); "
                f"{protocol}{' --leave-last-out' if leave_last_out else ''} has none")
    if test_days < horizon_days:
        return (f"the held-out window ({test_days} days, evaluate.test_days) is shorter than the churn horizon "
                f"({horizon_days} days, model.churn_horizon_days); pass --test-days {horizon_days} to score churn")
    return None


__all__: Sequence[str] = ["ChurnEvaluationError", "ChurnParams", "PROBABILITIES", "SCORERS", "bgnbd_churn",
                          "bgnbd_no_purchase_probability", "calibration_plot", "check_window", "churn_labels",
                          "churn_report", "churn_skip_reason", "churn_table_markdown", "evaluate_churn",
                          "published_churn_risk", "recency_days"]
