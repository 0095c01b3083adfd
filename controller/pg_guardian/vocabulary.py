"""The words the controller shares with the extension, spelled once.

Each list here is also a constraint or a table in the SQL; ``tests/test_vocabulary.py`` reads
them back from an installed database, so the two cannot drift apart.
"""

from __future__ import annotations

# guardian.monitoring_alerts.severity (monitoring_alerts_severity_chk; the rules' and activity
# rules' severities too), most severe first.
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO")
SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}

# Guard modes: guardian.environment.mode (environment_mode_chk) and per-table modes.
MODES = ("off", "warn", "strict")

# Why an alert was closed: guardian.monitoring_alerts.outcome (monitoring_alerts_outcome_chk).
OUTCOMES = ("cleaned", "confirmed", "false_positive", "expected")

# Column kinds that rules apply to: the rows of guardian.kinds.
KINDS = ("email", "person_name", "organization", "phone", "identifier", "free_text")

# The categories of the registered checks (guardian.checks.category).
CHECK_CATEGORIES = ("health", "security", "posture", "jobs")

# Exit codes of every command: 0 ok; 1 something was found that needs attention (drift,
# contamination, a failed job or delivery, a check's finding); 2 an error (bad input, the
# database refused).
EXIT_OK = 0
EXIT_FINDING = 1
EXIT_ERROR = 2
