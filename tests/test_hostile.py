"""Hostile input through the real collect and clean steps (issue 22): one tiny landing zone whose lines
carry what a shop's export or an attacker may send, with the exact outcome of each line."""

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.conftest import make_config

pytestmark = pytest.mark.spark
D = dt.date(2026, 11, 3)
EMPTY = D + dt.timedelta(days=1)
MEGA = "Great sound but the battery is bad. " * 29_128  # ~1 MB


def _event(event_id: str, **fields) -> str:
    event = {"event_id": event_id, "user_id": "u1", "session_id": "s1", "event_type": "view", "item_id": "i1",
             "ts": f"{D}T10:00:00Z", "price": 9.5, "device": "ios", "channel": "organic", "geo": "Shanghai"}
    event.update(fields)
    return json.dumps(event, ensure_ascii=False)


LINES = [
    _event("ok", event_type="review", price=None, rating=5,
           review_text="\u202eGreat\u200b sound\u0000 \u001b[31mred\u001b[0m\ufeff!"),  # 1: silver, stripped
    _event("ctl", query="a\u0001b").replace("\\u0001", "\x01"),                           # 2: control_characters
    _event("nan", price="abc"),                                                           # 3: bad_number
    _event("basic", ts="20261103"),                                                       # 4: bad_timestamp
    _event("junk", ts=f"{D}xyz"),                                                         # 5: bad_timestamp
    _event("quoted", price="12.5"),                                                       # 6: silver at 12.5
    _event("long", event_type="review", price=None, rating=4, review_text=MEGA),          # 7: silver, cut
]


def _write_landing(landing: Path) -> None:
    day = landing / "events" / f"event_date={D}"
    day.mkdir(parents=True)
    (day / "hostile.jsonl").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    empty = landing / "events" / f"event_date={EMPTY}"
    empty.mkdir(parents=True)
    (empty / "events.jsonl").write_bytes(b"")  # the contract allows an empty file
    (landing / "users").mkdir()
    (landing / "users" / "users.csv").write_text("user_id,name,age,gender,city\nu1,Zhang,30,F,Shanghai\n")
    (landing / "items").mkdir()
    (landing / "items" / "items.jsonl").write_text(json.dumps(
        {"item_id": "i1", "title": "Phone " * 200_000, "category_path": "phones>smartphones",
         "brand": "Ac\u200dme", "price": 10.0}) + "\n")


@pytest.fixture(scope="module")
def landed(spark, tmp_path_factory):
    from jobs.clean import run as clean
    from jobs.collect import run as collect

    base = tmp_path_factory.mktemp("hostile")
    _write_landing(base / "landing")
    cfg = make_config(base, PORTRAIT__COLLECT__MAX_QUARANTINE_SHARE="1")
    results = {}
    for day in (D, EMPTY):
        collect(spark, cfg, day)
        results[day] = clean(spark, cfg, day)
    return cfg, results


def test_each_hostile_line_gets_its_exact_outcome(spark, landed):
    from jobs.common.delta import read_table

    cfg, results = landed
    quarantined = sorted((r["step"], r["reason"], r["_line"]) for r in read_table(spark, cfg, "bronze.quarantine")
                         .where(f"event_date = '{D}'").collect())
    assert quarantined == [("clean", "bad_timestamp", 4), ("clean", "bad_timestamp", 5),
                           ("collect", "bad_number", 3), ("collect", "control_characters", 2)]
    silver = {r["event_id"]: r for r in read_table(spark, cfg, "silver.events").collect()}
    assert sorted(silver) == ["long", "ok", "quoted"]
    assert silver["ok"]["review_text"] == "Great sound red!"
    assert silver["quoted"]["price"] == 12.5
    assert silver["long"]["review_text"] == MEGA[:2000].rstrip()
    assert results[D].details["truncated"] == {"review_text": 1, "title": 1}
    item = read_table(spark, cfg, "silver.items").collect()[0]
    assert (len(item["title"]), item["brand"]) == (500, "Acme")


def test_an_empty_day_is_cleaned_to_nothing_and_accounted(spark, landed):
    _, results = landed
    events = next(t for t in results[EMPTY].tables if t.table == "silver.events")
    assert (events.rows_in, events.rows_out, events.quarantined) == (0, 0, {})
    assert results[EMPTY].details["truncated"] == {"title": 1}  # the items snapshot lands again
