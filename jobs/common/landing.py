"""The landing-zone contract: which sources land what, in which file layout, and how their columns and times map onto ours.

`collect.sources` in the profile (or a dataset's conf/datasets/NAME.yaml) declares each source; this
module checks those declarations once and holds the mapping rules that both jobs/collect.py (inside
Spark) and portrait/datasets.py (pandas, before anything lands) apply, so the two never disagree.
docs/data-contract.md describes every setting.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jobs.common.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

EVENT_SCHEMA = (
    "event_id string, user_id string, session_id string, event_type string, item_id string, ts string, "
    "price double, quantity long, query string, review_text string, rating double, device string, "
    "channel string, geo string"
)
USER_SCHEMA = (
    "user_id string, name string, email string, phone string, age long, gender string, "
    "occupation string, city string, signup_date string"
)
ITEM_SCHEMA = "item_id string, title string, category_path string, brand string, price double"
SOCIAL_EDGE_SCHEMA = "src_user_id string, dst_user_id string, edge_type string, ts string"

KINDS = ("events", "users", "items", "social_edges")
KIND_SCHEMA = {"events": EVENT_SCHEMA, "users": USER_SCHEMA, "items": ITEM_SCHEMA, "social_edges": SOCIAL_EDGE_SCHEMA}
# Kinds that carry a time and land one folder per day (or a history file routed to days).
DATED_KINDS = frozenset({"events", "social_edges"})

EVENT_ID_FROM_COLUMN, EVENT_ID_HASH = "column", "hash_of_line"
# Like hash_of_line, but the n-th repeat of a line in its file (n > 1) hashes the line with n: for sources
# whose identical lines are separate events (two like purchases on one day), not copies.
EVENT_ID_HASH_OCCURRENCE = "hash_of_line_and_occurrence"
EVENT_ID_MODES = (EVENT_ID_FROM_COLUMN, EVENT_ID_HASH, EVENT_ID_HASH_OCCURRENCE)
LAYOUT_DAILY, LAYOUT_HISTORY = "daily", "history"
FILE_FORMATS = ("jsonl", "csv", "parquet")

TS_ISO, TS_EPOCH_S, TS_EPOCH_MS = "iso", "epoch_s", "epoch_ms"
DELIMITER_WHITESPACE = "whitespace"
_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "pipe": "|", "space": DELIMITER_WHITESPACE,
                    DELIMITER_WHITESPACE: DELIMITER_WHITESPACE}
# Calendar roles: the their-columns a relative calendar reads (hour is optional).
CALENDAR_ROLES = ("user", "sequence", "days_since_previous", "hour")

_SETTINGS = {"kind", "folder", "optional", "columns", "event_types", "event_id", "emit_master", "format",
             "delimiter", "header", "column_names", "constants", "timestamp", "layout", "calendar",
             "item_price_from_event", "category_separator"}


def schema_fields(ddl: str) -> list[tuple[str, str]]:
    return [tuple(part.strip().split(" ", 1)) for part in ddl.split(",")]  # type: ignore[misc]


@dataclass(frozen=True)
class FileLayout:
    """How a source's text files are cut into cells: the delimiter and where the column names come from."""

    format: str | None = None          # None: by file extension; else every file of the source is read so
    delimiter: str = ","               # one character (csv quoting), several (plain split) or whitespace
    header: bool = True
    column_names: tuple[str, ...] = ()  # the columns, in file order, when there is no header row

    def split(self, line: str) -> list[str] | None:
        """The cells of one line; None when its quoting is unbalanced (a record never spans lines)."""
        if self.delimiter == DELIMITER_WHITESPACE:
            return line.split()
        if len(self.delimiter) > 1:
            return line.split(self.delimiter)
        try:
            return next(csv.reader([line], delimiter=self.delimiter, strict=True), [])
        except csv.Error:
            return None


@dataclass(frozen=True)
class TimestampFormat:
    """How a source writes its times: ISO-8601, epoch seconds or milliseconds, or a strptime pattern.

    `zone` is the clock of values written without an offset (ISO without offset, strptime patterns
    without %z). `declared` is False for sources that say nothing: their ts lands as it came.
    """

    format: str = TS_ISO
    zone: str = "UTC"
    declared: bool = False


@dataclass(frozen=True)
class RelativeCalendar:
    """Derived times for sources that only count days between a user's orders (Instacart's order lines).

    Per user, orders sorted by `sequence` get start + the running sum of `days_since_previous`
    (the first order's is empty: day 0), at `hour` o'clock in `zone`. Reproducible: the same rows give
    the same times. The calendar is invented in its origin (start), real in its gaps and hours.
    """

    user: str
    sequence: str
    days_since_previous: str
    hour: str | None
    start: dt.date
    zone: str = "UTC"

    def columns(self) -> dict[str, str]:
        """role -> their column."""
        roles = {"user": self.user, "sequence": self.sequence, "days_since_previous": self.days_since_previous}
        return roles | ({"hour": self.hour} if self.hour else {})


@dataclass(frozen=True)
class Source:
    """One landing folder: what kind of records it holds, their file layout and how columns map onto ours."""

    name: str
    kind: str
    folder: str
    optional: bool = False
    columns: Mapping[str, str] = field(default_factory=dict)  # their column -> our field (or item.<field>)
    event_types: Mapping[str, str] = field(default_factory=dict)  # their event_type -> ours
    event_id: str = EVENT_ID_FROM_COLUMN
    emit_master: bool = False  # also emit item and user rows for ids only these files mention
    item_price_from_event: bool = False  # emitted items take the price of their latest event
    category_separator: str | None = None  # their category levels' separator, written as our ">"
    layout: FileLayout = field(default_factory=FileLayout)
    constants: Mapping[str, Any] = field(default_factory=dict)  # our field -> the value of every record
    timestamp: TimestampFormat = field(default_factory=TimestampFormat)
    history: bool = False  # one folder of files spanning many days, routed to days by ts
    calendar: RelativeCalendar | None = None

    @property
    def dated(self) -> bool:
        return self.kind in DATED_KINDS

    @property
    def daily_folders(self) -> bool:
        """Files land in <folder>/event_date=YYYY-MM-DD/ (not a history file, not a snapshot)."""
        return self.dated and not self.history

    @property
    def derives_ts(self) -> bool:
        """Collect turns this source's times into ISO-8601 UTC text itself (else ts lands as it came)."""
        return self.dated and (self.timestamp.declared or self.calendar is not None or self.history)

    def ts_column(self) -> str | None:
        """Their column that holds the time, or None."""
        if not self.columns:
            return "ts" if self.dated else None
        return next((theirs for theirs, ours in self.columns.items() if ours == "ts"), None)

    def fields(self) -> list[tuple[str, str, str]]:
        """(their column, our field, Spark type) for every column read from this source's files.

        Calendar columns come as `_calendar.<role>` strings.
        """
        types = dict(schema_fields(KIND_SCHEMA[self.kind]))
        types.update({f"item.{name}": kind for name, kind in schema_fields(ITEM_SCHEMA)})
        if not self.columns:
            out = [(name, name, kind) for name, kind in schema_fields(KIND_SCHEMA[self.kind])]
        else:
            out = [(theirs, ours, types[ours]) for theirs, ours in self.columns.items()]
        if self.calendar is not None:
            out += [(theirs, f"_calendar.{role}", "string") for role, theirs in self.calendar.columns().items()]
        return out

    def read_columns(self) -> list[tuple[str, str]]:
        """(their column, Spark type) of every column read, each once (a calendar may reuse a mapped one)."""
        seen: dict[str, str] = {}
        for theirs, _, kind in self.fields():
            seen.setdefault(theirs, kind)
        return list(seen.items())

    def required_columns(self) -> list[str]:
        """Their columns every file of this source must have (the declared mapping and calendar)."""
        if not self.columns:
            return []
        needed = list(self.columns)
        if self.calendar is not None:
            needed += [c for c in self.calendar.columns().values() if c not in needed]
        return needed

    def setting_of(self, column: str) -> str:
        """Which setting names `column`, for error messages."""
        if column in self.columns:
            return f"collect.sources.{self.name}.columns"
        return f"collect.sources.{self.name}.calendar"


# --------------------------------------------------------------------------------------------------
# Declarations -> Sources, checked before Spark starts.


def _delimiter(value: Any, where: str) -> str:
    text = str(value)
    text = _DELIMITER_NAMES.get(text.lower(), text)
    if text == "" or text in ('"', "\n", "\r"):
        raise ConfigError(f"{where}.delimiter is {value!r}; use ',', '\\t', '|', '::' or whitespace")
    if text.strip() == "" and text != "\t":
        text = DELIMITER_WHITESPACE  # a space means "aligned columns", as in fixed-width exports
    return text


def _zone(value: Any, where: str) -> str:
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where} is {value!r}, not a time zone; use an IANA name such as UTC or "
                          "America/New_York") from None
    return str(value)


def _timestamp(settings: Any, where: str) -> TimestampFormat:
    if settings is None:
        return TimestampFormat()
    if isinstance(settings, str):
        settings = {"format": settings}
    if not isinstance(settings, Mapping) or set(settings) - {"format", "zone"}:
        raise ConfigError(f"{where}.timestamp takes format (iso, epoch_s, epoch_ms or a strptime pattern "
                          "such as '%Y%m%d') and zone")
    fmt = str(settings.get("format", TS_ISO))
    if fmt not in (TS_ISO, TS_EPOCH_S, TS_EPOCH_MS) and "%" not in fmt:
        raise ConfigError(f"{where}.timestamp.format is {fmt!r}; use iso, epoch_s, epoch_ms or a strptime "
                          "pattern such as '%Y%m%d' or '%d/%m/%Y %H:%M'")
    return TimestampFormat(fmt, _zone(settings.get("zone", "UTC"), f"{where}.timestamp.zone"), True)


def _calendar(settings: Any, where: str) -> RelativeCalendar | None:
    if settings is None:
        return None
    keys = {*CALENDAR_ROLES, "start", "zone"}
    if not isinstance(settings, Mapping) or set(settings) - keys:
        raise ConfigError(f"{where}.calendar takes {', '.join(sorted(keys))}")
    missing = [k for k in ("user", "sequence", "days_since_previous", "start") if not settings.get(k)]
    if missing:
        raise ConfigError(f"{where}.calendar needs {', '.join(missing)} (docs/data-contract.md, relative calendar)")
    try:
        start = dt.date.fromisoformat(str(settings["start"]))
    except ValueError:
        raise ConfigError(f"{where}.calendar.start is {settings['start']!r}; write YYYY-MM-DD") from None
    return RelativeCalendar(str(settings["user"]), str(settings["sequence"]), str(settings["days_since_previous"]),
                            str(settings["hour"]) if settings.get("hour") else None, start,
                            _zone(settings.get("zone", "UTC"), f"{where}.calendar.zone"))


def parse_source(name: str, settings: Any, where: str) -> Source:
    if not isinstance(settings, Mapping):
        raise ConfigError(f"{where} must be a mapping with at least kind and folder")
    unknown = set(settings) - _SETTINGS
    if unknown:
        raise ConfigError(f"{where} has unknown settings {sorted(unknown)}; known: {', '.join(sorted(_SETTINGS))}")
    kind = settings.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind is {kind!r}; use one of {', '.join(KINDS)}")
    ours = {n for n, _ in schema_fields(KIND_SCHEMA[kind])}
    allowed = ours | ({f"item.{n}" for n, _ in schema_fields(ITEM_SCHEMA)} if kind == "events" else set())
    columns = {str(k): str(v) for k, v in (settings.get("columns") or {}).items()}
    for theirs, target in columns.items():
        if target not in allowed:
            raise ConfigError(f"{where}.columns maps '{theirs}' to '{target}', which is not a {kind} field; "
                              f"fields: {', '.join(sorted(allowed))}")
    constants = dict(settings.get("constants") or {})
    for target, value in constants.items():
        if target not in ours:
            raise ConfigError(f"{where}.constants sets '{target}', which is not a {kind} field; "
                              f"fields: {', '.join(sorted(ours))}")
        if target in columns.values():
            raise ConfigError(f"{where}.constants sets '{target}', which {where}.columns already maps")
        if value is None or isinstance(value, (Mapping, list)):
            raise ConfigError(f"{where}.constants.{target} must be one plain value, got {value!r}")
    event_id = str(settings.get("event_id", EVENT_ID_FROM_COLUMN))
    if event_id not in EVENT_ID_MODES:
        raise ConfigError(f"{where}.event_id is {event_id!r}; use one of {', '.join(EVENT_ID_MODES)}")
    if kind == "events" and event_id == EVENT_ID_FROM_COLUMN and columns and "event_id" not in columns.values():
        raise ConfigError(f"{where}.columns maps no column to event_id; map one, or set event_id: {EVENT_ID_HASH} "
                          f"(or {EVENT_ID_HASH_OCCURRENCE})")

    fmt = settings.get("format")
    if fmt is not None and fmt not in FILE_FORMATS:
        raise ConfigError(f"{where}.format is {fmt!r}; use one of {', '.join(FILE_FORMATS)} (or leave it out: "
                          "by file extension)")
    header = settings.get("header", True)
    if not isinstance(header, bool):
        raise ConfigError(f"{where}.header must be true or false, got {header!r}")
    names = tuple(str(c) for c in (settings.get("column_names") or ()))
    if not header and not names:
        raise ConfigError(f"{where}.header is false, so {where}.column_names must list the file's columns in order")
    if header and names:
        raise ConfigError(f"{where}.column_names is for files without a header row; set header: false, "
                          "or drop column_names to use the header")
    if names and columns:
        unnamed = [c for c in columns if c not in names]
        if unnamed:
            raise ConfigError(f"{where}.columns maps '{unnamed[0]}', which {where}.column_names does not list "
                              f"({', '.join(names)})")
    layout = FileLayout(fmt, _delimiter(settings.get("delimiter", ","), where), header, names)

    layout_kind = str(settings.get("layout", LAYOUT_DAILY))
    if layout_kind not in (LAYOUT_DAILY, LAYOUT_HISTORY):
        raise ConfigError(f"{where}.layout is {layout_kind!r}; use {LAYOUT_DAILY} (event_date=YYYY-MM-DD/ folders) "
                          f"or {LAYOUT_HISTORY} (files spanning many days, routed by time)")
    history = layout_kind == LAYOUT_HISTORY
    if history and kind not in DATED_KINDS:
        raise ConfigError(f"{where}.layout is history, but {kind} are snapshots, not dated records")
    calendar = _calendar(settings.get("calendar"), where)
    timestamp = _timestamp(settings.get("timestamp"), where)
    if calendar is not None:
        if kind != "events" or not history:
            raise ConfigError(f"{where}.calendar derives event times; it needs kind: events and layout: history")
        if "ts" in columns.values() or settings.get("timestamp") is not None:
            raise ConfigError(f"{where} has both a calendar and a ts column/timestamp format; keep one")
        if names:
            unnamed = [c for c in calendar.columns().values() if c not in names]
            if unnamed:
                raise ConfigError(f"{where}.calendar reads '{unnamed[0]}', which {where}.column_names does not list")
    elif kind in DATED_KINDS and columns and "ts" not in columns.values():
        raise ConfigError(f"{where}.columns maps no column to ts; map one, or declare a calendar "
                          "(docs/data-contract.md)")
    return Source(
        name=str(name), kind=kind, folder=str(settings.get("folder", name)),
        optional=bool(settings.get("optional", False)), columns=columns,
        event_types={str(k): str(v) for k, v in (settings.get("event_types") or {}).items()},
        event_id=event_id, emit_master=bool(settings.get("emit_master", False)),
        item_price_from_event=bool(settings.get("item_price_from_event", False)),
        category_separator=(str(settings["category_separator"]) if settings.get("category_separator") else None),
        layout=layout,
        constants=constants, timestamp=timestamp, history=history, calendar=calendar,
    )


def parse_sources(declared: Any, where: str = "collect.sources") -> list[Source]:
    if not isinstance(declared, Mapping):
        raise ConfigError(f"{where} must map a source name to its settings (kind, folder, ...)")
    sources = [parse_source(str(name), settings, f"{where}.{name}") for name, settings in declared.items()]
    if not any(s.kind == "events" for s in sources):
        raise ConfigError(f"{where} declares no source of kind events")
    return sources


# --------------------------------------------------------------------------------------------------
# Times: the one implementation, on pandas Series (collect runs it in Spark's Python workers).


def parse_instants(values: "pd.Series", spec: TimestampFormat) -> "pd.Series":
    """UTC instants (datetime64[ns, UTC]) of a source's time values; NaT where a value does not fit the format."""
    import pandas as pd

    if spec.format in (TS_EPOCH_S, TS_EPOCH_MS):
        numbers = pd.to_numeric(values, errors="coerce")
        unit = "s" if spec.format == TS_EPOCH_S else "ms"
        return pd.to_datetime(numbers, unit=unit, utc=True, errors="coerce")
    text = values.astype("string").str.strip()
    if spec.format == TS_ISO:
        # The extended form only: pandas also reads the basic form (20261104), which a source that
        # declares ISO-8601 does not write; a source that does declares %Y%m%d.
        text = text.where(text.str.match(r"^\d{4}-\d{2}-\d{2}(?:$|[T ])").fillna(False).astype(bool))
        zoned = text.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True).fillna(False).astype(bool)
        out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
        if zoned.any():
            out[zoned] = pd.to_datetime(text[zoned], format="ISO8601", errors="coerce", utc=True)
        if (~zoned).any():
            naive = pd.to_datetime(text[~zoned], format="ISO8601", errors="coerce")
            out[~zoned] = naive.dt.tz_localize(spec.zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
        return out
    parsed = pd.to_datetime(text, format=spec.format, errors="coerce", utc=False)
    if getattr(parsed.dtype, "tz", None) is not None:
        return parsed.dt.tz_convert("UTC")
    return parsed.dt.tz_localize(spec.zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")


def calendar_instants(user: "pd.Series", sequence: "pd.Series", days_since_previous: "pd.Series",
                      hour: "pd.Series | None", calendar: RelativeCalendar) -> "pd.Series":
    """UTC instants of a relative calendar, row by row (rows of one order share the order's time).

    NaT where the user or sequence is missing, or a later order's days since the previous one is
    missing or negative (its place in time is then unknown, and so is every later order's).
    """
    import pandas as pd

    frame = pd.DataFrame({
        "user": user.astype("string"),
        "seq": pd.to_numeric(sequence, errors="coerce"),
        "gap": pd.to_numeric(days_since_previous, errors="coerce"),
        "hour": pd.to_numeric(hour, errors="coerce") if hour is not None else 0.0,
    }, index=user.index)
    orders = (frame.dropna(subset=["user", "seq"]).sort_values(["user", "seq"], kind="mergesort")
              .drop_duplicates(["user", "seq"]))
    first = ~orders["user"].duplicated()
    gap = orders["gap"].where(~first, 0.0)
    gap = gap.where(gap >= 0)  # a negative gap is as unknown as a missing one
    # A missing gap makes every later order of that user unknown too.
    by_user = orders["user"]
    unknown = gap.isna().astype("int64").groupby(by_user).cumsum() > 0
    orders["offset"] = gap.fillna(0.0).groupby(by_user).cumsum().where(~unknown)
    hour_ok = orders["hour"].between(0, 23)
    start = pd.Timestamp(calendar.start)
    local = start + pd.to_timedelta(orders["offset"], unit="D") + pd.to_timedelta(
        orders["hour"].where(hour_ok), unit="h")
    orders["instant"] = local.dt.tz_localize(calendar.zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    merged = frame[["user", "seq"]].merge(orders[["user", "seq", "instant"]], on=["user", "seq"], how="left")
    return pd.Series(merged["instant"].to_numpy(), index=user.index).astype("datetime64[ns, UTC]")


def iso_utc(instants: "pd.Series") -> "pd.Series":
    """ISO-8601 UTC text (`2016-10-16T12:00:00+00:00`, with microseconds when there are any); None for NaT."""
    import pandas as pd

    text = instants.dt.strftime("%Y-%m-%dT%H:%M:%S")
    micros = instants.dt.microsecond.fillna(0).astype("int64")
    fraction = pd.Series(["." + f"{m:06d}" if m else "" for m in micros], index=instants.index)
    out = (text + fraction + "+00:00").astype(object)
    return out.where(instants.notna(), None)


def source_instants(table: "pd.DataFrame", source: Source) -> "pd.Series":
    """UTC instants of every row of a table with the source's own column names (NaT where unknown)."""
    import pandas as pd

    if source.calendar is not None:
        cal = source.calendar
        return calendar_instants(table[cal.user], table[cal.sequence], table[cal.days_since_previous],
                                 table[cal.hour] if cal.hour else None, cal)
    column = source.ts_column()
    if column is None:
        return pd.Series(pd.NaT, index=table.index, dtype="datetime64[ns, UTC]")
    return parse_instants(table[column], source.timestamp)


def mapped_value(table: "pd.DataFrame", source: Source, ours: str) -> "pd.Series":
    """Our field `ours` of every row, as text: the mapped column, the source's constant, or NULL."""
    import pandas as pd

    if ours in source.constants:
        return pd.Series(str(source.constants[ours]), index=table.index, dtype="string")
    theirs = next((t for t, o in source.columns.items() if o == ours), None) if source.columns else (
        ours if ours in table.columns else None)
    if theirs is None:
        return pd.Series(pd.NA, index=table.index, dtype="string")
    values = table[theirs]
    if pd.api.types.is_float_dtype(values) and values.dropna().mod(1).eq(0).all():
        values = values.astype("Int64")  # pandas reads integer ids with gaps as floats: 12.0 -> 12
    return values.astype("string")
