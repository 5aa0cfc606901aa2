"""KV event subscribers: each replica's SGLang KV events into the engine (I/O edge).

Which replicas (``spec.replicas.kv_events``, docs/config.md):

- **static**: ``endpoints`` names, per replica id, the ZMQ endpoint its ``--kv-events-config``
  publisher serves (and optionally, in ``replay_endpoints``, its replay endpoint). These
  subscribers run from :meth:`KvEventSubscribers.start` to :meth:`KvEventSubscribers.stop`,
  whatever the pool reports: a replica the pool removes and re-adds keeps its view.
- **discovered** (``discovered_port`` > 0): every other replica the pool announces
  (``ReplicaAdded``) gets a subscriber at ``tcp://<host of its base URL>:<port>``, the port
  being its EndpointSlice's port named ``discovered_port_name`` (``kv-events``: each
  ReplicaPool's ``spec.kvEventsPort``) or else ``discovered_port``; e.g. a pod at
  ``http://10.0.0.7:30000`` is read at ``tcp://10.0.0.7:5557``. Its replay endpoint is the
  same host on its slice's port named ``discovered_replay_port_name`` (``kv-replay``: the
  pool's ``spec.kvEventsReplayPort``); a slice without that port means no replay (a gap clears
  the view). When the pool removes the replica (``ReplicaRemoved``: gone from discovery, or a
  new address) its tasks are cancelled and its view dropped, so a replica that comes back
  starts from an empty view, as the engine's does. The subscription starts when the replica
  is announced, so what it cached before is unknown (late joiner).

**Data-parallel attention.** SGLang with ``--enable-dp-attention`` runs one scheduler, radix
cache and publisher per attention DP rank; rank ``r`` binds the endpoint's and the replay
endpoint's TCP ports + ``r`` (``offset_endpoint_port``) and numbers its batches on its own.
The rank count comes from the replica's ``/server_info`` (``dp_size`` when
``enable_dp_attention``, else 1; :class:`saga.service.backend.api.ServerInfo`), read by the
pool before it announces the replica, so ``ReplicaAdded`` subscribes every rank, static
replicas included (their listed endpoints are rank 0's). Each rank has its own subscriber and
sequence (a gap or restart on one rank resets that rank only), all feeding the replica's one
:class:`~saga.service.kv_view.ReplicaKvView`, which holds the union of the ranks' caches.

Both kinds then run the same way: one :class:`KvEventSubscriber` task per replica and rank
(``zmq.asyncio`` SUB socket, subscribed to ``topic``) reads
``[topic, seq, payload]`` messages (format: :mod:`saga.kv_events`), maps them to SAGA's block
hashes (:class:`saga.service.kv_view.ReplicaKvView`) and hands the resulting ``ReplicaCache``
to the engine. Every scheduler process subscribes on its own, so every process's engine holds
the replica's exact cache, whichever process dispatched the calls that filled it.

Per message (each counted in ``saga_kv_events_total{outcome}``):

- not three frames, a bad sequence frame, or a payload that is not a ``KVEventBatch``:
  ``malformed``, logged (rate-limited), skipped. The sequence number is not advanced, so the
  next good batch shows the gap and the view is repaired as for any gap.
- ``seq`` is the next one: ``applied``.
- ``seq`` jumped ahead (batches lost: the publisher's high-water mark, a slow subscriber, a
  malformed batch): ``gap``. With a replay endpoint, the missing batches are asked for
  (``[b"", start_seq]`` to SGLang's ROUTER, answers until the end marker, at most
  ``replay_timeout_s``); when they all arrive they are applied in order (``replayed``, one per
  batch) and nothing is lost. Otherwise what the replica caches is unknown: the engine gets a
  ``ReplicaCache(cleared=True)`` (its view of the replica becomes empty, erring towards "not
  cached") and the view is rebuilt from the following events.
- ``seq`` went back: the publisher restarted (a restarted replica's cache is empty):
  ``restart``, the view is cleared the same way and the batch applied.
- the first message after connecting sets the sequence (a late joiner has no history:
  blocks stored before it are unknown until stored again).

Blocks whose parent is unknown are counted as ``unmapped`` (one per block). A batch the engine
refuses (the replica is not announced yet) is not lost: the view keeps it, and when the pool
announces the replica (``ReplicaAdded``) :meth:`KvEventSubscribers.on_replica_added` sends the
engine the whole view. Nothing a replica sends stops a subscriber; a crash of the loop itself
is logged and the socket reopened after a second. An IPv6 endpoint (``tcp://[fd00::7]:5557``)
turns on the socket's IPv6 option (ZMQ does not connect to one without it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

import zmq
import zmq.asyncio

from saga.kv_events import (
    END_SEQ,
    KvEventBatch,
    KvEventDecodeError,
    decode_batch,
    offset_endpoint,
    parse_seq,
    seq_bytes,
)
from saga.scheduler.api import ReplicaCache
from saga.service.config import KvEventSettings
from saga.service.kv_view import ApplyStats, ReplicaKvView
from saga.service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

CacheSink = Callable[[ReplicaCache], bool]
"""Feeds one event to the engine; False when the engine refused it (unknown replica)."""

LOG_EVERY_S = 10.0  # at most one malformed-message log line per subscriber per this many seconds


class KvEventSubscriber:
    """One replica's subscription (see the module docstring)."""

    def __init__(
        self,
        view: ReplicaKvView,
        endpoint: str,
        sink: CacheSink,
        metrics: ServiceMetrics,
        *,
        ctx: zmq.asyncio.Context,
        topic: str = "",
        replay_endpoint: str | None = None,
        replay_timeout_s: float = 1.0,
        rank: int = 0,
    ) -> None:
        self.view = view
        self.rank = rank
        self.endpoint = endpoint
        self.replay_endpoint = replay_endpoint
        self.replay_timeout_s = replay_timeout_s
        self._topic = topic.encode()
        self._sink = sink
        self._metrics = metrics
        self._ctx = ctx
        self.last_seq: int | None = None
        self.batches_applied = 0
        self._last_log = -LOG_EVERY_S

    @property
    def replica_id(self) -> str:
        """The replica (and the rank, with DP attention) in log lines."""
        rid = self.view.replica_id
        return f"{rid} rank {self.rank}" if self.rank else rid

    async def run(self) -> None:
        while True:
            sock = self._ctx.socket(zmq.SUB)
            sock.linger = 0
            sock.ipv6 = _is_ipv6(self.endpoint)
            try:
                sock.setsockopt(zmq.SUBSCRIBE, self._topic)
                sock.connect(self.endpoint)
                while True:
                    frames = await sock.recv_multipart()
                    await self.handle(frames)
            except asyncio.CancelledError:
                raise
            except Exception:  # the subscription must survive anything; reopen the socket
                log.exception("kv events %s: subscriber failed; reconnecting", self.replica_id)
                await asyncio.sleep(1.0)
            finally:
                sock.close(linger=0)

    async def handle(self, frames: list[bytes]) -> None:
        """One message from the PUB socket."""
        if len(frames) != 3:
            self._malformed(f"{len(frames)} frames, expected [topic, seq, payload]")
            return
        try:
            seq = parse_seq(frames[1])
            batch = decode_batch(frames[2])
        except KvEventDecodeError as exc:
            self._malformed(str(exc))
            return
        last = self.last_seq
        if last is not None and seq <= last:
            self._metrics.kv_event("restart")
            log.warning(
                "kv events %s: sequence went back (%d after %d): publisher restarted",
                self.replica_id,
                seq,
                last,
            )
            self._send(self.view.reset(self.rank))
        elif last is not None and seq > last + 1:
            self._metrics.kv_event("gap")
            if not await self._replay(last + 1, seq):
                log.warning(
                    "kv events %s: batches %d..%d lost; cache view cleared and rebuilt",
                    self.replica_id,
                    last + 1,
                    seq - 1,
                )
                self._send(self.view.reset(self.rank))
        self._apply(seq, batch, "applied")

    def _apply(self, seq: int, batch: KvEventBatch, outcome: str) -> bool:
        stats = ApplyStats()
        try:
            event = self.view.apply(batch, stats, self.rank)
        except KvEventDecodeError as exc:
            self._malformed(str(exc))
            self._send(self.view.reset(self.rank))
            self.last_seq = seq
            return False
        self.last_seq = seq
        self.batches_applied += 1
        self._metrics.kv_event(outcome)
        if stats.unmapped_blocks:
            self._metrics.kv_event("unmapped", stats.unmapped_blocks)
        if event.cleared or event.stored or event.removed:
            self._send(event)
        return True

    def _send(self, event: ReplicaCache) -> None:
        if not self._sink(event):
            log.debug("kv events %s: engine does not know the replica yet", self.replica_id)

    def _malformed(self, why: str) -> None:
        self._metrics.kv_event("malformed")
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.warning("kv events %s: malformed message skipped: %s", self.replica_id, why)

    async def _replay(self, start: int, stop: int) -> bool:
        """Fetch batches ``[start, stop)`` from the replay endpoint and apply them; False when
        there is none, it does not answer in time, or the batches do not arrive complete."""
        if self.replay_endpoint is None:
            return False
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.ipv6 = _is_ipv6(self.replay_endpoint)
        got: dict[int, bytes] = {}
        try:
            sock.connect(self.replay_endpoint)
            await sock.send_multipart([b"", seq_bytes(start)])
            async with asyncio.timeout(self.replay_timeout_s):
                while True:
                    frames = await sock.recv_multipart()
                    if len(frames) != 3:
                        return False
                    seq = parse_seq(frames[1])
                    if seq == END_SEQ:
                        break
                    if start <= seq < stop:
                        got[seq] = frames[2]
        except (TimeoutError, KvEventDecodeError, zmq.ZMQError) as exc:
            log.warning("kv events %s: replay failed: %s", self.replica_id, exc or type(exc).__name__)
            return False
        finally:
            sock.close(linger=0)
        if len(got) != stop - start:
            return False
        for seq in range(start, stop):
            try:
                batch = decode_batch(got[seq])
            except KvEventDecodeError as exc:
                self._malformed(str(exc))
                return False
            if not self._apply(seq, batch, "replayed"):
                return False
        return True


def _is_ipv6(endpoint: str) -> bool:
    return endpoint.startswith("tcp://[")


def discovered_endpoint(base_url: str, port: int) -> str | None:
    """``tcp://<host of base_url>:<port>`` (an IPv6 host bracketed); None without a host."""
    host = urlparse(base_url).hostname
    if not host:
        return None
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def rank_endpoint(endpoint: str, rank: int) -> str | None:
    """Where attention DP rank ``rank`` publishes when rank 0 publishes at ``endpoint``
    (SGLang's ``offset_endpoint_port``: a TCP port + rank, ``inproc://x`` → ``inproc://x_dp<r>``;
    SGLang refuses any other endpoint for a rank > 0). None when there is no such endpoint
    (beyond port 65535, or not TCP / inproc)."""
    if rank == 0:
        return endpoint
    ep = offset_endpoint(endpoint, rank)
    if ep is None or ep == endpoint:
        return None
    port = ep.rpartition(":")[2]
    if ep.startswith("tcp") and int(port) > 65535:
        return None
    return ep


@dataclass
class ReplicaSubscription:
    """One replica's view and its subscribers, one per attention DP rank (``ranks[r]`` reads
    rank ``r`` at rank 0's endpoints offset by ``r``, see :func:`rank_endpoint`)."""

    view: ReplicaKvView
    endpoint: str  # rank 0's PUB endpoint
    replay_endpoint: str | None  # rank 0's replay endpoint
    static: bool  # from spec.replicas.kv_events.endpoints (kept whatever the pool reports)
    ranks: list[KvEventSubscriber] = field(default_factory=list)
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)  # rank -> its task


class KvEventSubscribers:
    """The subscriptions of one scheduler process, one task per replica and attention DP rank
    (static or discovered, see the module docstring), driven by the pool's events through
    :meth:`on_replica_added` and :meth:`on_replica_removed` on the service's event loop."""

    def __init__(
        self, settings: KvEventSettings, block_size: int, sink: CacheSink, metrics: ServiceMetrics
    ) -> None:
        self._settings = settings
        self._block_size = block_size
        self._sink = sink
        self._metrics = metrics
        self._ctx = zmq.asyncio.Context()
        self._started = False
        self.replicas: dict[str, ReplicaSubscription] = {}
        self._retired: set[asyncio.Task[None]] = set()  # cancelled, not finished yet
        for rid, endpoint in settings.endpoints.items():
            self._add(rid, endpoint, settings.replay_endpoints.get(rid), static=True, ranks=1)

    def _add(
        self, replica_id: str, endpoint: str, replay_endpoint: str | None, *, static: bool, ranks: int
    ) -> None:
        view = ReplicaKvView(replica_id, self._block_size, self._settings.max_tracked_blocks)
        self.replicas[replica_id] = ReplicaSubscription(view, endpoint, replay_endpoint, static)
        self._grow(replica_id, ranks)

    def _grow(self, replica_id: str, ranks: int) -> None:
        """Subscribe ranks ``len(sub.ranks) .. ranks - 1`` of a replica."""
        s = self._settings
        sub = self.replicas[replica_id]
        for rank in range(len(sub.ranks), ranks):
            endpoint = rank_endpoint(sub.endpoint, rank)
            if endpoint is None:
                log.warning(
                    "kv events %s: rank %d has no endpoint (%s + %d); ranks from %d on are not read",
                    replica_id,
                    rank,
                    sub.endpoint,
                    rank,
                    rank,
                )
                return
            replay = rank_endpoint(sub.replay_endpoint, rank) if sub.replay_endpoint else None
            sub.ranks.append(
                KvEventSubscriber(
                    sub.view,
                    endpoint,
                    self._sink,
                    self._metrics,
                    ctx=self._ctx,
                    topic=s.topic,
                    replay_endpoint=replay,
                    replay_timeout_s=s.replay_timeout_s,
                    rank=rank,
                )
            )
            if self._started:
                self._run(sub, rank)

    def _run(self, sub: ReplicaSubscription, rank: int) -> None:
        name = f"saga-kv-events-{sub.view.replica_id}" + (f"-rank{rank}" if rank else "")
        sub.tasks[rank] = asyncio.create_task(sub.ranks[rank].run(), name=name)

    def start(self) -> None:
        self._started = True
        for sub in self.replicas.values():
            for rank in range(len(sub.ranks)):
                if rank not in sub.tasks:
                    self._run(sub, rank)

    def on_replica_added(
        self,
        replica_id: str,
        base_url: str | None = None,
        named_ports: tuple[tuple[str, int], ...] = (),
        dp_ranks: int = 1,
    ) -> None:
        """The engine (re)learned a replica, reached at ``base_url``, with ``dp_ranks``
        attention DP ranks (``/server_info``). A subscribed one: read ranks not read yet, and
        give the engine the whole view. Otherwise, with ``discovered_port``, subscribe to it
        at its host (a fresh, empty view): rank 0 on its ``discovered_port_name`` port when
        ``named_ports`` (its EndpointSlice's) has one, else on ``discovered_port``, with the
        replay endpoint on its ``discovered_replay_port_name`` port when it has one; rank r on
        those ports + r."""
        sub = self.replicas.get(replica_id)
        if sub is not None:
            self._grow(replica_id, dp_ranks)
            if any(r.last_seq is not None for r in sub.ranks):
                self._sink(sub.view.snapshot())
            return
        s = self._settings
        port = s.discovered_port
        ports = dict(named_ports)
        if port and s.discovered_port_name:
            port = ports.get(s.discovered_port_name, port)
        endpoint = discovered_endpoint(base_url, port) if base_url and port else None
        if endpoint is None:
            return
        replay_port = ports.get(s.discovered_replay_port_name) if s.discovered_replay_port_name else None
        replay = discovered_endpoint(base_url, replay_port) if base_url and replay_port else None
        log.info(
            "kv events %s: subscribing at %s%s%s (discovered replica)",
            replica_id,
            endpoint,
            f", replay at {replay}" if replay else ", no replay endpoint",
            f", {dp_ranks} DP ranks at the ports + rank" if dp_ranks > 1 else "",
        )
        self._add(replica_id, endpoint, replay, static=False, ranks=dp_ranks)

    def on_replica_removed(self, replica_id: str) -> None:
        """The pool removed a replica: a discovered one's tasks are cancelled (their sockets
        close as they end) and its view dropped; a static one keeps running."""
        sub = self.replicas.get(replica_id)
        if sub is None or sub.static:
            return
        del self.replicas[replica_id]
        for task in sub.tasks.values():
            task.cancel()
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
        log.info("kv events %s: unsubscribed (replica removed)", replica_id)

    async def stop(self) -> None:
        tasks = [t for sub in self.replicas.values() for t in sub.tasks.values()]
        tasks += self._retired
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for sub in self.replicas.values():
            sub.tasks.clear()
        self._retired.clear()
        self._started = False
        self._ctx.term()
