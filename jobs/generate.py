"""Deterministic sample data for the landing zone, with the planted truth that tests check.

Every user gets hidden traits (segment, interests, price sensitivity, activity,
satisfaction, maybe a churn day); the events are drawn from those traits, and the
traits are written to a ground-truth folder that the pipeline never reads. The
formats are documented in docs/data-contract.md.

Randomness comes from numpy generators seeded by (seed, stream, day), so a day's
events depend only on the arguments and the day, and the same arguments give
byte-identical files. Everything per event is vectorised; one day is in memory
at a time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.common.errors import PortraitError
from jobs.common.taxonomy import ALL_PATHS, CATEGORIES, TOP_LEVEL

SEGMENTS: tuple[str, ...] = (
    "bargain_hunter",
    "premium_shopper",
    "casual_browser",
    "loyal_regular",
    "churning",
)
ACTIVITY_LEVELS: tuple[str, ...] = ("low", "medium", "high")
EVENT_TYPES: tuple[str, ...] = (
    "view",
    "click",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "search",
    "review",
    "rating",
    "share",
)
DEVICES: tuple[str, ...] = ("ios", "android", "web", "mini_program")
CHANNELS: tuple[str, ...] = ("organic", "search_ads", "social", "email", "push")
GENDERS: tuple[str, ...] = ("F", "M", "U")
PRICE_TIERS: tuple[str, ...] = ("budget", "mid", "premium")
CITIES: tuple[str, ...] = (
    "Shanghai",
    "Beijing",
    "Guangzhou",
    "Shenzhen",
    "Hangzhou",
    "Chengdu",
    "Chongqing",
    "Wuhan",
    "Xi'an",
    "Nanjing",
    "Tianjin",
    "Suzhou",
    "Changsha",
    "Zhengzhou",
    "Qingdao",
    "Xiamen",
    "Shenyang",
    "Kunming",
    "Harbin",
    "Dalian",
)
OCCUPATIONS: tuple[str, ...] = (
    "software_engineer",
    "teacher",
    "student",
    "doctor",
    "nurse",
    "sales",
    "designer",
    "civil_servant",
    "accountant",
    "self_employed",
    "factory_worker",
    "delivery_rider",
    "marketing",
    "retired",
)

# Key order of each JSON line; the order is part of the contract.
EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "user_id",
    "session_id",
    "event_type",
    "item_id",
    "ts",
    "price",
    "quantity",
    "query",
    "review_text",
    "rating",
    "device",
    "channel",
    "geo",
)
USER_COLUMNS: tuple[str, ...] = (
    "user_id",
    "name",
    "email",
    "phone",
    "age",
    "gender",
    "occupation",
    "city",
    "signup_date",
)
ITEM_COLUMNS: tuple[str, ...] = ("item_id", "title", "category_path", "brand", "price")

PRICED_EVENTS = frozenset({"view", "click", "add_to_cart", "purchase"})
QUANTITY_EVENTS = frozenset({"add_to_cart", "remove_from_cart", "purchase"})
RATED_EVENTS = frozenset({"rating", "review"})

MIN_ITEMS = len(TOP_LEVEL)
DEFAULT_MIN_ITEMS = 200
DEFAULT_MAX_ITEMS = 100_000
# Event ids pack the day into 16 bits, so a window is at most this long.
MAX_DAYS = 65_535

_EVENT_STEM = "events-00000"  # + .jsonl / .csv / .parquet, + .gz when asked
_EDGES_STEM = "edges-00000"
# Landing folders a run replaces as a whole (social_edges too, so a run without them leaves none stale).
_REPLACED_FOLDERS = ("events", "users", "items", "social_edges")
EDGE_COLUMNS: tuple[str, ...] = ("src_user_id", "dst_user_id", "edge_type", "ts")
_FOLLOW_CHANCE = 0.05  # an active user follows someone new on a given day
FILE_FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
DIRTY_MANIFEST = "dirty_manifest.json"
_STAGING = ".generate-staging"
_JSON_CHUNK_ROWS = 200_000

# Random streams: one per purpose, so adding draws to one never shifts another.
_STREAM_USERS, _STREAM_ITEMS, _STREAM_DAYS, _STREAM_DIRTY, _STREAM_EDGES = 1, 2, 3, 4, 5

# --- planted behaviour -------------------------------------------------------------

_SEGMENT_SHARE = np.array([0.25, 0.15, 0.30, 0.18, 0.12])
# Beta(a, b) per segment: bargain hunters near 0.8, premium shoppers near 0.2.
_SENSITIVITY_BETA = np.array([[8.0, 2.0], [2.0, 8.0], [4.0, 4.0], [4.0, 5.0], [4.0, 4.0]])
# Churning users are the unhappy ones; their ratings and reviews show it.
_SATISFACTION_BETA = np.array([[5.0, 2.0], [5.0, 2.0], [5.0, 2.5], [8.0, 2.0], [2.0, 5.0]])
_ACTIVITY_BY_SEGMENT = np.array(
    [
        [0.30, 0.45, 0.25],
        [0.30, 0.45, 0.25],
        [0.70, 0.25, 0.05],
        [0.05, 0.35, 0.60],
        [0.40, 0.40, 0.20],
    ]
)
# Chance of being active on a given day, and sessions on an active day (base + Poisson).
_ACTIVE_PROBABILITY = np.array([0.30, 0.55, 0.85])
_SESSIONS_BASE = np.array([1, 1, 2])
_SESSIONS_EXTRA = np.array([0.4, 1.2, 1.8])
# A session holds 2 + Poisson(5) events, so a day is about 10 / 15 / 27 events by activity.
_SESSION_MIN_EVENTS = 2
_SESSION_EXTRA_EVENTS = 5.0
_INTEREST_COUNT_SHARE = np.array([0.30, 0.45, 0.25])  # 1, 2 or 3 interests
_INTEREST_STRENGTH = np.array([0.60, 0.30, 0.10])  # the first interest is the strongest
# A session is about one category: an interest with this chance, else any category;
# single events then drift to a random category now and then. About 80% of a user's
# item events land in their interests.
_SESSION_ON_INTEREST = 0.85
_EVENT_DRIFT = 0.10
_ACTIVITY_DECAY_BEFORE_CHURN = 0.6

_BASE_EVENT_MIX = np.array([0.56, 0.18, 0.06, 0.015, 0.03, 0.10, 0.01, 0.015, 0.01])
_EVENT_MIX_BY_SEGMENT = {
    "bargain_hunter": {"search": 1.5, "add_to_cart": 1.3, "remove_from_cart": 1.6, "purchase": 1.1},
    "premium_shopper": {"purchase": 1.3, "review": 1.3, "share": 1.2},
    "casual_browser": {"view": 1.2, "add_to_cart": 0.6, "purchase": 0.4, "review": 0.5, "rating": 0.5},
    "loyal_regular": {"add_to_cart": 1.3, "purchase": 1.8, "review": 1.6, "rating": 1.6, "share": 1.3},
    "churning": {"purchase": 0.6, "review": 1.3, "rating": 1.2},
}
# Within a session the funnel runs in this order: search, browse, cart, buy, then talk.
_FUNNEL_STAGE = {
    "search": 0,
    "view": 1,
    "click": 2,
    "add_to_cart": 3,
    "remove_from_cart": 4,
    "purchase": 5,
    "share": 6,
    "rating": 7,
    "review": 8,
}
# How far an event strays from the user's preferred price percentile: people look at
# everything but pay for what suits their wallet.
_PRICE_SPREAD = {
    "view": 0.30,
    "click": 0.25,
    "add_to_cart": 0.14,
    "remove_from_cart": 0.22,
    "purchase": 0.10,
    "search": 0.30,
    "review": 0.10,
    "rating": 0.10,
    "share": 0.20,
}
_DISCOUNT_CHANCE = 0.2
_MEAN_SECONDS_BETWEEN_EVENTS = 40.0

# Local hour of day weights: quiet at night, a lunch bump, an evening peak.
_HOUR_PROFILE = np.array(
    [1.0, 0.6, 0.3, 0.2, 0.2, 0.3, 0.8, 1.5, 2.2, 2.8, 3.0, 3.2,
     3.8, 3.5, 3.0, 3.0, 3.2, 3.4, 3.8, 4.8, 5.8, 6.2, 5.0, 2.6]
)
# Most shoppers are in China; a few browse from abroad.
_UTC_OFFSET_MINUTES = np.array([480, 540, 0, -300, 60, -480])
_UTC_OFFSET_SHARE = np.array([0.85, 0.04, 0.04, 0.03, 0.02, 0.02])
_CITY_SHARE = np.array(
    [10, 10, 8, 8, 7, 7, 6, 5, 4, 5, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2], dtype=float
)
_DEVICE_SHARE = np.array([0.35, 0.35, 0.10, 0.20])
_PRIMARY_DEVICE_LOYALTY = 0.85
_CHANNEL_SHARE = np.array([0.50, 0.20, 0.12, 0.08, 0.10])
_HOME_CITY_LOYALTY = 0.92
_GENDER_SHARE = np.array([0.52, 0.45, 0.03])
_CHINESE_SPEAKER_SHARE = {480: 0.90}
_CHINESE_SPEAKER_ABROAD = 0.25

_SURNAMES = (
    ("王", "Wang"), ("李", "Li"), ("张", "Zhang"), ("刘", "Liu"), ("陈", "Chen"),
    ("杨", "Yang"), ("黄", "Huang"), ("赵", "Zhao"), ("吴", "Wu"), ("周", "Zhou"),
    ("徐", "Xu"), ("孙", "Sun"), ("马", "Ma"), ("朱", "Zhu"), ("胡", "Hu"),
    ("郭", "Guo"), ("何", "He"), ("林", "Lin"), ("罗", "Luo"), ("高", "Gao"),
)
_GIVEN_NAMES = (
    ("伟", "Wei"), ("芳", "Fang"), ("娜", "Na"), ("敏", "Min"), ("静", "Jing"),
    ("丽", "Li"), ("强", "Qiang"), ("磊", "Lei"), ("军", "Jun"), ("洋", "Yang"),
    ("勇", "Yong"), ("艳", "Yan"), ("杰", "Jie"), ("涛", "Tao"), ("明", "Ming"),
    ("超", "Chao"), ("秀英", "Xiuying"), ("晓明", "Xiaoming"), ("子涵", "Zihan"),
    ("欣怡", "Xinyi"), ("浩然", "Haoran"), ("梓萱", "Zixuan"), ("宇轩", "Yuxuan"),
    ("思雨", "Siyu"), ("俊杰", "Junjie"), ("雨桐", "Yutong"), ("嘉怡", "Jiayi"),
    ("志强", "Zhiqiang"), ("文博", "Wenbo"), ("佳琪", "Jiaqi"),
)
_EMAIL_DOMAINS = ("example.com", "example.net", "example.org")
_PHONE_PREFIXES = ("138", "139", "150", "151", "158", "186", "187", "188", "177", "135")

# Review sentences by language and polarity (negative, neutral, positive).
_REVIEWS = {
    ("zh", 0): (
        "质量太差了，用了两天就坏了",
        "和描述不符，很失望",
        "物流太慢，包装也破了",
        "不推荐购买，退货了",
        "做工粗糙，性价比很低",
        "客服态度差，问题一直没解决",
    ),
    ("zh", 1): (
        "一般般，还可以吧",
        "东西还行，价格有点贵",
        "中规中矩，没有惊喜",
        "和预期差不多，凑合用",
        "质量一般，物流还算快",
    ),
    ("zh", 2): (
        "质量很好，非常满意",
        "物流很快，包装完好，好评",
        "性价比很高，推荐购买",
        "做工精致，和图片一样",
        "第二次回购了，一如既往的好",
        "超出预期，家人都很喜欢",
    ),
    ("en", 0): (
        "Terrible quality, broke after two days.",
        "Not as described, very disappointed.",
        "Shipping was slow and the box was damaged.",
        "Would not recommend, returned it.",
        "Cheaply made and not worth the money.",
        "Customer service never solved my problem.",
    ),
    ("en", 1): (
        "It is okay, nothing special.",
        "Decent product but a bit pricey.",
        "Average quality, fast delivery.",
        "About what I expected.",
        "Fine for the price, I guess.",
    ),
    ("en", 2): (
        "Great quality, very happy with it.",
        "Fast delivery and well packed, love it!",
        "Excellent value, highly recommend.",
        "Looks exactly like the pictures, well made.",
        "Bought it again, still excellent.",
        "Better than expected, the whole family likes it.",
    ),
}
# Query suffixes that give away price sensitivity, by language and kind (none, cheap, premium).
_QUERY_SUFFIXES = {
    ("zh", 0): ("",),
    ("zh", 1): (" 便宜", " 特价", " 优惠券", " 清仓", " 包邮"),
    ("zh", 2): (" 高端", " 旗舰店", " 进口", " 正品"),
    ("en", 0): ("",),
    ("en", 1): (" cheap", " sale", " discount", " deal", " free shipping"),
    ("en", 2): (" premium", " best", " official store", " luxury"),
}
_CHEAP_QUERY_ABOVE, _PREMIUM_QUERY_BELOW, _QUERY_SUFFIX_CHANCE = 0.65, 0.35, 0.45
_LANGUAGES = ("zh", "en")

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_MASK48 = np.uint64((1 << 48) - 1)


class GenerateArgumentError(PortraitError, ValueError):
    """An argument to generate() is out of range; the message says which and what is allowed."""


@dataclass(frozen=True)
class GenerateSummary:
    """What generate() wrote: counts and paths, small enough to log or pass through XCom."""

    users: int
    items: int
    events: int
    events_per_day: dict[str, int]
    paths: dict[str, Path]
    seed: int
    start_date: dt.date
    days: int
    file_format: str = "jsonl"
    gzip: bool = False
    dirty: str = "none"
    defects: dict[str, int] = field(default_factory=dict)  # planted defects by kind, all days

    def as_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "items": self.items,
            "events": self.events,
            "events_per_day": dict(self.events_per_day),
            "paths": {name: str(path) for name, path in self.paths.items()},
            "seed": self.seed,
            "start_date": self.start_date.isoformat(),
            "days": self.days,
            "file_format": self.file_format,
            "gzip": self.gzip,
            "dirty": self.dirty,
            "defects": dict(self.defects),
        }


def default_item_count(users: int) -> int:
    """One item per two users, at least 200 so every category has a price range, at most 100k."""
    return min(DEFAULT_MAX_ITEMS, max(DEFAULT_MIN_ITEMS, users // 2))


def generate(
    landing_dir: Path,
    ground_truth_dir: Path,
    *,
    users: int,
    days: int,
    seed: int,
    start_date: dt.date,
    items: int | None = None,
    dirty: str = "none",
    file_format: str = "jsonl",
    gzip: bool = False,
    social_edges: bool = False,
) -> GenerateSummary:
    """Write users, items and `days` days of events from `start_date` into the landing zone.

    The events/, users/ and items/ folders under `landing_dir` are replaced as a whole, so
    a rerun with fewer days leaves no stale day behind; other folders there are untouched.
    The planted truth goes to `ground_truth_dir`/users.parquet and items.parquet.

    `file_format` (jsonl, csv, parquet) and `gzip` choose how every landing file is written;
    `dirty` (none, light, heavy) plants defects in known numbers into the event files and writes
    what it planted to `ground_truth_dir`/dirty_manifest.json (jobs/generate_dirty.py).
    `social_edges` also writes social_edges/event_date=.../edges-00000.* (follows and share-tos).
    """
    from jobs import generate_dirty

    landing_dir, ground_truth_dir = Path(landing_dir), Path(ground_truth_dir)
    item_count = _check_arguments(users, days, seed, start_date, items)
    _check_output_options(dirty, file_format, gzip)
    _check_folders(landing_dir, ground_truth_dir)

    users, days, seed = int(users), int(days), int(seed)
    population = _plan_users(np.random.default_rng([seed, _STREAM_USERS]), users, days)
    catalog = _plan_items(np.random.default_rng([seed, _STREAM_ITEMS]), item_count)

    staging = landing_dir / _STAGING
    if staging.exists():
        shutil.rmtree(staging)
    events_per_day: dict[str, int] = {}
    planted: dict[str, generate_dirty.DayDefects] = {}
    for day in range(days):
        event_date = start_date + dt.timedelta(days=day)
        day_rng = np.random.default_rng([seed, _STREAM_DAYS, day])
        day_events = _day_events(day_rng, population, catalog, day, event_date, seed)
        day_folder = staging / "events" / f"event_date={event_date.isoformat()}"
        day_folder.mkdir(parents=True)
        if social_edges:
            edges_folder = staging / "social_edges" / f"event_date={event_date.isoformat()}"
            edges_folder.mkdir(parents=True)
            write_records(edges_folder / _EDGES_STEM, _day_edges(np.random.default_rng([seed, _STREAM_EDGES, day]),
                                                                 day_events, population), file_format, gzip)
        line_defects = None
        if dirty != "none":
            day_events, planted[event_date.isoformat()] = _dirty_day(
                np.random.default_rng([seed, _STREAM_DIRTY, day]), day_events, dirty, file_format,
                population, catalog, day, event_date, seed)
            line_defects = planted[event_date.isoformat()].line_defects
        _, events_per_day[event_date.isoformat()] = write_records(
            day_folder / _EVENT_STEM, day_events, file_format, gzip, line_defects)
        del day_events

    (staging / "users").mkdir(parents=True)
    users_path, _ = write_records(staging / "users" / "users", _user_fields(population, start_date), file_format, gzip)
    (staging / "items").mkdir(parents=True)
    items_path, _ = write_records(staging / "items" / "items", _item_fields(catalog), file_format, gzip)

    for folder in _REPLACED_FOLDERS:
        target = landing_dir / folder
        if target.exists():
            shutil.rmtree(target)
        if (staging / folder).exists():
            os.replace(staging / folder, target)
    staging.rmdir()

    ground_truth_dir.mkdir(parents=True, exist_ok=True)
    _write_parquet(_ground_truth_users(population, start_date), ground_truth_dir / "users.parquet")
    _write_parquet(_ground_truth_items(catalog), ground_truth_dir / "items.parquet")
    manifest_path = ground_truth_dir / DIRTY_MANIFEST
    paths = {
        "events": landing_dir / "events",
        **({"social_edges": landing_dir / "social_edges"} if social_edges else {}),
        "users": landing_dir / "users" / users_path.name,
        "items": landing_dir / "items" / items_path.name,
        "ground_truth_users": ground_truth_dir / "users.parquet",
        "ground_truth_items": ground_truth_dir / "items.parquet",
    }
    defects: dict[str, int] = {}
    if dirty != "none":
        document = generate_dirty.manifest(dirty, file_format, gzip, planted)
        staged = manifest_path.with_name(manifest_path.name + ".tmp")
        staged.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(staged, manifest_path)
        paths["dirty_manifest"] = manifest_path
        defects = document["totals"]
    elif manifest_path.exists():
        manifest_path.unlink()  # a clean run must not leave an earlier run's defects on record

    return GenerateSummary(
        users=int(users),
        items=item_count,
        events=sum(events_per_day.values()),
        events_per_day=events_per_day,
        paths=paths,
        seed=int(seed),
        start_date=start_date,
        days=int(days),
        file_format=file_format,
        gzip=bool(gzip),
        dirty=dirty,
        defects=defects,
    )


def _day_edges(
    rng: np.random.Generator, day_events: dict[str, pa.Array], population: "_Population"
) -> dict[str, pa.Array]:
    """The day's social edges: every share event shares to someone, and a few active users follow someone.

    An edge takes the time of the event behind it (the user's first event of the day for a follow),
    and never points at its own source.
    """
    users = fragment_values(day_events["user_id"]).to_numpy(zero_copy_only=False)
    ts = fragment_values(day_events["ts"]).to_numpy(zero_copy_only=False)
    kinds = fragment_values(day_events["event_type"]).to_numpy(zero_copy_only=False)
    shares = np.flatnonzero(kinds == "share")
    _, first = np.unique(users, return_index=True)
    follows = np.sort(first[rng.random(len(first)) < _FOLLOW_CHANCE])
    rows = np.concatenate([follows, shares]).astype(np.int64)
    edge_type = np.array(["follow"] * len(follows) + ["share_to"] * len(shares), dtype=object)
    order = np.argsort(rows, kind="stable")  # event order, which is time order
    rows, edge_type = rows[order], edge_type[order]
    n_users = len(population.user_ids)
    source = np.searchsorted(population.user_ids, users[rows]) if len(rows) else np.zeros(0, np.int64)
    # Any other user: a draw over n - 1 users, shifted past the source.
    target = rng.integers(0, max(n_users - 1, 1), size=len(rows))
    target = np.where(target >= source, target + 1, target) % max(n_users, 1)
    keep = target != source  # only a one-user world has nobody else to point at
    return {
        "src_user_id": _json_text(users[rows][keep].astype(object)),
        "dst_user_id": _json_text(population.user_ids[target[keep]]),
        "edge_type": _json_text(edge_type[keep]),
        "ts": _json_text(ts[rows][keep].astype(object)),
    }


def _dirty_day(
    rng: np.random.Generator,
    day_events: dict[str, pa.Array],
    level: str,
    file_format: str,
    population: "_Population",
    catalog: "_Catalog",
    day: int,
    event_date: dt.date,
    seed: int,
) -> tuple[dict[str, pa.Array], Any]:
    """Plant the level's defects into one day's events (JSON fragments in, JSON fragments out)."""
    from jobs import generate_dirty

    values = {name: fragment_values(fragments).to_numpy(zero_copy_only=False).astype(object)
              for name, fragments in day_events.items()}
    context = generate_dirty.DayContext(
        day=day,
        event_date=event_date,
        user_ids=population.user_ids,
        item_ids=catalog.item_ids,
        item_prices=catalog.price,
        event_ids_for=lambda keys: fragment_values(_json_hex_ids("e", _mix48(keys, _salt(seed, 1)))).to_pylist(),
        session_ids_for=lambda keys: fragment_values(_json_hex_ids("s", _mix48(keys, _salt(seed, 2)))).to_pylist(),
    )
    dirty_values, planted = generate_dirty.inject(rng, values, level, file_format, context)
    fragments = {name: value_fragments(name, pa.array(column, pa.string())) for name, column in dirty_values.items()}
    return fragments, planted


# --- arguments -----------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_arguments(
    users: object, days: object, seed: object, start_date: object, items: object
) -> int:
    if not _is_int(users) or users <= 0:
        raise GenerateArgumentError(f"users must be a positive integer, got {users!r}")
    if not _is_int(days) or days <= 0:
        raise GenerateArgumentError(f"days must be a positive integer, got {days!r}")
    if days > MAX_DAYS:
        raise GenerateArgumentError(f"days must be at most {MAX_DAYS}, got {days}")
    if not _is_int(seed) or seed < 0:
        raise GenerateArgumentError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(start_date, dt.date) or isinstance(start_date, dt.datetime):
        raise GenerateArgumentError(
            f"start_date must be a datetime.date such as 2026-11-01, got {start_date!r}"
        )
    if items is None:
        return default_item_count(int(users))
    if not _is_int(items) or items < MIN_ITEMS:
        raise GenerateArgumentError(
            f"items must be an integer of at least {MIN_ITEMS} (one per top-level category), "
            f"got {items!r}; leave it out for the default of max(200, users // 2)"
        )
    return int(items)


def _check_output_options(dirty: object, file_format: object, compress: object) -> None:
    from jobs.generate_dirty import DIRTY_LEVELS

    if dirty not in DIRTY_LEVELS:
        raise GenerateArgumentError(f"dirty must be one of {', '.join(DIRTY_LEVELS)}, got {dirty!r}")
    if file_format not in FILE_FORMATS:
        raise GenerateArgumentError(f"file_format must be one of {', '.join(FILE_FORMATS)}, got {file_format!r}")
    if compress and file_format == "parquet":
        raise GenerateArgumentError("gzip applies to jsonl and csv; Parquet files are compressed inside")


def _check_folders(landing_dir: Path, ground_truth_dir: Path) -> None:
    """The landing subfolders are deleted on every run; the ground truth must not live there."""
    truth = ground_truth_dir.resolve()
    for folder in (*_REPLACED_FOLDERS, _STAGING):
        replaced = (landing_dir / folder).resolve()
        if truth == replaced or replaced in truth.parents:
            raise GenerateArgumentError(
                f"ground_truth_dir {ground_truth_dir} is inside {landing_dir / folder}, "
                "which every run replaces; put the ground truth outside the landing zone"
            )


# --- vectorised helpers ----------------------------------------------------------------


def _draw_by_group(rng: np.random.Generator, groups: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """One categorical draw per row, from the probability row of that row's group.

    Shifting each group's cumulative edges by the group number lets one searchsorted
    serve every group at once.
    """
    n_groups, n_choices = probabilities.shape
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    # Rounding can leave 0.9999999999999999 before trailing zero-probability choices,
    # which would then be drawn once in a blue moon.
    cumulative[np.abs(cumulative - 1.0) < 1e-12] = 1.0
    edges = (np.arange(n_groups)[:, None] + cumulative).ravel()
    positions = np.searchsorted(edges, groups + rng.random(len(groups)), side="right")
    return (positions - groups * n_choices).astype(np.int64)


class _Pool:
    """Strings grouped by a key (a category, a language...), drawn from per row at random."""

    def __init__(self, groups: list[tuple[str, ...]]):
        self.strings = np.array([s for group in groups for s in group], dtype=object)
        self.counts = np.array([len(group) for group in groups], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def draw(self, rng: np.random.Generator, keys: np.ndarray) -> np.ndarray:
        """Positions in `strings`, one per key."""
        picks = np.floor(rng.random(len(keys)) * self.counts[keys]).astype(np.int64)
        return self.starts[keys] + picks


def _mix48(values: np.ndarray, salt: int) -> np.ndarray:
    """A bijection on 48-bit integers, so distinct counters give distinct, random-looking ids."""
    x = (values.astype(np.uint64) ^ np.uint64(salt)) & _MASK48
    x = (x * np.uint64(0x9E3779B97F4B)) & _MASK48
    x ^= x >> np.uint64(23)
    x = (x * np.uint64(0xC2B2AE3D27D5)) & _MASK48
    x ^= x >> np.uint64(21)
    return x


def _salt(seed: int, purpose: int) -> int:
    return int(np.random.default_rng([seed, purpose, 0xD1]).integers(0, 1 << 48))


def _numbered_ids(prefix: str, count: int, min_width: int) -> np.ndarray:
    width = max(min_width, len(str(count - 1)))
    digits = np.char.zfill(np.arange(count).astype(str), width)
    return np.char.add(prefix, digits).astype(object)


# --- JSON text -------------------------------------------------------------------------
# Each landing file is written as JSON fragments per column, joined by Arrow kernels:
# pandas.to_json spent three quarters of the run formatting. Strings come from our own
# vocabularies; quotes and backslashes are escaped and control characters refused, so
# every fragment is valid JSON (the tests parse every line).

_NULL = "null"


def _json_vocabulary(values: tuple[str, ...] | list[str]) -> pa.Array:
    """Quoted JSON strings for each value, with `null` appended for missing rows."""
    return pa.array([json.dumps(v, ensure_ascii=False) for v in values] + [_NULL], pa.string())


def _json_take(vocabulary: pa.Array, positions: np.ndarray, present: np.ndarray | None = None) -> pa.Array:
    """The vocabulary fragment at each position; `null` where `present` is False."""
    if present is not None:
        positions = np.where(present, positions, len(vocabulary) - 1)
    return vocabulary.take(pa.array(positions, pa.int64()))


def _json_text(values: pa.Array | np.ndarray) -> pa.Array:
    """Quoted JSON strings for free text built from our vocabularies; nulls become `null`."""
    text = values if isinstance(values, pa.Array) else pa.array(values, pa.string())
    text = pc.replace_substring(text, "\\", "\\\\")
    text = pc.replace_substring(text, '"', '\\"')
    if pc.any(pc.match_substring_regex(text, "[\\x00-\\x1f]")).as_py():
        raise ValueError("generated text holds a control character; fix the vocabulary in generate.py")
    return pc.fill_null(pc.binary_join_element_wise('"', text, '"', ""), _NULL)


def _json_int(values: np.ndarray, present: np.ndarray | None = None) -> pa.Array:
    text = pc.cast(pa.array(values.astype(np.int64)), pa.string())
    return text if present is None else pc.if_else(pa.array(present), text, _NULL)


def _json_money(values: np.ndarray, present: np.ndarray | None = None) -> pa.Array:
    """Amounts with exactly two decimals (129.90), so every price parses as a float."""
    cents = np.rint(np.where(present if present is not None else True, values, 0.0) * 100).astype(np.int64)
    whole = pc.cast(pa.array(cents // 100), pa.string())
    fraction = pc.utf8_lpad(pc.cast(pa.array(cents % 100), pa.string()), 2, "0")
    text = pc.binary_join_element_wise(whole, fraction, ".")
    return text if present is None else pc.if_else(pa.array(present), text, _NULL)


def _json_hex_ids(prefix: str, values: np.ndarray) -> pa.Array:
    """Quoted `prefix` + 12 lower-case hex digits per 48-bit value, built as raw bytes."""
    head = b'"' + prefix.encode("ascii")
    width = len(head) + 12 + 1
    codes = np.empty((len(values), width), dtype=np.uint8)
    codes[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    codes[:, -1] = ord('"')
    for digit in range(12):
        shift = np.uint64(4 * (11 - digit))
        codes[:, len(head) + digit] = _HEX[((values >> shift) & np.uint64(0xF)).astype(np.intp)]
    offsets = np.arange(0, (len(values) + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(codes.tobytes()))


def _row_count(path: Path, fields: dict[str, pa.Array]) -> int:
    rows = {len(fragments) for fragments in fields.values()}
    if len(rows) != 1:
        raise ValueError(f"columns for {path} differ in length: {sorted(rows)}")
    return rows.pop()


@contextlib.contextmanager
def _open_output(path: Path, compress: bool) -> Iterator[Any]:
    """A binary file, gzip-compressed when asked; gzip gets no name or time, so bytes are reproducible."""
    with open(path, "wb") as raw:
        if not compress:
            yield raw
            return
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as packed:
            yield packed


def _write_jsonl(path: Path, fields: dict[str, pa.Array], compress: bool = False,
                 line_defects: dict[int, str] | None = None) -> int:
    """One JSON object per line with keys in `fields` order; returns the number of lines.

    `line_defects` (row number -> defect kind) breaks those lines on the way out (--dirty).
    """
    count = _row_count(path, fields)
    with _open_output(path, compress) as out:
        for start in range(0, count, _JSON_CHUNK_ROWS):
            parts: list[Any] = []
            for number, (key, fragments) in enumerate(fields.items()):
                parts.append(("{" if number == 0 else ",") + json.dumps(key) + ":")
                parts.append(fragments.slice(start, _JSON_CHUNK_ROWS))
            lines = pc.binary_join_element_wise(*parts, "}\n", "")
            if lines.null_count:
                raise ValueError(f"a null fragment reached {path}; every column must encode nulls as null")
            _write_lines(out, lines, start, line_defects)
    return count


def _write_lines(out, lines: pa.Array | pa.ChunkedArray, start: int, line_defects: dict[int, str] | None) -> None:
    """Write newline-terminated lines, rows `start`...; lines named in `line_defects` are broken first."""
    # pa.array() chunks large inputs, so the joined lines may come in pieces.
    for piece in lines.chunks if isinstance(lines, pa.ChunkedArray) else [lines]:
        hit = [row for row in (line_defects or {}) if start <= row < start + len(piece)]
        if not hit:
            out.write(_string_bytes(piece))
        else:
            from jobs.generate_dirty import break_line

            text = piece.to_pylist()
            for row in hit:
                text[row - start] = break_line(line_defects[row], text[row - start][:-1]) + b"\n"
            out.write(b"".join(t if isinstance(t, bytes) else t.encode("utf-8") for t in text))
        start += len(piece)


# Columns that are numbers in every format (text elsewhere): CSV leaves them bare, Parquet types them.
_NUMERIC_COLUMNS = {"price": pa.float64(), "quantity": pa.int64(), "rating": pa.int64(), "age": pa.int64()}


def fragment_values(fragments: pa.Array) -> pa.Array:
    """Plain values from JSON fragments: strings unquoted and unescaped, numbers as their text, null as null."""
    fragments = fragments.combine_chunks() if isinstance(fragments, pa.ChunkedArray) else fragments
    quoted = pc.starts_with(fragments, '"')
    inner = pc.replace_substring_regex(pc.utf8_slice_codeunits(fragments, 1, -1), r"\\(.)", r"\1")
    values = pc.if_else(quoted, inner, fragments)
    return pc.if_else(pc.equal(fragments, _NULL), pa.scalar(None, pa.string()), values)


def value_fragments(name: str, values: pa.Array) -> pa.Array:
    """JSON fragments of plain values (the inverse of fragment_values for our columns)."""
    if name in _NUMERIC_COLUMNS:
        return pc.fill_null(values, _NULL)
    return _json_text(values)


def _csv_cells(values: pa.Array) -> pa.Array:
    """RFC 4180 cells: quoted (with doubled quotes) when they hold a comma, quote or line end; NULL is empty."""
    needs_quotes = pc.match_substring_regex(values, '[,"\r\n]')
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.fill_null(pc.if_else(needs_quotes, quoted, values), "")


def _write_csv(path: Path, fields: dict[str, pa.Array], compress: bool = False,
               line_defects: dict[int, str] | None = None) -> int:
    """A header row, then one row per record; returns the number of records (the header not counted)."""
    count = _row_count(path, fields)
    with _open_output(path, compress) as out:
        out.write((",".join(fields) + "\n").encode("utf-8"))
        for start in range(0, count, _JSON_CHUNK_ROWS):
            cells = [_csv_cells(fragment_values(f.slice(start, _JSON_CHUNK_ROWS))) for f in fields.values()]
            lines = pc.binary_join_element_wise(pc.binary_join_element_wise(*cells, ","), "", "\n")
            _write_lines(out, lines, start, line_defects)
    return count


def _write_parquet_records(path: Path, fields: dict[str, pa.Array]) -> int:
    """Typed columns: numbers as numbers, everything else as strings (timestamps stay ISO text)."""
    count = _row_count(path, fields)
    columns = {}
    for name, fragments in fields.items():
        values = fragment_values(fragments)
        columns[name] = pc.cast(values, _NUMERIC_COLUMNS[name]) if name in _NUMERIC_COLUMNS else values
    _write_parquet(pa.table(columns), path)
    return count


def write_records(stem: Path, fields: dict[str, pa.Array], file_format: str = "jsonl", compress: bool = False,
                  line_defects: dict[int, str] | None = None) -> tuple[Path, int]:
    """Write JSON-fragment columns as `stem`.jsonl / .csv / .parquet (+ .gz); returns (path, records)."""
    suffix = {"jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}[file_format] + (".gz" if compress else "")
    path = stem.with_name(stem.name + suffix)
    if file_format == "jsonl":
        return path, _write_jsonl(path, fields, compress, line_defects)
    if file_format == "csv":
        return path, _write_csv(path, fields, compress, line_defects)
    if line_defects:
        raise ValueError(f"{path}: Parquet rows are typed, so line defects cannot be written into them")
    return path, _write_parquet_records(path, fields)


def _string_bytes(strings: pa.StringArray) -> memoryview:
    """The strings of an Arrow array back to back, straight from its data buffer."""
    _, offsets_buffer, data = strings.buffers()
    if data is None:
        return memoryview(b"")
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[strings.offset : strings.offset + len(strings) + 1]
    return memoryview(data)[offsets[0] : offsets[-1]]


def _write_parquet(table: pa.Table, path: Path) -> None:
    staged = path.with_name(path.name + ".tmp")
    pq.write_table(table, staged)
    os.replace(staged, path)


# --- users -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Population:
    user_ids: np.ndarray
    user_id_json: pa.Array
    segment: np.ndarray
    price_sensitivity: np.ndarray
    activity: np.ndarray
    satisfaction: np.ndarray
    interests: np.ndarray  # (users, 3) category numbers, -1 where a user has fewer
    interest_weights: np.ndarray  # (users, 3), rows sum to 1
    churn_day: np.ndarray  # day number from which a churning user is gone, else -1
    utc_offset: np.ndarray  # index into _UTC_OFFSET_MINUTES
    speaks_chinese: np.ndarray
    home_city: np.ndarray
    primary_device: np.ndarray
    profile: dict[str, np.ndarray] = field(default_factory=dict)  # PII and demographics


def _category_popularity() -> np.ndarray:
    weights = np.array([CATEGORIES[c].popularity for c in TOP_LEVEL])
    return weights / weights.sum()


def _plan_users(rng: np.random.Generator, users: int, days: int) -> _Population:
    n_categories = len(TOP_LEVEL)
    zeros = np.zeros(users, dtype=np.int64)
    segment = _draw_by_group(rng, zeros, _SEGMENT_SHARE[None, :])
    sensitivity = rng.beta(_SENSITIVITY_BETA[segment, 0], _SENSITIVITY_BETA[segment, 1])
    satisfaction = rng.beta(_SATISFACTION_BETA[segment, 0], _SATISFACTION_BETA[segment, 1])
    activity = _draw_by_group(rng, segment, _ACTIVITY_BY_SEGMENT)

    # Weighted draws without replacement: the top k of log(weight) + Gumbel noise.
    interest_count = 1 + _draw_by_group(rng, zeros, _INTEREST_COUNT_SHARE[None, :])
    noisy = np.log(_category_popularity())[None, :] + rng.gumbel(size=(users, n_categories))
    interests = np.argsort(-noisy, axis=1, kind="stable")[:, :3]
    held = np.arange(3)[None, :] < interest_count[:, None]
    interests = np.where(held, interests, -1)
    weights = np.where(held, _INTEREST_STRENGTH[None, :], 0.0)
    weights /= weights.sum(axis=1, keepdims=True)

    # Churning users leave somewhere after the first third of the window.
    first_churn_day = min(math.ceil(days / 3), days - 1)
    churn_candidate = rng.integers(first_churn_day, days, size=users)
    churn_day = np.where(segment == SEGMENTS.index("churning"), churn_candidate, -1)

    utc_offset = _draw_by_group(rng, zeros, _UTC_OFFSET_SHARE[None, :])
    chinese_share = np.array(
        [_CHINESE_SPEAKER_SHARE.get(int(m), _CHINESE_SPEAKER_ABROAD) for m in _UTC_OFFSET_MINUTES]
    )
    speaks_chinese = rng.random(users) < chinese_share[utc_offset]
    home_city = _draw_by_group(rng, zeros, _CITY_SHARE[None, :])
    primary_device = _draw_by_group(rng, zeros, _DEVICE_SHARE[None, :])

    user_ids = _numbered_ids("u", users, 7)
    return _Population(
        user_ids=user_ids,
        user_id_json=_json_text(user_ids),
        segment=segment,
        price_sensitivity=sensitivity,
        activity=activity,
        satisfaction=satisfaction,
        interests=interests,
        interest_weights=weights,
        churn_day=churn_day,
        utc_offset=utc_offset,
        speaks_chinese=speaks_chinese,
        home_city=home_city,
        primary_device=primary_device,
        profile=_plan_profiles(rng, users, speaks_chinese),
    )


def _plan_profiles(rng: np.random.Generator, users: int, speaks_chinese: np.ndarray) -> dict[str, np.ndarray]:
    surname = rng.integers(0, len(_SURNAMES), size=users)
    given = rng.integers(0, len(_GIVEN_NAMES), size=users)
    surname_zh = np.array([s[0] for s in _SURNAMES])[surname]
    surname_py = np.array([s[1] for s in _SURNAMES])[surname]
    given_zh = np.array([g[0] for g in _GIVEN_NAMES])[given]
    given_py = np.array([g[1] for g in _GIVEN_NAMES])[given]
    # Chinese speakers mostly register a name in characters, others in pinyin.
    in_characters = rng.random(users) < np.where(speaks_chinese, 0.8, 0.2)
    name = np.where(
        in_characters,
        np.char.add(surname_zh, given_zh),
        np.char.add(np.char.add(given_py, " "), surname_py),
    )
    number = np.arange(users).astype(str)
    domain = np.array(_EMAIL_DOMAINS)[rng.integers(0, len(_EMAIL_DOMAINS), size=users)]
    local_part = np.char.lower(np.char.add(np.char.add(np.char.add(given_py, "."), surname_py), number))
    email = np.char.add(np.char.add(local_part, "@"), domain)
    # 7919 is coprime with 10**8, so the subscriber numbers are distinct up to 10**8 users.
    subscriber = (np.arange(users, dtype=np.int64) * 7919 + int(rng.integers(0, 10**8))) % 10**8
    prefix = np.array(_PHONE_PREFIXES)[rng.integers(0, len(_PHONE_PREFIXES), size=users)]
    phone = np.char.add(prefix, np.char.zfill(subscriber.astype(str), 8))
    return {
        "name": name,
        "email": email,
        "phone": phone,
        "age": np.clip(np.rint(rng.normal(33.0, 10.0, size=users)), 18, 75).astype(np.int64),
        "gender": _draw_by_group(rng, np.zeros(users, np.int64), _GENDER_SHARE[None, :]),
        "occupation": rng.integers(0, len(OCCUPATIONS), size=users),
        "days_before_start": rng.integers(1, 3 * 365 + 1, size=users),
    }


def _user_fields(population: _Population, start_date: dt.date) -> dict[str, pa.Array]:
    profile = population.profile
    signup = np.datetime64(start_date.isoformat(), "D") - profile["days_before_start"].astype("timedelta64[D]")
    return {
        "user_id": population.user_id_json,
        "name": _json_text(profile["name"]),
        "email": _json_text(profile["email"]),
        "phone": _json_text(profile["phone"]),
        "age": _json_int(profile["age"]),
        "gender": _json_take(_json_vocabulary(GENDERS), profile["gender"]),
        "occupation": _json_take(_json_vocabulary(OCCUPATIONS), profile["occupation"]),
        "city": _json_take(_json_vocabulary(CITIES), population.home_city),
        "signup_date": _json_text(np.datetime_as_string(signup, unit="D")),
    }


def _ground_truth_users(population: _Population, start_date: dt.date) -> pa.Table:
    held = population.interests >= 0
    interest_names = np.array(TOP_LEVEL, dtype=object)[population.interests[held]]
    offsets = np.concatenate([[0], np.cumsum(held.sum(axis=1))]).astype(np.int32)
    churned_on = np.datetime64(start_date.isoformat(), "D") + np.maximum(population.churn_day, 0).astype(
        "timedelta64[D]"
    )
    return pa.table(
        {
            "user_id": pa.array(population.user_ids, pa.string()),
            "segment": pa.array(np.array(SEGMENTS, dtype=object)[population.segment], pa.string()),
            "interests": pa.ListArray.from_arrays(pa.array(offsets), pa.array(interest_names, pa.string())),
            "price_sensitivity": pa.array(np.round(population.price_sensitivity, 6), pa.float64()),
            "activity_level": pa.array(
                np.array(ACTIVITY_LEVELS, dtype=object)[population.activity], pa.string()
            ),
            "churned_on": pa.array(churned_on, pa.date32(), mask=population.churn_day < 0),
            "satisfaction": pa.array(np.round(population.satisfaction, 6), pa.float64()),
        }
    )


# --- items -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Catalog:
    item_ids: np.ndarray
    item_id_json: pa.Array  # with `null` appended, taken for rows without an item
    category: np.ndarray  # top-level category number
    path: np.ndarray  # position in ALL_PATHS
    price: np.ndarray
    price_tier: np.ndarray
    popularity: np.ndarray
    brand: np.ndarray
    title: np.ndarray
    # Items sorted by (category, price) and, for each, the right edge of its slice of
    # category + [0, 1): a slice as wide as its share of the category's popularity.
    by_category_price: np.ndarray
    pick_edges: np.ndarray


def _plan_items(rng: np.random.Generator, count: int) -> _Catalog:
    n_categories = len(TOP_LEVEL)
    categories = [CATEGORIES[c] for c in TOP_LEVEL]
    # Every category gets at least one item; the rest follow category popularity.
    category = np.concatenate(
        [np.arange(n_categories), rng.choice(n_categories, size=count - n_categories, p=_category_popularity())]
    )
    category = rng.permutation(category)
    n_subs = np.array([len(c.subcategories) for c in categories])
    subcategory = np.floor(rng.random(count) * n_subs[category]).astype(np.int64)
    path = np.concatenate([[0], np.cumsum(n_subs)[:-1]])[category] + subcategory

    median = np.array([c.price_median for c in categories])
    sigma = np.array([c.price_sigma for c in categories])
    raw_price = np.exp(np.log(median[category]) + sigma[category] * rng.normal(size=count))
    # Shop prices end in .9 above 10 yuan (128.9), and keep one decimal below.
    price = np.where(raw_price >= 10, np.floor(raw_price) + 0.9, np.maximum(np.round(raw_price, 1), 0.5))
    price = np.round(price, 2)
    popularity = np.round(rng.lognormal(0.0, 1.0, size=count), 6)

    brands = _Pool([c.brands for c in categories])
    brand = brands.strings[brands.draw(rng, category)]
    in_chinese = rng.random(count) < 0.6
    words_zh = _Pool([c.title_words_zh for c in categories])
    words_en = _Pool([c.title_words_en for c in categories])
    word_zh = words_zh.strings[words_zh.draw(rng, category)]
    word_en = words_en.strings[words_en.draw(rng, category)]
    flat_subs = [s for c in categories for s in c.subcategories]
    sub_zh = np.array([s.name_zh for s in flat_subs], dtype=object)[path]
    sub_en = np.array([s.name_en for s in flat_subs], dtype=object)[path]
    title = np.where(in_chinese, brand + " " + word_zh + sub_zh, brand + " " + word_en + " " + sub_en)

    order = np.lexsort((np.arange(count), price, category))
    sorted_category = category[order]
    category_count = np.bincount(category, minlength=n_categories)
    category_start = np.concatenate([[0], np.cumsum(category_count)[:-1]])
    rank = np.arange(count) - category_start[sorted_category]
    tier = np.empty(count, dtype=np.int64)
    tier[order] = (3 * rank) // category_count[sorted_category]

    running = np.cumsum(popularity[order])
    before_category = np.concatenate([[0.0], running])[category_start][sorted_category]
    totals = np.bincount(category, weights=popularity, minlength=n_categories)
    share = (running - before_category) / totals[sorted_category]
    last_of_category = np.r_[sorted_category[1:] != sorted_category[:-1], True]
    share[last_of_category] = 1.0

    item_ids = _numbered_ids("i", count, 6)
    return _Catalog(
        item_ids=item_ids,
        item_id_json=_json_text(np.append(item_ids, None)),
        category=category,
        path=path,
        price=price,
        price_tier=tier,
        popularity=popularity,
        brand=brand,
        title=title,
        by_category_price=order,
        pick_edges=sorted_category + share,
    )


def _item_fields(catalog: _Catalog) -> dict[str, pa.Array]:
    return {
        "item_id": catalog.item_id_json[:-1],
        "title": _json_text(catalog.title),
        "category_path": _json_take(_json_vocabulary(ALL_PATHS), catalog.path),
        "brand": _json_text(catalog.brand),
        "price": _json_money(catalog.price),
    }


def _ground_truth_items(catalog: _Catalog) -> pa.Table:
    return pa.table(
        {
            "item_id": pa.array(catalog.item_ids, pa.string()),
            "category": pa.array(np.array(TOP_LEVEL, dtype=object)[catalog.category], pa.string()),
            "category_path": pa.array(np.array(ALL_PATHS, dtype=object)[catalog.path], pa.string()),
            "price": pa.array(catalog.price, pa.float64()),
            "price_tier": pa.array(np.array(PRICE_TIERS, dtype=object)[catalog.price_tier], pa.string()),
            "popularity": pa.array(catalog.popularity, pa.float64()),
        }
    )


# --- events ----------------------------------------------------------------------------


def _event_mix() -> np.ndarray:
    mix = np.tile(_BASE_EVENT_MIX, (len(SEGMENTS), 1))
    for segment, factors in _EVENT_MIX_BY_SEGMENT.items():
        for event_type, factor in factors.items():
            mix[SEGMENTS.index(segment), EVENT_TYPES.index(event_type)] *= factor
    return mix / mix.sum(axis=1, keepdims=True)


def _offset_suffix(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(int(minutes)), 60)
    return f"{sign}{hours:02d}:{rest:02d}"


_EVENT_MIX = _event_mix()
_STAGE_OF_TYPE = np.array([_FUNNEL_STAGE[t] for t in EVENT_TYPES])
_SPREAD_OF_TYPE = np.array([_PRICE_SPREAD[t] for t in EVENT_TYPES])
_TYPE_NUMBER = {name: number for number, name in enumerate(EVENT_TYPES)}
# The closing part of each ts value: the offset and the closing quote.
_TS_TAIL = pa.array([_offset_suffix(m) + '"' for m in _UTC_OFFSET_MINUTES], pa.string())
_EVENT_TYPE_JSON = _json_vocabulary(EVENT_TYPES)
_DEVICE_JSON = _json_vocabulary(DEVICES)
_CHANNEL_JSON = _json_vocabulary(CHANNELS)
_CITY_JSON = _json_vocabulary(CITIES)
_KEYWORDS = _Pool(
    [CATEGORIES[c].keywords_zh for c in TOP_LEVEL] + [CATEGORIES[c].keywords_en for c in TOP_LEVEL]
)
_SUFFIXES = _Pool([_QUERY_SUFFIXES[(lang, kind)] for lang in _LANGUAGES for kind in range(3)])
_REVIEW_TEXTS = _Pool([_REVIEWS[(lang, polarity)] for lang in _LANGUAGES for polarity in range(3)])


def _day_events(
    rng: np.random.Generator,
    population: _Population,
    catalog: _Catalog,
    day: int,
    event_date: dt.date,
    seed: int,
) -> dict[str, pa.Array]:
    """All events of one UTC day in time order, as the JSON text of each key of each line."""
    n_users = len(population.user_ids)
    n_categories = len(TOP_LEVEL)

    # Who shows up today: churned users never; churning users fade before they go.
    churning = population.churn_day >= 0
    gone = churning & (day >= population.churn_day)
    fading = np.where(
        churning & ~gone,
        1.0 - _ACTIVITY_DECAY_BEFORE_CHURN * day / np.maximum(population.churn_day, 1),
        1.0,
    )
    active = ~gone & (rng.random(n_users) < _ACTIVE_PROBABILITY[population.activity] * fading)
    active_users = np.flatnonzero(active)
    level = population.activity[active_users]
    sessions_per_user = _SESSIONS_BASE[level] + rng.poisson(_SESSIONS_EXTRA[level])

    # Sessions: who, about which category, on which device, from where, when.
    session_user = np.repeat(active_users, sessions_per_user)
    n_sessions = len(session_user)
    session_length = _SESSION_MIN_EVENTS + rng.poisson(_SESSION_EXTRA_EVENTS, size=n_sessions)
    interest_slot = _draw_by_group(rng, np.arange(n_sessions), population.interest_weights[session_user])
    interest_category = population.interests[session_user, interest_slot]
    any_category = rng.choice(n_categories, size=n_sessions, p=_category_popularity())
    theme = np.where(rng.random(n_sessions) < _SESSION_ON_INTEREST, interest_category, any_category)
    device = np.where(
        rng.random(n_sessions) < _PRIMARY_DEVICE_LOYALTY,
        population.primary_device[session_user],
        rng.integers(0, len(DEVICES), size=n_sessions),
    )
    channel = rng.choice(len(CHANNELS), size=n_sessions, p=_CHANNEL_SHARE)
    geo = np.where(
        rng.random(n_sessions) < _HOME_CITY_LOYALTY,
        population.home_city[session_user],
        rng.choice(len(CITIES), size=n_sessions, p=_CITY_SHARE / _CITY_SHARE.sum()),
    )
    local_hour = rng.choice(24, size=n_sessions, p=_HOUR_PROFILE / _HOUR_PROFILE.sum())
    local_start = local_hour * 3600 + rng.integers(0, 3600, size=n_sessions)

    # Events: a funnel-ordered run inside each session.
    event_session = np.repeat(np.arange(n_sessions), session_length)
    n_events = len(event_session)
    event_user = session_user[event_session]
    event_type = _draw_by_group(rng, population.segment[event_user], _EVENT_MIX)
    event_type = event_type[np.lexsort((_STAGE_OF_TYPE[event_type], event_session))]

    session_first = np.cumsum(session_length) - session_length
    gap = 1 + np.floor(rng.exponential(_MEAN_SECONDS_BETWEEN_EVENTS, size=n_events)).astype(np.int64)
    gap[session_first] = 0
    elapsed = np.cumsum(gap)
    elapsed -= elapsed[session_first][event_session]
    duration = elapsed[np.cumsum(session_length) - 1]
    # The user's local clock drives the hour; the instant must stay inside this UTC day.
    offset_seconds = _UTC_OFFSET_MINUTES[population.utc_offset[session_user]] * 60
    utc_start = np.mod(local_start - offset_seconds, 86_400)
    utc_start = np.clip(np.minimum(utc_start, 86_399 - duration), 0, None)
    second_of_day = np.minimum(utc_start[event_session] + elapsed, 86_399)

    category = np.where(
        rng.random(n_events) < _EVENT_DRIFT,
        rng.choice(n_categories, size=n_events, p=_category_popularity()),
        theme[event_session],
    )
    # Each user aims at the price percentile 1 - sensitivity within the category,
    # looking widely but buying close to it.
    target = 1.0 - population.price_sensitivity[event_user]
    target = np.abs(target + _SPREAD_OF_TYPE[event_type] * rng.normal(size=n_events))
    target = np.where(target > 1.0, 2.0 - target, target)
    target = np.clip(target, 0.0, 1.0 - 1e-9)
    item = catalog.by_category_price[np.searchsorted(catalog.pick_edges, category + target, side="right")]

    jitter = np.clip(1.0 + 0.02 * rng.normal(size=n_events), 0.9, 1.1)
    discount = np.where(rng.random(n_events) < _DISCOUNT_CHANCE, rng.uniform(0.7, 0.95, size=n_events), 1.0)
    price = np.maximum(np.round(catalog.price[item] * jitter * discount, 2), 0.01)
    quantity = np.minimum(rng.geometric(0.7, size=n_events), 9)
    satisfaction = population.satisfaction[event_user]
    rating = np.clip(np.rint(1.0 + 4.0 * satisfaction + 0.8 * rng.normal(size=n_events)), 1, 5).astype(np.int64)

    # Rows go out in time order; ids are taken from that final order.
    by_time = np.argsort(second_of_day, kind="stable")
    event_type, event_session, event_user = event_type[by_time], event_session[by_time], event_user[by_time]
    second_of_day, item, category = second_of_day[by_time], item[by_time], category[by_time]
    price, quantity, rating = price[by_time], quantity[by_time], rating[by_time]

    is_type = {name: event_type == number for name, number in _TYPE_NUMBER.items()}
    searched, reviewed = is_type["search"], is_type["review"]
    query = _search_queries(rng, population, event_user[searched], category[searched])
    review_text = _review_texts(rng, population, event_user[reviewed], rating[reviewed])

    user_offset = population.utc_offset[event_user]
    instant = np.datetime64(event_date.isoformat(), "s") + second_of_day.astype("timedelta64[s]")
    local_time = instant + (_UTC_OFFSET_MINUTES[user_offset] * 60).astype("timedelta64[s]")
    ts = pc.binary_join_element_wise(
        '"', pa.array(np.datetime_as_string(local_time, unit="s")), _TS_TAIL.take(pa.array(user_offset)), ""
    )

    priced = np.isin(event_type, [_TYPE_NUMBER[t] for t in sorted(PRICED_EVENTS)])
    counted = np.isin(event_type, [_TYPE_NUMBER[t] for t in sorted(QUANTITY_EVENTS)])
    rated = np.isin(event_type, [_TYPE_NUMBER[t] for t in sorted(RATED_EVENTS)])
    day_bits = np.uint64(day) << np.uint64(32)
    row_key = np.arange(n_events, dtype=np.uint64) | day_bits
    session_key = event_session.astype(np.uint64) | day_bits
    return {
        "event_id": _json_hex_ids("e", _mix48(row_key, _salt(seed, 1))),
        "user_id": population.user_id_json.take(pa.array(event_user)),
        "session_id": _json_hex_ids("s", _mix48(session_key, _salt(seed, 2))),
        "event_type": _json_take(_EVENT_TYPE_JSON, event_type),
        "item_id": _json_take(catalog.item_id_json, item, ~searched),
        "ts": ts,
        "price": _json_money(price, priced),
        "quantity": _json_int(quantity, counted),
        "query": _json_text(_spread(query, searched)),
        "review_text": _json_text(_spread(review_text, reviewed)),
        "rating": _json_int(rating, rated),
        "device": _json_take(_DEVICE_JSON, device[event_session]),
        "channel": _json_take(_CHANNEL_JSON, channel[event_session]),
        "geo": _json_take(_CITY_JSON, geo[event_session]),
    }


def _spread(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`values` placed on the selected rows, None elsewhere."""
    column = np.full(len(rows), None, dtype=object)
    column[rows] = values
    return column


def _text_language(rng: np.random.Generator, population: _Population, users: np.ndarray) -> np.ndarray:
    """0 for Chinese, 1 for English: mostly the user's own language, a tenth the other."""
    in_chinese = population.speaks_chinese[users] ^ (rng.random(len(users)) < 0.1)
    return np.where(in_chinese, 0, 1)


def _search_queries(
    rng: np.random.Generator, population: _Population, users: np.ndarray, category: np.ndarray
) -> np.ndarray:
    """A category keyword, with a price word now and then from the thrifty or the lavish."""
    language = _text_language(rng, population, users)
    keyword = _KEYWORDS.strings[_KEYWORDS.draw(rng, language * len(TOP_LEVEL) + category)]
    sensitivity = population.price_sensitivity[users]
    tells_price = rng.random(len(users)) < _QUERY_SUFFIX_CHANCE
    suffix_kind = np.where(
        tells_price & (sensitivity > _CHEAP_QUERY_ABOVE),
        1,
        np.where(tells_price & (sensitivity < _PREMIUM_QUERY_BELOW), 2, 0),
    )
    return keyword + _SUFFIXES.strings[_SUFFIXES.draw(rng, language * 3 + suffix_kind)]


def _review_texts(
    rng: np.random.Generator, population: _Population, users: np.ndarray, rating: np.ndarray
) -> np.ndarray:
    """A sentence whose tone matches the rating, which itself follows the user's satisfaction."""
    language = _text_language(rng, population, users)
    polarity = np.where(rating <= 2, 0, np.where(rating == 3, 1, 2))
    return _REVIEW_TEXTS.strings[_REVIEW_TEXTS.draw(rng, language * 3 + polarity)]
