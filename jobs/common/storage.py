"""Storage a step writes to: a write probe at step start, and disk errors (read-only, full) turned into one line.

A read-only or full lakehouse used to surface as a Spark stack trace of hundreds of lines, after minutes,
and Airflow retried it. The runner probes the lakehouse root before the step starts (create and delete a
small file) and maps the same errors raised later, inside a Spark write, to a StorageError: a
PortraitError, so the CLI prints one line and the DAG does not retry (a retry cannot free a disk).
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from pathlib import Path

from jobs.common.errors import EnvironmentSetupError

PROBE_BYTES = 4096  # enough to need a block of its own, so a full disk answers ENOSPC


class StorageError(EnvironmentSetupError):
    """A folder a step writes to is read-only, not writable for this user, or full."""


READ_ONLY = (errno.EROFS,)
NOT_ALLOWED = (errno.EACCES, errno.EPERM)
FULL = (errno.ENOSPC, errno.EDQUOT)
# How the JVM (Hadoop's local file system, Delta) words the same errors, and the path it names, if any.
_JAVA_CAUSES = (
    ("No space left on device", errno.ENOSPC),
    ("Disk quota exceeded", errno.EDQUOT),
    ("Read-only file system", errno.EROFS),
    ("Permission denied", errno.EACCES),
    ("Operation not permitted", errno.EPERM),
)
_JAVA_PATH = re.compile(r"(?:file:)?(/[^\s:()'\"]+)")


def is_local(location: str) -> bool:
    """A folder on this machine (a plain path or file:), not an object store (s3a://, abfss://)."""
    return "://" not in location or location.startswith("file://")


def local_path(location: str) -> Path:
    return Path(location[len("file://"):] if location.startswith("file://") else location)


def storage_message(what: str, path: str | os.PathLike, code: int, setting: str) -> str | None:
    """The one line for a disk error `code` at `path`, or None when the code is not a storage condition.
    `what` names the store (the lakehouse), `setting` where it is configured."""
    elsewhere = f"or point {setting} at a writable folder; then rerun the date"
    if code in READ_ONLY:
        return f"{what} {path} is on a read-only file system: remount it read-write, {elsewhere}"
    if code in NOT_ALLOWED:
        return f"{what} {path} is not writable by user {_user()}: fix its owner or mode (chmod u+w), {elsewhere}"
    if code in FULL:
        return (f"no space left on the device of {what} {path}: free space (old Delta files: VACUUM; .cache/, "
                f"quality_docs/) or move {setting} to a bigger disk; then rerun the date")
    return None


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


def _write_probe_file(path: Path) -> None:
    with open(path, "wb") as handle:
        handle.write(b"\0" * PROBE_BYTES)
        handle.flush()
        os.fsync(handle.fileno())


def probe_writable(location: str, what: str, setting: str) -> None:
    """Create and delete a small file in `location` (or, before its first run, in the nearest folder above
    it that exists); a folder that cannot take it raises StorageError with one line, naming `location`.
    Object stores are not probed (their writes fail with their own errors)."""
    if not is_local(location):
        return
    folder = local_path(location)
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # a root not made yet: the folder it will be made in must take a file
    probe = existing / f".portrait-write-probe-{uuid.uuid4().hex}"
    try:
        _write_probe_file(probe)
    except OSError as exc:
        message = storage_message(what, folder, exc.errno or 0, setting)
        if message is None:
            raise
        raise StorageError(message) from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def storage_error(exc: BaseException, what: str, location: str, setting: str) -> StorageError | None:
    """The StorageError an error raised while writing under `location` stands for: a Python OSError, or a
    Spark/Delta error whose text names a full, read-only or forbidden file; None for anything else."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None:
        path = str(exc.filename or location)
        message = storage_message(_owner(path, what, location), path, exc.errno, setting)
        return StorageError(message) if message else None
    text = str(exc)
    for phrase, code in _JAVA_CAUSES:
        at = text.find(phrase)
        if at < 0:
            continue
        line_start = text.rfind("\n", 0, at) + 1
        paths = _JAVA_PATH.findall(text[line_start:at])
        path = paths[-1] if paths else location
        return StorageError(storage_message(_owner(path, what, location), path, code, setting) or phrase)
    return None


def _owner(path: str, what: str, location: str) -> str:
    """`what` for a path under `location`; a plain folder for one elsewhere (a landing file, a cache)."""
    root = str(local_path(location)).rstrip("/")
    return what if path == root or path.startswith(root + "/") else "folder"
