"""Errors that a person can act on: the CLI prints them as one line, without a stack trace."""


class PortraitError(Exception):
    """A failure with a message that says what went wrong, where, and what to do."""


class ConfigError(PortraitError):
    """The configuration profile or one of its values is wrong."""


class EnvironmentSetupError(PortraitError):
    """Something the machine needs (Java, Delta jars, a secret) is missing."""


class InputDataError(PortraitError):
    """Input data is missing or unusable for the requested date."""


class RunInProgressError(PortraitError):
    """Another run of the same date (or a forget) holds the lock: a retry now would race it."""


class ConcurrentWriteError(PortraitError):
    """Delta refused a commit because another writer changed the same table and date meanwhile."""


def lost_service(exc: BaseException, name: str, uri: str, setting: str) -> EnvironmentSetupError | None:
    """One line for a server at `uri` that stopped answering in the middle of a step (its client gave up
    after its own bounded retries), or None when `exc` is not about that server."""
    text = str(exc)
    base = uri.rstrip("/")
    if not uri.startswith(("http://", "https://")) or base not in text:
        return None
    for cause in ("Connection refused", "Max retries exceeded", "Read timed out", "timed out",
                  "Connection reset", "Name or service not known", "Temporary failure in name resolution"):
        if cause in text:
            return EnvironmentSetupError(
                f"{name} {uri} stopped answering during the step ({cause}): check that it runs (make up starts "
                f"the local one) or set {setting}, then rerun the date")
    return None
