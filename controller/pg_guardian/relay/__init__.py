"""The alert relay: takes rows from ``guardian.monitoring_alerts`` to Slack, email and webhooks.

Layers: :mod:`runner` (the process: intake, routing, one worker per channel) over
:mod:`store` (the ``guardian.relay_*`` SQL functions) and :mod:`channels` (putting one message on
the wire), with :mod:`render` deciding what a message says. :mod:`silences` and :mod:`status`
serve the CLI; :mod:`config` reads the relay's settings (channels, routes) from the configuration
file and the environment.
"""

from pg_guardian.relay.runner import Relay, RunSummary, running

__all__ = ["Relay", "RunSummary", "running"]
