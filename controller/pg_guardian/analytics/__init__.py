"""Analytics: guardian.report() fetched from one or several databases and rendered.

:mod:`.report` fetches and combines (a column per environment), :mod:`.render` writes text,
Markdown and CSV, :mod:`.html` the self-contained HTML file with the SVG charts of
:mod:`.charts` (which the dashboard's analytics page draws too).
"""
