"""Errors that a person can act on: the CLI prints them as one line, without a stack trace."""


class PortraitError(Exception):
    """A failure with a message that says what went wrong, where, and what to do."""


class ConfigError(PortraitError):
    """The configuration profile or one of its values is wrong."""


class EnvironmentSetupError(PortraitError):
    """Something the machine needs (Java, Delta jars, a secret) is missing."""


class InputDataError(PortraitError):
    """Input data is missing or unusable for the requested date."""
