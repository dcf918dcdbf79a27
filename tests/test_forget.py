"""`portrait forget`: one person leaves every layer and every store, old versions are unreadable, the request
is recorded.

The lakehouse also holds what a concurrent run of the same date leaves: a writer that lost Delta's commit
conflict keeps its data files in the table's folder with no log entry (VACUUM LITE never sees them), a
writer killed mid-file leaves a torn file, a first write killed before its commit leaves a folder with no
log; and the training snapshot cache and the quality reports hold the person. After forget, every file
under the run's folders is read as bytes, and Parquet files also through pyarrow.
"""

import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobs.common.privacy import pseudonymise_py
from tests.conftest import REPO, TEST_HMAC_KEY, lake_overrides, make_config

pytestmark = pytest.mark.spark
KEY = TEST_HMAC_KEY.encode()
D = dt.date(2026, 11, 3)
GONE, KEPT, NEIGHBOUR = "u1", "u10", "u2"  # u10 contains u1: the match must be on whole ids
OTHER_DAY = D - dt.timedelta(days=1)
PORTRAIT = str(Path(sys.executable).with_name("portrait"))


def key(raw):
    return pseudonymise_py(KEY, raw)


def _line(user, event_id):
    return json.dumps({"event_id": event_id, "user_id": user, "event_type": "view"})


# table -> (schema, rows); each person-bearing table holds the forgotten person and others.
def _tables():
    return {
        "bronze.events": (
            "event_id string, user_id string, _raw string, event_date date",
            [("e1", GONE, _line(GONE, "e1"), D), ("e2", KEPT, _line(KEPT, "e2"), D),
             ("e3", NEIGHBOUR, _line(NEIGHBOUR, "e3"), D), (None, None, '{"user_id": "u1", broken', D)],
        ),
        "bronze.users": (
            "user_id string, name string, email string, snapshot_date date",
            [(GONE, "张三", "z@example.com", D), (KEPT, "Li", "l@example.com", D)],
        ),
        "bronze.quarantine": (
            "step string, reason string, _raw string, event_date date",
            [("clean", "bot_rate", _line(GONE, "e9"), D), ("clean", "too_late", _line(KEPT, "e8"), D)],
        ),
        "silver.events": (
            "event_id string, user_key string, event_date date",
            [("e1", key(GONE), D), ("e2", key(KEPT), D), ("e3", key(NEIGHBOUR), D)],
        ),
        "silver.held_events": (
            "event_id string, user_key string, landed_date date",
            [("e4", key(GONE), D), ("e5", key(KEPT), D)],
        ),
        "silver.social_edges": (
            "src_key string, dst_key string, edge_type string, event_date date",
            [(key(GONE), key(KEPT), "follow", D), (key(KEPT), key(GONE), "follow", D),
             (key(KEPT), key(NEIGHBOUR), "follow", D)],
        ),
        "gold.user_features": (
            "user_key string, n_events_30d double, as_of_date date",
            [(key(GONE), 3.0, D), (key(KEPT), 1.0, D)],
        ),
        "staging.user_profile": ("user_key string, as_of_date date", [(key(GONE), D), (key(KEPT), D)]),
        "publish.user_profile": ("user_key string, as_of_date date", [(key(GONE), D), (key(KEPT), D)]),
        "publish.recommendations": (
            "user_key string, rank int, item_id string, as_of_date date",
            [(key(GONE), 1, "i1", D), (key(GONE), 2, "i2", D), (key(KEPT), 1, "i1", D)],
        ),
        "ops.validation_results": (
            "run_date date, table_name string, check_id string, sample_rows string",
            [(D, "silver.events", "1", json.dumps([{"user_key": key(GONE)}])),
             (D, "silver.events", "2", json.dumps([{"user_key": key(KEPT)}]))],
        ),
    }


EXPECTED_REMOVED = {
    "bronze.events": 2, "bronze.users": 1, "bronze.quarantine": 1, "silver.events": 1, "silver.held_events": 1,
    "silver.social_edges": 2, "gold.user_features": 1, "staging.user_profile": 1, "publish.user_profile": 1,
    "publish.recommendations": 2, "ops.validation_results": 1,
}


def _waiting_write(spark, cfg, name, rows, schema, gate: Path, errors: list):
    """replace_dates of `rows` whose only task waits (in a Python UDF) until `gate` exists.

    The write's Delta transaction has read the table's version before the task starts, so a commit
    made while it waits is one it did not see: its own commit then conflicts.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    from jobs.common.delta import replace_dates

    started = gate.with_suffix(".started")

    def hold(value):
        import os
        import time as _time

        open(started, "w").close()
        deadline = _time.monotonic() + 60
        while not os.path.exists(gate) and _time.monotonic() < deadline:
            _time.sleep(0.05)
        return value

    held = F.udf(hold, StringType())
    frame = spark.createDataFrame(rows, schema).coalesce(1)
    frame = frame.withColumn("user_key", held("user_key"))

    def write():
        try:
            replace_dates(frame, cfg, name, [D])
        except Exception as exc:  # kept for the test to look at
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), "the held write never started its task"
    return thread


def _plant_other_stores(spark, cfg, base: Path) -> list:
    """A lost concurrent write, a torn file, a never committed table, snapshots and a quality report;
    returns the errors of the lost write."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.common.catalog import table_path
    from jobs.common.delta import replace_dates
    from jobs.quality import CheckResult, ValidationReport, build_docs

    # A concurrent run of the same date rewrites silver.events while this one's write waits: the waiting
    # write (which holds the person) loses, and its files stay in the folder, named by no commit.
    schema = "event_id string, user_key string, event_date date"
    errors: list = []
    gate = base / "gate"
    thread = _waiting_write(spark, cfg, "silver.events", [("e1", key(GONE), D), ("e7", key(GONE), D)], schema,
                            gate, errors)
    replace_dates(spark.createDataFrame(_tables()["silver.events"][1], schema), cfg, "silver.events", [D])
    gate.touch()
    thread.join(120)

    # A writer killed mid-file leaves a torn Parquet file; a first write of a table killed before its
    # commit leaves files and no log at all.
    folder = Path(table_path(cfg, "publish.user_profile")) / f"as_of_date={D}"
    (folder / "part-00000-torn.c000.snappy.parquet").write_bytes(b"PAR1" + key(GONE).encode() + b"\x00" * 16)
    never_committed = Path(table_path(cfg, "gold.user_sequences")) / f"as_of_date={D}"
    never_committed.mkdir(parents=True)
    pq.write_table(pa.table({"user_key": [key(GONE), key(KEPT)], "seq_item_ids": [["i1"], ["i2"]]}),
                   never_committed / "part-00000-killed.c000.snappy.parquet")

    # Training snapshots as write_snapshot lays them out: the run date of D holds the person, D-1 does not.
    for run_date, users in ((D, [GONE, KEPT]), (OTHER_DAY, [KEPT, NEIGHBOUR])):
        examples = spark.createDataFrame([(key(u), 1.0) for u in users], "user_key string, n_events_7d double")
        examples.coalesce(1).write.mode("overwrite").parquet(
            str(Path(cfg.location("model.snapshot_dir")) / run_date.isoformat() / "examples"
                / f"as_of_date={OTHER_DAY}"))

    # A quality report whose bad-row samples hold the person (bronze: the raw line; silver: the key).
    sample = [{"_raw": json.dumps({"event_id": "e1", "user_id": GONE})}, {"_raw": json.dumps({"user_id": KEPT})}]
    build_docs(cfg, [
        ValidationReport("bronze.events", D, 4, [CheckResult("b1", "expect_column_values_to_not_be_null", "event_id",
                                                             "error", False, None, 2, sample)]),
        ValidationReport("silver.events", D, 3, [CheckResult("s1", "expect_column_values_to_be_unique", "event_id",
                                                             "warn", False, None, 1, [{"user_key": key(GONE)}])]),
    ])
    return errors


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    from jobs.common.delta import replace_dates, table_version

    base = tmp_path_factory.mktemp("forget_lake")
    cfg = make_config(base)
    for name, (schema, rows) in _tables().items():
        replace_dates(spark.createDataFrame(rows, schema), cfg, name, [D])
    LOST_WRITES.extend(_plant_other_stores(spark, cfg, base))
    versions = {name: table_version(spark, cfg, name) for name in _tables()}
    return cfg, versions


LOST_WRITES: list = []   # what the losing side of the concurrent write raised


@pytest.fixture(scope="module")
def forgotten(spark, lake):
    from jobs.forget import forget_user

    cfg, _ = lake
    return forget_user(spark, cfg, f"  {GONE} ", reason="GDPR art. 17", requested_by="dpo@shop")


def _rows(spark, cfg, name):
    from jobs.common.delta import read_table

    return [tuple(r) for r in read_table(spark, cfg, name).collect()]


def test_dry_run_counts_and_changes_nothing(spark, lake):
    from jobs.forget import forget_user

    cfg, versions = lake
    counted = forget_user(spark, cfg, GONE, dry_run=True)
    assert {t: n for t, n in counted.rows_removed.items() if n} == EXPECTED_REMOVED
    from jobs.common.delta import table_version

    assert {name: table_version(spark, cfg, name) for name in versions} == versions
    assert counted.request_id is None
    # silver.events: the lost write's file and the version the concurrent run replaced (both hold the
    # person); publish.user_profile: the torn file; gold.user_sequences: the never committed first write.
    assert counted.stray_files == {"silver.events": 2, "publish.user_profile": 1, "gold.user_sequences": 1}
    assert counted.snapshots_removed == [D.isoformat()]
    assert sorted(Path(p).relative_to(Path(cfg.lakehouse_root).parent).as_posix() for p in counted.docs_changed) == [
        f"quality_docs/bronze.events/{D}.html", f"quality_docs/bronze.events/{D}.json",
        f"quality_docs/silver.events/{D}.html", f"quality_docs/silver.events/{D}.json"]
    assert (Path(cfg.location("model.snapshot_dir")) / D.isoformat()).is_dir()
    assert key(GONE) in (Path(cfg.lakehouse_root).parent / "quality_docs" / "silver.events" / f"{D}.json").read_text()


def test_the_person_leaves_every_layer_and_nobody_else_does(spark, lake, forgotten):
    cfg, _ = lake
    assert forgotten.user_key == key(GONE)
    assert {t: n for t, n in forgotten.rows_removed.items() if n} == EXPECTED_REMOVED
    assert sorted(r[0] for r in _rows(spark, cfg, "bronze.events")) == ["e2", "e3"]
    assert [r[0] for r in _rows(spark, cfg, "bronze.users")] == [KEPT]
    assert [r[1] for r in _rows(spark, cfg, "bronze.quarantine")] == ["too_late"]
    assert sorted(r[0] for r in _rows(spark, cfg, "silver.events")) == ["e2", "e3"]
    assert [r[0] for r in _rows(spark, cfg, "silver.held_events")] == ["e5"]
    assert _rows(spark, cfg, "silver.social_edges") == [(key(KEPT), key(NEIGHBOUR), "follow", D)]
    for name in ("gold.user_features", "staging.user_profile", "publish.user_profile", "publish.recommendations"):
        assert {r[0] for r in _rows(spark, cfg, name)} == {key(KEPT)}, name
    samples = {r[2]: r[3] for r in _rows(spark, cfg, "ops.validation_results")}
    assert samples == {"1": None, "2": json.dumps([{"user_key": key(KEPT)}])}  # the check row stays, blanked


def test_old_versions_are_unreadable_after_the_vacuum(spark, lake, forgotten):
    from jobs.common.catalog import table_path

    cfg, versions = lake
    for name in ("bronze.events", "silver.events", "publish.user_profile"):
        old = spark.read.format("delta").option("versionAsOf", versions[name]).load(table_path(cfg, name))
        with pytest.raises(Exception, match=r"(?i)(FileNotFound|does not exist|DELTA_FILE_NOT_FOUND|not found)"):
            old.collect()
    assert set(forgotten.tables_vacuumed) == set(EXPECTED_REMOVED)


def test_the_lost_concurrent_write_is_one_line_naming_table_and_date(lake):
    from jobs.common.errors import ConcurrentWriteError

    assert len(LOST_WRITES) == 1 and isinstance(LOST_WRITES[0], ConcurrentWriteError), LOST_WRITES
    assert re.fullmatch(
        r"silver\.events 2026-11-03: another write to this table committed first \(Concurrent\w+Exception\); "
        r"this write was not committed \(its files are not part of the table\)\. Another run of the same date, "
        r"or `portrait forget`, is running: rerun the date when it has ended", str(LOST_WRITES[0])), LOST_WRITES


def test_no_file_anywhere_holds_the_person_outside_the_landing_zone(lake, forgotten):
    """Every file under the run's folders: lakehouse (logs included), caches, quality reports, MLflow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cfg, _ = lake
    assert forgotten.stray_files == {"silver.events": 1, "publish.user_profile": 1, "gold.user_sequences": 1}
    assert forgotten.snapshots_removed == [D.isoformat()]
    base = Path(cfg.lakehouse_root).parent
    token = re.compile(rb"(?<![A-Za-z0-9_])" + re.escape(GONE.encode()) + rb"(?![A-Za-z0-9_])")
    requests = Path(cfg.lakehouse_root) / "ops" / "forget_requests"  # holds the pseudonym, by design
    landing = Path(cfg.landing_zone)
    scanned, found = [], []
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        if requests in path.parents or landing in path.parents or path.name.startswith("gate"):
            continue
        scanned.append(path)
        texts = [path.read_bytes()]
        if path.suffix == ".parquet":
            try:
                texts.append(json.dumps(pq.read_table(path).to_pylist(), default=str, ensure_ascii=False).encode())
            except pa.ArrowInvalid:  # a torn file: its bytes are all there is
                pass
        for text in texts:
            if key(GONE).encode() in text:
                found.append((str(path), "pseudonym"))
            # Delta's log keeps per-file min/max statistics: a bronze id can be a file's minimum there until
            # the log is cleaned up (docs/cleaning.md says so); no data file, cache or report holds it.
            if token.search(text) and "_delta_log" not in path.parts:
                found.append((str(path), "raw id"))
    assert {p.parts[len(base.parts)] for p in scanned} >= {"lakehouse", "cache", "quality_docs"}
    assert sum(p.suffix == ".parquet" for p in scanned) >= len(EXPECTED_REMOVED)
    assert found == []


def test_other_people_keep_their_snapshot_and_report_rows(lake, forgotten):
    import pyarrow.parquet as pq

    cfg, _ = lake
    training = Path(cfg.location("model.snapshot_dir"))
    assert sorted(p.name for p in training.iterdir()) == [OTHER_DAY.isoformat()]
    kept = pq.read_table(training / OTHER_DAY.isoformat() / "examples").column("user_key").to_pylist()
    assert sorted(kept) == sorted([key(KEPT), key(NEIGHBOUR)])
    docs = Path(cfg.lakehouse_root).parent / "quality_docs"
    bronze = json.loads((docs / "bronze.events" / f"{D}.json").read_text())
    assert bronze["results"][0]["sample"] == [{"_raw": json.dumps({"user_id": KEPT})}]
    assert bronze["results"][0]["unexpected_count"] == 2       # the check's result itself stays
    assert json.loads((docs / "silver.events" / f"{D}.json").read_text())["results"][0]["sample"] == []
    assert "expect_column_values_to_be_unique" not in (docs / "index.html").read_text()  # the index still lists
    assert "silver.events" in (docs / "index.html").read_text()                        # both pages


def test_the_request_is_recorded_with_the_pseudonym_only(spark, lake, forgotten):
    from jobs.common.delta import read_table

    cfg, _ = lake
    rows = read_table(spark, cfg, "ops.forget_requests").where(f"request_id = '{forgotten.request_id}'").collect()
    assert len(rows) == 1
    row = rows[0]
    assert (row["user_key"], row["requested_by"], row["reason"], row["total_rows"]) == (
        key(GONE), "dpo@shop", "GDPR art. 17", sum(EXPECTED_REMOVED.values()))
    assert {t: n for t, n in row["rows_removed"].items() if n} == EXPECTED_REMOVED
    assert GONE not in json.dumps(row.asDict(), default=str).replace(key(GONE), "")


def test_an_unknown_person_removes_nothing_but_is_recorded(spark, lake, forgotten):
    from jobs.common.delta import read_table
    from jobs.forget import forget_user

    cfg, _ = lake
    before = {name: sorted(_rows(spark, cfg, name)) for name in ("silver.events", "bronze.events")}
    result = forget_user(spark, cfg, "u999", reason="not a customer")
    assert result.total_rows == 0
    assert "no rows of this person were found in any table" in "\n".join(result.lines())
    assert {name: sorted(_rows(spark, cfg, name)) for name in before} == before
    recorded = read_table(spark, cfg, "ops.forget_requests").where(f"user_key = '{key('u999')}'").collect()
    assert len(recorded) == 1 and recorded[0]["total_rows"] == 0


def test_cli_refuses_an_empty_id_before_spark_starts(tmp_path):
    env = {**os.environ, "PORTRAIT_ENV": "ci", "PORTRAIT_HOME": str(REPO), **lake_overrides(tmp_path)}
    done = subprocess.run([PORTRAIT, "forget", "--user", "  "], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "forget needs the person's user id (--user); it was empty" in done.stderr


def test_cli_without_a_key_says_how_to_make_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PORTRAIT_HMAC_KEY"}
    env.update({"PORTRAIT_ENV": "ci", "PORTRAIT_HOME": str(REPO), **lake_overrides(tmp_path),
                "PORTRAIT__PRIVACY__HMAC_KEY_FILE": str(tmp_path / "absent.key")})
    done = subprocess.run([PORTRAIT, "forget", "--user", "u1"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no pseudonymisation key: set PORTRAIT_HMAC_KEY" in done.stderr
