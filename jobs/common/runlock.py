"""Run locks: one run of a date at a time, and no run while `portrait forget` vacuums the lakehouse.

A lock is a small JSON file (pid, host, start time, what holds it) created atomically with
O_CREAT|O_EXCL in `lock_dir(cfg)`. A lock whose process is gone on this host is stale and taken over;
a lock held from another host is only ever removed by hand (we cannot see its process).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jobs.common.config import Config
from jobs.common.errors import EnvironmentSetupError, RunInProgressError

PIPELINE = "pipeline"       # every step of the daily pipeline shares one lock per date
FORGET = "forget"           # forget: one lock for the whole lakehouse
LOCKS_FOLDER = "_locks"     # under <lakehouse>/ops/; the leading _ keeps Spark and Delta from reading it


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    started_at: str
    holder: str

    @classmethod
    def read(cls, path: Path) -> "LockHolder | None":
        """The holder written in a lock file; None when it is gone or unreadable (a half-written lock)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(int(data["pid"]), str(data["host"]), str(data["started_at"]), str(data.get("holder", "")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool:
        """False only when the process is known to be gone: same host, no such pid."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True


def lock_dir(cfg: Config) -> Path:
    """pipeline.lock_dir when set; else <lakehouse>/ops/_locks for a local lakehouse, ./.cache/locks for a remote one."""
    if cfg.get("pipeline.lock_dir", None):
        return Path(cfg.location("pipeline.lock_dir"))
    root = cfg.lakehouse_root
    if "://" in root:  # O_EXCL needs a file system; an object store has none
        return cfg.root / ".cache" / "locks"
    return Path(root) / "ops" / LOCKS_FOLDER


def lock_path(cfg: Config, name: str, day: dt.date | None = None) -> Path:
    return lock_dir(cfg) / (f"{name}-{day.isoformat()}.lock" if day else f"{name}.lock")


def _create(path: Path, holder: str) -> bool:
    """Create the lock atomically with our pid, host and time; False when it already exists."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as exc:
        raise EnvironmentSetupError(
            f"cannot create the run lock {path}: {exc.strerror or exc}; the lakehouse must be writable "
            "(or set pipeline.lock_dir to a writable folder)") from None
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started_at": now, "holder": holder}, out)
    return True


def _take_over_if_stale(path: Path, seen: LockHolder) -> bool:
    """Remove a lock whose process is gone; False if it changed hands meanwhile (then it is live)."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return True  # someone else removed it: try to create ours
    if LockHolder.read(aside) == seen:
        aside.unlink(missing_ok=True)
        return True
    os.replace(aside, path)  # a fresh lock slipped in between: put it back
    return False


def live_holder(path: Path) -> LockHolder | None:
    """Who holds the lock at `path` now; None when it is free or stale."""
    holder = LockHolder.read(path)
    if holder is None and path.exists():
        # Being written this instant, or left empty by a writer killed between create and write.
        return LockHolder(-1, "unknown host", "an unknown time", "") if _young(path) else None
    return holder if holder is not None and holder.alive() else None


def _young(path: Path, seconds: float = 60.0) -> bool:
    try:
        return dt.datetime.now().timestamp() - path.stat().st_mtime < seconds
    except FileNotFoundError:
        return False


def acquire(path: Path, holder: str, busy: Callable[[Path, LockHolder], Exception]) -> None:
    """Create the lock at `path` or raise busy(path, live holder); a stale lock is taken over."""
    for _ in range(3):
        if _create(path, holder):
            return
        seen = LockHolder.read(path)
        live = live_holder(path)
        if live is not None:
            raise busy(path, live)
        if seen is None:
            path.unlink(missing_ok=True)  # an old, empty lock of a killed writer
        elif not _take_over_if_stale(path, seen):
            raise busy(path, LockHolder.read(path) or seen)
    raise busy(path, LockHolder.read(path) or LockHolder(-1, "unknown host", "an unknown time", ""))


def release(path: Path) -> None:
    """Remove the lock if it is still ours (a takeover after we were thought dead leaves it alone)."""
    holder = LockHolder.read(path)
    if holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname():
        path.unlink(missing_ok=True)


def run_in_progress(day: dt.date, path: Path, holder: LockHolder) -> RunInProgressError:
    return RunInProgressError(
        f"run of {day.isoformat()} already in progress since {holder.started_at} by pid {holder.pid} on "
        f"{holder.host}; lock {path} (wait for it to end; if that process is gone, delete the lock)")


def forget_in_progress(path: Path, holder: LockHolder) -> RunInProgressError:
    return RunInProgressError(
        f"portrait forget in progress since {holder.started_at} by pid {holder.pid} on {holder.host}; lock {path} "
        "(runs wait for it: its VACUUM would delete the files of a write in flight; rerun when it has ended)")


@contextmanager
def run_lock(cfg: Config, day: dt.date, holder: str = "") -> Iterator[Path]:
    """Hold the pipeline's lock of `day` (and make sure no forget is running) for the duration of a step."""
    path = lock_path(cfg, PIPELINE, day)
    acquire(path, holder, lambda p, h: run_in_progress(day, p, h))
    try:
        forget = lock_path(cfg, FORGET)
        busy = live_holder(forget)
        if busy is not None:
            raise forget_in_progress(forget, busy)
        yield path
    finally:
        release(path)


def live_run_locks(cfg: Config) -> list[tuple[Path, LockHolder]]:
    """Every run lock held now by a live process."""
    folder = lock_dir(cfg)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob(f"{PIPELINE}-*.lock")):
        holder = live_holder(path)
        if holder is not None:
            found.append((path, holder))
    return found


@contextmanager
def forget_lock(cfg: Config) -> Iterator[Path]:
    """Hold the lakehouse-wide forget lock; refuse while any run of a date holds its lock."""
    path = lock_path(cfg, FORGET)
    acquire(path, "forget", forget_in_progress)
    try:
        running = live_run_locks(cfg)
        if running:
            lock, holder = running[0]
            day = lock.stem[len(PIPELINE) + 1:]
            raise RunInProgressError(
                f"run of {day} in progress since {holder.started_at} by pid {holder.pid} on {holder.host}; lock "
                f"{lock}: forget would delete the files of its writes in flight; run forget when it has ended")
        yield path
    finally:
        release(path)
