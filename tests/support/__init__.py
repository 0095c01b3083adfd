"""What the tests share (fixtures stay in ``tests/conftest.py``).

:mod:`queries`: one value from a query, a snapshot of the guardian's catalog. :mod:`checks`:
run a check, read its findings and alerts, wait for something. :mod:`relay`: real receivers
(HTTP, HTTPS proxy, SMTP) and a relay configuration. :mod:`response`: the dental sample with
test data in it. :mod:`prefilter`: a reference implementation of the C prefilter.
"""
