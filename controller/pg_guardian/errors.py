"""One exception root for the controller; only the CLI turns these into exit codes."""

from pg_guardian.vocabulary import EXIT_ERROR


class GuardianError(Exception):
    """A user-facing error: the message names the bad value and how to fix it."""

    exit_code = EXIT_ERROR


class ConfigError(GuardianError):
    """Configuration (flags, environment variables, files) is invalid.

    ``problems`` lists every problem found, so that they can all be fixed in one go.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


class ConnectionFailed(GuardianError):
    """The database could not be reached."""


class InstallError(GuardianError):
    """Install, upgrade or uninstall cannot proceed."""
