"""Feature windows: the day windows of `features.windows` and the feature names that carry them.

Counts and rates come for every configured window (`n_events_{w}d`). Every other windowed feature
takes one of three roles, filled by the three longest windows: `long` (the longest: money, prices,
ratings, sentiment, category and brand weights, the days a user stays in the state), `medium`
(behaviour mix: day parts, devices, channels, sessions, search intent) and `short` (recent activity).
With the default windows (1, 7, 30, 90) they are 7, 30 and 90 days, the names the features had
before the windows became configurable. A name written for the default windows (a suite, a rule on
`active_days_30d`) follows the configured ones through `FeatureWindows.rename`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobs.common.errors import ConfigError

SETTING = "features.windows"
DEFAULT_WINDOWS: tuple[int, ...] = (1, 7, 30, 90)
SHORT, MEDIUM, LONG = "short", "medium", "long"
ROLES = (SHORT, MEDIUM, LONG)
# The default window of each role: the windows names written for the default windows carry.
DEFAULT_ROLE_DAYS = {SHORT: 7, MEDIUM: 30, LONG: 90}
_WINDOWED_NAME = re.compile(r"^(?P<base>.+)_(?P<days>\d+)d$")


def _problem(value: Any) -> str | None:
    """Why `value` is not a list of distinct positive whole day counts, or None."""
    if not isinstance(value, (list, tuple)) or not value:
        return "it must be a non-empty list of day counts"
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int) or v <= 0]
    if bad:
        return f"{bad[0]!r} is not a positive whole number of days"
    repeated = sorted({v for v in value if list(value).count(v) > 1})
    if repeated:
        return f"{repeated[0]} days is listed more than once"
    return None


@dataclass(frozen=True)
class FeatureWindows:
    """The configured windows, shortest first (validated: non-empty, positive, distinct)."""

    days: tuple[int, ...] = DEFAULT_WINDOWS

    def __post_init__(self) -> None:
        problem = _problem(self.days)
        if problem:
            raise ConfigError(f"{SETTING} is {list(self.days) if isinstance(self.days, tuple) else self.days!r}: "
                              f"{problem}; set a list of distinct positive day counts, e.g. {list(DEFAULT_WINDOWS)}")
        object.__setattr__(self, "days", tuple(sorted(self.days)))

    @classmethod
    def parse(cls, value: Any) -> "FeatureWindows":
        """From the setting's value; a ConfigError naming the setting and the value when it is not valid."""
        problem = _problem(value)
        if problem:
            raise ConfigError(f"{SETTING} is {value!r}: {problem}; set a list of distinct positive day counts, "
                              f"e.g. {list(DEFAULT_WINDOWS)}")
        return cls(tuple(value))

    @classmethod
    def from_config(cls, cfg: Any) -> "FeatureWindows":
        """`features.windows` of the profile. The setting it replaced is refused, so that there is one."""
        if cfg.get("pipeline.feature_window_days", None) is not None:
            raise ConfigError(
                "pipeline.feature_window_days is no longer read: the longest of features.windows is the feature "
                f"window; remove it and list the windows under {SETTING} (e.g. {list(DEFAULT_WINDOWS)})")
        return cls.parse(cfg.get(SETTING))

    @property
    def longest(self) -> int:
        return self.days[-1]

    @property
    def is_default(self) -> bool:
        return self.days == DEFAULT_WINDOWS

    def role(self, role: str) -> int:
        """The window of a role: long = the longest, medium = the second longest, short = the third
        longest; with fewer windows a role takes the shortest window there is."""
        if role not in ROLES:
            raise ValueError(f"unknown window role '{role}'; use one of {', '.join(ROLES)}")
        position = {LONG: 1, MEDIUM: 2, SHORT: 3}[role]
        return self.days[-position] if len(self.days) >= position else self.days[0]

    def roles(self) -> Mapping[str, int]:
        return {role: self.role(role) for role in ROLES}

    def name(self, base: str, role: str) -> str:
        """`active_days` + medium -> `active_days_30d` (with the default windows)."""
        return f"{base}_{self.role(role)}d"

    def rename(self, default_name: str) -> str:
        """A feature name written for the default windows (`active_days_30d`, `monetary_90d`) as these
        windows name it; a name without a role window (`recency_days`, `n_events_1d`) is unchanged."""
        match = _WINDOWED_NAME.match(default_name)
        if not match:
            return default_name
        days = int(match.group("days"))
        for role, default_days in DEFAULT_ROLE_DAYS.items():
            if days == default_days:
                return self.name(match.group("base"), role)
        return default_name

    def label(self) -> str:
        """`1/7/30/90`: how fingerprints and feature versions name the windows."""
        return "/".join(str(d) for d in self.days)
