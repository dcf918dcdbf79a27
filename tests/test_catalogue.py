"""The catalogue contract: category paths as a shop writes them, and the per-date category vocabulary."""

import datetime as dt

import pytest

from jobs.clean import transform_items
from jobs.common.catalogue import CatalogueParams, transform_category_vocab, vocab_list
from jobs.common.config import Config
from jobs.common.errors import ConfigError

D = dt.date(2026, 11, 1)
ITEMS = "item_id string, title string, category_path string, brand string, price double, snapshot_date date"
NONE = CatalogueParams(taxonomy="none")


def cfg_with(section) -> Config:
    return Config(profile="t", root=None, data={"catalogue": section})


def items(spark, rows, catalogue=NONE):
    df = spark.createDataFrame([(i, t, p, b, price, D) for i, t, p, b, price in rows], ITEMS)
    return {r["item_id"]: r for r in transform_items(df, catalogue=catalogue).collect()}


def test_paths_of_any_depth_and_name_keep_their_own_categories(spark):
    out = items(spark, [
        ("i1", "Heat", "Drama|Thriller", None, None),
        ("i2", "Buds", " Electronics > Audio > Headphones ", "Acme", 20.0),
        ("i3", "Thing", "2053013555631882655", None, 5.0),
        ("i4", "Box", None, " ", 1.0),
        ("i5", "Dup", "Drama | drama|Comedy", None, 2.0),
    ])
    got = {k: (r["category_path"], r["category"], list(r["categories"])) for k, r in out.items()}
    assert got == {
        "i1": ("drama|thriller", "drama", ["drama", "thriller"]),
        "i2": ("electronics>audio>headphones", "electronics", ["electronics"]),
        "i3": ("2053013555631882655", "2053013555631882655", ["2053013555631882655"]),
        "i4": ("unknown", "unknown", ["unknown"]),
        "i5": ("drama|drama|comedy", "drama", ["drama", "comedy"]),
    }


def test_tag_level_two_and_aliases(spark):
    catalogue = CatalogueParams(taxonomy="none", tag_level=2,
                                aliases={"films>noir": "films>drama", "(no genres listed)": "unknown"})
    out = items(spark, [("i1", "a", "Electronics/Audio/Headphones", None, 1.0), ("i2", "b", "Films", None, 1.0),
                        ("i3", "c", "films.noir.classic", None, 1.0), ("i4", "d", "(no genres listed)", None, 1.0)],
                catalogue)
    assert {k: list(r["categories"]) for k, r in out.items()} == {
        "i1": ["electronics>audio"], "i2": ["films"], "i3": ["films>drama"], "i4": ["unknown"]}


def test_builtin_taxonomy_maps_onto_its_top_level(spark):
    builtin = CatalogueParams(aliases={"films": "books_media"})
    out = items(spark, [("i1", "a", "electronics.smartphone", None, 1.0), ("i2", "b", "Beauty>Lipstick", None, 1.0),
                        ("i3", "c", "martian_goods>rocks", None, 1.0), ("i4", "d", "Films|Pets", None, 1.0)], builtin)
    assert {k: list(r["categories"]) for k, r in out.items()} == {
        "i1": ["phones"], "i2": ["beauty"], "i3": ["unknown"], "i4": ["books_media", "pets"]}


def test_missing_optional_fields_stay_missing(spark):
    out = items(spark, [("i1", None, "Drama", None, None), ("i2", "x", "Drama", "", -3.0), ("i3", "y", "Drama", "B", 4.0)])
    assert [(r["title"], r["brand"], r["price"]) for _, r in sorted(out.items())] == [
        (None, None, None), ("x", None, None), ("y", "B", 4.0)]


def test_items_without_optional_columns_still_clean(spark):
    df = spark.createDataFrame([("i1", "Drama", D)], "item_id string, category_path string, snapshot_date date")
    row = transform_items(df, catalogue=NONE).collect()[0]
    assert (row["category"], row["title"], row["brand"], row["price"]) == ("drama", None, None, None)


def _vocab(spark, item_rows, event_items, max_tags=30):
    item_df = spark.createDataFrame(item_rows, "item_id string, categories array<string>")
    event_df = spark.createDataFrame([(i,) for i in event_items], "item_id string")
    vocab = transform_category_vocab(item_df, event_df, D, CatalogueParams(taxonomy="none", max_tags=max_tags))
    return vocab


def test_vocabulary_orders_by_events_then_items_then_name_and_counts_each_value(spark):
    vocab = _vocab(spark, [("i1", ["drama", "thriller"]), ("i2", ["comedy"]), ("i3", ["comedy"]),
                           ("i4", ["western"]), ("i5", ["unknown"]), ("i6", ["anime"])],
                   ["i1", "i1", "i2", "i5", "i5", "i5", None])
    rows = sorted((r["position"], r["category"], r["n_items"], r["n_events"], r["n_members"]) for r in vocab.collect())
    assert rows == [(0, "drama", 1, 2, 1), (1, "thriller", 1, 2, 1), (2, "comedy", 2, 1, 1),
                    (3, "anime", 1, 0, 1), (4, "western", 1, 0, 1)]
    assert vocab_list(vocab) == ["drama", "thriller", "comedy", "anime", "western"]


def test_vocabulary_cap_puts_the_tail_into_other(spark):
    vocab = _vocab(spark, [("i1", ["a"]), ("i2", ["b"]), ("i3", ["c"]), ("i4", ["d"])],
                   ["i1", "i1", "i1", "i2", "i2", "i3"], max_tags=3)
    rows = sorted((r["position"], r["category"], r["n_items"], r["n_events"], r["n_members"]) for r in vocab.collect())
    assert rows == [(0, "a", 1, 3, 1), (1, "b", 1, 2, 1), (2, "other", 2, 1, 2)]
    exact = _vocab(spark, [("i1", ["a"]), ("i2", ["b"]), ("i3", ["c"])], [], max_tags=3)
    assert vocab_list(exact) == ["a", "b", "c"]


def test_settings_are_read_once_and_bad_ones_name_their_key():
    params = CatalogueParams.from_config(cfg_with({"taxonomy": "none", "tag_level": 2, "max_tags": 12,
                                                   "path_separators": ["::"], "multi_value_separator": ",",
                                                   "aliases": {"Films::Noir": "Films::Drama"}}))
    assert (params.taxonomy, params.tag_level, params.max_tags, params.path_separators,
            params.multi_value_separator) == ("none", 2, 12, ("::",), ",")
    assert params.all_aliases() == {"films>noir": "films>drama"}
    assert CatalogueParams.from_config(cfg_with(None)) == CatalogueParams()
    bad = [
        ({"taxonomy": "gs1"}, "catalogue.taxonomy"),
        ({"tag_level": 0}, "catalogue.tag_level"),
        ({"tag_level": "two", "taxonomy": "none"}, "catalogue.tag_level"),
        ({"tag_level": 2}, "catalogue.tag_level"),  # the builtin taxonomy tags its top level
        ({"max_tags": 1}, "catalogue.max_tags"),
        ({"path_separators": ">"}, "catalogue.path_separators"),
        ({"path_separators": []}, "catalogue.path_separators"),
        ({"multi_value_separator": ">"}, "catalogue.multi_value_separator"),
        ({"aliases": {"films": "cinema"}}, "catalogue.aliases.films"),  # not a builtin top level
        ({"aliases": ["films"]}, "catalogue.aliases"),
        ({"max_tag": 3}, "catalogue.max_tag"),
    ]
    for section, key in bad:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            CatalogueParams.from_config(cfg_with(section))


@pytest.mark.spark
def test_features_over_a_shops_own_vocabulary(spark):
    """Multi-valued genres count toward each value, the tail goes to `other`, a search finds a genre by
    name, and without list prices the price band is null rather than made up."""
    from jobs.feature_state import FeatureParams
    from jobs.features import transform_user_features

    items = spark.createDataFrame(
        [("i1", "drama|thriller", "drama", ["drama", "thriller"], None), ("i2", "comedy", "comedy", ["comedy"], None),
         ("i3", "western", "western", ["western"], None)],
        "item_id string, category_path string, category string, categories array<string>, price double")
    events = spark.createDataFrame(
        [("a", "view", "i1", None, D), ("a", "purchase", "i2", None, D), ("a", "view", "i3", None, D),
         ("a", "search", None, "best Thriller films", D)],
        "user_key string, event_type string, item_id string, query string, event_date date")
    users = spark.createDataFrame([("a",), ("b",)], "user_key string")
    vocab = ["comedy", "drama", "other"]
    rows = {r["user_key"]: r for r in transform_user_features(
        events, users, items, D, params=FeatureParams(catalogue=NONE), vocab=vocab).collect()}
    a = rows["a"]
    # drama 1 (view), thriller 1 (view) + 1 (search), comedy 5 (purchase), western 1 (view): 9 in all
    assert a["category_affinity"] == pytest.approx([5 / 9, 1 / 9, 3 / 9])
    assert a["search_intent"] == pytest.approx([0.0, 0.0, 1.0]) and a["top_search_intent"] == "thriller"
    assert (a["price_band"], rows["b"]["price_band"], rows["b"]["category_affinity"]) == (None, None, [0.0, 0.0, 0.0])
    # No categorised item at all (one uncategorised catalogue item): empty arrays, not an error.
    empty = transform_user_features(events, users, items, D, params=FeatureParams(catalogue=NONE), vocab=[]).collect()
    assert [(r["category_affinity"], r["search_intent"]) for r in empty] == [([], []), ([], [])]
