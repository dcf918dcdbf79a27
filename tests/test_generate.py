"""Tests of the sample-data generator: the landing contract, determinism and the planted truth."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.common.taxonomy import ALL_PATHS, CATEGORIES, TOP_LEVEL, category_path, top_level_of
from jobs.generate import (
    ACTIVITY_LEVELS,
    CHANNELS,
    CITIES,
    DEVICES,
    EVENT_COLUMNS,
    EVENT_TYPES,
    GENDERS,
    ITEM_COLUMNS,
    OCCUPATIONS,
    PRICE_TIERS,
    SEGMENTS,
    USER_COLUMNS,
    GenerateSummary,
    default_item_count,
    generate,
)

START = dt.date(2026, 11, 1)
OFFSETS = {"+08:00", "+09:00", "+00:00", "-05:00", "+01:00", "-08:00"}
PRICED = {"view", "click", "add_to_cart", "purchase"}
COUNTED = {"add_to_cart", "remove_from_cart", "purchase"}
RATED = {"rating", "review"}


def _read_lines(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), f"{path} must end with a newline"
    return [json.loads(line, object_pairs_hook=_keep_order) for line in text.splitlines()]


def _keep_order(pairs: list[tuple[str, object]]) -> dict:
    record = dict(pairs)
    record["__keys__"] = tuple(key for key, _ in pairs)
    return record


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(root: Path, **overrides) -> GenerateSummary:
    arguments = {"users": 40, "days": 2, "seed": 11, "start_date": START}
    arguments.update(overrides)
    return generate(root / "landing", root / "truth", **arguments)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """One small run shared by the read-only tests: 600 users over 6 days, ~30k events."""
    root = tmp_path_factory.mktemp("generated")
    summary = generate(root / "landing", root / "truth", users=600, days=6, seed=7, start_date=START)
    events = []
    for day_file in sorted((root / "landing" / "events").glob("event_date=*/events-00000.jsonl")):
        folder_date = day_file.parent.name.split("=", 1)[1]
        for record in _read_lines(day_file):
            record["__folder_date__"] = folder_date
            events.append(record)
    return {
        "root": root,
        "summary": summary,
        "events": events,
        "users": _read_lines(root / "landing" / "users" / "users.jsonl"),
        "items": _read_lines(root / "landing" / "items" / "items.jsonl"),
        "truth_users": pd.read_parquet(root / "truth" / "users.parquet"),
        "truth_items": pd.read_parquet(root / "truth" / "items.parquet"),
    }


@pytest.fixture(scope="module")
def item_events(dataset):
    """Events that name an item, with the item's top-level category and list price."""
    items = pd.DataFrame(dataset["items"])[["item_id", "category_path", "price"]]
    items["category"] = items["category_path"].map(top_level_of)
    events = pd.DataFrame(
        [{k: e[k] for k in ("user_id", "event_type", "item_id", "price")} for e in dataset["events"]]
    )
    events = events[events["item_id"].notna()]
    return events.merge(items.rename(columns={"price": "list_price"}), on="item_id", how="left")


# --- taxonomy ----------------------------------------------------------------------------


def test_taxonomy_has_enough_well_formed_categories():
    assert len(TOP_LEVEL) >= 16
    assert len(set(TOP_LEVEL)) == len(TOP_LEVEL)
    assert tuple(CATEGORIES) == TOP_LEVEL
    for top in TOP_LEVEL:
        category = CATEGORIES[top]
        assert re.fullmatch(r"[a-z][a-z_]*", top)
        assert 3 <= len(category.subcategories) <= 5
        assert category.name_zh and category.brands and category.keywords_zh and category.keywords_en
        assert category.price_median > 0 and 0 < category.price_sigma < 2


def test_category_path_and_its_inverse():
    assert category_path("electronics", "headphones") == "electronics>headphones"
    assert top_level_of("electronics>headphones") == "electronics"
    assert top_level_of("pets") == "pets"
    assert all(top_level_of(path) in TOP_LEVEL for path in ALL_PATHS)


@pytest.mark.parametrize("path", ["", "gadgets", "electronics>sofas", "gadgets>headphones", None])
def test_top_level_of_unknown_is_none(path):
    assert top_level_of(path) is None


def test_category_path_rejects_unknown_pairs():
    with pytest.raises(ValueError, match="unknown subcategory 'sofas'"):
        category_path("electronics", "sofas")
    with pytest.raises(ValueError, match="unknown top-level category 'gadgets'"):
        category_path("gadgets", "headphones")


# --- determinism and reruns -----------------------------------------------------------------


def test_same_arguments_give_identical_bytes(tmp_path):
    first = _run(tmp_path / "a")
    second = _run(tmp_path / "b")
    first_files = _all_files(tmp_path / "a")
    assert first_files == _all_files(tmp_path / "b")
    assert len(first_files) == 2 + 2 + 2  # two day files, users, items, two ground-truth tables
    assert first.events == second.events and first.events_per_day == second.events_per_day


def test_another_seed_gives_other_data(tmp_path):
    _run(tmp_path / "a", seed=11)
    _run(tmp_path / "b", seed=12)
    a, b = _all_files(tmp_path / "a"), _all_files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[name] != b[name] for name in a)


def test_rerun_with_fewer_days_leaves_no_stale_days(tmp_path):
    keep = tmp_path / "landing" / "other_source" / "keep.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("not ours")
    _run(tmp_path, days=3)
    summary = _run(tmp_path, days=1)
    day_folders = sorted(p.name for p in (tmp_path / "landing" / "events").iterdir())
    assert day_folders == ["event_date=2026-11-01"]
    assert list(summary.events_per_day) == ["2026-11-01"]
    assert keep.read_text() == "not ours"
    assert sorted(p.name for p in (tmp_path / "landing").iterdir()) == ["events", "items", "other_source", "users"]


def test_a_quiet_day_still_gets_an_empty_file(tmp_path):
    summary = _run(tmp_path, users=1, days=5, seed=0)
    assert summary.events_per_day == {
        "2026-11-01": 0, "2026-11-02": 10, "2026-11-03": 0, "2026-11-04": 5, "2026-11-05": 0
    }
    quiet = tmp_path / "landing" / "events" / "event_date=2026-11-01" / "events-00000.jsonl"
    assert quiet.read_bytes() == b""


def test_summary_counts_match_the_files(dataset):
    summary = dataset["summary"]
    assert summary.users == 600 == len(dataset["users"])
    assert summary.items == default_item_count(600) == 300 == len(dataset["items"])
    assert summary.events == len(dataset["events"])
    per_day = Counter(e["__folder_date__"] for e in dataset["events"])
    assert summary.events_per_day == {f"2026-11-0{d}": per_day[f"2026-11-0{d}"] for d in range(1, 7)}
    assert summary.paths["users"].is_file() and summary.paths["ground_truth_users"].is_file()
    assert json.loads(json.dumps(summary.as_dict()))["events"] == summary.events


# --- the landing contract -------------------------------------------------------------------


def test_every_event_follows_the_contract(dataset):
    user_ids = {u["user_id"] for u in dataset["users"]}
    item_ids = {i["item_id"] for i in dataset["items"]}
    event_ids = set()
    for e in dataset["events"]:
        where = f"event {e['event_id']} of {e['__folder_date__']}"
        assert e["__keys__"] == EVENT_COLUMNS, where
        assert re.fullmatch(r"e[0-9a-f]{12}", e["event_id"]), where
        event_ids.add(e["event_id"])
        assert e["user_id"] in user_ids, where
        assert re.fullmatch(r"s[0-9a-f]{12}", e["session_id"]), where
        kind = e["event_type"]
        assert kind in EVENT_TYPES, where

        ts = dt.datetime.fromisoformat(e["ts"])
        assert e["ts"][-6:] in OFFSETS and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", e["ts"])
        assert ts.astimezone(dt.UTC).date().isoformat() == e["__folder_date__"], where

        if kind == "search":
            assert e["item_id"] is None and isinstance(e["query"], str) and e["query"].strip(), where
        else:
            assert e["item_id"] in item_ids and e["query"] is None, where
        if kind in PRICED:
            assert isinstance(e["price"], float) and e["price"] > 0 and round(e["price"], 2) == e["price"], where
        else:
            assert e["price"] is None, where
        if kind in COUNTED:
            assert type(e["quantity"]) is int and e["quantity"] >= 1, where
        else:
            assert e["quantity"] is None, where
        if kind in RATED:
            assert type(e["rating"]) is int and 1 <= e["rating"] <= 5, where
        else:
            assert e["rating"] is None, where
        if kind == "review":
            assert isinstance(e["review_text"], str) and e["review_text"], where
        else:
            assert e["review_text"] is None, where
        assert e["device"] in DEVICES and e["channel"] in CHANNELS and e["geo"] in CITIES, where
    assert len(event_ids) == len(dataset["events"]), "event_id must be unique"


def test_event_files_are_in_time_order(dataset):
    by_day: dict[str, list[dt.datetime]] = {}
    for e in dataset["events"]:
        by_day.setdefault(e["__folder_date__"], []).append(dt.datetime.fromisoformat(e["ts"]))
    for instants in by_day.values():
        assert instants == sorted(instants)


def test_users_file_follows_the_contract(dataset):
    users = dataset["users"]
    assert [u["user_id"] for u in users] == [f"u{n:07d}" for n in range(600)]
    for u in users:
        assert u["__keys__"] == USER_COLUMNS
        assert isinstance(u["name"], str) and u["name"]
        assert re.fullmatch(r"[a-z]+\.[a-z]+\d+@example\.(com|net|org)", u["email"]), u["email"]
        assert re.fullmatch(r"1\d{10}", u["phone"]), u["phone"]
        assert type(u["age"]) is int and 18 <= u["age"] <= 75
        assert u["gender"] in GENDERS and u["occupation"] in OCCUPATIONS and u["city"] in CITIES
        assert dt.date.fromisoformat(u["signup_date"]) < START
    assert len({u["phone"] for u in users}) == len(users)


def test_items_file_follows_the_contract(dataset):
    items = dataset["items"]
    assert [i["item_id"] for i in items] == [f"i{n:06d}" for n in range(300)]
    for i in items:
        assert i["__keys__"] == ITEM_COLUMNS
        assert i["category_path"] in ALL_PATHS
        assert i["brand"] in CATEGORIES[top_level_of(i["category_path"])].brands
        assert i["title"].startswith(i["brand"])
        assert isinstance(i["price"], float) and i["price"] > 0
    assert {top_level_of(i["category_path"]) for i in items} == set(TOP_LEVEL)


def test_item_prices_follow_the_taxonomy(dataset):
    prices = pd.DataFrame(dataset["items"])
    prices["category"] = prices["category_path"].map(top_level_of)
    medians = prices.groupby("category")["price"].median()
    # Phones are dear and stationery cheap in the taxonomy; the catalogue must agree.
    assert medians["phones"] > 5 * medians["office_stationery"]


# --- ground truth -------------------------------------------------------------------------


def test_ground_truth_users_describe_every_user(dataset):
    truth = dataset["truth_users"]
    assert list(truth.columns[:6]) == [
        "user_id", "segment", "interests", "price_sensitivity", "activity_level", "churned_on"
    ]
    assert truth["user_id"].tolist() == [u["user_id"] for u in dataset["users"]]
    for interests in truth["interests"]:
        assert 1 <= len(interests) <= 3 and len(set(interests)) == len(interests)
        assert set(interests) <= set(TOP_LEVEL)
    assert set(truth["segment"]) == set(SEGMENTS)
    assert set(truth["activity_level"]) == set(ACTIVITY_LEVELS)
    assert truth["price_sensitivity"].between(0, 1).all()
    churning = truth["segment"] == "churning"
    assert truth.loc[churning, "churned_on"].notna().all() and truth.loc[~churning, "churned_on"].isna().all()
    churn_dates = truth.loc[churning, "churned_on"]
    assert churn_dates.min() > START and churn_dates.max() <= START + dt.timedelta(days=5)


def test_ground_truth_items_tier_prices_within_category(dataset):
    truth = dataset["truth_items"]
    assert truth["item_id"].tolist() == [i["item_id"] for i in dataset["items"]]
    assert set(truth["price_tier"]) == set(PRICE_TIERS)
    assert (truth["category_path"].map(top_level_of) == truth["category"]).all()
    for _, group in truth.groupby("category"):
        cheapest_premium = group.loc[group["price_tier"] == "premium", "price"].min()
        dearest_budget = group.loc[group["price_tier"] == "budget", "price"].max()
        if len(group) >= 3:
            assert dearest_budget <= cheapest_premium


def test_churned_users_go_quiet(dataset):
    churned_on = dataset["truth_users"].set_index("user_id")["churned_on"].dropna()
    late = [
        e for e in dataset["events"]
        if e["user_id"] in churned_on.index and e["__folder_date__"] >= churned_on[e["user_id"]].isoformat()
    ]
    assert late == []


# --- planted behaviour --------------------------------------------------------------------


def test_funnel_narrows(dataset):
    counts = Counter(e["event_type"] for e in dataset["events"])
    assert counts["view"] > 2 * counts["click"]
    assert counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0
    assert all(counts[kind] > 0 for kind in EVENT_TYPES)


def test_sessions_belong_to_one_user_and_are_short(dataset):
    sessions: dict[str, list] = {}
    for e in dataset["events"]:
        sessions.setdefault(e["session_id"], []).append(e)
    assert len(dataset["events"]) / len(sessions) > 3
    for events in sessions.values():
        assert len({e["user_id"] for e in events}) == 1
        instants = [dt.datetime.fromisoformat(e["ts"]) for e in events]
        assert max(instants) - min(instants) < dt.timedelta(hours=2)


def test_planted_interests_dominate_item_events(dataset, item_events):
    interests = dataset["truth_users"].set_index("user_id")["interests"].map(set)
    pairs = zip(item_events["user_id"], item_events["category"], strict=True)
    hit = [category in interests[user] for user, category in pairs]
    assert 0.7 <= np.mean(hit) <= 0.9
    per_user = item_events.groupby("user_id")["category"]
    top_category = per_user.agg(lambda c: c.value_counts().index[0])[per_user.size() >= 10]
    in_interests = [top_category[user] in interests[user] for user in top_category.index]
    assert len(in_interests) > 300
    assert np.mean(in_interests) >= 0.8


def test_price_sensitive_users_buy_cheaper_within_category(dataset, item_events):
    purchases = item_events[item_events["event_type"] == "purchase"].copy()
    median_price = pd.DataFrame(dataset["items"]).assign(
        category=lambda f: f["category_path"].map(top_level_of)
    ).groupby("category")["price"].median()
    purchases["relative_price"] = np.log(purchases["list_price"] / purchases["category"].map(median_price))
    per_user = purchases.groupby("user_id")["relative_price"].mean().to_frame()
    per_user = per_user.join(dataset["truth_users"].set_index("user_id")["price_sensitivity"])
    assert len(per_user) > 200
    assert per_user.corr(method="spearman").iloc[0, 1] < -0.6


def test_review_tone_follows_rating_and_unhappy_users_rate_low(dataset):
    texts_by_rating: dict[int, set[str]] = {}
    for e in dataset["events"]:
        if e["event_type"] == "review":
            texts_by_rating.setdefault(e["rating"], set()).add(e["review_text"])
    assert texts_by_rating[5].isdisjoint(texts_by_rating.get(1, set()) | texts_by_rating.get(2, set()))
    segment = dataset["truth_users"].set_index("user_id")["segment"]
    ratings = pd.DataFrame(
        [(segment[e["user_id"]], e["rating"]) for e in dataset["events"] if e["rating"] is not None],
        columns=["segment", "rating"],
    )
    mean_rating = ratings.groupby("segment")["rating"].mean()
    assert mean_rating["churning"] < mean_rating["loyal_regular"] - 1


def test_search_queries_use_category_keywords(dataset):
    keywords = [k for c in CATEGORIES.values() for k in (*c.keywords_zh, *c.keywords_en)]
    queries = [e["query"] for e in dataset["events"] if e["event_type"] == "search"]
    assert queries and all(any(q.startswith(k) for k in keywords) for q in queries)


# --- bad arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"users": 0}, "users must be a positive integer, got 0"),
        ({"users": -5}, "users must be a positive integer, got -5"),
        ({"days": 0}, "days must be a positive integer, got 0"),
        ({"days": -1}, "days must be a positive integer, got -1"),
        ({"days": 2.5}, "days must be a positive integer, got 2.5"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"items": 3}, "items must be an integer of at least 22"),
        ({"start_date": "2026-11-01"}, "start_date must be a datetime.date"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _run(tmp_path, **overrides)
    assert not (tmp_path / "landing").exists()


def test_ground_truth_inside_a_replaced_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="which every run replaces"):
        generate(tmp_path / "landing", tmp_path / "landing" / "events" / "truth",
                 users=5, days=1, seed=1, start_date=START)


# --- file formats (--format, --gzip) -------------------------------------------------------


def test_gzip_holds_the_same_bytes_as_plain_json_lines(tmp_path):
    import gzip

    _run(tmp_path / "plain")
    packed = _run(tmp_path / "packed", gzip=True)
    for relative in ("events/event_date=2026-11-01/events-00000.jsonl", "users/users.jsonl", "items/items.jsonl"):
        plain = (tmp_path / "plain" / "landing" / relative).read_bytes()
        assert gzip.decompress((tmp_path / "packed" / "landing" / (relative + ".gz")).read_bytes()) == plain
    assert packed.paths["users"].name == "users.jsonl.gz" and packed.gzip


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_csv_and_parquet_hold_the_same_records_as_json_lines(tmp_path, file_format):
    import csv

    import pyarrow.parquet as pq

    _run(tmp_path / "jsonl")
    summary = _run(tmp_path / file_format, file_format=file_format)
    assert summary.file_format == file_format
    for relative, columns in (("events/event_date=2026-11-02/events-00000", EVENT_COLUMNS),
                              ("users/users", USER_COLUMNS), ("items/items", ITEM_COLUMNS)):
        expected = [{k: v for k, v in r.items() if k != "__keys__"}
                    for r in _read_lines(tmp_path / "jsonl" / "landing" / f"{relative}.jsonl")]
        path = tmp_path / file_format / "landing" / f"{relative}.{file_format}"
        if file_format == "parquet":
            got = pq.read_table(path).to_pylist()
        else:
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
            assert tuple(rows[0]) == columns
            numbers = {"price": float, "quantity": int, "rating": int, "age": int}
            got = [{k: (numbers.get(k, str)(v) if v != "" else None) for k, v in zip(rows[0], row, strict=True)}
                   for row in rows[1:]]
        assert got == expected, relative
        assert len(got) > 0


def test_social_edges_point_between_known_users_and_follow_share_events(tmp_path):
    summary = _run(tmp_path, users=200, social_edges=True)
    users = {u["user_id"] for u in _read_lines(tmp_path / "landing" / "users" / "users.jsonl")}
    kinds = Counter()
    for day in ("2026-11-01", "2026-11-02"):
        edges = _read_lines(tmp_path / "landing" / "social_edges" / f"event_date={day}" / "edges-00000.jsonl")
        events = _read_lines(tmp_path / "landing" / "events" / f"event_date={day}" / "events-00000.jsonl")
        shares = [(e["user_id"], e["ts"]) for e in events if e["event_type"] == "share"]
        assert [(e["src_user_id"], e["ts"]) for e in edges if e["edge_type"] == "share_to"] == shares
        assert all(e["__keys__"] == ("src_user_id", "dst_user_id", "edge_type", "ts") for e in edges)
        assert all(e["src_user_id"] in users and e["dst_user_id"] in users and e["src_user_id"] != e["dst_user_id"]
                   for e in edges)
        kinds.update(e["edge_type"] for e in edges)
    assert set(kinds) == {"follow", "share_to"}
    assert summary.paths["social_edges"] == tmp_path / "landing" / "social_edges"
    _run(tmp_path, users=200)  # a run without edges leaves none stale
    assert not (tmp_path / "landing" / "social_edges").exists()
