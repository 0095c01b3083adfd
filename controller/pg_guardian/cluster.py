"""A throwaway local PostgreSQL cluster for the demo, the tests and the benchmarks.

``initdb`` and ``pg_ctl`` refuse to run as root, so when invoked as root every server command
runs as the ``postgres`` system user (``runuser``) over folders that user owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pg_guardian.errors import GuardianError

SERVER_USER = "postgres"


def bindir() -> Path:
    """The server's bin folder (Debian keeps initdb and pg_ctl off PATH)."""
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise GuardianError(
            "pg_config not found: install the server packages with `make setup` "
            "(postgresql-15, postgresql-server-dev-15)"
        ) from exc
    path = Path(out.stdout.strip())
    if not (path / "initdb").exists():
        raise GuardianError(f"no initdb in {path}: install postgresql-15 with `make setup`")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalCluster:
    """A cluster in ``datadir`` listening on 127.0.0.1:``port`` and a private socket folder."""

    datadir: Path
    port: int = field(default_factory=free_port)
    cron_database: str = "postgres"
    settings: dict[str, str] = field(default_factory=dict)
    superuser_password: str = "guardian"
    socket_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pgg-")))

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def _run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        if self.as_root:
            cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise GuardianError(f"{Path(args[0]).name} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def _own(self, path: Path) -> None:
        if self.as_root:
            pw = pwd.getpwnam(SERVER_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    @property
    def logdir(self) -> Path:
        return self.datadir / "log"

    def server_can_reach(self, path: Path) -> bool:
        """Can the server's system user get to ``path`` (every parent folder searchable)?"""
        if not self.as_root:
            return True
        probe = path if path.exists() else path.parent
        while not probe.exists():
            probe = probe.parent
        proc = subprocess.run(["runuser", "-u", SERVER_USER, "--", "test", "-x", str(probe)], capture_output=True)
        return proc.returncode == 0

    def init(self) -> None:
        """Create a fresh cluster (removing any old one) with pg_cron preloaded and CSV logs."""
        initdb = bindir() / "initdb"
        if not self.server_can_reach(self.datadir.parent):
            raise GuardianError(
                f"the {SERVER_USER} user cannot reach {self.datadir.parent}; use a folder it can "
                "traverse (e.g. --dir /tmp/pg-guardian-demo)"
            )
        if self.datadir.exists():
            self.stop(missing_ok=True)
            shutil.rmtree(self.datadir)
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        self.datadir.mkdir(mode=0o700)
        self._own(self.datadir)
        self._own(self.socket_dir)
        pwfile = self.socket_dir / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        self._own(pwfile)
        self._run(
            initdb,
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
        )
        pwfile.unlink()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "shared_preload_libraries": "'pg_cron'",
            "cron.database_name": f"'{self.cron_database}'",
            "logging_collector": "on",
            "log_destination": "'csvlog'",
            "log_directory": "'log'",
            "log_filename": "'postgresql-%Y-%m-%d_%H%M%S.log'",
            "log_file_mode": "0640",
            "log_connections": "on",
            "max_connections": "100",
            "timezone": "'UTC'",
            **self.settings,
        }
        with open(self.datadir / "postgresql.conf", "a") as fh:
            fh.write("\n# pg_guardian throwaway cluster\n")
            for key, value in conf.items():
                fh.write(f"{key} = {value}\n")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run(
            bindir() / "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.datadir / "startup.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, *, missing_ok: bool = False) -> None:
        """Stop the server (fast shutdown)."""
        if not (self.datadir / "postmaster.pid").exists() and missing_ok:
            return
        try:
            self._run(bindir() / "pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")
        except GuardianError:
            if not missing_ok:
                raise

    def restart(self) -> None:
        self._run(
            bindir() / "pg_ctl",
            "-D",
            str(self.datadir),
            "-m",
            "fast",
            "-w",
            "restart",
            "-l",
            str(self.datadir / "startup.log"),
        )

    def destroy(self) -> None:
        """Stop the server and remove its folders."""
        self.stop(missing_ok=True)
        shutil.rmtree(self.datadir, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """A DSN over the private Unix socket (trust authentication)."""
        return f"host={self.socket_dir} port={self.port} dbname={dbname} user={user}"

    def tcp_dsn(self, dbname: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        """A DSN over TCP on 127.0.0.1 (password authentication)."""
        pw = self.superuser_password if password is None and user == "postgres" else password
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}" + (f" password={pw}" if pw else "")
