"""A real mosquitto for tests: our own process on a free loopback port, with our own configuration.

`max_queued_messages 0` because the default (1000) silently drops QoS 1 messages queued for an
offline persistent session; persistence on, so a restarted broker keeps sessions and queued messages;
`user` set to ourselves, since mosquitto started as root otherwise drops to a user that cannot write our files.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

BROKER_CONFIG = """\
listener {port} 127.0.0.1
{listener_options}
user {user}
allow_anonymous true
max_queued_messages 0
max_inflight_messages {max_inflight}
persistence true
persistence_location {state_dir}/
autosave_interval 1
log_dest file {state_dir}/mosquitto.log
log_type error
log_type warning
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s}s")


class Mosquitto:
    """One mosquitto process; `restart()` keeps its port and its persisted sessions."""

    def __init__(self, state_dir: Path, *, listener_options: str = "", max_inflight: int = 1000) -> None:
        """`listener_options`: lines for the listener (TLS files, for instance). `max_inflight`: mosquitto's
        `max_inflight_messages`, QoS 1 messages sent to a client and not yet acknowledged (0: no limit)."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed: run scripts/setup (it installs it with apt)")
        self.binary = binary
        self.state_dir = state_dir
        self.port = free_port()
        self.config_path = state_dir / "mosquitto.conf"
        self.config_path.write_text(
            BROKER_CONFIG.format(
                port=self.port,
                state_dir=state_dir,
                user=getpass.getuser(),
                listener_options=listener_options,
                max_inflight=max_inflight,
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config_path)], stdout=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file on the way out."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
