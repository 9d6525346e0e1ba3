"""The RPCs of ``fedfort.v1.Federation``: admit the peer, then read its request.

:class:`FederationService` only moves bytes between the network and the
:class:`~fedfort.transport.service.NetworkExecutor`'s mailboxes: authentication, freshness and
decoding are the :class:`~fedfort.transport.gate.Gate`'s, per-client limits are
:class:`~fedfort.transport.admission.PeerLimits`', learning is the round engine's.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

import grpc

from fedfort.errors import Refused
from fedfort.transport.admission import PeerLimits, Stream
from fedfort.transport.frames import read_message, serialize
from fedfort.transport.proto import fedfort_pb2 as pb

if TYPE_CHECKING:
    from fedfort.transport.service import NetworkExecutor

__all__ = ["FederationService"]


def _peer_certificate(context: grpc.ServicerContext) -> bytes | None:
    certs = context.auth_context().get("x509_pem_cert")
    return bytes(certs[0]) if certs else None


#: refusals a well-behaved client may retry after backing off; the others are final
_RETRYABLE = frozenset({"rate_limited", "stream_limit", "buffer_limit"})

T = TypeVar("T")


def _status(exc: Refused) -> grpc.StatusCode:
    if exc.reason in _RETRYABLE:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.PERMISSION_DENIED


def _refusal(exc: Refused) -> pb.Verdict:
    """A refusal as the client sees it: the reason code and nothing else.

    The detail (rounds, nonces, sizes, other clients' names) goes to the server's log and audit
    trail only, so a verdict carries no server state and no timing beyond its reason.
    """
    return pb.Verdict(accepted=False, reason=exc.reason)


class FederationService:
    """The ``fedfort.v1.Federation`` RPCs, as gRPC generic handlers.

    The server does no work for a peer it has not authenticated. Every RPC is registered with a
    streaming request (on the wire a unary call is a stream of one message), so gRPC hands the
    call to its handler before reading any request byte; the handler first admits the peer on
    its TLS certificate alone (:meth:`~fedfort.transport.gate.Gate.member`: this CA, valid now,
    not revoked, on the roster, within its rate) and takes one of the client's stream slots
    (:class:`~fedfort.transport.admission.PeerLimits`), and only then reads the request. A
    refused peer holds a worker thread for the length of one certificate check and has nothing
    of its request buffered beyond what HTTP/2 flow control lets it send ahead.

    ``limits`` defaults to the ``[network]`` defaults; its deadlines and certificate re-checks
    run once :meth:`PeerLimits.start` is called (:meth:`NetworkServer.start` does).
    """

    def __init__(
        self,
        executor: NetworkExecutor,
        *,
        max_payload: int,
        poll_timeout_s: float,
        limits: PeerLimits | None = None,
    ) -> None:
        self.executor = executor
        self.gate = executor.gate
        self.max_payload = max_payload
        self.poll_timeout_s = poll_timeout_s
        self.limits = limits or PeerLimits(
            max_streams=8,
            max_bytes=2 * max_payload,
            idle_s=10.0,
            total_s=300.0,
            refuse=self.gate.refuse,
            recheck=self.gate.recheck,
        )

    def handler(self) -> grpc.GenericRpcHandler:
        ser = serialize
        return grpc.method_handlers_generic_handler(
            "fedfort.v1.Federation",
            {
                "Enroll": grpc.stream_unary_rpc_method_handler(
                    self.enroll, pb.EnrollRequest.FromString, ser
                ),
                "Poll": grpc.stream_stream_rpc_method_handler(
                    self.poll, pb.PollRequest.FromString, ser
                ),
                "Submit": grpc.stream_unary_rpc_method_handler(
                    self.submit, pb.Frame.FromString, ser
                ),
                "Heartbeat": grpc.stream_unary_rpc_method_handler(
                    self.heartbeat, pb.HeartbeatRequest.FromString, ser
                ),
            },
        )

    # -- admission, before any request byte is read -----------------------------------------

    def _admit(self, context: grpc.ServicerContext) -> Stream:
        """Admit the peer on its certificate and take one of its stream slots (or raise)."""
        certificate = _peer_certificate(context)
        client = self.gate.member(certificate)
        return self.limits.open(client, certificate, context.cancel)

    @contextlib.contextmanager
    def _call(self, context: grpc.ServicerContext) -> Iterator[Stream]:
        """An admitted call: aborted with the reason code if the peer is refused."""
        try:
            stream = self._admit(context)
        except Refused as exc:  # the reason code only: the detail stays in the server's log
            context.abort(_status(exc), exc.reason)
            raise  # unreachable: abort raises
        try:
            yield stream
        finally:
            self.limits.close(stream)

    def _one(self, requests: Iterator[T], stream: Stream, context: grpc.ServicerContext) -> T:
        """The request of a unary call, read once the peer is admitted."""
        for request in stream.frames(requests):
            stream.done_reading()
            return request
        refused = self.gate.refuse(stream.peer, "malformed", "the call carried no request")
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, refused.reason)
        raise refused  # unreachable: abort raises

    def _claimed(self, stream: Stream, claimed: str, context: grpc.ServicerContext) -> str:
        try:
            return self.gate.peer(stream.certificate, claimed, rate=False)
        except Refused as exc:
            context.abort(_status(exc), exc.reason)
            raise  # unreachable: abort raises

    # -- the RPCs ---------------------------------------------------------------------------

    def enroll(
        self, requests: Iterator[pb.EnrollRequest], context: grpc.ServicerContext
    ) -> pb.EnrollReply:
        certificate = _peer_certificate(context)
        try:
            stream = self._admit(context)
        except Refused as exc:
            if exc.reason in _RETRYABLE:
                context.abort(_status(exc), exc.reason)
            return pb.EnrollReply(verdict=_refusal(exc))
        try:
            request = self._one(requests, stream, context)
            try:
                declared = request.declaration if request.HasField("declaration") else None
                self.gate.enroll(certificate, request.identity, declaration=declared, rate=False)
            except Refused as exc:
                return pb.EnrollReply(verdict=_refusal(exc))
        finally:
            self.limits.close(stream)
        self.executor.seen(request.identity.subject)
        _, _, binding = self.executor.keys.current()
        return pb.EnrollReply(
            verdict=pb.Verdict(accepted=True), server=binding, round=self.gate.round
        )

    def poll(
        self, requests: Iterator[pb.PollRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.Frame]:
        with self._call(context) as stream:
            request = self._one(requests, stream, context)
            cid = self._claimed(stream, request.client_id, context)
            if self.gate.key_of(cid) is None:
                self.gate.refuse(cid, "unknown_client", "poll before enrolling")
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "unknown_client: enroll first")
            _, version, binding = self.executor.keys.current()
            active = threading.Event()
            active.set()
            context.add_callback(active.clear)
            frames = self.executor.next_item(cid, self.poll_timeout_s, active)
            if request.server_key_version < version:
                yield pb.Frame(server_key=binding)
            yield from frames

    def submit(self, requests: Iterator[pb.Frame], context: grpc.ServicerContext) -> pb.Verdict:
        with self._call(context) as stream:
            try:
                envelope, payload, _ = read_message(
                    stream.frames(requests), self.max_payload, stream.reserve
                )
            except Refused as exc:
                if exc.reason in _RETRYABLE:  # counted where it was raised
                    context.abort(_status(exc), exc.reason)
                self.gate.refuse(stream.peer, exc.reason, exc.detail)
                return _refusal(exc)
            stream.done_reading()
            try:
                admitted = self.gate.admit(stream.certificate, envelope, payload, rate=False)
            except Refused as exc:
                return _refusal(exc)
        if not self.executor.deliver(admitted):
            return pb.Verdict(accepted=False, reason="late")
        return pb.Verdict(accepted=True)

    def heartbeat(
        self, requests: Iterator[pb.HeartbeatRequest], context: grpc.ServicerContext
    ) -> pb.HeartbeatReply:
        with self._call(context) as stream:
            request = self._one(requests, stream, context)
            cid = self._claimed(stream, request.client_id, context)
        self.executor.seen(cid)
        return pb.HeartbeatReply(round=self.gate.round, finished=self.executor.finished)
