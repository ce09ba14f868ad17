"""TLS with certificates of our own CA: the bus over `mqtts://` with the config's `ca_file`, against a mosquitto
serving one; Post to URL to an https receiver."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from aiohttp import web

from dispatcher.channels import DeliveryError
from dispatcher.channels.posturl import PostUrlChannel
from dispatcher.config import PostUrlChannelConfig

from .brokers import Mosquitto
from .conftest import connect_store, wait_until
from .test_channels import make_message

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make test certificates")


def make_certificates(folder: Path) -> None:
    """A CA, and a server certificate for 127.0.0.1 signed by it (openssl, as an admin would)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=dispatcher test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"
    )
    (folder / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    )


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    state = tmp_path / "tls-broker"
    state.mkdir()
    make_certificates(state)
    broker = Mosquitto(
        state,
        listener_options=f"cafile {state}/ca.pem\ncertfile {state}/server.pem\nkeyfile {state}/server.key",
    )
    broker.start()
    yield broker
    broker.stop()


async def test_events_arrive_over_mqtts_with_the_configured_ca(
    tls_broker: Mosquitto, make_config: Callable[..., Path], start_daemon: Any
) -> None:
    """With `mqtts://` and `ca_file`, the daemon verifies the broker's certificate, subscribes and records events."""
    config = make_config(
        bus={"url": f"mqtts://127.0.0.1:{tls_broker.port}", "ca_file": str(tls_broker.state_dir / "ca.pem")}
    )
    await start_daemon(config)
    context = ssl.create_default_context(cafile=str(tls_broker.state_dir / "ca.pem"))
    async with aiomqtt.Client("127.0.0.1", tls_broker.port, tls_context=context) as client:
        await client.publish("events/Backup/Failure", json.dumps({"id": "over-tls"}).encode(), qos=1)

    def stored() -> list[str]:
        with connect_store(config) as conn:
            return [row[0] for row in conn.execute("SELECT id FROM events")]

    await wait_until(lambda: stored() == ["over-tls"])


# paho-mqtt 2.2 leaves the socket of a failed TLS handshake for the garbage collector (`_ssl_wrap_socket` does not
# close it when `do_handshake()` raises); the collector does close it, so the daemon leaks no descriptors.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.slow
async def test_a_broker_certificate_from_another_ca_is_refused(
    tls_broker: Mosquitto, make_config: Callable[..., Path], start_daemon: Any, tmp_path: Path
) -> None:
    """Without the right CA the connection is refused and retried, and the daemon never says it is ready."""
    other = tmp_path / "other-ca"
    other.mkdir()
    make_certificates(other)
    config = make_config(bus={"url": f"mqtts://127.0.0.1:{tls_broker.port}", "ca_file": str(other / "ca.pem")})
    daemon = await start_daemon(config, wait_ready=False)
    with pytest.raises(AssertionError):
        await wait_until(lambda: daemon.dispatcher.ready, timeout_s=2)
    assert not daemon.dispatcher.bus_connected


async def test_post_to_url_over_https_verifies_the_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An https receiver whose certificate the system's CAs do not vouch for is refused (retryable, saying why);
    once its CA is trusted (`SSL_CERT_FILE`, as OpenSSL reads it), the same message goes through encrypted."""
    make_certificates(tmp_path)
    received: list[dict[str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(dict(await request.post()))  # type: ignore[arg-type]
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served)
    await site.start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}/hook"
    message = make_message(event_id="over-https")
    try:
        untrusted = PostUrlChannel(PostUrlChannelConfig(timeout_s=5.0), hostname="server1.example.com")
        with pytest.raises(DeliveryError) as caught:
            await untrusted.send(message, url)
        await untrusted.close()
        assert caught.value.retryable
        assert str(caught.value).startswith(f"cannot reach {url}: TLS: CERTIFICATE_VERIFY_FAILED")
        assert received == []

        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        trusted = PostUrlChannel(PostUrlChannelConfig(timeout_s=5.0), hostname="server1.example.com")
        await trusted.send(message, url)
        await trusted.close()
        assert [fields["event_id"] for fields in received] == ["over-https"]
    finally:
        await runner.cleanup()
