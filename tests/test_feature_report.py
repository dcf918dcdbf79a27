"""Feature selection report: statistics by hand, keep/drop decisions, and the step on a tiny lakehouse."""

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from jobs.common.errors import InputDataError
from jobs.feature_report import (
    ReportSettings, chi_square, information_gain, pearson, quantile_bins, score_features,
)


def test_information_gain_and_chi_square_by_hand():
    label = np.array([0, 0, 1, 1])
    # A bin that fixes the label removes all of its one bit of entropy; an unrelated one removes none.
    assert information_gain(np.array([0, 0, 1, 1]), label) == pytest.approx(1.0)
    assert information_gain(np.array([0, 1, 0, 1]), label) == pytest.approx(0.0)
    # H(Y) = 1; bins {0: [0, 0, 1], 1: [1]}: H(Y|X) = 3/4 * H(1/3) = 0.6887 -> gain 0.3113 bits.
    h = -(1 / 3 * math.log2(1 / 3) + 2 / 3 * math.log2(2 / 3))
    assert information_gain(np.array([0, 0, 0, 1]), label) == pytest.approx(1 - 0.75 * h)
    # 2x2 table [[2, 0], [0, 2]]: expected 1 in every cell, chi2 = 4 * (1^2 / 1) = 4.
    chi2, p = chi_square(np.array([0, 0, 1, 1]), label)
    assert chi2 == pytest.approx(4.0)
    assert p == pytest.approx(0.0455, abs=1e-4)
    assert chi_square(np.array([0, 0, 0, 0]), label) == (0.0, 1.0)  # one bin: nothing to test


def test_quantile_bins_and_pearson():
    assert quantile_bins(np.array([3.0, 1.0, np.nan, 3.0]), bins=10).tolist() == [1, 0, -1, 1]  # few values: as is
    spread = quantile_bins(np.arange(100, dtype=float), bins=4)
    assert np.bincount(spread).tolist() == [25, 25, 25, 25]
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])) == pytest.approx(1.0)
    assert pearson(np.array([1.0, 1.0, 1.0]), np.array([0.0, 1.0, 0.0])) == 0.0  # constant: 0, not NaN


def _frame(n=200, seed=3):
    rng = np.random.default_rng(seed)
    churn = np.repeat([0, 1], n // 2)
    interest = np.zeros((n, 3), dtype=int)
    interest[: n // 4, 0] = 1
    echo = churn * 10.0 + rng.normal(0, 0.1, n) + 5
    echo[-2:] -= 10  # two churners look like stayers: the echo says a little less
    frame = pd.DataFrame({
        "signal": churn * 10.0 + rng.normal(0, 0.1, n),       # tells churn apart
        "echo": echo,                                          # nearly the same information again
        "interest_hint": interest[:, 0] * 3.0,
        "constant": np.where(np.arange(n) < 199, 1.0, 2.0),     # one value for 199 of 200 users
        "noise": rng.normal(0, 1, n),
    })
    return frame, interest, churn


def test_report_keeps_signal_and_drops_constant_and_echo():
    frame, interest, churn = _frame()
    features = list(frame.columns)
    report = score_features(frame, features, interest, churn, ReportSettings(mi_sample_users=200)).set_index("feature")
    assert report.loc["signal", "pearson_churn"] == pytest.approx(1.0, abs=0.01)
    assert report.loc["signal", "info_gain_churn"] == pytest.approx(1.0)       # splits the label perfectly
    assert report.loc["signal", "chi2_churn"] == pytest.approx(200.0)          # n for a perfect 2-way split
    assert report.loc["signal", "mi_churn"] > 0.5
    assert report.loc["noise", "info_gain_churn"] < 0.1
    assert report.loc["interest_hint", "pearson_interest_max"] == pytest.approx(1.0)
    assert report.loc["constant", "top_value_share"] == pytest.approx(199 / 200)

    assert report["keep"].to_dict() == {"signal": True, "echo": False, "interest_hint": True, "constant": False,
                                        "noise": True}
    assert report.loc["echo", "reason"].startswith("correlated: |r| = ")
    assert report.loc["echo", "reason"].endswith("with signal, which says more")
    assert report.loc["constant", "reason"] == "near_constant: one value covers 0.995 of users"
    assert report.loc["signal", "most_correlated_with"] == "echo"


def test_thresholds_come_from_the_settings():
    frame, interest, churn = _frame()
    loose = ReportSettings(near_constant_share=1.0, max_correlation=1.01, mi_sample_users=50)
    report = score_features(frame, list(frame.columns), interest, churn, loose).set_index("feature")
    assert report["keep"].all()  # nothing is constant enough or correlated enough any more


@pytest.mark.spark
def test_feature_report_step_on_a_tiny_lakehouse(spark, tmp_path):
    from jobs import feature_report
    from jobs.common.delta import read_table, replace_dates
    from tests.conftest import make_config

    cfg = make_config(tmp_path)
    as_of, run_date = dt.date(2026, 11, 7), dt.date(2026, 11, 14)
    with pytest.raises(InputDataError):  # nothing there yet
        feature_report.run(spark, cfg, run_date)

    users = [f"u{i}" for i in range(12)]
    events = []
    for i, user in enumerate(users):
        item = "i1" if i % 2 else "i2"
        events.append((f"e{i}a", user, "view", item, 10.0 + i, as_of - dt.timedelta(days=i % 3)))
        if i % 3:  # two users in three come back after as_of
            events.append((f"e{i}b", user, "purchase", item, 10.0, as_of + dt.timedelta(days=2)))
    replace_dates(spark.createDataFrame(events, "event_id string, user_key string, event_type string, item_id string, "
                                                "price double, event_date date"),
                  cfg, "silver.events", sorted({e[-1] for e in events}))
    replace_dates(spark.createDataFrame([("i1", "electronics", "Sony", 10.0, as_of), ("i2", "beauty", "Proya", 20.0, as_of)],
                                        "item_id string, category string, brand string, price double, snapshot_date date"),
                  cfg, "silver.items", [as_of])
    replace_dates(spark.createDataFrame([(u, "25-34", "F", "teacher", "Wuhan", as_of) for u in users],
                                        "user_key string, age_band string, gender string, occupation string, city string, "
                                        "snapshot_date date"),
                  cfg, "silver.users", [as_of])

    result = feature_report.run(spark, cfg, run_date)  # gold.user_features is missing: recomputed for as_of
    report = read_table(spark, cfg, "ops.feature_report").toPandas().set_index("feature")
    from jobs.common.feature_windows import FeatureWindows
    from jobs.features import numeric_features

    NUMERIC_FEATURES = numeric_features(FeatureWindows.from_config(cfg))

    # Affinities over the catalogue's own categories (gold.category_vocab): no column for a category
    # without items, such as the builtin taxonomy's pets.
    affinities = {"affinity_electronics", "affinity_beauty"}
    assert set(report.index) == set(NUMERIC_FEATURES) | affinities
    assert (report["n_users"] == 12).all() and (report["as_of_date"] == as_of).all()
    assert not report.loc["n_shares_30d", "keep"]  # nobody shared: constant 0
    assert report.loc["n_shares_30d", "reason"].startswith("near_constant")
    assert result.details["kept"] == int(report["keep"].sum()) > 0
    assert feature_report.selected_features(spark, cfg, run_date) == \
        [f for f in (*NUMERIC_FEATURES, *sorted(affinities)) if report.loc[f, "keep"]]

    rerun = feature_report.run(spark, cfg, run_date)  # idempotent: the day is replaced, not appended
    assert len(read_table(spark, cfg, "ops.feature_report").toPandas()) == rerun.details["features"]
