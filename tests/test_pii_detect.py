"""PII detectors (jobs/common/pii.py): each pattern, the values they must leave alone, and the actions."""

import pytest

from jobs.common.errors import ConfigError
from jobs.common.pii import PiiParams, mask_text, redact_value, transform_pii
from tests.conftest import make_config

# (text, expected after masking)
FOUND = [
    ("write to Min.Liu0@example.org today", "write to [email] today"),
    ("13800138000", "[phone]"),
    ("call +86 138-0013-8000 after six", "call [phone] after six"),
    ("0086 13800138000", "[phone]"),
    ("138 0013 8000", "[phone]"),
    ("电话15858507445谢谢", "电话[phone]谢谢"),
    ("London +44 20 7946 0958", "London [phone]"),
    ("us: +1-415-555-2671.", "us: [phone]."),
    ("身份证11010519491231002X", "身份证[id_card]"),
    ("id 11010519491231002x ok", "id [id_card] ok"),
    ("card 4111 1111 1111 1111 exp 12/29", "card [card] exp 12/29"),
    ("5555555555554444", "[card]"),
    ("amex 378282246310005", "amex [card]"),
    ("6011-1111-1111-1117", "[card]"),
    ("a@b.cn and 13900000000", "[email] and [phone]"),
]
# Values that look like numbers but are not personal: they must come out exactly as they went in.
LEFT_ALONE = [
    "order 20261104000123",            # 14 digits, no card network starts with 20
    "ORD-20261104-000123",
    "order 4111111111111112",          # a card's shape, but the Luhn checksum fails
    "price 1999.00 yuan, was 2,399.00",
    "2026-11-04 10:15:00",
    "postcode 200120",
    "item i0001234",
    "i13800138000",                    # an item id that contains a phone's digits
    "id 110105194912310021",           # an ID card's shape with a wrong check digit
    "1762214400000",                   # epoch milliseconds
    "a3f1c2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",  # a pseudonym
    "+5 stars",
    "Shanghai",
]


def test_python_detectors_mask_each_kind_and_nothing_else():
    assert [mask_text(text) for text, _ in FOUND] == [expected for _, expected in FOUND]
    assert [mask_text(text) for text in LEFT_ALONE] == LEFT_ALONE


def test_spark_detectors_agree_with_the_python_twin(spark):
    from pyspark.sql import functions as F

    from jobs.common.pii import has_pii, mask_pii

    texts = [t for t, _ in FOUND] + LEFT_ALONE + [None]
    df = spark.createDataFrame([(t,) for t in texts], "t string")
    rows = df.select(mask_pii(F.col("t")).alias("m"), has_pii(F.col("t")).alias("h")).collect()
    assert [r["m"] for r in rows] == [e for _, e in FOUND] + LEFT_ALONE + [None]
    assert [r["h"] for r in rows] == [True] * len(FOUND) + [False] * len(LEFT_ALONE) + [False]


def test_the_users_own_name_is_masked_in_any_case_and_short_names_are_not_searched(spark):
    from pyspark.sql import functions as F

    from jobs.common.pii import mask_pii

    df = spark.createDataFrame(
        [("我是刘敏，很满意", ["刘敏"]), ("from Zhang Wei, thanks", ["zhang wei"]), ("李子很好吃", ["李"]), ("刘敏", None)],
        "t string, names array<string>")
    got = [r[0] for r in df.select(mask_pii(F.col("t"), F.col("names"))).collect()]
    assert got == ["我是[name]，很满意", "from [name], thanks", "李子很好吃", "刘敏"]
    assert mask_text("from Zhang Wei", ["zhang wei"]) == "from [name]"


def test_transform_pii_applies_each_columns_action(spark):
    rows = [
        ("e1", "great, mail a@b.cn", "Shanghai", "13800138000", ["Liu Min"]),
        ("e2", "nice", "Liu Min", "web", ["Liu Min"]),
        ("e3", "ok", "Beijing", "ios", None),
        ("e4", None, None, None, None),
    ]
    df = spark.createDataFrame(rows, "event_id string, review_text string, geo string, device string, names array<string>")
    actions = {"review_text": "mask", "geo": "drop_value", "device": "quarantine"}
    out = transform_pii(df, actions, names="names")
    assert out.columns == [*df.columns, "_pii_found", "_pii_reason"]
    got = sorted(tuple(r) for r in out.select("event_id", "review_text", "geo", "device", "_pii_found", "_pii_reason")
                 .collect())
    assert got == [
        ("e1", "great, mail [email]", "Shanghai", "13800138000", ["review_text", "device"], "pii_in_device"),
        ("e2", "nice", None, "web", ["geo"], None),
        ("e3", "ok", "Beijing", "ios", [], None),
        ("e4", None, None, None, [], None),
    ]


def test_transform_pii_skips_absent_columns_and_counts_hits(spark):
    from jobs.common.pii import pii_counts

    df = spark.createDataFrame([("x@y.org",), ("+8613912345678",), ("fine",)], "query string")
    out = transform_pii(df, {"query": "mask", "review_text": "quarantine"})
    assert [r["query"] for r in out.collect()] == ["[email]", "[phone]", "fine"]
    assert pii_counts(out) == {"query": 2}


def test_redact_value_reaches_into_nested_samples():
    sample = {"_raw": '{"user_id": "u1", "geo": "x@y.org"}', "n": 3,
              "values": ["13800138000", None], "by": {"4111111111111111": 1}}
    assert redact_value(sample) == {"_raw": '{"user_id": "u1", "geo": "[email]"}', "n": 3,
                                    "values": ["[phone]", None], "by": {"[card]": 1}}


def test_pii_columns_settings_are_checked(tmp_path):
    params = PiiParams.from_config(make_config(tmp_path))
    assert params.actions["review_text"] == "mask" and params.actions["city"] == "drop_value"
    full = dict(params.actions)
    with pytest.raises(ConfigError, match=r"privacy.pii_columns names \['nickname'\]"):
        PiiParams({**full, "nickname": "mask"})
    with pytest.raises(ConfigError, match=r"has no action for \['geo'\]"):
        PiiParams({c: a for c, a in full.items() if c != "geo"})
    with pytest.raises(ConfigError, match="privacy.pii_columns.query is 'hide'; use one of mask, drop_value, quarantine"):
        PiiParams({**full, "query": "hide"})
    with pytest.raises(ConfigError, match="privacy.pii_columns.city is 'quarantine'"):
        PiiParams({**full, "city": "quarantine"})
    with pytest.raises(ConfigError, match="privacy.pii_columns.geo is 'hide'"):
        PiiParams.from_config(make_config(tmp_path, PORTRAIT__PRIVACY__PII_COLUMNS__GEO="hide"))
