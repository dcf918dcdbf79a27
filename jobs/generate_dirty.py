"""Planted defects for `portrait generate --dirty`: each kind in known numbers per day, never two on one row.

The generator first draws a clean day (jobs/generate.py), then this module picks disjoint victim
rows from its own random stream, so the clean rows it leaves alone are the same bytes as in a clean
run. Row defects change values; extra-row defects (duplicates, bot bursts) add rows; line defects
(broken JSON, a wrong column count, bad encoding) break the written line. What was planted goes to
`<ground_truth_dir>/dirty_manifest.json`; docs/data-contract.md describes it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

DIRTY_LEVELS: tuple[str, ...] = ("none", "light", "heavy")

# Every kind, in the order victims are drawn (the constrained kinds first, so they find rows).
DEFECT_KINDS: tuple[str, ...] = (
    "fullwidth_text",          # query / review text in full-width forms; clean normalises it (NFKC)
    "rating_out_of_range",     # rating 0 or 6 on a rating / review event
    "quantity_out_of_range",   # quantity 0 or 100 on a cart / purchase event
    "price_out_of_range",      # price negative or above 1e6 on a priced event
    "unknown_item",            # an item id that items.* does not hold
    "unknown_user",            # a user id that users.* does not hold
    "missing_user_id",
    "unknown_event_type",
    "bad_timestamp",
    "late_event",              # ts 1-3 days before the folder's date, written into the later folder
    "missing_optional",        # device and channel null; clean fills a default
    "missing_event_id",        # collect quarantines it
    "broken_json",             # JSON lines only: the line cut in half
    "wrong_column_count",      # CSV only: one cell too many
    "bad_encoding",            # JSON lines and CSV: a byte that is not UTF-8
    "exact_duplicate",         # the same line twice (one extra row)
    "id_duplicate",            # the same event_id again with another channel (one extra row)
    "bot_burst",               # a bot user with 200 events inside one minute (counted in rows)
)
LINE_DEFECTS = frozenset({"broken_json", "wrong_column_count", "bad_encoding"})
# What bronze.quarantine calls each defect that collect catches.
COLLECT_REASON = {"broken_json": "unparseable_json", "wrong_column_count": "wrong_column_count",
                  "bad_encoding": "bad_encoding", "missing_event_id": "missing_event_id"}
# What the clean step calls the defects it quarantines (docs/cleaning.md); bots are counted in rows.
CLEAN_REASON = {"missing_user_id": "missing_user_id", "unknown_event_type": "unknown_event_type",
                "bad_timestamp": "bad_timestamp", "price_out_of_range": "price_out_of_range",
                "quantity_out_of_range": "quantity_out_of_range", "rating_out_of_range": "rating_out_of_range",
                "unknown_item": "unknown_item", "unknown_user": "unknown_user", "bot_burst": "bot_rate"}
DUPLICATE_KINDS = ("exact_duplicate", "id_duplicate")

BOT_EVENTS = 200
# Share of a day's rows per kind, and the least per kind when the day has rows enough.
_LEVELS = {"light": (0.002, 1, 1), "heavy": (0.01, 3, 2)}  # share, minimum, bots per day
_NOT_IN_FORMAT = {"jsonl": {"wrong_column_count"}, "csv": {"broken_json"},
                  "parquet": {"broken_json", "wrong_column_count", "bad_encoding"}}


def kinds_for(file_format: str) -> tuple[str, ...]:
    """The defect kinds a file format can carry (Parquet rows are typed, CSV is not JSON...)."""
    return tuple(k for k in DEFECT_KINDS if k not in _NOT_IN_FORMAT[file_format])


def break_line(kind: str, line: str) -> bytes:
    """A written line (without its newline) broken the way `kind` says."""
    if kind == "broken_json":
        return line[: len(line) // 2].encode("utf-8")
    if kind == "wrong_column_count":
        return (line + ",extra").encode("utf-8")
    if kind == "bad_encoding":
        # A Latin-1 byte inside the last quoted value (or before the last character): not UTF-8.
        raw = line.encode("utf-8")
        at = raw.rfind(b'"')
        at = at if at > 0 else len(raw) - 1
        return raw[:at] + b"\xe9" + raw[at:]
    raise ValueError(f"unknown line defect {kind!r}")


def to_fullwidth(text: str) -> str:
    """ASCII letters, digits and signs to their full-width forms, spaces to the ideographic space."""
    return "".join("\u3000" if c == " " else chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@dataclass
class DayDefects:
    """The defects planted in one day's file."""

    counts: dict[str, int] = field(default_factory=dict)
    bots: dict[str, int] = field(default_factory=dict)    # bot user id -> events
    line_defects: dict[int, str] = field(default_factory=dict)  # row in the written file -> kind
    records: int = 0


@dataclass(frozen=True)
class DayContext:
    """What the injector needs to know about the day and the world."""

    day: int
    event_date: dt.date
    user_ids: np.ndarray      # every known user id
    item_ids: np.ndarray      # every known item id
    item_prices: np.ndarray
    event_ids_for: Any        # callable(keys: np.ndarray) -> event ids (strings) in the generator's scheme
    session_ids_for: Any


def _planned_count(level: str, rows: int) -> int:
    share, minimum, _ = _LEVELS[level]
    return max(minimum, int(round(share * rows)))


def inject(rng: np.random.Generator, values: dict[str, np.ndarray], level: str, file_format: str,
           context: DayContext) -> tuple[dict[str, np.ndarray], DayDefects]:
    """Plant every kind of defect into one day of events given as plain values (object arrays, None = null).

    Returns the new columns (extra rows placed right after their original, bots at the end) and
    what was planted, with the row numbers of the line defects in the new order.
    """
    n = len(values["event_id"])
    kinds = kinds_for(file_format)
    out = {name: column.copy() for name, column in values.items()}
    used = np.zeros(n, dtype=bool)
    planted = DayDefects()
    victims: dict[str, np.ndarray] = {}

    def has(column: str) -> np.ndarray:
        return np.array([v is not None for v in values[column]], dtype=bool)

    text_rows = np.array([_has_ascii(q) or _has_ascii(r) for q, r in zip(values["query"], values["review_text"])],
                         dtype=bool) if n else np.zeros(0, dtype=bool)
    pools = {
        "fullwidth_text": text_rows,
        "rating_out_of_range": has("rating"),
        "quantity_out_of_range": has("quantity"),
        "price_out_of_range": has("price"),
        "unknown_item": has("item_id"),
    }
    for kind in kinds:
        if kind == "bot_burst":
            continue
        pool = pools.get(kind, np.ones(n, dtype=bool)) & ~used
        candidates = np.flatnonzero(pool)
        take = min(_planned_count(level, n), len(candidates))
        chosen = np.sort(rng.choice(candidates, size=take, replace=False)) if take else np.zeros(0, np.int64)
        used[chosen] = True
        victims[kind] = chosen
        planted.counts[kind] = int(take)

    for number, row in enumerate(victims.get("fullwidth_text", [])):
        column = "query" if _has_ascii(values["query"][row]) else "review_text"
        out[column][row] = to_fullwidth(values[column][row])
    for number, row in enumerate(victims.get("rating_out_of_range", [])):
        out["rating"][row] = "0" if number % 2 == 0 else "6"
    for number, row in enumerate(victims.get("quantity_out_of_range", [])):
        out["quantity"][row] = "0" if number % 2 == 0 else "100"
    for number, row in enumerate(victims.get("price_out_of_range", [])):
        out["price"][row] = "-5.00" if number % 2 == 0 else "2500000.00"
    for number, row in enumerate(victims.get("unknown_item", [])):
        out["item_id"][row] = f"i_unknown_{context.day}_{number}"
    for number, row in enumerate(victims.get("unknown_user", [])):
        out["user_id"][row] = f"u_unknown_{context.day}_{number}"
    for row in victims.get("missing_user_id", []):
        out["user_id"][row] = None
    for row in victims.get("unknown_event_type", []):
        out["event_type"][row] = "teleport"
    for row in victims.get("bad_timestamp", []):
        out["ts"][row] = "not-a-timestamp"
    for number, row in enumerate(victims.get("late_event", [])):
        instant = dt.datetime.fromisoformat(values["ts"][row]) - dt.timedelta(days=1 + number % 3)
        out["ts"][row] = instant.isoformat()
    for row in victims.get("missing_optional", []):
        out["device"][row] = None
        out["channel"][row] = None
    for row in victims.get("missing_event_id", []):
        out["event_id"][row] = None

    # Extra rows right after their original: an exact copy, or the same id with another channel.
    order = np.arange(n)
    extra_after: dict[int, str] = {int(r): "exact_duplicate" for r in victims.get("exact_duplicate", [])}
    extra_after.update({int(r): "id_duplicate" for r in victims.get("id_duplicate", [])})
    if extra_after:
        rows = sorted(extra_after)
        order = np.insert(order, np.searchsorted(order, rows, side="right"), rows)
    out = {name: column[order] for name, column in out.items()}
    first_position: dict[int, int] = {}
    for position, row in enumerate(order.tolist()):
        if row in first_position:  # the added copy
            if extra_after[row] == "id_duplicate":
                out["channel"][position] = "push" if out["channel"][position] != "push" else "email"
        else:
            first_position[row] = position
    # Line defects are numbered in the final order (their rows are never duplicated).
    for kind in LINE_DEFECTS & set(kinds):
        for row in victims.get(kind, []):
            planted.line_defects[first_position[int(row)]] = kind

    if "bot_burst" in kinds:
        bots = _bot_rows(rng, values, context, _LEVELS[level][2])
        if bots is not None:
            bot_values, planted.bots = bots
            out = {name: np.concatenate([out[name], bot_values[name]]) for name in out}
        planted.counts["bot_burst"] = sum(planted.bots.values())
    planted.records = len(out["event_id"])
    return out, planted


def _has_ascii(text: str | None) -> bool:
    return text is not None and any(" " <= c <= "~" for c in text)


def _bot_rows(rng: np.random.Generator, values: dict[str, np.ndarray], context: DayContext,
              bots_per_day: int) -> tuple[dict[str, np.ndarray], dict[str, int]] | None:
    """BOT_EVENTS views and clicks inside one minute from users with no other event that day."""
    active = set(v for v in values["user_id"] if v is not None)
    idle = np.array([u for u in context.user_ids if u not in active], dtype=object)
    count = min(bots_per_day, len(idle))
    if count == 0:
        return None
    bot_users = rng.choice(idle, size=count, replace=False)
    rows = count * BOT_EVENTS
    minute = rng.integers(0, 24 * 60 - 1, size=count)
    seconds = np.sort(rng.integers(0, 60, size=(count, BOT_EVENTS)), axis=1).ravel()
    start = dt.datetime.combine(context.event_date, dt.time())
    instants = [start + dt.timedelta(minutes=int(minute[i // BOT_EVENTS]), seconds=int(seconds[i]))
                for i in range(rows)]
    item = rng.integers(0, len(context.item_ids), size=rows)
    # Keys above 2**31 within the day never meet the ids of ordinary rows (those count from 0).
    keys = (np.uint64(context.day) << np.uint64(32)) | np.uint64(1 << 31) | np.arange(rows, dtype=np.uint64)
    session_keys = (np.uint64(context.day) << np.uint64(32)) | np.uint64(1 << 31) | (
        np.arange(rows, dtype=np.uint64) // np.uint64(BOT_EVENTS))
    bot_values = {
        "event_id": np.asarray(context.event_ids_for(keys), dtype=object),
        "user_id": np.repeat(bot_users, BOT_EVENTS).astype(object),
        "session_id": np.asarray(context.session_ids_for(session_keys), dtype=object),
        "event_type": np.where(rng.random(rows) < 0.8, "view", "click").astype(object),
        "item_id": context.item_ids[item].astype(object),
        "ts": np.array([t.strftime("%Y-%m-%dT%H:%M:%S+00:00") for t in instants], dtype=object),
        "price": np.array([f"{p:.2f}" for p in context.item_prices[item]], dtype=object),
        "quantity": np.full(rows, None, dtype=object),
        "query": np.full(rows, None, dtype=object),
        "review_text": np.full(rows, None, dtype=object),
        "rating": np.full(rows, None, dtype=object),
        "device": np.full(rows, "web", dtype=object),
        "channel": np.full(rows, "organic", dtype=object),
        "geo": np.full(rows, "Shanghai", dtype=object),
    }
    return bot_values, {str(u): BOT_EVENTS for u in bot_users}


def manifest(level: str, file_format: str, compress: bool, days: dict[str, DayDefects]) -> dict[str, Any]:
    """The dirty_manifest.json document: what was planted, per day and in total."""
    kinds = kinds_for(file_format)
    per_day = {day: {kind: planted.counts.get(kind, 0) for kind in kinds} for day, planted in days.items()}
    totals = {kind: sum(counts[kind] for counts in per_day.values()) for kind in kinds}
    return {
        "level": level,
        "format": file_format,
        "gzip": compress,
        "days": per_day,
        "totals": totals,
        "records": {day: planted.records for day, planted in days.items()},
        "bots": {day: planted.bots for day, planted in days.items()},
        "collect_reasons": {kind: COLLECT_REASON[kind] for kind in kinds if kind in COLLECT_REASON},
        "clean_reasons": {kind: CLEAN_REASON[kind] for kind in kinds if kind in CLEAN_REASON},
        "duplicates": [kind for kind in DUPLICATE_KINDS if kind in kinds],
    }


def as_arrow(values: dict[str, np.ndarray]) -> dict[str, pa.Array]:
    return {name: pa.array(column, pa.string()) for name, column in values.items()}
