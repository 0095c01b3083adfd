"""Released scripts are frozen: a release's install script and the update steps into it never
change, and no update step builds from the current sources (docs/releasing.md)."""

from __future__ import annotations

import hashlib
import re

import pytest
from pg_guardian import scripts

EXT = scripts.extension_dir()
CURRENT = scripts.default_version()


def manifest() -> dict[str, str]:
    """extension/released.sha256 (sha256sum format): path -> digest."""
    entries = {}
    for line in (EXT / "released.sha256").read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        entries[path.strip()] = digest
    return entries


@pytest.mark.parametrize("path", sorted(manifest()))
def test_a_released_file_never_changes(path: str) -> None:
    digest = hashlib.sha256((EXT / path).read_bytes()).hexdigest()
    assert digest == manifest()[path], f"{path} was released and must not change: add an update script instead"


def test_every_released_script_and_step_is_in_the_manifest() -> None:
    listed = manifest()
    for path in EXT.glob("pg_guardian--*.sql"):
        assert path.name in listed, f"{path.name} is a frozen release: add it with `sha256sum` (docs/releasing.md)"
    for path in (EXT / "updates").glob("pg_guardian--*--*.sql"):
        target = re.fullmatch(r"pg_guardian--(.+)--(.+)\.sql", path.name).group(2)  # type: ignore[union-attr]
        if target != CURRENT:
            assert f"updates/{path.name}" in listed, f"{path.name} leads to a released version"
    assert f"pg_guardian--{CURRENT}.sql" not in listed, "the version in progress is not released yet"


def test_no_update_step_builds_from_the_current_sources() -> None:
    body = scripts.current_body()
    for path in (EXT / "updates").glob("pg_guardian--*--*.sql"):
        built = scripts.update_script(path)
        assert body not in built, path.name
        for version in re.findall(r"^-- @@ install script (\S+) @@$", path.read_text(), re.M):
            assert version != CURRENT and f"pg_guardian--{version}.sql" in manifest(), (path.name, version)


def test_one_version_everywhere() -> None:
    import pg_guardian

    assert pg_guardian.__version__ == CURRENT
    pyproject = (EXT.parent / "pyproject.toml").read_text() if (EXT.parent / "pyproject.toml").exists() else ""
    assert not re.search(r"^version\s*=", pyproject, re.M), "pyproject.toml reads the version from the control file"
