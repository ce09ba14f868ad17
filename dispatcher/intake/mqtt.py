"""MQTT intake: the only module that speaks to the bus (aiomqtt, and paho beneath it).

An event is acknowledged (QoS 1 PUBACK) only after it is committed to the store. aiomqtt lets paho
acknowledge on receipt, so we switch paho to manual acknowledgement and acknowledge each message, in the
order received (MQTT 3.1.1 §4.6 requires that order), once its batch is durable. Messages are handled in
batches of whatever has arrived, so one commit covers many events.

The session is persistent (fixed client id, no clean start), so what the broker accepted while we were
down, or did not see acknowledged, is redelivered when we reconnect.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from base64 import b64encode
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiomqtt
import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..config import BusConfig
from ..errors import DispatcherError, StoreError
from ..events import Event, InvalidEvent, parse_event, type_from_topic

log = structlog.get_logger(__name__)

# The most messages one batch takes; they share one commit.
MAX_BATCH = 1000
# MQTT 5 session expiry "never": the broker keeps our session and queued QoS 1 messages while we are away.
SESSION_NEVER_EXPIRES = 0xFFFFFFFF
# MQTT 5 Receive Maximum: at most this many unacknowledged QoS 1 messages in flight to us. Without it the
# broker may send 65,535 at once, and a burst then waits in our memory (paho's per-message Properties cost
# kilobytes each) instead of in the broker's queue. One window fills one batch, so one commit. (mosquitto 2.0
# sends past it once acknowledgements flow: READ_PAUSE_HIGH below is what bounds our memory.)
RECEIVE_MAXIMUM = MAX_BATCH
# Messages read but not yet handled: above HIGH the intake stops reading the broker's socket until they fall
# below LOW. The broker should bound them (Receive Maximum, max_inflight_messages), but mosquitto 2.0 sends
# past its inflight limit once acknowledgements flow, and aiomqtt's queue is unbounded: a burst faster than
# the store would then pile up here (about 600 bytes a message) instead of in the broker's queue.
READ_PAUSE_HIGH = 2 * MAX_BATCH
READ_PAUSE_LOW = MAX_BATCH // 2
# The most bytes one read takes from the broker's socket (see _BufferedReads): a burst's events of a few hundred
# bytes come 50 or more a read, and what one read brings in past READ_PAUSE_HIGH stays small (64 KiB read no
# faster here, and let through 1,300 tiny test messages past the pause).
READ_CHUNK = 16 * 1024
RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 30.0


class _IncomingQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's queue of messages read and not yet handled, which pauses the socket's reading while it holds
    more than READ_PAUSE_HIGH (checked as each message arrives) and resumes it below READ_PAUSE_LOW."""

    reading: _SocketReading | None = None

    def _put(self, item: aiomqtt.Message) -> None:
        super()._put(item)  # type: ignore[misc]
        if self.reading is not None and self.qsize() > READ_PAUSE_HIGH:
            self.reading.pause()

    def _get(self) -> aiomqtt.Message:
        item: aiomqtt.Message = super()._get()  # type: ignore[misc]
        if self.reading is not None and self.qsize() < READ_PAUSE_LOW:
            self.reading.resume()
        return item


class _SocketReading:
    """Pauses and resumes the event loop's reading of the broker's socket (TCP backpressure on the broker).

    aiomqtt registers a reader callback for paho's socket and offers no way to pause it; the callback is taken
    from the loop's selector while paused and registered again as it was. Keep-alive pings are not answered
    while paused, so pauses must stay short: they last as long as the intake takes to handle
    READ_PAUSE_HIGH - READ_PAUSE_LOW messages.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._paused: tuple[int, Callable[..., object], tuple[object, ...]] | None = None

    def pause(self) -> None:
        sock = self._client._client.socket()
        if self._paused is not None or sock is None:
            return
        loop = asyncio.get_running_loop()
        try:
            reader = loop._selector.get_key(sock.fileno()).data[0]  # type: ignore[attr-defined]
        except (KeyError, ValueError, AttributeError):
            return  # not registered (connecting, or already closed): nothing to pause
        if reader is None:
            return
        self._paused = (sock.fileno(), reader._callback, reader._args)
        loop.remove_reader(sock.fileno())
        log.debug("bus_reading_paused", waiting=len(self._client.messages))

    def resume(self) -> None:
        if self._paused is None:
            return
        fd, callback, args = self._paused
        self._paused = None
        sock = self._client._client.socket()
        if sock is not None and sock.fileno() == fd:  # not closed meanwhile
            asyncio.get_running_loop().add_reader(fd, callback, *args)
            log.debug("bus_reading_resumed", waiting=len(self._client.messages))


class _BufferedReads:
    """Reads the broker's socket up to READ_CHUNK bytes at a time and serves paho's reads from them.

    paho reads a packet with three or more `recv` calls (the first byte, each byte of the remaining length, the
    rest) and aiomqtt makes one paho read per readiness event: in a burst, about four system calls and a loop
    wake-up per message. Here each readiness event makes one `recv`, and paho goes on reading packets while
    bytes of it are left (no readiness event will come for them: they have left the socket). One `recv` per
    event, never more, keeps `_SocketReading`'s pause working: while paused, nothing is taken from the socket.
    Installed on paho's client instance (its `_sock_recv` and `loop_read`), as no hook exists for it.
    """

    def __init__(self, paho: mqtt.Client) -> None:
        self._paho = paho
        self._socket_recv = paho._sock_recv
        self._packet_reads = paho.loop_read
        self._sock: object = None
        self._data = b""
        self._pos = 0
        self._may_read_socket = False
        paho._sock_recv = self._recv  # type: ignore[method-assign]
        paho.loop_read = self._loop_read  # type: ignore[method-assign]

    def _recv(self, bufsize: int) -> bytes:
        if self._paho._sock is not self._sock:  # a new connection: nothing of the last one's bytes is left
            self._sock, self._data, self._pos = self._paho._sock, b"", 0
        if self._pos >= len(self._data):
            if not self._may_read_socket:
                raise BlockingIOError  # paho keeps the packet read so far and waits for the next event
            self._may_read_socket = False
            data = self._socket_recv(READ_CHUNK)  # raises BlockingIOError when there is nothing to read
            if not data:
                return data  # the broker closed the connection
            self._data, self._pos = data, 0
        start, self._pos = self._pos, self._pos + bufsize
        return self._data[start : self._pos]

    def _loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        self._may_read_socket = True
        result = self._packet_reads(max_packets)
        while result == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self._pos < len(self._data):
            if self._paho._sock is not self._sock:
                break
            result = self._packet_reads(max_packets)
        return result


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message refused as bad input, as the intake reports it."""

    topic: str
    reason: str
    message: str


# accept(events) records events durably and returns, for each, whether it was new.
Accept = Callable[[Sequence[Event]], Awaitable[list[bool]]]
# reject(rejection) counts and logs a refused message.
Reject = Callable[[Rejection], None]


class MqttIntake:
    """Subscribes to `<topic_prefix>/#`, records events, dead-letters bad ones, reconnects forever."""

    def __init__(self, bus: BusConfig, *, default_host: str, accept: Accept, reject: Reject) -> None:
        self.bus = bus
        self.default_host = default_host
        self._accept = accept
        self._reject = reject
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()
        self._session: aiomqtt.Client | None = None

    @property
    def waiting(self) -> int:
        """Messages read from the broker and not yet handled (bounded by the read pause)."""
        return len(self._session.messages) if self._session is not None else 0

    @property
    def subscription(self) -> str:
        topic = f"{self.bus.topic_prefix}/#"
        return f"$share/{self.bus.shared_group}/{topic}" if self.bus.shared_group else topic

    def stop(self) -> None:
        """Stop taking messages; the batch in hand is still committed and acknowledged."""
        self._stopping.set()

    async def run(self) -> None:
        """Connect, consume and reconnect with jittered exponential backoff until `stop()`."""
        delay_s = RECONNECT_INITIAL_S
        attempt = 0
        while not self._stopping.is_set():
            attempt += 1
            try:
                async with self._client() as client:
                    self._session = client
                    await client.subscribe(self.subscription, qos=1)
                    self.connected.set()
                    log.info("bus_connected", host=self.bus.host, port=self.bus.port, topic=self.subscription)
                    delay_s, attempt = RECONNECT_INITIAL_S, 0
                    await self._consume(client)
                    return
            except (aiomqtt.MqttError, StoreError) as err:
                # A store failure leaves the batch unacknowledged: reconnecting makes the broker redeliver it.
                was_connected = self.connected.is_set()
                self.connected.clear()
                if self._stopping.is_set():
                    return
                sleep_s = random.uniform(delay_s / 2, delay_s)
                log.warning(
                    "bus_disconnected" if was_connected else "bus_connect_failed",
                    host=self.bus.host,
                    port=self.bus.port,
                    error=str(err),
                    attempt=attempt,
                    retry_in_s=round(sleep_s, 2),
                )
                delay_s = min(delay_s * 2, RECONNECT_MAX_S)
                try:
                    await asyncio.wait_for(self._stopping.wait(), sleep_s)
                except TimeoutError:
                    pass
            finally:
                self.connected.clear()

    def _client(self) -> aiomqtt.Client:
        v5 = self.bus.protocol == "5"
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = SESSION_NEVER_EXPIRES
            properties.ReceiveMaximum = RECEIVE_MAXIMUM
        tls_context = None
        if self.bus.tls:
            tls_context = ssl.create_default_context(cafile=str(self.bus.ca_file) if self.bus.ca_file else None)
        client = aiomqtt.Client(
            hostname=self.bus.host,
            port=self.bus.port,
            username=self.bus.username,
            password=self.bus.password.reveal() if self.bus.password else None,
            identifier=self.bus.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else False,
            # paho refuses clean_start on 3.1.1, where clean_session=False says the same.
            clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            tls_context=tls_context,
            timeout=10,
            queue_type=_IncomingQueue,
        )
        # Before CONNECT: the broker redelivers the session's messages as soon as we are connected.
        client._client.manual_ack_set(True)
        _BufferedReads(client._client)
        queue = client._queue
        assert isinstance(queue, _IncomingQueue)
        queue.reading = _SocketReading(client)
        return client

    async def _consume(self, client: aiomqtt.Client) -> None:
        messages = aiter(client.messages)
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                next_message = asyncio.ensure_future(anext(messages))
                await asyncio.wait({next_message, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not next_message.done():
                    next_message.cancel()
                    return
                batch = [next_message.result()]
                # Take whatever else has already arrived: these share one commit.
                for _ in range(min(len(client.messages), MAX_BATCH - 1)):
                    batch.append(await anext(messages))
                await self._handle(client, batch)
        finally:
            stop_wait.cancel()

    async def _handle(self, client: aiomqtt.Client, batch: list[aiomqtt.Message]) -> None:
        events: list[Event] = []
        for message in batch:
            topic = message.topic.value
            if topic == self.bus.dead_letter_topic:
                continue  # our own output, if the admin put it under the prefix; never loop on it
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload or "").encode()
            try:
                events.append(
                    parse_event(
                        payload,
                        topic_type=type_from_topic(topic, self.bus.topic_prefix),
                        default_host=self.default_host,
                    )
                )
            except InvalidEvent as err:
                rejection = Rejection(topic=topic, reason=err.reason, message=str(err))
                self._reject(rejection)
                await self._dead_letter(client, rejection, payload)
        if events:
            await self._accept(events)
        for message in batch:
            if message.qos > 0:
                client._client.ack(message.mid, message.qos)

    async def _dead_letter(self, client: aiomqtt.Client, rejection: Rejection, payload: bytes) -> None:
        """Republish a refused message on the dead-letter topic, and wait for the broker to take it."""
        reason = f"{rejection.reason}: {rejection.message}"
        if self.bus.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = [("reason", reason), ("topic", rejection.topic)]
            await client.publish(self.bus.dead_letter_topic, payload, qos=1, properties=properties)
        else:
            wrapped = {"reason": reason, "topic": rejection.topic, "payload_base64": b64encode(payload).decode()}
            await client.publish(self.bus.dead_letter_topic, json.dumps(wrapped).encode(), qos=1)


async def publish_event(bus: BusConfig, event_type: str, payload: dict[str, object]) -> None:
    """Publish one event on `<topic_prefix>/<type>` at QoS 1 and wait for the broker's PUBACK (`dispatcher publish`)."""
    tls_context = None
    if bus.tls:
        tls_context = ssl.create_default_context(cafile=str(bus.ca_file) if bus.ca_file else None)
    try:
        async with aiomqtt.Client(
            hostname=bus.host,
            port=bus.port,
            username=bus.username,
            password=bus.password.reveal() if bus.password else None,
            protocol=aiomqtt.ProtocolVersion.V5 if bus.protocol == "5" else aiomqtt.ProtocolVersion.V311,
            tls_context=tls_context,
            timeout=10,
        ) as client:
            await client.publish(f"{bus.topic_prefix}/{event_type}", json.dumps(payload).encode(), qos=1)
    except aiomqtt.MqttError as err:
        raise DispatcherError(f"cannot publish to {bus.host}:{bus.port}: {err}") from err
