"""features.windows: parsing, roles, the names that follow the windows, and the suites that follow them."""

import datetime as dt
from pathlib import Path

import pytest

from jobs.common.config import Config
from jobs.common.errors import ConfigError
from jobs.common.feature_windows import LONG, MEDIUM, SHORT, FeatureWindows
from jobs.feature_state import expiry_windows, map_specs, scalar_windows, state_columns
from jobs.features import feature_version, numeric_features, user_feature_columns

# The 88 numeric features as they were named before the windows became configurable, in their order.
TODAY = (
    "n_events_7d", "n_events_30d", "n_views_30d", "n_clicks_30d", "n_carts_30d", "n_purchases_30d",
    "n_searches_30d", "active_days_30d", "recency_days", "n_purchases_90d", "monetary_90d",
    "avg_purchase_price_90d", "conversion_30d", "avg_rating", "price_index", "n_events_1d", "n_events_90d",
    "n_views_1d", "n_views_7d", "n_views_90d", "n_clicks_1d", "n_clicks_7d", "n_clicks_90d", "n_carts_1d",
    "n_carts_7d", "n_carts_90d", "n_cart_removals_1d", "n_cart_removals_7d", "n_cart_removals_30d",
    "n_cart_removals_90d", "n_purchases_1d", "n_purchases_7d", "n_searches_1d", "n_searches_7d",
    "n_searches_90d", "n_reviews_1d", "n_reviews_7d", "n_reviews_30d", "n_reviews_90d", "n_ratings_1d",
    "n_ratings_7d", "n_ratings_30d", "n_ratings_90d", "n_shares_1d", "n_shares_7d", "n_shares_30d",
    "n_shares_90d", "click_rate_1d", "click_rate_7d", "click_rate_30d", "click_rate_90d", "cart_rate_1d",
    "cart_rate_7d", "cart_rate_30d", "cart_rate_90d", "conversion_1d", "conversion_7d", "conversion_90d",
    "cart_conversion_1d", "cart_conversion_7d", "cart_conversion_30d", "cart_conversion_90d", "active_days_7d",
    "active_days_90d", "n_sessions_7d", "n_sessions_30d", "avg_session_events_30d", "avg_session_minutes_30d",
    "night_share_30d", "morning_share_30d", "afternoon_share_30d", "evening_share_30d", "weekend_share_30d",
    "device_ios_share_30d", "device_android_share_30d", "device_web_share_30d", "device_mini_program_share_30d",
    "channel_organic_share_30d", "channel_search_ads_share_30d", "channel_social_share_30d",
    "channel_email_share_30d", "channel_push_share_30d", "purchase_recency_days", "price_percentile_90d",
    "review_sentiment_90d", "negative_review_share_90d", "tenure_days", "social_degree",
)


def config(**features) -> Config:
    return Config(profile="test", root=Path("."), data={"features": features} if features else {})


def test_the_default_windows_keep_every_name_and_order():
    default = FeatureWindows()
    assert default.days == (1, 7, 30, 90) and default.is_default
    assert numeric_features(default) == TODAY
    assert user_feature_columns(default)[:7] == ("user_key", "age_band", "gender", "occupation", "city",
                                                 "price_band", "top_search_intent")
    assert feature_version(default) == "3"
    assert scalar_windows(default)["active"] == (7, 30, 90) and scalar_windows(default)["n_sessions"] == (7, 30)
    assert map_specs(default)["category_weight"] == (90, True) and map_specs(default)["intent_count"] == (30, False)
    assert expiry_windows(default) == (7, 30, 90)
    assert "n_events__90" in state_columns(default) and "spend__90" in state_columns(default)


def test_the_setting_is_read_sorted_and_the_roles_are_the_longest_windows():
    windows = FeatureWindows.from_config(config(windows=[365, 7, 30, 90]))
    assert windows.days == (7, 30, 90, 365)
    assert windows.roles() == {SHORT: 30, MEDIUM: 90, LONG: 365} and windows.longest == 365
    assert FeatureWindows((2, 5)).roles() == {SHORT: 2, MEDIUM: 2, LONG: 5}   # fewer windows: the shortest fills in
    assert FeatureWindows((10,)).roles() == {SHORT: 10, MEDIUM: 10, LONG: 10}
    assert feature_version(windows) == "3+windows=7/30/90/365"


def test_names_written_for_the_default_windows_follow_the_configured_ones():
    windows = FeatureWindows((7, 30, 90, 365))
    assert [windows.rename(n) for n in ("n_events_7d", "active_days_30d", "monetary_90d", "recency_days",
                                        "n_events_1d", "avg_rating")] == \
        ["n_events_30d", "active_days_90d", "monetary_365d", "recency_days", "n_events_1d", "avg_rating"]
    names = numeric_features(windows)
    assert names[:3] == ("n_events_30d", "n_events_90d", "n_views_90d")
    assert {"n_events_7d", "n_events_365d", "click_rate_7d", "conversion_365d", "active_days_365d",
            "weekend_share_90d", "price_percentile_365d", "review_sentiment_365d"} <= set(names)
    assert not {"n_events_1d", "weekend_share_30d", "monetary_90d"} & set(names)
    assert len(names) == len(set(names))
    # Two windows: roles share a window, and names that coincide appear once.
    small = numeric_features(FeatureWindows((2, 5)))
    assert small[:4] == ("n_events_2d", "n_views_2d", "n_clicks_2d", "n_carts_2d")
    assert {"active_days_2d", "active_days_5d", "n_sessions_2d", "monetary_5d", "weekend_share_2d"} <= set(small)
    assert len(small) == len(set(small))


@pytest.mark.parametrize("value, problem", [
    ([], "non-empty list"),
    ("30", "non-empty list"),
    (None, "non-empty list"),
    ([7, 0], "0 is not a positive"),
    ([7, -30], "-30 is not a positive"),
    ([7, 1.5], "1.5 is not a positive"),
    ([7, True], "True is not a positive"),
    ([7, "30"], "'30' is not a positive"),
    ([7, 30, 7], "7 days is listed more than once"),
])
def test_a_bad_windows_setting_fails_naming_the_setting_and_the_value(value, problem):
    with pytest.raises(ConfigError, match=rf"features\.windows is .*{problem}.*e\.g\. \[1, 7, 30, 90\]"):
        FeatureWindows.from_config(config(windows=value))


def test_a_missing_setting_and_the_replaced_one_fail_clearly():
    with pytest.raises(ConfigError, match="no setting 'features.windows'"):
        FeatureWindows.from_config(config())
    old = Config(profile="test", root=Path("."), data={"pipeline": {"feature_window_days": 90}, "features": {"windows": [1, 7, 30, 90]}})
    with pytest.raises(ConfigError, match="pipeline.feature_window_days is no longer read.*features.windows"):
        FeatureWindows.from_config(old)
    with pytest.raises(ValueError, match="unknown window role 'longest'"):
        FeatureWindows().role("longest")


def test_every_profile_and_dataset_sets_valid_windows():
    from jobs.common.config import load_config

    for profile in ("local", "ci", "cluster"):
        assert FeatureWindows.from_config(load_config(profile, environ={})).is_default, profile
    for dataset, longest in (("movielens-latest-small", 8000), ("instacart-sample", 365), ("cdnow", 546)):
        cfg = load_config("local", environ={"PORTRAIT_DATASET": dataset})
        windows = FeatureWindows.from_config(cfg)
        # The longest window covers the dataset's whole history, so every user has features on its last day.
        span = (dt.date.fromisoformat(cfg.get("dataset.last_date"))
                - dt.date.fromisoformat(cfg.get("dataset.first_date"))).days + 1
        assert windows.longest == longest and windows.longest >= span, dataset


def test_the_user_features_suite_follows_the_windows():
    from jobs.quality import load_suite

    def columns(suite) -> set[str]:
        named = {e.configuration.kwargs.get("column") for e in suite.expectations}
        named |= {c for e in suite.expectations for c in e.configuration.kwargs.get("column_set") or ()}
        named |= {c["kwargs"].get("column") for c in suite.meta["spark_checks"]}
        return named - {None}

    default = columns(load_suite("gold.user_features", windows=FeatureWindows()))
    assert default == columns(load_suite("gold.user_features"))
    assert {"n_events_7d", "active_days_30d", "monetary_90d"} <= default
    custom = columns(load_suite("gold.user_features", windows=FeatureWindows((2, 5))))
    assert {"n_events_2d", "n_purchases_5d", "active_days_2d", "monetary_5d", "conversion_2d"} <= custom
    assert not {"n_events_7d", "n_events_30d", "active_days_30d", "monetary_90d"} & custom
    assert custom - set(user_feature_columns(FeatureWindows((2, 5)))) == set(), "the suite names a column that does not exist"
    # Another table's columns of the same names are not touched: item features keep their fixed windows.
    items = columns(load_suite("gold.item_features", windows=FeatureWindows((2, 5))))
    assert {"views_30d", "conversion_30d"} <= items
