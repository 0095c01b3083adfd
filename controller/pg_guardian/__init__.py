"""pg_guardian controller: installs the extension, applies policies, relays alerts."""

__version__ = "0.2.0"
