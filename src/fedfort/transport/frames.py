"""One signed message as a stream of frames: the envelope, then the payload in chunks.

gRPC refuses any single frame larger than the configured chunk size (plus framing), and
:func:`read_message` refuses a payload larger than the receiver's limit before buffering it,
so a peer cannot make the other side allocate more than it agreed to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from fedfort.errors import Refused
from fedfort.transport.proto import fedfort_pb2 as pb

__all__ = ["FRAME_OVERHEAD", "read_message", "serialize", "to_frames"]

#: bytes a frame may add to its chunk (field tags, an envelope, a binding with a certificate)
FRAME_OVERHEAD = 64 * 1024


def to_frames(envelope: pb.Envelope, payload: bytes, chunk_bytes: int) -> list[pb.Frame]:
    """The frames of one message: its envelope, then ``payload`` in chunks."""
    frames = [pb.Frame(envelope=envelope)]
    view = memoryview(payload)
    frames += [
        pb.Frame(chunk=bytes(view[i : i + chunk_bytes]))
        for i in range(0, len(payload), chunk_bytes)
    ]
    return frames


def read_message(
    frames: Iterable[pb.Frame],
    max_payload: int,
    reserve: Callable[[int], None] | None = None,
) -> tuple[pb.Envelope, bytes, list[pb.IdentityBinding]]:
    """Reassemble one message; raise :class:`Refused` for a malformed or oversized stream.

    ``reserve`` is called with the payload size the envelope declares before any chunk is read
    (the server's per-client byte budget, which raises :class:`Refused` when exhausted).
    Returns the envelope, the payload and any server-key frames that preceded the envelope.
    """
    it: Iterator[pb.Frame] = iter(frames)
    keys: list[pb.IdentityBinding] = []
    envelope: pb.Envelope | None = None
    for frame in it:
        part = frame.WhichOneof("part")
        if part == "server_key":
            keys.append(frame.server_key)
            if len(keys) > 4:
                raise Refused("malformed", "too many key frames")
            continue
        if part != "envelope":
            raise Refused("malformed", "a message must start with its envelope")
        envelope = frame.envelope
        break
    if envelope is None:
        raise Refused("malformed", "empty message: no envelope")
    size = envelope.payload_size
    if size > max_payload:
        raise Refused("oversized", f"payload of {size} bytes exceeds the limit of {max_payload}")
    if reserve is not None:
        reserve(size)
    parts: list[bytes] = []
    got = 0
    for frame in it:
        if frame.WhichOneof("part") != "chunk":
            raise Refused("malformed", "only payload chunks may follow an envelope")
        got += len(frame.chunk)
        if got > size:
            raise Refused("oversized", f"payload runs past its declared {size} bytes")
        parts.append(frame.chunk)
    if got != size:
        raise Refused("truncated", f"payload has {got} of its declared {size} bytes")
    return envelope, b"".join(parts), keys


def serialize(message: object) -> bytes:
    """A protobuf message's bytes (the serializer both ends hand to gRPC)."""
    assert hasattr(message, "SerializeToString")
    data: bytes = message.SerializeToString()
    return data
