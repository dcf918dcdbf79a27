"""Gold for the dates training needs: only those dates are written, each continuing or recomputing its window."""

import pytest

from jobs.common.feature_windows import FeatureWindows
from jobs.features import numeric_features
from tests.test_features import D, _write_silver, days_before, rich, rich_frame, rich_frames  # noqa: F401 (fixtures)


@pytest.mark.spark
def test_training_backfill_writes_only_the_dates_it_needs(spark, tmp_path, rich):
    from jobs.common.delta import read_table
    from ml.dataset import backfill_missing_dates
    from tests.conftest import make_config

    cfg = make_config(tmp_path)
    events, items, users, _ = rich_frames(spark)
    _write_silver(spark, cfg, events, items, users)
    wanted = [days_before(9), days_before(1), D]   # 8 days apart, then consecutive

    done = backfill_missing_dates(spark, cfg, wanted)

    assert done["gold.user_features"] == wanted
    written = {r["as_of_date"] for r in read_table(spark, cfg, "gold.user_features").select("as_of_date").distinct().collect()}
    assert written == set(wanted)   # not the 7 days between the first two
    modes = {r["run_date"]: r for r in read_table(spark, cfg, "ops.run_audit")
             .where("step = 'features' AND table_name = 'gold.user_features'").collect()}
    assert set(modes) == set(wanted)
    stored = {r["user_key"]: r.asDict() for r in
              read_table(spark, cfg, "gold.user_features").where(f"as_of_date = DATE'{D}'").collect()}
    for name in numeric_features(FeatureWindows.from_config(cfg)):   # D continued from D-1's state = D from its full window (the rich fixture)
        want = 0.0 if name == "social_degree" else rich["c"][name]
        assert stored["c"][name] == pytest.approx(want, rel=1e-9, abs=1e-12), name

    assert backfill_missing_dates(spark, cfg, wanted) == {}   # written dates are not written again
