"""portrait/churn_eval.py: churn labels after a cut-off, BG/NBD and recency baselines, AUC/ECE, the plot."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from portrait.churn_eval import (ChurnEvaluationError, ChurnParams, bgnbd_churn, bgnbd_no_purchase_probability,
                                 churn_labels, churn_report, churn_skip_reason, churn_table_markdown, evaluate_churn,
                                 recency_days)

CUTOFF = dt.date(2026, 11, 10)


def purchases(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"user_key": [u for u, _ in rows], "event_date": [dt.date.fromisoformat(d) for _, d in rows]})


def five_users() -> pd.DataFrame:
    """Cut-off 11-10, a 5-day horizon (11-11 .. 11-15): u1 returns on 11-12, u2 never, u3 on the window's
    last day, u4 only after it (11-16), u5 first buys after the cut-off (not known at it)."""
    return purchases([("u1", "2026-11-01"), ("u1", "2026-11-09"), ("u1", "2026-11-12"), ("u2", "2026-11-05"),
                      ("u3", "2026-11-10"), ("u3", "2026-11-15"), ("u4", "2026-11-02"), ("u4", "2026-11-16"),
                      ("u5", "2026-11-11")])


def test_labels_call_churned_who_has_no_purchase_in_the_horizon_after_the_cut_off():
    labels = churn_labels(five_users(), CUTOFF, horizon_days=5)
    assert labels.to_dict() == {"u1": False, "u2": True, "u3": False, "u4": True}
    # A 6-day horizon reaches u4's purchase of 11-16.
    assert churn_labels(five_users(), CUTOFF, horizon_days=6).to_dict() == {"u1": False, "u2": True, "u3": False,
                                                                            "u4": False}
    assert recency_days(five_users(), CUTOFF).to_dict() == {"u1": 1.0, "u2": 5.0, "u3": 0.0, "u4": 8.0}


def test_a_cut_off_outside_the_data_is_refused_naming_the_dates():
    with pytest.raises(ChurnEvaluationError, match=r"cut-off 2026-10-31 is before the first churn event 2026-11-01"):
        churn_labels(five_users(), dt.date(2026, 10, 31), horizon_days=5)
    # 11-10 + 7 days = 11-17, past the last day 11-16: u4's purchase on 11-17 could not be seen.
    with pytest.raises(ChurnEvaluationError, match=r"2026-11-17 is past the last day of the data 2026-11-16.*"
                                                   r"on or before 2026-11-09"):
        churn_labels(five_users(), CUTOFF, horizon_days=7)
    # The data's last day (events or not) may lie beyond the last purchase.
    assert len(churn_labels(five_users(), CUTOFF, horizon_days=7, last_day=dt.date(2026, 11, 20))) == 4
    with pytest.raises(ChurnEvaluationError, match="no churn event at all"):
        churn_labels(purchases([]), CUTOFF, horizon_days=5)
    with pytest.raises(ValueError, match="event_date"):
        churn_labels(pd.DataFrame({"user_key": ["u1"]}), CUTOFF, horizon_days=5)


def test_report_gives_the_auc_of_a_known_ordering_and_the_ece_of_its_bins():
    labels = churn_labels(five_users(), CUTOFF, horizon_days=5)          # churned: u2, u4
    scores = pd.Series({"u1": 0.6, "u2": 0.5, "u3": 0.1, "u4": 0.9})
    figures, table = churn_report(labels, scores, bins=2)
    # Pairs (churned, stayed): u2 < u1 is the only one out of order -> 3 of 4.
    assert figures["auc"] == pytest.approx(0.75)
    # Bin [0, .5): u3 (0.1, stayed) gap 0.1; bin [.5, 1]: mean 2.0/3, observed 2/3, gap 0 -> 0.1 x 1/4.
    assert figures["ece"] == pytest.approx(0.025)
    assert figures["users"] == 4 and figures["churn_rate"] == 0.5 and figures["mean_score"] == pytest.approx(0.525)
    assert table["count"].tolist() == [1, 3]
    # Recency ranks perfectly here; it is no probability, so no ECE or table.
    figures, table = churn_report(labels, recency_days(five_users(), CUTOFF), bins=2, probability=False)
    assert figures["auc"] == 1.0 and "ece" not in figures and table is None
    # Users without a score are left out of every figure.
    figures, _ = churn_report(labels, scores.drop("u3"), bins=2)
    assert figures["users"] == 3 and figures["auc"] == pytest.approx(0.5)


PARAMS = {"r": 0.25, "alpha": 40.0, "a": 0.8, "b": 2.5}


def test_bgnbd_churn_is_one_minus_the_chance_of_a_purchase_and_falls_with_a_later_last_purchase():
    from lifetimes import BetaGeoFitter

    # No repeat purchase: alive for sure, so churn is the chance of no purchase at the Gamma-mixed rate,
    # ((alpha + T) / (alpha + T + h))^r.
    assert bgnbd_no_purchase_probability(PARAMS, [0], [0], [60], 30)[0] == pytest.approx((100 / 130) ** 0.25)
    # Fixed frequency and age: the later the last purchase (larger recency), the lower the churn.
    recency = np.array([0, 10, 20, 30, 40, 50, 60])
    churn = bgnbd_no_purchase_probability(PARAMS, np.full(7, 3), recency, np.full(7, 60), 30)
    assert np.all(np.diff(churn) < 0) and np.all((churn > 0) & (churn < 1))
    # A longer horizon leaves less chance of staying silent; an endless one leaves 1 - P(alive), which is
    # lifetimes' own P(alive) for the same parameters.
    assert np.all(bgnbd_no_purchase_probability(PARAMS, np.full(7, 3), recency, np.full(7, 60), 90) < churn)
    fitter = BetaGeoFitter()
    fitter.params_ = pd.Series(PARAMS)
    alive = fitter.conditional_probability_alive(np.full(7, 3), recency, np.full(7, 60))
    assert bgnbd_no_purchase_probability(PARAMS, np.full(7, 3), recency, np.full(7, 60), 1e12) == pytest.approx(
        1 - alive, abs=1e-9)


DAY = dt.date(2026, 1, 1)


def bought(user: str, offsets: range | list[int]) -> list[tuple[str, str]]:
    return [(user, (DAY + dt.timedelta(days=k)).isoformat()) for k in offsets]


def bursts_and_steady(until: int = 100) -> pd.DataFrame:
    """Bursts (three purchases in a week, then silence), steady buyers (every 20 days to day `until`),
    single buyers; `early` and `late` alike in frequency (2) and age (100 days at day 100) but for the day
    of their last purchase; `after` buys only after day 100."""
    rows = [r for i in range(6) for r in bought(f"burst{i}", range(i, i + 9, 3))]
    rows += [r for i in range(6) for r in bought(f"steady{i}", range(i, i + until, 20))]
    rows += [r for i in range(4) for r in bought(f"once{i}", [5 * i])]
    rows += bought("early", [0, 1, 2]) + bought("late", [0, 50, 98] + ([110] if until > 100 else []))
    return purchases(rows + bought("after", [101, 120]))


def test_bgnbd_fits_on_the_purchases_up_to_the_cut_off_only():
    cutoff = DAY + dt.timedelta(days=100)
    churn, fitted = bgnbd_churn(bursts_and_steady(), cutoff, horizon_days=30, penalizer=0.01)
    assert "after" not in churn.index and len(churn) == 18 and set(fitted) == {"r", "alpha", "a", "b"}
    assert churn["late"] < churn["early"]                         # monotone in recency for a fixed frequency
    assert churn.between(0, 1).all() and churn.filter(like="steady").max() < churn.filter(like="burst").min()
    with pytest.raises(ChurnEvaluationError, match="did not converge on 18 users up to 2026-04-11 with "
                                                   "evaluate.churn.bgnbd_penalizer 0; raise it"):
        bgnbd_churn(bursts_and_steady(), cutoff, horizon_days=30, penalizer=0.0)
    with pytest.raises(ChurnEvaluationError, match="none of 2 users bought on two days up to 2026-11-10"):
        bgnbd_churn(purchases([("ua", "2026-11-01"), ("ub", "2026-11-02"), ("ua", "2026-11-12")]), CUTOFF, 10)
    with pytest.raises(ChurnEvaluationError, match="no churn event on or before the cut-off 2026-11-10"):
        bgnbd_churn(purchases([("ua", "2026-11-12")]), CUTOFF, 10)


def test_evaluate_churn_scores_every_scorer_on_the_users_with_a_published_risk(tmp_path):
    # Up to day 100 as above; after it the steady buyers go on (days 100..125) and `late` buys on day 110.
    events = bursts_and_steady(until=140)
    cutoff, last_day = DAY + dt.timedelta(days=100), DAY + dt.timedelta(days=130)
    published = pd.Series({**{f"steady{i}": 0.2 for i in range(6)}, **{f"burst{i}": 0.9 for i in range(6)},
                           **{f"once{i}": 0.8 for i in range(3)}, "late": 0.3, "early": 0.25, "stranger": 0.5})
    params = ChurnParams(horizon_days=30, churn_events=("purchase",), bins=2, bgnbd_penalizer=0.01)
    record = evaluate_churn(events, cutoff, params, tmp_path, published=published, last_day=last_day)
    facts = record["facts"]
    # Known at the cut-off: 18 users; once3 has no published risk, `stranger` is not known.
    assert (facts["churn_users_known"], facts["churn_users_without_published_risk"],
            facts["churn_published_users_unknown"], facts["churn_window_end"]) == (18, 1, 1, "2026-05-11")
    assert {name: r["users"] for name, r in record["results"].items()} == {"published": 17, "bgnbd": 17,
                                                                           "recency": 17}
    # Churned: 6 bursts, once0..2, early (10); stayed: 6 steady, late (7). Only early (.25) < late (.3)
    # is out of order among the 70 pairs; recency (85..98 against 2..20) orders them all.
    assert record["results"]["published"]["churn_rate"] == pytest.approx(10 / 17)
    assert record["results"]["published"]["auc"] == pytest.approx(69 / 70)
    assert record["results"]["recency"]["auc"] == 1.0
    assert "ece" not in record["results"]["recency"] and 0 <= record["results"]["bgnbd"]["ece"] <= 1
    assert sorted(p.name for p in record["files"]) == ["churn_calibration.png", "churn_calibration_bgnbd.csv",
                                                      "churn_calibration_published.csv"]
    assert (tmp_path / "churn_calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pd.read_csv(tmp_path / "churn_calibration_published.csv")["count"].tolist() == [8, 9]
    assert "| published | 0.9857 |" in record["table"] and "| recency | 1.0000 | n/a |" in record["table"]
    with pytest.raises(ChurnEvaluationError, match="no user known at the cut-off 2026-04-11 has a published"):
        evaluate_churn(events, cutoff, params, tmp_path, published=pd.Series({"stranger": 0.2}), last_day=last_day)


def test_churn_is_scored_only_on_a_temporal_window_that_covers_the_horizon():
    assert churn_skip_reason("temporal", False, 90, 90) is None
    assert churn_skip_reason("temporal", False, 120, 90) is None
    assert "pass --test-days 30" in churn_skip_reason("temporal", False, 7, 30)
    assert "only under --protocol temporal" in churn_skip_reason("random", False, 7, 30)
    assert "--leave-last-out has none" in churn_skip_reason("temporal", True, 90, 90)
    assert churn_table_markdown({}, 90).count("\n") == 1
    with pytest.raises(ValueError, match="model.churn_horizon_days"):
        ChurnParams(horizon_days=0, churn_events=("purchase",), bins=10, bgnbd_penalizer=0.0)


def test_report_says_what_was_skipped_and_one_item_skips_recommendations():
    from portrait.evaluate import recommendations_skip_reason, report_markdown

    one = pd.DataFrame({"item_id": ["cd", "cd"]})
    assert recommendations_skip_reason(one) == ("recommendations skipped: the interactions name 1 item "
                                                "(nothing to rank)")
    assert recommendations_skip_reason(pd.DataFrame({"item_id": ["cd", "lp"]})) is None
    record = {"results": {}, "skipped": {"recommendations": "recommendations skipped: x", "churn": None},
              "churn": {"table": "| churn scorer |"}}
    assert report_markdown(record, 10) == "recommendations skipped: x\n\n| churn scorer |"
    record = {"results": {}, "skipped": {"recommendations": None, "churn": "no window"}, "churn": {}}
    assert report_markdown(record, 10).endswith("\n\nchurn not scored: no window")
    assert report_markdown(record, 10).startswith("| recommender | P@10 |")


def test_churn_events_keep_the_churn_event_types_on_both_sides_of_the_cut_off(tmp_path):
    from jobs.common.privacy import pseudonymise_py
    from portrait.evaluate import churn_events
    from tests.conftest import TEST_HMAC_KEY, make_config

    day = pd.Timestamp("2026-11-01 12:00", tz="UTC")
    frame = pd.DataFrame([("orders", 0, "7", "p1", day), ("ratings", 0, "7", "m1", day),
                          ("orders", 1, "8", "p1", day + pd.Timedelta(days=40))],
                         columns=["source", "row", "user_id", "item_id", "ts"])
    key = TEST_HMAC_KEY.encode()
    lake = make_config(tmp_path, PORTRAIT__COLLECT__SOURCES__RATINGS__CONSTANTS__EVENT_TYPE="rating")
    rows = churn_events(frame, key, lake, ("purchase",))
    assert rows.values.tolist() == [[pseudonymise_py(key, "7"), dt.date(2026, 11, 1)],
                                    [pseudonymise_py(key, "8"), dt.date(2026, 12, 11)]]
    assert len(churn_events(frame, key, lake, ("rating",))) == 1


def test_evaluate_baselines_only_on_a_one_item_dataset_scores_churn_and_logs_the_plot(tmp_path, monkeypatch):
    """The whole `portrait evaluate --protocol temporal --baselines-only` on a one-item purchase log: the
    window widens to the churn horizon, recommendations are skipped, BG/NBD and recency reach MLflow."""
    import types

    import mlflow

    from portrait.evaluate import evaluate
    from tests.conftest import make_config

    events = bursts_and_steady(until=140)                       # last purchase: day 125
    frame = pd.DataFrame({"source": "purchases", "row": range(len(events)), "user_id": events["user_key"],
                          "item_id": "the-one-item",
                          "ts": pd.to_datetime(events["event_date"]).dt.tz_localize("UTC") + pd.Timedelta(hours=12)})
    datasets = types.SimpleNamespace(dataset_names=lambda: ["one-item-shop"], interactions=lambda name: frame.copy())
    monkeypatch.setenv("PORTRAIT__MODEL__CHURN_HORIZON_DAYS", "30")
    monkeypatch.setenv("PORTRAIT__EVALUATE__CHURN__BGNBD_PENALIZER", "0.01")
    cfg = make_config(tmp_path, PORTRAIT__EVALUATE__WORK_DIR=str(tmp_path / "evaluate"))
    said: list[str] = []
    record = evaluate("one-item-shop", "temporal", cfg, datasets=datasets, echo=said.append, baselines_only=True)
    assert any("widened from evaluate.test_days 7 to the churn horizon 30" in line for line in said)
    assert record["split"] == "temporal: train to 2026-04-06, test the 30 days after"
    assert record["results"] == {} and record["skipped"]["recommendations"].startswith("recommendations skipped")
    # The run date is the last training day, day 85 (nobody bought on days 86..95): 18 users known; the 7
    # who buy in the 30 days after it (steady, late) bought 0..35 days before, the 11 others 70 or more.
    assert record["churn"]["results"]["recency"] == {"users": 18.0, "churned": 11.0, "churn_rate": 11 / 18,
                                                     "auc": 1.0}
    assert (record["churn"]["facts"]["churn_cutoff"], record["churn"]["facts"]["churn_window_end"]) == (
        "2026-03-27", "2026-04-26")
    assert "published" not in record["churn"]["results"]
    run = mlflow.MlflowClient(cfg.mlflow_tracking_uri).get_run(record["mlflow_run_id"])
    assert run.data.metrics["churn_bgnbd_auc"] == pytest.approx(record["churn"]["results"]["bgnbd"]["auc"])
    assert run.data.tags["recommendations_skipped"] == record["skipped"]["recommendations"]
    logged = {a.path for a in mlflow.MlflowClient(cfg.mlflow_tracking_uri).list_artifacts(run.info.run_id)}
    assert {"churn_calibration.png", "churn_calibration_bgnbd.csv", "evaluation.md"} <= logged
    # Under the random protocol there is no window after a cut-off: churn is not scored, and says so.
    record = evaluate("one-item-shop", "random", cfg, datasets=datasets, echo=said.append, baselines_only=True)
    assert record["churn"] == {} and "only under --protocol temporal" in record["skipped"]["churn"]
    assert ("churn not scored: " + record["skipped"]["churn"]) in said[-2].splitlines()
    assert said[-2].splitlines()[-1] == "interest tags not scored: scored with the recommendations, which were skipped"
