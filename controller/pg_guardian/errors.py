"""One exception root for the controller; only the CLI turns these into exit codes."""


class GuardianError(Exception):
    """A user-facing error: the message names the bad value and how to fix it."""

    exit_code = 2


class ConfigError(GuardianError):
    """Configuration (flags, environment variables, files) is invalid."""


class ConnectionFailed(GuardianError):
    """The database could not be reached."""


class InstallError(GuardianError):
    """Install, upgrade or uninstall cannot proceed."""
