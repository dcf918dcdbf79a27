"""No value in any silver, gold, staging or publish table is a raw user id, name, email or phone.

Runs collect, clean and features on a tiny generated landing zone, then reads every column of every
table past bronze and compares each value (inside arrays, maps and structs too) with the raw PII.
"""

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.conftest import make_config

pytestmark = [pytest.mark.spark, pytest.mark.slow]
START = dt.date(2026, 11, 1)
DAYS, USERS = 2, 12
LAYERS = ("silver", "gold", "staging", "publish")


def _values(value):
    """Every scalar inside a value, flattening Rows, lists and dicts."""
    if value is None:
        return
    if hasattr(value, "asDict"):
        value = value.asDict()
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _values(k)
            yield from _values(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _values(v)
    else:
        yield value


def find_pii(rows, columns, pii):
    """(column, value, what) for each value that is raw PII: equal to it, or containing an id, email or phone."""
    exact = {v: what for what, values in pii.items() for v in values}
    contained = [(v, what) for what in ("user_id", "email", "phone") for v in pii[what]]
    hits = []
    for row in rows:
        for column in columns:
            for value in _values(row[column]):
                text = str(value)
                if text in exact:
                    hits.append((column, text, exact[text]))
                elif isinstance(value, str):
                    hits += [(column, text, what) for needle, what in contained if needle in text]
    return hits


def _landed_pii(landing: Path) -> dict[str, set[str]]:
    pii = {"user_id": set(), "name": set(), "email": set(), "phone": set()}
    for path in sorted((landing / "users").rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            user = json.loads(line)
            for what in pii:
                pii[what].add(str(user[what]))
    return pii


def _rewrite_jsonl(path: Path, change) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(json.dumps(change(i, json.loads(line)), ensure_ascii=False) if line else line
                              for i, line in enumerate(lines)) + "\n", encoding="utf-8")


def _plant_pii_in_other_columns(landing: Path) -> None:
    """Personal data where the contract does not expect it: a user's own name as their city, a phone as
    an occupation, and in the events of each day an email as geo and a name and phone in a review."""
    users: dict[str, dict] = {}

    def user(i: int, row: dict) -> dict:
        users.setdefault(row["user_id"], row)
        if i % 3 == 0:
            return {**row, "city": row["name"], "occupation": row["phone"]}
        return {**row, "occupation": f"call {row['phone']}"} if i % 3 == 1 else row

    for path in sorted((landing / "users").rglob("*.jsonl")):
        _rewrite_jsonl(path, user)

    def event(i: int, row: dict) -> dict:
        person = users.get(row.get("user_id"))
        if person is None or i % 4:
            return row
        return {**row, "geo": person["email"], "review_text": f"我是{person['name']}，电话{person['phone']}"}

    for path in sorted((landing / "events").rglob("*.jsonl")):
        _rewrite_jsonl(path, event)


def test_the_scan_finds_planted_pii(spark):
    pii = {"user_id": {"u0000007"}, "name": {"刘敏"}, "email": {"min.liu0@example.org"}, "phone": {"15858507445"}}
    rows = spark.createDataFrame(
        [("x", ["a", "刘敏"], {"k": "call 15858507445"}), ("u0000007", [], {}), ("ok", ["刘敏敏"], {"min": "1"})],
        "a string, tags array<string>, notes map<string,string>",
    ).collect()
    hits = find_pii(rows, ["a", "tags", "notes"], pii)
    assert sorted(h[2] for h in hits) == ["name", "phone", "user_id"]


def test_no_raw_pii_reaches_silver_or_later(spark, tmp_path_factory):
    from jobs import clean, collect, features
    from jobs.common.catalog import TABLES
    from jobs.common.delta import read_table, table_exists
    from jobs.generate import generate

    base = tmp_path_factory.mktemp("pii")
    cfg = make_config(base)
    generate(Path(cfg.landing_zone), Path(cfg.ground_truth_dir), users=USERS, days=DAYS, seed=5, start_date=START)
    _plant_pii_in_other_columns(Path(cfg.landing_zone))
    last = START + dt.timedelta(days=DAYS - 1)
    collect.run(spark, cfg, last, collect_days=DAYS)
    clean.run(spark, cfg, last, collect_days=DAYS)
    features.run(spark, cfg, last)

    pii = _landed_pii(Path(cfg.landing_zone))
    assert all(len(values) == USERS for values in pii.values())
    scanned = []
    for name, table in TABLES.items():
        if table.layer not in LAYERS or not table_exists(spark, cfg, name):
            continue
        frame = read_table(spark, cfg, name)
        assert find_pii(frame.collect(), frame.columns, pii) == [], name
        scanned.append(name)
    assert {"silver.events", "silver.users", "silver.items", "silver.user_contacts", "gold.user_features"} <= set(scanned)
