"""Behavioural segments: transparent rules on the features, with no ground truth involved.

The rules name where a user stands on a date. The model's segment head is trained to predict the
segment a user will be in at the end of the label horizon (the rules applied to the features of
as_of + horizon), so the published segment looks ahead instead of restating today's rule.
The first rule that matches wins, in this order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs.common.feature_windows import LONG, MEDIUM, FeatureWindows

if TYPE_CHECKING:
    from pyspark.sql import Column

SEGMENTS: tuple[str, ...] = ("dormant", "at_risk", "browser", "bargain_hunter", "premium_shopper", "regular")


def segment_names(windows: FeatureWindows) -> dict[str, str]:
    """Segment id -> readable name; the dormant and browser rules look over the medium and long
    feature windows (features.windows; 30 and 90 days by default), and their names say so."""
    return {
        "dormant": f"Dormant (no activity in {windows.role(MEDIUM)} days)",
        "at_risk": "At risk (quiet for 5+ days)",
        "browser": f"Browser (active, no purchase in {windows.role(LONG)} days)",
        "bargain_hunter": "Bargain hunter (buys below category median)",
        "premium_shopper": "Premium shopper (buys above category median)",
        "regular": "Regular shopper",
    }


# The names under the default windows (1, 7, 30, 90); the ids are the same for any windows.
SEGMENT_NAMES = segment_names(FeatureWindows())

# Planted segments of the sample data (jobs/generate.py) -> the behavioural segment that should
# describe them. Only used to measure agreement on generated data; never for training.
PLANTED_TO_SEGMENTS = {
    "bargain_hunter": ("bargain_hunter",),
    "premium_shopper": ("premium_shopper",),
    "casual_browser": ("browser",),
    "loyal_regular": ("regular", "premium_shopper", "bargain_hunter"),
    "churning": ("at_risk", "dormant"),
}


def segment_rule(windows: FeatureWindows) -> "Column":
    """The segment id from gold.user_features columns (docs/model.md lists the thresholds)."""
    from pyspark.sql import functions as F

    return (F.when(F.col(windows.name("n_events", MEDIUM)) == 0, "dormant")
            .when(F.col("recency_days") >= 5, "at_risk")
            .when(F.col(windows.name("n_purchases", LONG)) == 0, "browser")
            .when(F.col("price_index") < 0.8, "bargain_hunter")
            .when(F.col("price_index") > 1.25, "premium_shopper")
            .otherwise("regular"))


def segment_index(windows: FeatureWindows) -> "Column":
    """segment_rule() as its position in SEGMENTS (the softmax class)."""
    from pyspark.sql import functions as F

    rule = segment_rule(windows)
    return F.array_position(F.array(*[F.lit(s) for s in SEGMENTS]), rule).cast("int") - 1
