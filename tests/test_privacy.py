import datetime as dt
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

    assert level() == ["Shanghai", "Shenzhen", "Xi'an", "other", "unknown"]
    assert level(city_level="province") == ["Shanghai", "Guangdong", "Shaanxi", "other", "unknown"]
    assert level(city_level="region") == ["East China", "South China", "Northwest China", "other", "unknown"]
    extra = (("Lhasa", "Tibet", "Southwest China"),)
    assert level(city_level="province", extra_cities=extra)[3] == "Tibet"
    assert level(extra_cities=extra)[3] == "Lhasa"
    with pytest.raises(ConfigError, match="city_level is 'street'"):
        Generalisation(city_level="street")


# --------------------------------------------------------------------------------------------------
# Personal data in other columns (privacy.pii_columns), before silver

D = dt.date(2026, 11, 3)
EVENT_PII = {"session_id": "quarantine", "query": "mask", "review_text": "mask", "device": "drop_value",
             "channel": "drop_value", "geo": "drop_value"}


def test_clean_masks_drops_or_quarantines_pii_in_event_columns(spark):
    from jobs.clean import transform_type_events
    from tests.test_clean import BRONZE, bronze_row

    rows = [
        bronze_row("e1", 1, review_text="刘敏 here, call 138-0013-8000 or liu@qq.com", geo="liu@qq.com"),
        bronze_row("e2", 2, session_id="s-13800138000", device="+44 20 7946 0958", channel="刘敏"),
        bronze_row("e3", 3, user_id=" ", session_id="liu@qq.com"),   # a row check comes first
        bronze_row("e4", 4, query="order 20261104000123 ORD-20261104-000123",
                   review_text="paid 1999.00 on 2026-11-04, postcode 200120, item i0001234, 4111111111111112"),
        bronze_row("e5", 5, review_text="身份证 11010519491231002X 卡 6011-1111-1111-1117"),
    ]
    bronze = spark.createDataFrame(rows, BRONZE)
    names = spark.createDataFrame([("u1", ["刘敏"])], "user_id string, _user_names array<string>")
    typed = transform_type_events(bronze.join(names, "user_id", "left"), None, EVENT_PII)
    got = {r["event_id"]: r for r in typed.collect()}
    assert got["e1"]["review_text"] == "[name] here, call [phone] or [email]"
    assert (got["e1"]["geo"], got["e1"]["_pii_found"], got["e1"]["_reject_reason"]) == (
        "unknown", ["review_text", "geo"], None)
    assert (got["e2"]["device"], got["e2"]["channel"], got["e2"]["session_id"], got["e2"]["_reject_reason"]) == (
        "unknown", "unknown", "s-13800138000", "pii_in_session_id")
    assert got["e3"]["_reject_reason"] == "missing_user_id"
    assert got["e4"]["query"] == "order 20261104000123 ORD-20261104-000123"
    assert got["e4"]["review_text"] == "paid 1999.00 on 2026-11-04, postcode 200120, item i0001234, 4111111111111112"
    assert (got["e4"]["_pii_found"], got["e4"]["_reject_reason"]) == ([], None)
    assert got["e5"]["review_text"] == "身份证 [id_card] 卡 [card]"
    assert "_user_names" not in typed.columns and "_pii_reason" not in typed.columns


def test_clean_keeps_names_and_contacts_out_of_user_columns_and_cities_to_the_allow_list(spark):
    from jobs.clean import transform_users
    from tests.test_clean import KEY, USERS

    rows = [
        ("u1", "刘敏", None, None, 30, "F", "teacher", "刘敏", "2025-01-01", D),
        ("u2", "Zhang Wei", None, None, 30, "M", "call 13800138000", "Shanghai", "2025-01-01", D),
        ("u3", "Wang Fang", None, None, 30, "F", "Wang Fang", "No. 5 Nanjing Road", "2025-01-01", D),
        ("u4", "Li Na", None, None, 30, "F", "nurse", "li.na@example.com", "2025-01-01", D),
    ]
    users = spark.createDataFrame(rows, USERS)
    dropped = {r["user_key"]: (r["occupation"], r["city"]) for r in transform_users(
        users, KEY, pii={"occupation": "drop_value", "city": "drop_value"}).collect()}
    assert dropped == {pseudonymise_py(KEY, "u1"): ("teacher", "unknown"),
                       pseudonymise_py(KEY, "u2"): ("unknown", "Shanghai"),
                       pseudonymise_py(KEY, "u3"): ("unknown", "other"),
                       pseudonymise_py(KEY, "u4"): ("nurse", "unknown")}
    masked = {r["user_key"]: (r["occupation"], r["city"]) for r in transform_users(
        users, KEY, pii={"occupation": "mask", "city": "mask"}).collect()}
    assert masked[pseudonymise_py(KEY, "u2")] == ("call [phone]", "Shanghai")
    assert masked[pseudonymise_py(KEY, "u3")] == ("[name]", "other")
    assert masked[pseudonymise_py(KEY, "u1")][1] == masked[pseudonymise_py(KEY, "u4")][1] == "other"


def test_clean_run_accounts_for_pii_rows_and_writes_none_to_silver(spark, tmp_path):
    from jobs.clean import run
    from jobs.common.delta import read_table, replace_dates
    from tests.test_clean import BRONZE, ITEMS, USERS, bronze_row

    cfg = make_config(tmp_path)
    events = [bronze_row("e1", 1, review_text="好评 刘敏 13800138000"), bronze_row("e2", 2, session_id="liu@qq.com"),
              bronze_row("e3", 3, geo="刘敏"), bronze_row("e4", 4)]
    replace_dates(spark.createDataFrame(events, BRONZE), cfg, "bronze.events", [D])
    users = [("u1", "刘敏", "liu@qq.com", "13800138000", 30, "F", "13800138000", "刘敏", "2025-01-01", D)]
    replace_dates(spark.createDataFrame(users, USERS), cfg, "bronze.users", [D])
    replace_dates(spark.createDataFrame([("i1", "Phone", "phones", "Acme", 10.0, D)], ITEMS), cfg, "bronze.items", [D])
    result = run(spark, cfg, D)
    counts = next(t for t in result.tables if t.table == "silver.events")
    assert (counts.rows_in, counts.rows_out, counts.quarantined) == (4, 3, {"pii_in_session_id": 1})
    assert result.details["pii"] == {"geo": 1, "review_text": 1, "session_id": 1}
    silver = {r["event_id"]: (r["review_text"], r["geo"]) for r in read_table(spark, cfg, "silver.events").collect()}
    assert silver == {"e1": ("好评 [name] [phone]", "Shanghai"), "e3": (None, "unknown"), "e4": (None, "Shanghai")}
    quarantine = read_table(spark, cfg, "bronze.quarantine").collect()
    assert [(q["reason"], q["_line"]) for q in quarantine] == [("pii_in_session_id", 2)]
    user = read_table(spark, cfg, "silver.users").first()
    assert (user["occupation"], user["city"]) == ("unknown", "unknown")
