"""A read-only or full lakehouse and an unreachable MLflow server end in one line, in seconds, without retries (issue 22, item 6)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port, lake_overrides, make_config


@contextlib.contextmanager
def unwritable(folder: Path):
    """`folder` made unwritable: chmod for a normal user; for root, whom chmod does not stop, the immutable
    attribute (chattr +i); the test is skipped where neither blocks a write."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        undo = ["chattr", "-i", str(folder)]
    else:
        pytest.skip("running as root without chattr +i on this file system: nothing here can make a folder unwritable")
    try:
        probe = folder / "probe"
        try:
            probe.write_text("x")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip(f"{folder} is still writable for this user after {undo[0]}")
        yield folder
    finally:
        subprocess.run(undo, check=True)


def runner(args: list[str], base: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    environ = {**os.environ, "PORTRAIT_ENV": "ci", **lake_overrides(base), "PYTHONPATH": str(REPO), **env}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "jobs.runner", *args], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=300)
    return done, time.monotonic() - started


def test_a_read_only_lakehouse_fails_the_step_in_one_line_before_spark_starts(tmp_path):
    with unwritable(tmp_path / "locked") as locked:
        done, seconds = runner(["collect", "2026-11-01"], tmp_path,
                               PORTRAIT__LAKEHOUSE_ROOT=str(locked / "lakehouse"))
    assert done.returncode == 2, done.stderr[-2000:]  # 2: a PortraitError, which the DAG does not retry
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"portrait: error: lakehouse {locked / 'lakehouse'} is not writable by user "
                     f"{__import__('pwd').getpwuid(os.geteuid()).pw_name}: fix its owner or mode (chmod u+w), "
                     "or point lakehouse_root (PORTRAIT__LAKEHOUSE_ROOT) at a writable folder; then rerun the date"]
    assert "Traceback" not in done.stderr and seconds < 120  # no Spark session was started


def test_a_full_disk_under_the_lakehouse_fails_the_step_in_one_line(tmp_path):
    """A real full disk: a 16 KiB tmpfs, filled, mounted in a user and mount namespace of the runner's own
    (unshare -rm), so no privilege is needed; skipped where the kernel does not allow that."""
    full = tmp_path / "full"
    full.mkdir()
    environ = {**os.environ, "PORTRAIT_ENV": "ci", **lake_overrides(tmp_path), "PYTHONPATH": str(REPO),
               "PORTRAIT__LAKEHOUSE_ROOT": str(full / "lakehouse")}
    script = (f"mount -t tmpfs -o size=16k tmpfs {full} && dd if=/dev/zero of={full}/fill bs=4k count=8 2>/dev/null;"
              f" exec {sys.executable} -m jobs.runner collect 2026-11-01")
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("unshare -rm (user and mount namespaces) is not available here to mount a small disk")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, env=environ, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"portrait: error: no space left on the device of lakehouse {full / 'lakehouse'}: free space "
                     "(old Delta files: VACUUM; .cache/, quality_docs/) or move lakehouse_root "
                     "(PORTRAIT__LAKEHOUSE_ROOT) to a bigger disk; then rerun the date"]


def test_the_probe_names_a_read_only_file_system_and_a_full_disk(tmp_path, monkeypatch):
    from jobs.common import storage

    def full(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(storage, "_write_probe_file", full)
    with pytest.raises(storage.StorageError) as caught:
        storage.probe_writable(str(tmp_path / "lake"), "lakehouse", "lakehouse_root")
    assert str(caught.value) == (f"no space left on the device of lakehouse {tmp_path / 'lake'}: free space (old "
                                 "Delta files: VACUUM; .cache/, quality_docs/) or move lakehouse_root to a bigger "
                                 "disk; then rerun the date")
    assert not list(tmp_path.iterdir())  # the probe leaves nothing behind, and makes no folder

    def read_only(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(storage, "_write_probe_file", read_only)
    with pytest.raises(storage.StorageError, match=r"lakehouse .*/lake is on a read-only file system: remount"):
        storage.probe_writable(str(tmp_path / "lake"), "lakehouse", "lakehouse_root")
    monkeypatch.undo()
    storage.probe_writable(str(tmp_path / "lake"), "lakehouse", "lakehouse_root")  # a writable folder passes
    (tmp_path / "lake").mkdir()
    storage.probe_writable(str(tmp_path / "lake"), "lakehouse", "lakehouse_root")
    assert list(tmp_path.iterdir()) == [tmp_path / "lake"] and not list((tmp_path / "lake").iterdir())
    storage.probe_writable("s3a://bucket/lake", "lakehouse", "lakehouse_root")  # object stores are not probed


def test_disk_errors_inside_a_spark_write_become_one_line_and_others_stay_as_they_are():
    from jobs.common.storage import StorageError, storage_error

    java = ("An error occurred while calling o123.save.\n: org.apache.spark.SparkException: Job aborted.\n"
            "Caused by: java.io.IOException: No space left on device\n\tat java.base/java.io.FileOutputStream"
            ".writeBytes(Native Method)\n")
    mapped = storage_error(RuntimeError(java), "lakehouse", "/data/lake", "lakehouse_root")
    assert isinstance(mapped, StorageError) and str(mapped).startswith(
        "no space left on the device of lakehouse /data/lake: free space")
    java = ("Caused by: java.io.FileNotFoundException: /data/lake/silver/events/_delta_log/00000000000000000003.json"
            " (Read-only file system)\n\tat java.base/java.io.FileOutputStream.open0(Native Method)")
    assert str(storage_error(RuntimeError(java), "lakehouse", "/data/lake", "lakehouse_root")) == (
        "lakehouse /data/lake/silver/events/_delta_log/00000000000000000003.json is on a read-only file system: "
        "remount it read-write, or point lakehouse_root at a writable folder; then rerun the date")
    landing = OSError(errno.EACCES, "Permission denied", "/srv/landing/events/day.json")
    assert str(storage_error(landing, "lakehouse", "/data/lake", "lakehouse_root")).startswith(
        "folder /srv/landing/events/day.json is not writable by user")
    assert storage_error(RuntimeError("Job aborted: executor lost"), "lakehouse", "/data/lake", "x") is None
    assert storage_error(OSError(errno.ECONNRESET, "reset"), "lakehouse", "/data/lake", "x") is None


@pytest.mark.spark
def test_a_real_spark_write_into_an_unwritable_table_becomes_one_line(spark, tmp_path):
    """Spark's own error (a Py4J trace of a failed Delta write) is mapped by its text, naming the table's folder."""
    from jobs.common.delta import replace_dates
    from jobs.common.storage import StorageError, storage_error

    cfg = make_config(tmp_path)
    day = __import__("datetime").date(2026, 11, 1)
    frame = spark.createDataFrame([("e1", day)], "event_id string, event_date date")
    replace_dates(frame, cfg, "silver.events", [day])
    log = Path(cfg.lakehouse_root) / "silver" / "events" / "_delta_log"
    with unwritable(log):
        with pytest.raises(Exception) as caught:
            replace_dates(frame, cfg, "silver.events", [day])
    assert len(str(caught.value).splitlines()) > 20  # what the user used to see
    mapped = storage_error(caught.value, "lakehouse", cfg.lakehouse_root, "lakehouse_root")
    assert isinstance(mapped, StorageError), str(caught.value)[:2000]
    assert str(mapped).startswith(f"lakehouse {log}") and "is not writable by user" in str(mapped)
    assert len(str(mapped).splitlines()) == 1


def test_an_unreachable_mlflow_server_fails_train_in_seconds_with_one_line(tmp_path):
    port = free_port()  # nothing listens on it
    uri = f"http://127.0.0.1:{port}"
    done, seconds = runner(["train", "2026-11-01"], tmp_path, PORTRAIT__MLFLOW__TRACKING_URI=uri)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"portrait: error: MLflow tracking server {uri} is unreachable (")
    assert lines[0].endswith("waited at most 5 s): start it (make up starts the local one) or set mlflow.tracking_uri "
                             "(PORTRAIT__MLFLOW__TRACKING_URI) to a server that runs, then rerun the date")
    assert seconds < 120  # before: 318 s of MLflow's retries, then 156 lines


def test_the_tracking_check_bounds_mlflows_retries_and_passes_a_local_store(tmp_path, monkeypatch):
    from jobs.common.errors import EnvironmentSetupError
    from ml.registry import check_tracking_store

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")  # MLflow's default, 7 retries with back-off
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")    # ... and 120 s; undone after the test
    check_tracking_store(make_config(tmp_path))  # sqlite under tmp: writable, passes
    assert (os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]) == ("2", "30")
    started = time.monotonic()
    with pytest.raises(EnvironmentSetupError, match="is unreachable"):
        check_tracking_store(make_config(tmp_path, PORTRAIT__MLFLOW__TRACKING_URI=f"http://127.0.0.1:{free_port()}"))
    assert time.monotonic() - started < 10


def test_an_mlflow_server_lost_during_a_step_is_one_line(monkeypatch):
    """MLflow's own error once its (bounded) retries are spent, mapped as the runner does."""
    import mlflow

    from jobs.common.errors import EnvironmentSetupError, lost_service

    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(Exception) as caught:
        mlflow.MlflowClient(uri).search_experiments()
    mapped = lost_service(caught.value, "MLflow tracking server", uri, "mlflow.tracking_uri")
    assert isinstance(mapped, EnvironmentSetupError) and str(mapped) == (
        f"MLflow tracking server {uri} stopped answering during the step (Connection refused): check that it runs "
        "(make up starts the local one) or set mlflow.tracking_uri, then rerun the date")
    assert lost_service(caught.value, "MLflow tracking server", "http://other:5000", "x") is None
    assert lost_service(RuntimeError("executor lost"), "MLflow tracking server", uri, "x") is None
