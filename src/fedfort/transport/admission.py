"""Per-peer limits on the server's RPCs: concurrent streams, buffered bytes, and deadlines.

The gate (:meth:`fedfort.transport.gate.Gate.member`) decides *who* may speak before the server
reads any request byte; :class:`PeerLimits` bounds *how much* an admitted member may make the
server hold at once, so that one member (or a few) cannot take the shared thread pool or the
server's memory from the others:

* **streams** — at most ``max_streams`` RPCs of one client in flight at a time (its long poll,
  a heartbeat and an upload need three); the next is refused with ``stream_limit``.
* **bytes** — an upload reserves the payload size its envelope declares before its first chunk
  is read, and at most ``max_bytes`` may be reserved by one client at a time (``buffer_limit``);
  the frames themselves are bounded by gRPC's receive limit (one chunk plus framing).
* **deadlines** — while the server waits for a request frame, a watchdog cancels a stream that
  sent nothing for ``idle_s`` or is still sending after ``total_s`` (``stream_timeout``), so a
  slow or stalled upload cannot keep its thread; and every open stream's certificate is checked
  again (revocation, expiry) every ``recheck_s``, so a long poll of a client revoked or expired
  while it waits is cut off, not only its next call.

These are the defences RFC 9113 (HTTP/2), section 10.5 "Denial-of-Service Considerations",
asks of a server, applied per authenticated client rather than per connection (a client can
open many connections): limit the state a peer can commit, and time out peers that hold it
without making progress (the "Slowloris" slow-request attack, R. Hansen, 2009).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from fedfort.errors import Refused

__all__ = ["PeerLimits", "Stream"]

log = logging.getLogger("fedfort.transport")

T = TypeVar("T")


@dataclass(eq=False)
class Stream:
    """One admitted RPC of client ``peer`` (see :meth:`PeerLimits.open`)."""

    peer: str
    certificate: bytes | None
    cancel: Callable[[], object]
    opened: float
    last_frame: float
    reading: bool = True
    reserved: int = 0
    recheck_at: float = 0.0
    #: why the watchdog cancelled it (a reason code), if it did
    cut: Refused | None = None
    _limits: PeerLimits | None = field(default=None, repr=False)

    def frames(self, requests: Iterable[T]) -> Iterator[T]:
        """The request frames, each one resetting the idle deadline."""
        for frame in requests:
            self.last_frame = time.monotonic()
            yield frame

    def reserve(self, nbytes: int) -> None:
        """Reserve ``nbytes`` of the client's buffer budget for this upload (or refuse)."""
        assert self._limits is not None
        self._limits.reserve(self, nbytes)

    def done_reading(self) -> None:
        """The request is read: the idle and total deadlines no longer apply."""
        self.reading = False


class PeerLimits:
    """Bounds each client's concurrent RPCs and buffered upload bytes; cancels stalled streams.

    ``refuse(client, reason, detail)`` counts and logs a refusal (the gate's
    :meth:`~fedfort.transport.gate.Gate.refuse`); ``recheck(certificate)`` returns the refusal
    an open stream's certificate would get now, or ``None``
    (:meth:`~fedfort.transport.gate.Gate.recheck`). Thread-safe.
    """

    def __init__(
        self,
        *,
        max_streams: int,
        max_bytes: int,
        idle_s: float,
        total_s: float,
        refuse: Callable[[str, str, str], Refused],
        recheck: Callable[[bytes | None], Refused | None],
        recheck_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_streams, self.max_bytes = max_streams, max_bytes
        self.idle_s, self.total_s, self.recheck_s = idle_s, total_s, recheck_s
        self._refuse, self._recheck, self.clock = refuse, recheck, clock
        self._lock = threading.Lock()
        self._open: dict[str, list[Stream]] = {}
        self._reserved: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- slots ------------------------------------------------------------------------------

    def open(self, peer: str, certificate: bytes | None, cancel: Callable[[], object]) -> Stream:
        """Take one of ``peer``'s stream slots, or raise ``Refused("stream_limit")``."""
        now = self.clock()
        with self._lock:
            held = self._open.setdefault(peer, [])
            if len(held) >= self.max_streams:
                full = True
            else:
                full = False
                stream = Stream(peer, certificate, cancel, now, now, _limits=self)
                stream.recheck_at = now + self.recheck_s
                held.append(stream)
        if full:
            raise self._refuse(
                peer,
                "stream_limit",
                f"{peer!r} already has {self.max_streams} calls open; finish or cancel one",
            )
        return stream

    def close(self, stream: Stream) -> None:
        """Give the slot and the stream's reserved bytes back."""
        with self._lock:
            held = self._open.get(stream.peer, [])
            if stream in held:
                held.remove(stream)
            if not held:
                self._open.pop(stream.peer, None)
            self._reserved[stream.peer] -= stream.reserved
            if self._reserved[stream.peer] <= 0:
                del self._reserved[stream.peer]
            stream.reserved = 0

    def reserve(self, stream: Stream, nbytes: int) -> None:
        with self._lock:
            total = self._reserved[stream.peer] + nbytes
            ok = total <= self.max_bytes
            if ok:
                self._reserved[stream.peer] = total
                stream.reserved += nbytes
        if not ok:
            raise self._refuse(
                stream.peer,
                "buffer_limit",
                f"{stream.peer!r} would have {total} upload bytes in flight; the limit is "
                f"{self.max_bytes}: send one message at a time",
            )

    def held(self, peer: str) -> int:
        """How many streams ``peer`` holds now."""
        with self._lock:
            return len(self._open.get(peer, []))

    def reserved(self, peer: str) -> int:
        """How many upload bytes ``peer`` has reserved now."""
        with self._lock:
            return self._reserved[peer]

    # -- the watchdog -----------------------------------------------------------------------

    def sweep(self) -> list[Stream]:
        """Cancel every stream past a deadline or whose certificate no longer holds; return them."""
        now = self.clock()
        due: list[tuple[Stream, str, str]] = []
        recheck: list[Stream] = []
        with self._lock:
            for streams in self._open.values():
                for s in streams:
                    if s.cut is not None:
                        continue
                    if s.reading and now - s.last_frame > self.idle_s:
                        due.append((s, "stream_timeout", f"no request frame for {self.idle_s}s"))
                    elif s.reading and now - s.opened > self.total_s:
                        due.append(
                            (s, "stream_timeout", f"request still open after {self.total_s}s")
                        )
                    elif now >= s.recheck_at:
                        s.recheck_at = now + self.recheck_s
                        recheck.append(s)
        cut = []
        for s, reason, detail in due:
            s.cut = self._refuse(s.peer, reason, detail)
            cut.append(s)
        for s in recheck:
            refused = self._recheck(s.certificate)
            if refused is not None:
                s.cut = refused
                cut.append(s)
        for s in cut:
            s.cancel()
        return cut

    def start(self, period_s: float = 0.25) -> None:
        """Run :meth:`sweep` every ``period_s`` in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(period_s):
                try:
                    self.sweep()
                except Exception:  # the watchdog must outlive any one bad stream
                    log.exception("stream watchdog failed a sweep")

        self._thread = threading.Thread(target=loop, name="fedfort-stream-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
