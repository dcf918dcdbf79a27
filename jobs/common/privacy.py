"""Privacy: keyed HMAC-SHA256 pseudonyms of identifiers and contacts, and generalised demographics."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.common.config import Config
from jobs.common.errors import ConfigError, EnvironmentSetupError

if TYPE_CHECKING:
    from pyspark.sql import Column

_BLOCK = 64  # SHA-256 block size in bytes
MIN_KEY_BYTES = 16


def load_hmac_key(cfg: Config) -> bytes:
    """The key comes from the environment variable, else the secret file; never from code or git."""
    env_name = str(cfg.get("privacy.hmac_key_env", "PORTRAIT_HMAC_KEY"))
    key_file = cfg.location("privacy.hmac_key_file") if cfg.get("privacy.hmac_key_file", None) else None
    raw = os.environ.get(env_name)
    source = f"environment variable {env_name}"
    if not raw and key_file and Path(key_file).is_file():
        raw = Path(key_file).read_text(encoding="utf-8").strip()
        source = f"file {key_file}"
    if not raw:
        raise EnvironmentSetupError(
            f"no pseudonymisation key: set {env_name} or create {key_file or 'privacy.hmac_key_file'} "
            "(`make secret` writes a random local one)"
        )
    key = raw.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise EnvironmentSetupError(f"the pseudonymisation key from {source} is shorter than {MIN_KEY_BYTES} bytes")
    return key


def pseudonymise_py(key: bytes, value: str) -> str:
    """Reference implementation, used by tests and by `portrait forget` to find a person's key."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonymise(key: bytes, column: "Column") -> "Column":
    """HMAC-SHA256(key, value) as lower-case hex, built from Spark's sha2 so it runs on executors.

    HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)); the padded keys are constants, so the
    key never leaves the driver as a string column and the result equals Python's hmac module.
    """
    from pyspark.sql import functions as F

    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)
    inner = F.unhex(F.sha2(F.concat(F.lit(ipad), column.cast("binary")), 256))
    hashed = F.sha2(F.concat(F.lit(opad), inner), 256)
    return F.when(column.isNull(), F.lit(None)).otherwise(hashed)


# --------------------------------------------------------------------------------------------------
# Contact fields: pseudonymised with the same key, but in their own domain, so that an email that
# happens to equal some user id never yields that user's key.

CONTACT_DOMAINS = ("email", "phone")


def normalise_email(column: "Column") -> "Column":
    """Lower-case and trimmed, so `A@x.cn ` and `a@x.cn` are one contact; empty means missing."""
    from pyspark.sql import functions as F

    value = F.lower(F.trim(column))
    return F.when(value == F.lit(""), F.lit(None)).otherwise(value)


def normalise_phone(column: "Column") -> "Column":
    """Digits only, with a leading mainland country code (86) dropped from 13-digit numbers."""
    from pyspark.sql import functions as F

    digits = F.regexp_replace(column, r"[^0-9]", "")
    digits = F.when((F.length(digits) == 13) & digits.startswith("86"), F.substring(digits, 3, 11)).otherwise(digits)
    return F.when(digits == F.lit(""), F.lit(None)).otherwise(digits)


def pseudonymise_contact(key: bytes, domain: str, column: "Column") -> "Column":
    """HMAC(key, '<domain>:' + normalised value); null stays null."""
    from pyspark.sql import functions as F

    if domain not in CONTACT_DOMAINS:
        raise ValueError(f"unknown contact domain {domain!r}; known: {', '.join(CONTACT_DOMAINS)}")
    normalised = normalise_email(column) if domain == "email" else normalise_phone(column)
    return pseudonymise(key, F.concat(F.lit(f"{domain}:"), normalised))


# --------------------------------------------------------------------------------------------------
# Generalisation of demographics: age bands and the city level, chosen in `privacy.generalise`.

DEFAULT_AGE_EDGES = (18, 25, 35, 45, 55, 65)
MAX_PLAUSIBLE_AGE = 120
CITY_LEVELS = ("city", "province", "region")
# What a city outside the allow-list (CITY_HIERARCHY and privacy.generalise.extra_cities) becomes: free
# text in a city field (a name, an address, a phone number) never reaches silver.
OTHER_CITY = "other"

# City -> (province, region). Municipalities are their own province. Chinese names map onto the same city.
CITY_HIERARCHY: dict[str, tuple[str, str]] = {
    "Shanghai": ("Shanghai", "East China"), "Beijing": ("Beijing", "North China"),
    "Guangzhou": ("Guangdong", "South China"), "Shenzhen": ("Guangdong", "South China"),
    "Hangzhou": ("Zhejiang", "East China"), "Chengdu": ("Sichuan", "Southwest China"),
    "Chongqing": ("Chongqing", "Southwest China"), "Wuhan": ("Hubei", "Central China"),
    "Xi'an": ("Shaanxi", "Northwest China"), "Nanjing": ("Jiangsu", "East China"),
    "Tianjin": ("Tianjin", "North China"), "Suzhou": ("Jiangsu", "East China"),
    "Changsha": ("Hunan", "Central China"), "Zhengzhou": ("Henan", "Central China"),
    "Qingdao": ("Shandong", "East China"), "Xiamen": ("Fujian", "East China"),
    "Shenyang": ("Liaoning", "Northeast China"), "Kunming": ("Yunnan", "Southwest China"),
    "Harbin": ("Heilongjiang", "Northeast China"), "Dalian": ("Liaoning", "Northeast China"),
}
CITY_ALIASES_ZH: dict[str, str] = {
    "上海": "Shanghai", "北京": "Beijing", "广州": "Guangzhou", "深圳": "Shenzhen", "杭州": "Hangzhou",
    "成都": "Chengdu", "重庆": "Chongqing", "武汉": "Wuhan", "西安": "Xi'an", "南京": "Nanjing",
    "天津": "Tianjin", "苏州": "Suzhou", "长沙": "Changsha", "郑州": "Zhengzhou", "青岛": "Qingdao",
    "厦门": "Xiamen", "沈阳": "Shenyang", "昆明": "Kunming", "哈尔滨": "Harbin", "大连": "Dalian",
}


@dataclass(frozen=True)
class Generalisation:
    """How far demographics are coarsened before they reach silver."""

    age_edges: tuple[int, ...] = DEFAULT_AGE_EDGES
    city_level: str = "city"
    extra_cities: tuple[tuple[str, str, str], ...] = ()  # (city, province, region) beyond CITY_HIERARCHY

    def __post_init__(self) -> None:
        edges = tuple(int(e) for e in self.age_edges)
        if not edges or list(edges) != sorted(set(edges)) or edges[0] < 1 or edges[-1] > MAX_PLAUSIBLE_AGE:
            raise ConfigError(f"privacy.generalise age bands {list(self.age_edges)}: need increasing ages "
                              f"between 1 and {MAX_PLAUSIBLE_AGE}")
        if self.city_level not in CITY_LEVELS:
            raise ConfigError(f"privacy.generalise.city_level is '{self.city_level}'; use one of {CITY_LEVELS}")
        object.__setattr__(self, "age_edges", edges)

    @classmethod
    def from_config(cls, cfg: Config) -> "Generalisation":
        """`age_band_edges`, or `age_band_width` from 18 to 65; `city_level`; `extra_cities`."""
        section = cfg.get("privacy.generalise", {}) or {}
        width = section.get("age_band_width")
        if width:
            width = int(width)
            if width < 1:
                raise ConfigError(f"privacy.generalise.age_band_width must be at least 1, got {width}")
            low, high = int(section.get("age_band_min", 18)), int(section.get("age_band_max", 65))
            edges = tuple(range(low, high + 1, width))
        else:
            edges = tuple(section.get("age_band_edges") or DEFAULT_AGE_EDGES)
        extra = tuple((str(city), str(p), str(r)) for city, (p, r) in (section.get("extra_cities") or {}).items())
        return cls(edges, str(section.get("city_level", "city")), extra)

    @property
    def age_bands(self) -> tuple[tuple[int, int, str], ...]:
        """(low, high, label) with low <= age < high, plus the open bands below and above."""
        edges = self.age_edges
        bands = [(0, edges[0], f"<{edges[0]}")]
        bands += [(lo, hi, f"{lo}-{hi - 1}") for lo, hi in zip(edges, edges[1:])]
        bands.append((edges[-1], MAX_PLAUSIBLE_AGE + 1, f"{edges[-1]}+"))
        return tuple(bands)

    @property
    def age_band_labels(self) -> tuple[str, ...]:
        return (*(label for _, _, label in self.age_bands), "unknown")

    def hierarchy(self) -> dict[str, tuple[str, str]]:
        return {**CITY_HIERARCHY, **{city: (p, r) for city, p, r in self.extra_cities}}

    def age_band(self, age: "Column") -> "Column":
        """The band of an age; null, negative or implausible ages are 'unknown'."""
        from pyspark.sql import functions as F

        band = F.lit("unknown")
        for low, high, label in reversed(self.age_bands):
            band = F.when((age >= low) & (age < high), F.lit(label)).otherwise(band)
        return band

    def city(self, raw: "Column") -> "Column":
        """Normalise a city name (NFKC, Chinese or any case), then coarsen it to the configured level.

        The known cities are an allow-list: any other non-empty value becomes 'other' at every level,
        a missing one 'unknown'.
        """
        from pyspark.sql import functions as F

        from jobs.common.text import normalise_text

        hierarchy = self.hierarchy()
        spelled = normalise_text(raw)
        canonical = {name.lower(): name for name in hierarchy}
        canonical.update({alias.lower(): name for alias, name in CITY_ALIASES_ZH.items()})
        lookup = F.create_map(*[F.lit(x) for pair in canonical.items() for x in pair])
        known = F.try_element_at(lookup, F.lower(spelled))
        if self.city_level == "city":
            value = known
        else:
            position = 0 if self.city_level == "province" else 1
            level = F.create_map(*[F.lit(x) for city, parents in hierarchy.items() for x in (city, parents[position])])
            value = F.try_element_at(level, known)
        missing = spelled.isNull() | (F.lower(spelled) == F.lit("unknown"))  # clean's default for a missing geo
        return F.when(missing, F.lit("unknown")).otherwise(F.coalesce(value, F.lit(OTHER_CITY)))
