"""``python -m pg_guardian.cli``: the ``pg-guardian`` command."""

from pg_guardian.cli import main

main()
