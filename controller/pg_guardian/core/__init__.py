"""The guardian's core (``extension/sql/00_core``): environment and guard mode, alerts, status.

:mod:`environment` declares what a database is and how strictly it is guarded; :mod:`alerts`
reads the one alert table; :mod:`status` gathers everything ``pg-guardian status`` shows.
"""
