"""pg_guardian controller: installs the extension, applies policies, relays alerts."""

from pg_guardian.scripts import default_version

# One version for everything: the extension's control file (packaging reads it too).
__version__ = default_version()
