"""One MQTT connection, driven by the asyncio event loop: the only module that imports paho.

Why not aiomqtt, the library our stack names: the intake needs three things aiomqtt's public interface does
not offer: acknowledging a message only once it is stored (paho's `manual_ack_set` and `ack`), pausing the
reading of the broker's socket while the messages in hand are more than the store has taken (backpressure), and
seeing messages that arrive before the SUBACK (a persistent session's backlog comes at once). aiomqtt keeps its
paho client private. paho's external-loop API is public and documented ("use in place of calling loop() if you
wish to handle your client reads as part of your own application"): we register the socket with the event loop
(`on_socket_open` / `on_socket_close`, `on_socket_register_write` / `on_socket_unregister_write`), call
`loop_read()` when it is readable, `loop_write()` when paho has bytes to send and the socket takes them, and
`loop_misc()` once a second for keep-alive. Since we own the reader's registration, pausing is
`remove_reader` and resuming is `add_reader`: no library internals. aiomqtt does the same (its `client.py`).

Every call into paho happens on the event loop's thread except `connect()`, which blocks on the TCP (and TLS)
handshake and so runs in an executor thread; the socket callbacks paho makes from there are handed to the loop.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ..config import BusConfig
from ..errors import DispatcherError

# MQTT 5 session expiry "never": the broker keeps our session and queued QoS 1 messages while we are away.
SESSION_NEVER_EXPIRES = 0xFFFFFFFF
KEEPALIVE_S = 60
# One readable event reads packets until one read completes none, or this many: bounds the time one socket
# holds the loop in a burst (the rest is read at the next iteration, since the socket is still readable).
PACKETS_PER_WAKEUP = 256


class BusError(DispatcherError):
    """The connection could not be made or was lost; the message says why (never a password)."""


class PublishRefused(BusError):
    """The broker answered a PUBLISH with an error (MQTT 5 PUBACK reason code, e.g. not authorised)."""


# on_message(message): called on the loop's thread for each PUBLISH received, in order.
MessageHandler = Callable[[mqtt.MQTTMessage], None]


class BusClient:
    """One connection to the broker. `await connect()`, then `subscribe`, `publish`, `ack`; `lost` completes
    (with a BusError) when the connection ends without `disconnect()`."""

    def __init__(
        self,
        bus: BusConfig,
        *,
        on_message: MessageHandler | None = None,
        client_id: str = "",
        persistent_session: bool = False,
        receive_maximum: int | None = None,
        manual_ack: bool = False,
    ) -> None:
        self.bus = bus
        self._on_message_received = on_message
        self._persistent = persistent_session
        self._receive_maximum = receive_maximum
        self._v5 = bus.protocol == "5"
        self._paho = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            # 3.1.1: a persistent session is clean_session=False; MQTT 5 says it with clean_start and expiry.
            clean_session=None if self._v5 else not persistent_session,
        )
        self._paho.manual_ack_set(manual_ack)
        if bus.username is not None:
            self._paho.username_pw_set(bus.username, bus.password.reveal() if bus.password else None)
        if bus.tls:
            self._paho.tls_set_context(ssl.create_default_context(cafile=str(bus.ca_file) if bus.ca_file else None))
        self._paho.on_connect = self._on_connect
        self._paho.on_disconnect = self._on_disconnect
        self._paho.on_message = self._on_message
        self._paho.on_publish = self._on_publish
        self._paho.on_subscribe = self._on_subscribe
        self._paho.on_socket_open = self._on_socket_open
        self._paho.on_socket_close = self._on_socket_close
        self._paho.on_socket_register_write = self._on_socket_register_write
        self._paho.on_socket_unregister_write = self._on_socket_unregister_write
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._connected: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[None] | None = None
        self._disconnecting = False
        self._pending_publishes: dict[int, asyncio.Future[None]] = {}
        self._pending_subscribes: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._reader_fd: int | None = None  # the fd our reader is registered on, None while paused or closed
        self._socket_fd: int | None = None
        self._reading_paused = False
        self._packets_seen = 0
        self._misc_task: asyncio.Task[None] | None = None

    # -- connection --------------------------------------------------------------------------------------------

    async def connect(self, timeout_s: float = 10) -> None:
        """Open the connection and wait for the broker's CONNACK; raise BusError if it fails or takes too long."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._connected = self._loop.create_future()
        self.lost = self._loop.create_future()
        self._disconnecting = False
        properties = None
        clean_start: Any = mqtt.MQTT_CLEAN_START_FIRST_ONLY
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
            if self._persistent:
                properties.SessionExpiryInterval = SESSION_NEVER_EXPIRES
                clean_start = False
            if self._receive_maximum is not None:
                properties.ReceiveMaximum = self._receive_maximum
        try:
            async with asyncio.timeout(timeout_s):
                # connect() blocks on the TCP and TLS handshakes: an executor thread keeps the loop free.
                await self._loop.run_in_executor(
                    None,
                    lambda: self._paho.connect(
                        self.bus.host, self.bus.port, KEEPALIVE_S, clean_start=clean_start, properties=properties
                    ),
                )
                await self._connected
        except TimeoutError:
            self.close()
            raise BusError(f"no answer from {self.bus.host}:{self.bus.port} within {timeout_s:g} s") from None
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
            self.close()
            raise BusError(f"cannot connect to {self.bus.host}:{self.bus.port}: {err}") from None
        except BusError:
            self.close()
            raise
        self._misc_task = asyncio.create_task(self._misc_loop(), name="mqtt-keepalive")

    async def disconnect(self, timeout_s: float = 5) -> None:
        """Send DISCONNECT (the session stays on the broker), wait for paho to close the socket, and close."""
        self._disconnecting = True
        if self._socket_fd is not None and self.lost is not None and not self.lost.done():
            self._paho.disconnect()
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(self.lost)
            except (TimeoutError, BusError):
                pass
        self.close()

    def close(self) -> None:
        """Stop at once: no more reads, writes or keep-alive, and the socket closed. A client is not reused."""
        if self._misc_task is not None:
            self._misc_task.cancel()
            self._misc_task = None
        sock = self._paho.socket()
        if sock is not None:
            self._on_socket_close(self._paho, None, sock)
            sock.close()

    # -- what the caller does ----------------------------------------------------------------------------------

    def subscribe(self, topic: str, qos: int = 1) -> asyncio.Future[list[ReasonCode]]:
        """Send SUBSCRIBE; the future gets the SUBACK's reason codes."""
        result, mid = self._paho.subscribe(topic, qos)
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise BusError(f"cannot subscribe to {topic}: {mqtt.error_string(result)}")
        assert self._loop is not None
        future: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        self._pending_subscribes[mid] = future
        return future

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, user_properties: list[tuple[str, str]] | None = None
    ) -> asyncio.Future[None]:
        """Queue a PUBLISH; the future completes when the broker has it (PUBACK at QoS 1, sent at QoS 0)."""
        properties = None
        if self._v5 and user_properties:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho leaves it untyped
            properties.UserProperty = user_properties
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        info = self._paho.publish(topic, payload, qos=qos, properties=properties)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_QUEUE_SIZE):
            future.set_exception(BusError(f"cannot publish to {topic}: {mqtt.error_string(info.rc)}"))
        elif info.is_published():
            future.set_result(None)
        else:
            self._pending_publishes[info.mid] = future
        return future

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a received message (PUBACK for QoS 1); nothing for QoS 0."""
        if qos > 0:
            self._paho.ack(mid, qos)

    def pause_reading(self) -> None:
        """Stop reading the broker's socket: what the broker sends waits in TCP buffers and then at the broker."""
        self._reading_paused = True
        if self._reader_fd is not None and self._loop is not None:
            self._loop.remove_reader(self._reader_fd)
            self._reader_fd = None

    def resume_reading(self) -> None:
        """Read the broker's socket again."""
        self._reading_paused = False
        if self._reader_fd is None and self._socket_fd is not None and self._loop is not None:
            self._reader_fd = self._socket_fd
            self._loop.add_reader(self._reader_fd, self._readable)

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused

    # -- the event loop's side ---------------------------------------------------------------------------------

    def _in_loop(self, fn: Callable[[], None]) -> None:
        """Run fn on the loop's thread: now if this is it, else as soon as the loop gets to it."""
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def _readable(self) -> None:
        try:
            for _ in range(PACKETS_PER_WAKEUP):
                seen = self._packets_seen
                result = self._paho.loop_read()
                if result != mqtt.MQTT_ERR_SUCCESS or self._reading_paused or self._packets_seen == seen:
                    break
            sock = self._paho.socket()
            # TLS: bytes already decrypted wait in the SSL object, and the socket will not signal them again.
            if isinstance(sock, ssl.SSLSocket) and sock.pending() and not self._reading_paused and self._loop:
                self._loop.call_soon(self._readable)
        except Exception as err:  # paho raises what the socket raises (a reset, a broken pipe)
            self._lose(BusError(f"connection to {self.bus.host}:{self.bus.port} failed: {err}"))

    def _writable(self) -> None:
        try:
            self._paho.loop_write()
        except Exception as err:
            self._lose(BusError(f"connection to {self.bus.host}:{self.bus.port} failed: {err}"))

    def _lose(self, error: BusError) -> None:
        self.close()
        if self.lost is not None and not self.lost.done():
            self.lost.set_exception(error)

    async def _misc_loop(self) -> None:
        # Keep-alive: paho sends PINGREQ when due and closes a connection whose PINGRESP is overdue.
        while self._paho.loop_misc() == mqtt.MQTT_ERR_SUCCESS:  # noqa: ASYNC110 (a timer, not a wait for a state)
            await asyncio.sleep(1)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()

        def register() -> None:
            assert self._loop is not None
            self._socket_fd = fd
            if not self._reading_paused:
                self._reader_fd = fd
                self._loop.add_reader(fd, self._readable)

        self._in_loop(register)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._socket_fd is None or self._loop is None:
            return
        if self._reader_fd is not None:
            self._loop.remove_reader(self._reader_fd)
        self._loop.remove_writer(self._socket_fd)
        self._socket_fd = self._reader_fd = None

    def _on_socket_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()

        def register() -> None:
            assert self._loop is not None
            if self._socket_fd == fd:
                self._loop.add_writer(fd, self._writable)

        self._in_loop(register)

    def _on_socket_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._loop is not None and self._socket_fd is not None:
            self._loop.remove_writer(self._socket_fd)

    # -- paho's callbacks (on the loop's thread, from loop_read) ----------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        self._packets_seen += 1
        if self._connected is None or self._connected.done():
            return
        if reason.is_failure:
            self._connected.set_exception(
                BusError(f"{self.bus.host}:{self.bus.port} refused the connection: {reason.getName()}")
            )
        else:
            self._connected.set_result(None)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        error = BusError(f"disconnected from {self.bus.host}:{self.bus.port}: {reason.getName()}")
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(error)
        if self.lost is not None and not self.lost.done():
            if self._disconnecting:
                self.lost.set_result(None)
            else:
                self.lost.set_exception(error)
        pending: list[asyncio.Future[Any]] = [*self._pending_publishes.values(), *self._pending_subscribes.values()]
        for future in pending:
            if not future.done():
                future.set_exception(error)
        self._pending_publishes.clear()
        self._pending_subscribes.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._packets_seen += 1
        if self._on_message_received is not None:
            self._on_message_received(message)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any) -> None:
        self._packets_seen += 1
        future = self._pending_publishes.pop(mid, None)
        if future is not None and not future.done():
            if reason.is_failure:
                future.set_exception(PublishRefused(f"the broker refused a message: {reason.getName()}"))
            else:
                future.set_result(None)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any
    ) -> None:
        self._packets_seen += 1
        future = self._pending_subscribes.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reasons)
