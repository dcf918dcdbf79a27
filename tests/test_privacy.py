import hashlib
import hmac

import pytest

from jobs.common.errors import EnvironmentSetupError
from jobs.common.privacy import load_hmac_key, pseudonymise, pseudonymise_py
from tests.conftest import make_config

pytestmark = pytest.mark.spark


def test_spark_hmac_equals_python_hmac_for_short_and_long_keys(spark):
    from pyspark.sql import functions as F

    df = spark.createDataFrame([("u0000001",), ("用户42",), (None,)], "user_id string")
    for key in (b"k" * 20, b"x" * 100):
        got = [r[0] for r in df.select(pseudonymise(key, F.col("user_id"))).collect()]
        assert got == [
            hmac.new(key, b"u0000001", hashlib.sha256).hexdigest(),
            hmac.new(key, "用户42".encode(), hashlib.sha256).hexdigest(),
            None,
        ]
    assert pseudonymise_py(b"k" * 20, "u0000001") == hmac.new(b"k" * 20, b"u0000001", hashlib.sha256).hexdigest()


def test_missing_key_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("PORTRAIT_HMAC_KEY", raising=False)
    cfg = make_config(tmp_path, PORTRAIT__PRIVACY__HMAC_KEY_FILE=str(tmp_path / "absent.key"))
    with pytest.raises(EnvironmentSetupError, match=r"set PORTRAIT_HMAC_KEY or create .*absent.key"):
        load_hmac_key(cfg)


def test_key_file_is_used_when_the_variable_is_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("PORTRAIT_HMAC_KEY", raising=False)
    (tmp_path / "k").write_text("a-file-key-of-enough-length\n")
    cfg = make_config(tmp_path, PORTRAIT__PRIVACY__HMAC_KEY_FILE=str(tmp_path / "k"))
    assert load_hmac_key(cfg) == b"a-file-key-of-enough-length"


def test_short_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTRAIT_HMAC_KEY", "short")
    with pytest.raises(EnvironmentSetupError, match="shorter than 16 bytes"):
        load_hmac_key(make_config(tmp_path))
