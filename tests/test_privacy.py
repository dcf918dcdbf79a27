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


def test_contacts_are_normalised_then_pseudonymised_in_their_own_domain(spark):
    from pyspark.sql import functions as F

    from jobs.common.privacy import pseudonymise_contact

    key = b"k" * 20
    df = spark.createDataFrame([(" Min.Liu@Example.ORG ", "+86 138-0000-0000"), (None, "  "), ("u1", "13800000000")],
                               "email string, phone string")
    rows = df.select(pseudonymise_contact(key, "email", F.col("email")).alias("e"),
                     pseudonymise_contact(key, "phone", F.col("phone")).alias("p")).collect()
    assert rows[0]["e"] == pseudonymise_py(key, "email:min.liu@example.org")
    assert rows[0]["p"] == rows[2]["p"] == pseudonymise_py(key, "phone:13800000000")
    assert (rows[1]["e"], rows[1]["p"]) == (None, None)
    assert rows[2]["e"] != pseudonymise_py(key, "u1")  # an email equal to a user id is not that user's key
    with pytest.raises(ValueError, match="unknown contact domain 'address'"):
        pseudonymise_contact(key, "address", F.col("email"))


def test_age_bands_follow_the_configured_edges_or_width(spark, tmp_path):
    from pyspark.sql import functions as F

    from jobs.common.errors import ConfigError
    from jobs.common.privacy import Generalisation

    default = Generalisation()
    assert default.age_band_labels == ("<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown")
    ages = spark.createDataFrame([(-1,), (17,), (18,), (64,), (65,), (120,), (121,), (None,)], "age long")
    assert [r[0] for r in ages.select(default.age_band(F.col("age"))).collect()] == [
        "unknown", "<18", "18-24", "55-64", "65+", "65+", "unknown", "unknown"]
    wide = Generalisation.from_config(make_config(tmp_path, PORTRAIT__PRIVACY__GENERALISE__AGE_BAND_WIDTH="20"))
    assert wide.age_band_labels == ("<18", "18-37", "38-57", "58+", "unknown")
    with pytest.raises(ConfigError, match="need increasing ages"):
        Generalisation(age_edges=(30, 20))


def test_cities_are_generalised_to_the_configured_level(spark):
    from pyspark.sql import functions as F

    from jobs.common.errors import ConfigError
    from jobs.common.privacy import Generalisation

    cities = spark.createDataFrame([("上海",), (" shenzhen ",), ("Ｘｉ'ａｎ",), ("Lhasa",), (None,)], "city string")

    def level(**kw):
        return [r[0] for r in cities.select(Generalisation(**kw).city(F.col("city"))).collect()]

    assert level() == ["Shanghai", "Shenzhen", "Xi'an", "Lhasa", "unknown"]
    assert level(city_level="province") == ["Shanghai", "Guangdong", "Shaanxi", "unknown", "unknown"]
    assert level(city_level="region") == ["East China", "South China", "Northwest China", "unknown", "unknown"]
    extra = (("Lhasa", "Tibet", "Southwest China"),)
    assert level(city_level="province", extra_cities=extra)[3] == "Tibet"
    with pytest.raises(ConfigError, match="city_level is 'street'"):
        Generalisation(city_level="street")
