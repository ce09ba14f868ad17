"""A PostgreSQL server of the tests' own: `initdb` into a temporary directory, `postgres` on a free loopback port
(and a unix socket in that directory), a database per test, everything removed at the end.

The server binaries are found in PATH (`initdb`, `postgres`) or where Debian's `postgresql` package puts them
(`/usr/lib/postgresql/<version>/bin`, the newest first); `scripts/setup` installs that package when neither has
them. PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user the package creates
(`nobody` without it), in a directory of its own outside the test's (pytest's are readable by root alone).
The server trades durability for speed (`fsync=off`): a test never survives a power cut.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from .brokers import free_port

SUPERUSER = "dispatcher"
DEBIAN_ROOT = Path("/usr/lib/postgresql")


def find_bindir() -> Path | None:
    """The directory holding `initdb` and `postgres`, or None when PostgreSQL's server is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).resolve().parent
    if DEBIAN_ROOT.is_dir():
        versions = sorted(
            (path for path in DEBIAN_ROOT.iterdir() if path.name.isdigit()), key=lambda path: int(path.name)
        )
        for version in reversed(versions):
            if (version / "bin" / "initdb").exists() and (version / "bin" / "postgres").exists():
                return version / "bin"
    return None


def _server_user() -> pwd.struct_passwd | None:
    """Who the server runs as: ourselves, unless we are root (then `postgres`, or `nobody`)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a postgres nor a nobody user to run PostgreSQL as")


class PostgresServer:
    """One server for a whole test session; `create_database()` gives each test a database of its own."""

    # The server's settings: durability off (a test's data need not survive a power cut), room for many daemons.
    SETTINGS: tuple[str, ...] = (
        "listen_addresses=127.0.0.1",
        "fsync=off",
        "full_page_writes=off",
        "max_connections=200",
    )

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.user = _server_user()
        self.base = Path(tempfile.mkdtemp(prefix="dispatcher-pg-"))
        self.data = self.base / "data"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def _as_server_user(self) -> dict[str, int]:
        return {} if self.user is None else {"user": self.user.pw_uid, "group": self.user.pw_gid}

    def start(self, timeout_s: float = 30) -> None:
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"]
        subprocess.run(
            [*initdb, "--locale=C", "--no-sync"],
            check=True,
            capture_output=True,
            cwd=self.base,
            **self._as_server_user(),  # type: ignore[arg-type]
        )
        self.port = free_port()
        log = (self.base / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                *("-D", str(self.data), "-p", str(self.port), "-k", str(self.base)),
                *(arg for setting in self.SETTINGS for arg in ("-c", setting)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.base,
            **self._as_server_user(),  # type: ignore[arg-type]
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.admin("SELECT 1")
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}") from None
                time.sleep(0.05)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run `sql` in the `postgres` database, outside any transaction (CREATE and DROP DATABASE)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of `url`, ending any session still on it (a daemon process a test killed, say)."""
        name = url.rpartition("/")[2]
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def log_tail(self, chars: int = 2000) -> str:
        path = self.base / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: sessions ended, no checkpoint wait
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.base, ignore_errors=True)
