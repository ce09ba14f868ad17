"""Shared fixtures: a real mosquitto per test, config files, the daemon embedded or as a process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from dispatcher.app import Dispatcher
from dispatcher.config import load_config

from .brokers import Mosquitto, free_port, wait_for_port

API_TOKEN = "test-token-5f2c"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto of our own on a free loopback port, stopped after the test."""
    state = tmp_path / "broker"
    state.mkdir()
    broker = Mosquitto(state)
    broker.start()
    yield broker
    broker.stop()


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def make_config(tmp_path: Path, mosquitto: Mosquitto) -> Callable[..., Path]:
    """Write a config file for this test's broker and a fresh store; keyword sections are merged over the base."""

    def make(name: str = "dispatcher.yaml", **sections: Any) -> Path:
        (tmp_path / "api.token").write_text(API_TOKEN + "\n")
        base = {
            "hostname": "test.example.com",
            "bus": {
                "url": mosquitto.url,
                "client_id": f"dispatcher-test-{uuid.uuid4().hex[:8]}",
                "topic_prefix": "events",
                "dead_letter_topic": "events-dead-letter",
            },
            "http": {"listen": f"127.0.0.1:{free_port()}", "token_file": "api.token"},
            "store": {"path": "dispatcher.db"},
        }
        path = tmp_path / name
        path.write_text(yaml.safe_dump(_merge(base, sections), sort_keys=False))
        return path

    return make


async def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.02) -> None:
    """Poll `predicate` (sync or async) until it is truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


class RunningDaemon:
    """The daemon embedded in the test's event loop, with helpers to reach its HTTP side."""

    def __init__(self, dispatcher: Dispatcher, task: asyncio.Task[None]) -> None:
        self.dispatcher = dispatcher
        self.task = task

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.dispatcher.http_port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_TOKEN}"}

    async def stop(self) -> None:
        self.dispatcher.stop()
        await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def start_daemon() -> AsyncIterator[Callable[[Path], Any]]:
    """Start an embedded daemon from a config file and wait until it is ready; stopped after the test."""
    running: list[RunningDaemon] = []

    async def start(config_path: Path, *, wait_ready: bool = True) -> RunningDaemon:
        dispatcher = Dispatcher(load_config(config_path))
        await dispatcher.start()
        task = asyncio.create_task(dispatcher.run(), name="daemon-under-test")
        daemon = RunningDaemon(dispatcher, task)
        running.append(daemon)
        if wait_ready:
            await wait_until(lambda: dispatcher.ready or task.done())
            if task.done():
                task.result()
        return daemon

    yield start
    for daemon in running:
        if not daemon.task.done():
            await daemon.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class DaemonProcess:
    """`python -m dispatcher run -c FILE` as a child process, for crash and signal tests."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.http_port = int(load_config(config_path).http.listen_port)

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dispatcher", "run", "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for_port(self.http_port, timeout_s=20)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout_s: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[Callable[[Path], DaemonProcess]]:
    processes: list[DaemonProcess] = []

    def make(config_path: Path) -> DaemonProcess:
        process = DaemonProcess(config_path, tmp_path / f"daemon-{len(processes)}.log")
        processes.append(process)
        return process

    yield make
    for process in processes:
        if process.process is not None and process.process.poll() is None:
            process.process.kill()
            process.process.wait()
