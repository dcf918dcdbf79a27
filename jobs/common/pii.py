"""PII detection: emails, phones, ID-card and card numbers (and a user's own name) in any text column.

One set of patterns serves three places: clean masks, drops or quarantines what it finds before silver
(`privacy.pii_columns`), the silver, gold and publish suites fail when a string column still holds any
(`no_pii`), and validation redacts its sample rows with the Python twin of the same detectors.
Everything on the Spark side is built-in functions (regexp, higher-order functions), no Python UDF.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs.common.config import Config
from jobs.common.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# Digits or ASCII letters on either side mean the digits belong to a longer token (an order number,
# a hex key, an item id such as `i13800000000`), not to a phone or card number.
_OPEN = r"(?<![0-9A-Za-z])"
_CLOSE = r"(?![0-9A-Za-z])"
EMAIL_PATTERN = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
# China mainland mobile: 1[3-9]x xxxx xxxx, optionally +86 / 0086 / 86 in front, spaces or hyphens between groups.
CN_MOBILE_PATTERN = _OPEN + r"(?:(?:\+|00)?86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}" + _CLOSE
# International E.164: + then 8 to 15 digits, spaces or hyphens allowed between them.
E164_PATTERN = r"(?<![0-9A-Za-z+])\+[1-9](?:[ -]?[0-9]){7,14}" + _CLOSE
# Resident ID card (GB 11643): 6-digit area, birth date 18xx-20xx, 3-digit sequence, check digit (0-9 or X).
ID_CARD_PATTERN = (_OPEN + r"[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
                   r"[0-9]{3}[0-9Xx]" + _CLOSE)
# Payment card: 13-19 digits (spaces or hyphens between), a card network's prefix, Luhn checksum.
CARD_PATTERN = _OPEN + r"[2-6](?:[ -]?[0-9]){12,18}" + _CLOSE
CARD_PREFIX = r"^(?:4|5[1-5]|2[2-7]|3[47]|35|62|65|6011)"
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"
_MAY_HOLD_PII = r"[0-9@]"
# A name shorter than this is not searched inside free text (one character matches too much).
MIN_NAME_CHARS = 2

# What clean scans, by table; a column listed here needs an action in privacy.pii_columns.
EVENT_PII_COLUMNS = ("session_id", "query", "review_text", "device", "channel", "geo")
USER_PII_COLUMNS = ("occupation", "city")
PII_ACTIONS = ("mask", "drop_value", "quarantine")
PII_KINDS = ("email", "id_card", "card", "phone", "name")


def token(kind: str) -> str:
    """What a masked value shows in place of the match: `[email]`, `[phone]`, `[id_card]`, `[card]`, `[name]`."""
    return f"[{kind}]"


def pii_reason(column: str) -> str:
    """The quarantine reason of a row whose `column` holds PII under the action `quarantine`."""
    return f"pii_in_{column}"


PII_REASONS = tuple(pii_reason(c) for c in EVENT_PII_COLUMNS)


@dataclass(frozen=True)
class PiiParams:
    """`privacy.pii_columns`: column -> mask | drop_value | quarantine, for every column clean scans."""

    actions: Mapping[str, str]

    def __post_init__(self) -> None:
        known = (*EVENT_PII_COLUMNS, *USER_PII_COLUMNS)
        unknown = sorted(set(self.actions) - set(known))
        if unknown:
            raise ConfigError(f"privacy.pii_columns names {unknown}; it takes {', '.join(known)}")
        missing = [c for c in known if c not in self.actions]
        if missing:
            raise ConfigError(f"privacy.pii_columns has no action for {missing}; give each one of "
                              f"{', '.join(PII_ACTIONS)} (docs/cleaning.md, 'Personal data in other columns')")
        for column, action in self.actions.items():
            if action not in PII_ACTIONS:
                raise ConfigError(f"privacy.pii_columns.{column} is {action!r}; use one of {', '.join(PII_ACTIONS)}")
            if column in USER_PII_COLUMNS and action == "quarantine":
                raise ConfigError(f"privacy.pii_columns.{column} is 'quarantine', but users are master data and "
                                  "are not quarantined row by row; use mask or drop_value")

    @classmethod
    def from_config(cls, cfg: Config) -> "PiiParams":
        section = cfg.get("privacy.pii_columns", None)
        if not isinstance(section, Mapping):
            raise ConfigError(f"privacy.pii_columns is {section!r} in profile '{cfg.profile}'; give a mapping "
                              f"column -> action for {', '.join((*EVENT_PII_COLUMNS, *USER_PII_COLUMNS))}")
        return cls({str(c): str(a) for c, a in section.items()})

    def for_columns(self, columns: Iterable[str]) -> dict[str, str]:
        return {c: self.actions[c] for c in columns}


# --------------------------------------------------------------------------------------------------
# Spark: masking one string column


def _digits(text: "Column") -> "Column":
    """The characters of a string of digits as an array of ints (0 for anything else)."""
    from pyspark.sql import functions as F

    return F.transform(F.split(text, ""), lambda c: F.coalesce(c.try_cast("int"), F.lit(0)))


def _sum(values: "Column") -> "Column":
    from pyspark.sql import functions as F

    return F.aggregate(values, F.lit(0), lambda total, v: total + v)


# Higher-order functions over the digits keep the expression small: these run once per candidate of
# every scanned column, and an unrolled sum made the plan large enough to slow every step that uses it.
def valid_id_card(candidate: "Column") -> "Column":
    """True when the 18th character is the GB 11643 check digit of the first 17."""
    from pyspark.sql import functions as F

    weighted = F.zip_with(F.slice(_digits(candidate), 1, 17), F.array(*[F.lit(w) for w in ID_WEIGHTS]),
                          lambda d, w: d * w)
    expected = F.substring(F.lit(ID_CHECK), (_sum(weighted) % 11) + 1, 1)
    return F.upper(F.substring(candidate, 18, 1)) == expected


def valid_card(candidate: "Column") -> "Column":
    """13-19 digits after separators are removed, a card network's prefix, and the Luhn checksum."""
    from pyspark.sql import functions as F

    digits = F.regexp_replace(candidate, r"[^0-9]", "")
    doubled = F.transform(F.reverse(_digits(digits)), lambda d, i: F.when(
        i % 2 == 0, d).when(d * 2 > 9, d * 2 - 9).otherwise(d * 2))
    return F.length(digits).between(13, 19) & digits.rlike(CARD_PREFIX) & (_sum(doubled) % 10 == 0)


def _replace_checked(text: "Column", pattern: str, valid, kind: str) -> "Column":
    """Each match of `pattern` that passes `valid` replaced by the token; other matches are left alone."""
    from pyspark.sql import functions as F

    matches = F.filter(F.regexp_extract_all(text, F.lit(pattern), 0), valid)
    return F.aggregate(matches, text, lambda acc, m: F.replace(acc, m, F.lit(token(kind))))


def mask_pii(text: "Column", names: "Column | None" = None) -> "Column":
    """The text with every email, ID-card, card and phone number (and any of `names`, an array of the
    user's own names, case-insensitive) replaced by its token. Null stays null.

    ID cards go before cards and phones so their digits are not read as one of those.
    """
    from pyspark.sql import functions as F

    out = F.regexp_replace(text, EMAIL_PATTERN, token("email"))
    out = _replace_checked(out, ID_CARD_PATTERN, valid_id_card, "id_card")
    out = _replace_checked(out, CARD_PATTERN, valid_card, "card")
    out = F.regexp_replace(out, CN_MOBILE_PATTERN, token("phone"))
    out = F.regexp_replace(out, E164_PATTERN, token("phone"))
    # Every pattern needs a digit or an @: most text has neither and skips the five scans.
    out = F.when(text.rlike(_MAY_HOLD_PII), out).otherwise(text)
    if names is not None:
        known = F.coalesce(names, F.array().cast("array<string>"))
        usable = F.filter(known, lambda n: F.length(F.trim(n)) >= MIN_NAME_CHARS)
        out = F.aggregate(usable, out, lambda acc, n: F.regexp_replace(
            acc, F.concat(F.lit("(?i)\\Q"), F.trim(n), F.lit("\\E")), F.lit(token("name"))))
    return F.when(text.isNull(), F.lit(None).cast("string")).otherwise(out)


def has_pii(text: "Column") -> "Column":
    """True where the text holds an email, phone, ID-card or card number (names need the user: see mask_pii)."""
    from pyspark.sql import functions as F

    return F.coalesce(mask_pii(text) != text, F.lit(False))


def transform_pii(df: "DataFrame", actions: Mapping[str, str], names: str | None = None) -> "DataFrame":
    """Apply each column's action where its value holds PII; add `_pii_found` and `_pii_reason`.

    actions: column -> mask (matches become tokens) | drop_value (the value becomes null) | quarantine
             (the value stays; `_pii_reason` = pii_in_<column>, the first such column in `actions` order).
    names:   a column of array<string>: the row's user's own names, searched in every listed column.
    `_pii_found` lists the columns where PII was found (empty when none), for the step's counts.
    """
    from pyspark.sql import functions as F

    present = {c: a for c, a in actions.items() if c in df.columns}
    name_list = F.col(names) if names else None
    masked = df.select("*", *[mask_pii(F.col(c), name_list).alias(f"_pii_masked_{c}") for c in present])
    found = {c: F.coalesce(F.col(f"_pii_masked_{c}") != F.col(c), F.lit(False)) for c in present}
    flagged = masked.select("*", *[found[c].alias(f"_pii_hit_{c}") for c in present])
    reason = F.lit(None).cast("string")
    for column in reversed([c for c, a in present.items() if a == "quarantine"]):
        reason = F.when(F.col(f"_pii_hit_{column}"), F.lit(pii_reason(column))).otherwise(reason)
    replaced = {}
    for column, action in present.items():
        hit = F.col(f"_pii_hit_{column}")
        if action == "mask":
            replaced[column] = F.col(f"_pii_masked_{column}")
        elif action == "drop_value":
            replaced[column] = F.when(hit, F.lit(None).cast("string")).otherwise(F.col(column))
        else:
            replaced[column] = F.col(column)
    hits = F.filter(F.array(*[F.when(F.col(f"_pii_hit_{c}"), F.lit(c)) for c in present]) if present
                    else F.array().cast("array<string>"), lambda c: c.isNotNull())
    out = flagged.withColumns({**{c: value.alias(c) for c, value in replaced.items()},
                               "_pii_found": hits, "_pii_reason": reason})
    return out.drop(*[f"_pii_masked_{c}" for c in present], *[f"_pii_hit_{c}" for c in present])


def pii_counts(df: "DataFrame", column: str = "_pii_found") -> dict[str, int]:
    """column -> rows in which transform_pii found PII there, in one pass."""
    from pyspark.sql import functions as F

    rows = df.select(F.explode(column).alias("c")).groupBy("c").count().collect()
    return {r["c"]: int(r["count"]) for r in sorted(rows, key=lambda r: r["c"])}


# --------------------------------------------------------------------------------------------------
# Python twin: the same patterns and checks, for values that have left Spark (validation samples)

_EMAIL = re.compile(EMAIL_PATTERN)
_CN_MOBILE = re.compile(CN_MOBILE_PATTERN)
_E164 = re.compile(E164_PATTERN)
_ID_CARD = re.compile(ID_CARD_PATTERN)
_CARD = re.compile(CARD_PATTERN)
_CARD_PREFIX = re.compile(CARD_PREFIX)


def valid_id_card_py(candidate: str) -> bool:
    total = sum(int(candidate[i]) * w for i, w in enumerate(ID_WEIGHTS))
    return candidate[17].upper() == ID_CHECK[total % 11]


def valid_card_py(candidate: str) -> bool:
    digits = re.sub(r"[^0-9]", "", candidate)
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return 13 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits)) and total % 10 == 0


def mask_text(text: str, names: Sequence[str] = ()) -> str:
    """mask_pii for one Python string: the same patterns, checks and order."""
    out = _EMAIL.sub(token("email"), text)
    for pattern, valid, kind in ((_ID_CARD, valid_id_card_py, "id_card"), (_CARD, valid_card_py, "card")):
        for match in [m for m in pattern.findall(out) if valid(m)]:
            out = out.replace(match, token(kind))
    out = _E164.sub(token("phone"), _CN_MOBILE.sub(token("phone"), out))
    for name in names:
        if len(name.strip()) >= MIN_NAME_CHARS:
            out = re.sub(re.escape(name.strip()), token("name"), out, flags=re.IGNORECASE)
    return out


def redact_value(value: Any) -> Any:
    """Every string inside a value (lists, dicts, their keys too) with its PII masked; other values unchanged."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value
