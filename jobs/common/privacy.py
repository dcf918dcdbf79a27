"""Pseudonymisation: keyed HMAC-SHA256 of direct identifiers, computed inside Spark."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.common.config import Config
from jobs.common.errors import EnvironmentSetupError

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
