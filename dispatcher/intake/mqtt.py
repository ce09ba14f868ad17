"""MQTT intake: every message from the bus is stored or dead-lettered, then acknowledged, whatever its bytes.

An event is acknowledged (QoS 1 PUBACK) only after it is committed to the store. Messages are handled in
batches of whatever has arrived, so one commit covers many: the batch's good events and its dead letters
(refused messages, kept until they are republished: see dead_letters.py) go in one transaction, then every
message of the batch is acknowledged, in the order received (MQTT 3.1.1 §4.6). Nothing here waits for a
broker's answer while messages are in hand, so the read pause below can never wait on itself.

Memory is bounded in messages and in bytes: above READ_PAUSE_HIGH messages or READ_PAUSE_HIGH_BYTES read and
not yet taken, the intake stops reading the broker's socket (TCP backpressure: the rest waits at the broker)
until they fall below the LOW marks. A batch is at most MAX_BATCH messages and MAX_BATCH_BYTES.

The session is persistent (fixed client id, no clean start), so what the broker accepted while we were down,
or did not see acknowledged, is redelivered when we reconnect. It comes at once, before the SUBACK: messages
are taken from the moment the connection is up, and `connected` (readiness) is set when the SUBACK arrives.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import structlog

from ..config import BusConfig
from ..errors import StoreError
from ..events import Event, InvalidEvent, parse_event, type_from_topic
from ..store import Store
from ..untrusted_json import quote
from ..waiting import wait_set
from .bus_client import BusClient, BusError
from .dead_letters import DeadLetter, DeadLetterPublisher, record_batch

log = structlog.get_logger(__name__)

# The most messages and bytes one batch takes; they share one commit.
MAX_BATCH = 1000
MAX_BATCH_BYTES = 4 * 1024 * 1024
# MQTT 5 Receive Maximum: at most this many unacknowledged QoS 1 messages in flight to us, one batch's worth.
# (mosquitto 2.0 sends past it once acknowledgements flow: the read pause is what bounds our memory.)
RECEIVE_MAXIMUM = MAX_BATCH
# Messages read and not yet taken into a batch: reading stops above HIGH (either mark) and resumes below LOW
# (both marks). What one readable event reads past the mark is at most one packet more.
READ_PAUSE_HIGH = 2 * MAX_BATCH
READ_PAUSE_LOW = MAX_BATCH // 2
READ_PAUSE_HIGH_BYTES = 16 * 1024 * 1024
READ_PAUSE_LOW_BYTES = 4 * 1024 * 1024
# What a message costs beside its payload and topic (paho's message object, our bookkeeping).
MESSAGE_OVERHEAD_BYTES = 300
RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message refused as bad input, as the intake reports it."""

    topic: str
    reason: str
    message: str


# recorded(events, fresh): after each commit, the events stored and for each whether it is new.
Recorded = Callable[[Sequence[Event], Sequence[bool]], None]
# rejected(rejection): a refused message, committed as a dead letter.
Rejected = Callable[[Rejection], None]


class _Inbox:
    """Messages read from one connection and not yet taken, counted in messages and bytes; pauses the
    connection's reading above the HIGH marks and resumes it below the LOW ones."""

    def __init__(self, client: BusClient) -> None:
        self._client = client
        self._messages: deque[tuple[mqtt.MQTTMessage, int]] = deque()
        self.bytes = 0
        self._arrived = asyncio.Event()

    def __len__(self) -> int:
        return len(self._messages)

    def put(self, message: mqtt.MQTTMessage) -> None:
        size = len(message.payload) + MESSAGE_OVERHEAD_BYTES
        self._messages.append((message, size))
        self.bytes += size
        self._arrived.set()
        if len(self._messages) > READ_PAUSE_HIGH or self.bytes > READ_PAUSE_HIGH_BYTES:
            self._client.pause_reading()

    async def take(self) -> list[mqtt.MQTTMessage]:
        """Wait for messages, then take up to MAX_BATCH of them and MAX_BATCH_BYTES (at least one)."""
        while not self._messages:
            self._arrived.clear()
            await self._arrived.wait()
        batch: list[mqtt.MQTTMessage] = []
        batch_bytes = 0
        while self._messages and len(batch) < MAX_BATCH:
            message, size = self._messages[0]
            if batch and batch_bytes + size > MAX_BATCH_BYTES:
                break
            self._messages.popleft()
            batch.append(message)
            batch_bytes += size
        self.bytes -= batch_bytes
        if self._client.reading_paused and len(self._messages) < READ_PAUSE_LOW and self.bytes < READ_PAUSE_LOW_BYTES:
            self._client.resume_reading()
        return batch


class MqttIntake:
    """Subscribes to `<topic_prefix>/#`, records events, dead-letters bad ones, reconnects forever."""

    def __init__(
        self, bus: BusConfig, *, default_host: str, store: Store, recorded: Recorded, rejected: Rejected
    ) -> None:
        self.bus = bus
        self.default_host = default_host
        self._store = store
        self._recorded = recorded
        self._rejected = rejected
        self._dead_letters = DeadLetterPublisher(bus, store)
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()
        self._inbox: _Inbox | None = None

    @property
    def waiting(self) -> int:
        """Messages read from the broker and not yet taken (bounded by the read pause)."""
        return len(self._inbox) if self._inbox is not None else 0

    @property
    def subscription(self) -> str:
        topic = f"{self.bus.topic_prefix}/#"
        return f"$share/{self.bus.shared_group}/{topic}" if self.bus.shared_group else topic

    def stop(self) -> None:
        """Stop taking messages; the batch in hand is still committed and acknowledged."""
        self._stopping.set()

    def rearm(self) -> None:
        """Make a stopped intake able to `run()` again (a cluster's instance elected again for the intake)."""
        self._stopping.clear()

    async def run(self) -> None:
        """Connect, consume and reconnect with jittered exponential backoff until `stop()`."""
        delay_s = RECONNECT_INITIAL_S
        attempt = 0
        while not self._stopping.is_set():
            attempt += 1
            client = self._client()
            was_connected = False
            try:
                await client.connect()
                was_connected = True
                delay_s, attempt = RECONNECT_INITIAL_S, 0
                await self._serve(client)
                await client.disconnect()
                return
            except (BusError, StoreError) as err:
                # A store failure leaves the batch unacknowledged: reconnecting makes the broker redeliver it.
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
                await wait_set(self._stopping, sleep_s)
            finally:
                self.connected.clear()
                self._inbox = None
                client.close()

    def _client(self) -> BusClient:
        inbox: _Inbox | None = None

        def received(message: mqtt.MQTTMessage) -> None:
            assert inbox is not None
            inbox.put(message)

        client = BusClient(
            self.bus,
            on_message=received,
            client_id=self.bus.client_id,
            persistent_session=True,
            receive_maximum=RECEIVE_MAXIMUM,
            manual_ack=True,
        )
        inbox = self._inbox = _Inbox(client)
        return client

    async def _serve(self, client: BusClient) -> None:
        """Consume on one connection until `stop()` (returns) or until the connection is lost (BusError) or the
        store fails (StoreError). Taking messages starts before the SUBACK, which a backlog may follow."""
        assert self._inbox is not None and client.lost is not None
        tasks = [
            asyncio.create_task(self._consume(client, self._inbox), name="mqtt-consume"),
            asyncio.create_task(self._subscribe(client), name="mqtt-subscribe"),
            asyncio.create_task(self._dead_letters.run(client), name="mqtt-dead-letters"),
        ]
        consume = tasks[0]
        watched: set[asyncio.Future[None]] = {*tasks, client.lost}
        try:
            while not consume.done():
                done, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    if finished.exception() is not None:
                        raise finished.exception()  # type: ignore[misc]
                if client.lost.done():
                    raise BusError("the connection closed")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _subscribe(self, client: BusClient) -> None:
        reasons = await client.subscribe(self.subscription, qos=1)
        refused = [reason.getName() for reason in reasons if reason.is_failure]
        if refused:
            raise BusError(f"the broker refused the subscription to {self.subscription}: {', '.join(refused)}")
        self.connected.set()
        log.info("bus_connected", host=self.bus.host, port=self.bus.port, topic=self.subscription)

    async def _consume(self, client: BusClient, inbox: _Inbox) -> None:
        stop = asyncio.ensure_future(self._stopping.wait())
        take: asyncio.Future[list[mqtt.MQTTMessage]] | None = None
        try:
            while True:
                take = asyncio.ensure_future(inbox.take())
                await asyncio.wait({take, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not take.done():
                    return
                await self._handle(client, take.result())
        finally:
            stop.cancel()
            if take is not None:
                take.cancel()

    async def _handle(self, client: BusClient, batch: list[mqtt.MQTTMessage]) -> None:
        events: list[tuple[Event, DeadLetter]] = []
        letters: list[DeadLetter] = []
        for message in batch:
            payload = bytes(message.payload)
            try:
                topic = message.topic
            except UnicodeDecodeError:  # MQTT requires UTF-8 topics; a broker that lets one through is wrong
                letters.append(DeadLetter("(not UTF-8)", "invalid_json", "the topic is not UTF-8", payload))
                continue
            if topic == self.bus.dead_letter_topic:
                continue  # our own output, if the admin put it under the prefix; never loop on it
            try:
                event = parse_event(
                    payload, topic_type=type_from_topic(topic, self.bus.topic_prefix), default_host=self.default_host
                )
            except InvalidEvent as err:
                letters.append(DeadLetter(topic, err.reason, str(err), payload))
            except Exception as err:  # a fault of ours: the message still goes to the dead letters, never stops us
                log.exception("event_unreadable", topic=topic, error=type(err).__name__)
                letters.append(
                    DeadLetter(topic, "unreadable", f"{type(err).__name__}: {quote(str(err), 120)}", payload)
                )
            else:
                events.append((event, DeadLetter(topic, "unreadable", "", payload)))
        if events or letters:
            stored, fresh, written = await self._store.run(lambda conn: record_batch(conn, events, letters))
            for letter in written:
                self._rejected(Rejection(topic=letter.topic, reason=letter.reason, message=letter.message))
            if written:
                self._dead_letters.wake()
            if stored:
                self._recorded(stored, fresh)
        for message in batch:
            client.ack(message.mid, message.qos)


async def publish_event(bus: BusConfig, event_type: str, payload: dict[str, object]) -> None:
    """Publish one event on `<topic_prefix>/<type>` at QoS 1 and wait for the broker's PUBACK (`dispatcher publish`)."""
    client = BusClient(bus)
    try:
        await client.connect()
        async with asyncio.timeout(10):
            await client.publish(f"{bus.topic_prefix}/{event_type}", json.dumps(payload).encode(), qos=1)
        await client.disconnect()
    except TimeoutError:
        raise BusError(f"{bus.host}:{bus.port} did not acknowledge the event within 10 s") from None
    except BusError as err:
        raise BusError(f"cannot publish to {bus.host}:{bus.port}: {err}") from err
    finally:
        client.close()
