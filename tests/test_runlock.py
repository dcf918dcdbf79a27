"""Run locks: a second run of a date fails at once with one line; stale locks are taken over; dates are apart."""

import datetime as dt
import json
import os
import socket
import subprocess
import sys

import pytest

from jobs.common.errors import PortraitError, RunInProgressError
from jobs.common.runlock import forget_lock, lock_path, run_lock
from tests.conftest import REPO, lake_overrides, make_config

D = dt.date(2026, 11, 4)


@pytest.fixture
def cfg(tmp_path):
    return make_config(tmp_path)


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped): nothing answers to it now."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _plant(path, pid, host=None, started_at="2026-11-05T01:02:03Z"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started_at": started_at,
                                "holder": "clean"}))


def test_the_lock_lives_under_the_lakehouse_ops_folder(cfg, tmp_path):
    assert lock_path(cfg, "pipeline", D) == tmp_path / "lakehouse" / "ops" / "_locks" / "pipeline-2026-11-04.lock"


def test_a_second_run_of_the_same_date_fails_with_one_line(cfg):
    path = lock_path(cfg, "pipeline", D)
    with run_lock(cfg, D, holder="collect"):
        held = json.loads(path.read_text())
        assert (held["pid"], held["host"], held["holder"]) == (os.getpid(), socket.gethostname(), "collect")
        with pytest.raises(RunInProgressError) as caught:
            with run_lock(cfg, D, holder="clean"):
                pytest.fail("the second run of the date got the lock")
        assert str(caught.value) == (
            f"run of 2026-11-04 already in progress since {held['started_at']} by pid {os.getpid()} on "
            f"{socket.gethostname()}; lock {path} (wait for it to end; if that process is gone, delete the lock)")
        assert json.loads(path.read_text()) == held          # the refused run left the holder's lock alone
    assert not path.exists()                                 # released when the step ends


def test_the_lock_is_released_when_the_step_fails(cfg):
    with pytest.raises(ValueError):
        with run_lock(cfg, D):
            raise ValueError("the step failed")
    with run_lock(cfg, D):
        pass


def test_a_stale_lock_of_a_gone_process_is_taken_over(cfg):
    path = lock_path(cfg, "pipeline", D)
    _plant(path, _dead_pid())
    with run_lock(cfg, D, holder="clean"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()


def test_a_lock_of_another_host_is_never_taken_over(cfg):
    path = lock_path(cfg, "pipeline", D)
    _plant(path, _dead_pid(), host="worker-7")
    with pytest.raises(RunInProgressError, match=r"since 2026-11-05T01:02:03Z by pid \d+ on worker-7; lock "):
        with run_lock(cfg, D):
            pass
    assert json.loads(path.read_text())["host"] == "worker-7"


def test_different_dates_do_not_block_each_other(cfg):
    with run_lock(cfg, D), run_lock(cfg, D + dt.timedelta(days=1)):
        assert sorted(p.name for p in lock_path(cfg, "pipeline", D).parent.iterdir()) == [
            "pipeline-2026-11-04.lock", "pipeline-2026-11-05.lock"]


def test_forget_and_runs_exclude_each_other(cfg):
    with run_lock(cfg, D):
        with pytest.raises(RunInProgressError, match="run of 2026-11-04 in progress since .* forget would delete"):
            with forget_lock(cfg):
                pass
    assert not lock_path(cfg, "forget").exists()             # the refused forget left no lock behind
    with forget_lock(cfg):
        with pytest.raises(RunInProgressError, match="^portrait forget in progress since "):
            with run_lock(cfg, D):
                pass
    assert not lock_path(cfg, "pipeline", D).exists()


def test_an_unwritable_lock_folder_is_one_line(tmp_path):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    cfg = make_config(tmp_path, PORTRAIT__PIPELINE__LOCK_DIR=str(blocked / "locks"))
    with pytest.raises(PortraitError, match=r"^cannot create the run lock .*file-not-folder/locks/pipeline-2026-11-04"
                                            r"\.lock: Not a directory; the lakehouse must be writable"):
        with run_lock(cfg, D):
            pass


def test_the_runner_refuses_a_second_run_in_one_line_and_exit_2(tmp_path):
    cfg = make_config(tmp_path)
    path = lock_path(cfg, "pipeline", D)
    _plant(path, os.getpid())                                # this test process: alive, on this host
    env = {**os.environ, "PORTRAIT_ENV": "ci", "PORTRAIT_HOME": str(REPO), **lake_overrides(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "jobs.runner", "collect", D.isoformat()], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2                              # PortraitError: no retry (docs/operations.md)
    assert done.stderr.strip().splitlines() == [
        f"portrait: error: run of 2026-11-04 already in progress since 2026-11-05T01:02:03Z by pid {os.getpid()} "
        f"on {socket.gethostname()}; lock {path} (wait for it to end; if that process is gone, delete the lock)"]
    assert path.exists()


def test_a_conflict_raised_inside_a_step_is_one_line_naming_the_table_from_its_path(cfg):
    from jobs.common.catalog import table_path
    from jobs.common.delta import concurrent_write_error, is_write_conflict
    from jobs.runner import _conflicting_table

    jvm = RuntimeError(f"[DELTA_CONCURRENT_APPEND.WITH_PARTITION_HINT] ConcurrentAppendException: Files were added "
                       f"to partition [event_date=2026-11-04] by a concurrent update.\nConflicting commit: "
                       f"{{\"path\": \"{table_path(cfg, 'silver.held_events')}\"}}\n" + "\tat org.apache...\n" * 40)
    assert is_write_conflict(jvm)
    assert not is_write_conflict(RuntimeError("java.io.FileNotFoundException: part-0001.parquet"))
    message = str(concurrent_write_error(_conflicting_table(cfg, jvm, "clean"), [D], jvm))
    assert message.startswith("silver.held_events 2026-11-04: another write to this table committed first "
                              "(ConcurrentAppendException); this write was not committed")
    assert "\n" not in message
    assert _conflicting_table(cfg, RuntimeError("ConcurrentAppendException"), "clean") == "a table written by clean"
