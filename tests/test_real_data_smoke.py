"""A real-data smoke run in `make test`: four days of MovieLens (three raters, 127 ratings, genres, half
stars, no prices, no demographics) through collect, clean and features, with every layer's validation.

It keeps the fixes real data needed from coming undone: one-level and multi-genre categories, the shop's own
category names, ratings that are not whole numbers, a dump whose last day ends in the afternoon."""

import datetime as dt

import pytest

from portrait import datasets
from tests.conftest import make_config

NAME = "movielens-latest-small"
FIRST, LAST = dt.date(2016, 10, 13), dt.date(2016, 10, 16)
GENRES = {"action", "adventure", "animation", "children", "comedy", "crime", "documentary", "drama", "fantasy", "horror",
          "imax", "musical", "mystery", "romance", "sci-fi", "thriller", "war", "western"}   # of the 127 ratings' films


@pytest.mark.spark
def test_four_days_of_movielens_pass_collect_clean_features_and_their_validations(spark, tmp_path):
    from jobs import clean, collect, features, quality
    from jobs.common.delta import read_table

    events = datasets.interactions(NAME)
    days = events["ts"].dt.date
    keep = ((days >= FIRST) & (days <= LAST)).to_numpy()
    assert keep.sum() == 127 and set(events.loc[keep, "user_id"]) == {"251", "547", "624"}
    cfg = make_config(tmp_path, PORTRAIT_DATASET=NAME)
    datasets.write_landing(NAME, cfg.landing_zone, keep={"ratings": keep})
    span = (LAST - FIRST).days + 1

    collected = collect.run(spark, cfg, LAST, collect_days=span)
    quality.run(spark, cfg, LAST, "bronze")
    cleaned = clean.run(spark, cfg, LAST, collect_days=span)
    quality.run(spark, cfg, LAST, "silver")
    featured = features.run(spark, cfg, LAST)
    quality.run(spark, cfg, LAST, "gold")

    audit = {t.table: (t.rows_in, t.rows_out) for r in (collected, cleaned, featured) for t in r.tables}
    assert audit["bronze.events"] == (127, 127)
    silver = read_table(spark, cfg, "silver.events")
    quarantined = read_table(spark, cfg, "bronze.quarantine").where("step = 'clean'")
    assert silver.count() + quarantined.count() == 127          # every rating is in silver or quarantined
    assert silver.where("rating = 3.5").count() == 10            # half stars kept as they are
    vocab = {r["category"] for r in read_table(spark, cfg, "gold.category_vocab").where(f"as_of_date = DATE'{LAST}'").collect()}
    assert vocab == GENRES                                       # the shop's own names (case folded), one per genre
    users = read_table(spark, cfg, "gold.user_features").where(f"as_of_date = DATE'{LAST}'")
    assert users.count() == 3 and users.where("n_events_30d > 0").count() == 3
