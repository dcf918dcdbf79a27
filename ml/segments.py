"""Behavioural segments: transparent rules on the features, with no ground truth involved.

The rules name where a user stands on a date. The model's segment head is trained to predict the
segment a user will be in at the end of the label horizon (the rules applied to the features of
as_of + horizon), so the published segment looks ahead instead of restating today's rule.
The first rule that matches wins, in this order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column

SEGMENTS: tuple[str, ...] = ("dormant", "at_risk", "browser", "bargain_hunter", "premium_shopper", "regular")

SEGMENT_NAMES = {
    "dormant": "Dormant (no activity in 30 days)",
    "at_risk": "At risk (quiet for 5+ days)",
    "browser": "Browser (active, no purchase in 90 days)",
    "bargain_hunter": "Bargain hunter (buys below category median)",
    "premium_shopper": "Premium shopper (buys above category median)",
    "regular": "Regular shopper",
}

# Planted segments of the sample data (jobs/generate.py) -> the behavioural segment that should
# describe them. Only used to measure agreement on generated data; never for training.
PLANTED_TO_SEGMENTS = {
    "bargain_hunter": ("bargain_hunter",),
    "premium_shopper": ("premium_shopper",),
    "casual_browser": ("browser",),
    "loyal_regular": ("regular", "premium_shopper", "bargain_hunter"),
    "churning": ("at_risk", "dormant"),
}


def segment_rule() -> "Column":
    """The segment id from gold.user_features columns (docs/model.md lists the thresholds)."""
    from pyspark.sql import functions as F

    return (F.when(F.col("n_events_30d") == 0, "dormant")
            .when(F.col("recency_days") >= 5, "at_risk")
            .when(F.col("n_purchases_90d") == 0, "browser")
            .when(F.col("price_index") < 0.8, "bargain_hunter")
            .when(F.col("price_index") > 1.25, "premium_shopper")
            .otherwise("regular"))


def segment_index() -> "Column":
    """segment_rule() as its position in SEGMENTS (the softmax class)."""
    from pyspark.sql import functions as F

    rule = segment_rule()
    return F.array_position(F.array(*[F.lit(s) for s in SEGMENTS]), rule).cast("int") - 1
