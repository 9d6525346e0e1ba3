"""The wire codec: frozen message dataclasses <-> protobuf ``Value`` trees, strict on decode.

A round's messages (:class:`~fedfort.messages.TrainTask`, :class:`~fedfort.messages.ClientUpdate`,
the secure-aggregation messages, ...) are frozen dataclasses. :func:`dumps` writes one as the
bytes of a ``fedfort.v1.Value`` (see ``fedfort/transport/proto/fedfort.proto``) and
:func:`loads` reads such bytes back.

Why a whitelist and annotation checks. Bytes from a peer must never choose what code runs on
the receiver: there is no pickle, no import by name and no arbitrary class. A ``Record`` names
its type, and only the classes in :data:`RECORD_TYPES` (looked up by ``__name__`` in a fixed
table) can be built. Each field is decoded against the class's resolved annotation: ``int``,
``float``, ``str``, ``bytes``, ``bool``, ``np.ndarray``, ``NDArray[T]`` (then only dtypes of
``T``), ``X | None``, ``tuple[T, ...]``, ``tuple[A, B]``, ``list[T]``, ``dict[str, T]``,
``Literal[...]``, nested whitelisted dataclasses and unions of those. So a peer cannot put a
string where the receiver expects an int, a record of another type where it expects a
:class:`~fedfort.messages.LocalTrainingConfig`, or an out-of-set value in a ``Literal``
field; and the class's own ``__post_init__`` checks run as well.

What :func:`loads` rejects, always with :class:`~fedfort.errors.MalformedMessage` and never
with any other exception: input longer than ``max_bytes``; bytes protobuf cannot parse; a
non-canonical encoding (unknown fields, several members of a ``oneof``, unpacked repeated
fields, padded varints: anything but what :func:`dumps` writes); a top-level value that is not
a whitelisted record, or not an instance of ``expected``; unknown record types; missing, extra
or duplicate fields (fields with defaults must be sent too); values whose kind does not match
the annotation (``bool`` is not an ``int``; an ``int`` is accepted, as a float, where a
``float`` is declared); arrays of a dtype outside :data:`ARRAY_DTYPES` or not the
annotation's, whose byte length is not dtype x shape, or whose ``|b1`` bytes are not 0/1;
nesting deeper than :data:`MAX_DEPTH` values; more than ``max_bytes`` array elements in one
message; a tuple, list or map of more than :data:`MAX_ENTRIES` entries; a string (or map key)
longer than :data:`MAX_TEXT_BYTES` bytes of UTF-8; and whatever the dataclass's constructor
refuses. Sizes are checked before anything is allocated from them.

What it does not check: meaning. Floats are carried faithfully, NaN and infinities included
(the server's verification stage rejects non-finite updates and metrics with its own reason
codes, ``non_finite`` and ``non_finite_metric``; see :mod:`fedfort.server.verify`), and a
vector's length and dtype (the messages annotate plain ``np.ndarray``) are for the receiver to
check against the model. Nor does it authenticate: the caller checks the sender's signature
over the payload bytes *before* decoding them, so only authenticated peers reach this parser.

Encoding is deterministic (same message, same bytes): fields in declaration order, map entries
sorted by key, arrays little-endian, an ``int`` in a ``float`` field written as a float, and
protobuf's deterministic serialisation. Encoding an object the codec does not support raises
:class:`TypeError`: that is a bug on the sending side, not a peer's fault.

The CKKS message types live in :mod:`fedfort.secagg.ckks`, which imports TenSEAL; they are
whitelisted by name and their module is imported on first use (decoding such a record, or
reading :data:`RECORD_TYPES`), so importing this codec does not load TenSEAL.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
import types
import typing
from collections.abc import Mapping
from typing import Any, Final, Literal, get_args, get_origin, get_type_hints

import numpy as np

from fedfort.errors import MalformedMessage
from fedfort.messages import (
    ClientPrivacy,
    ClientUpdate,
    DpSgdSettings,
    EvaluateTask,
    EvaluationReport,
    FeatureTransform,
    LocalTrainingConfig,
    SecureAggregation,
    StatisticsReply,
    StatisticsRequest,
    TrainTask,
)
from fedfort.secagg import messages as _secagg_messages
from fedfort.secagg.params import MaskingParams
from fedfort.transport.proto import fedfort_pb2 as pb

__all__ = [
    "ARRAY_DTYPES",
    "DEFAULT_MAX_BYTES",
    "MAX_DEPTH",
    "MAX_ENTRIES",
    "MAX_TEXT_BYTES",
    "RECORD_TYPES",
    "dumps",
    "from_value",
    "loads",
    "to_value",
]

DEFAULT_MAX_BYTES: Final = 256 * 2**20
"""Default cap on an encoded message, and on the array elements it may hold."""
MAX_DEPTH: Final = 32
"""Deepest nesting of values (the top-level value is at depth 1)."""
MAX_ENTRIES: Final = 1_000_000
"""Most entries of one tuple, list or map."""
MAX_TEXT_BYTES: Final = 2**20
"""Longest string (or map key), in bytes of UTF-8."""
MAX_NDIM: Final = 32
"""Most dimensions of an array."""

ARRAY_DTYPES: Final = frozenset({"|b1", "|u1", "<u4", "<u8", "<i4", "<i8", "<f4", "<f8"})
"""The array dtypes on the wire, as little-endian NumPy dtype strings.

``<f4`` carries model vectors (weights, deltas, control variates), ``<u4``/``<u8`` the masked
secure-aggregation vectors (:func:`~fedfort.crypto.primitives.mask_dtype`), and the others plain
numeric data. Object, string, structured, complex, half-precision and datetime dtypes are never
accepted. Arrays decode to writable, C-contiguous, native-byte-order copies of this dtype.
"""

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

# ------------------------------------------------------------------------------- whitelist

_EAGER_TYPES: Final[dict[str, type]] = {
    cls.__name__: cls
    for cls in (
        TrainTask,
        ClientUpdate,
        EvaluateTask,
        EvaluationReport,
        LocalTrainingConfig,
        DpSgdSettings,
        ClientPrivacy,
        SecureAggregation,
        FeatureTransform,
        StatisticsRequest,
        StatisticsReply,
        MaskingParams,
        *(
            getattr(_secagg_messages, name)
            for name in _secagg_messages.__all__
            if isinstance(getattr(_secagg_messages, name), type)
        ),
    )
}

_CKKS_MODULE: Final = "fedfort.secagg.ckks"
_CKKS_TYPES: Final = (
    "CkksParams",
    "KeyRequest",
    "PublicKeyBundle",
    "EncryptRequest",
    "EncryptedInput",
    "DecryptRequest",
    "DecryptedSum",
)

_all_types: dict[str, type] | None = None
_lock = threading.RLock()

RECORD_TYPES: dict[str, type]
"""The whitelist: every record type the codec writes and reads, by class ``__name__``.

Built on first access (it imports :mod:`fedfort.secagg.ckks`, hence TenSEAL). It is a copy:
changing it does not change what the codec accepts.
"""


def _record_types() -> dict[str, type]:
    global _all_types
    if _all_types is None:
        module = importlib.import_module(_CKKS_MODULE)
        found = dict(_EAGER_TYPES)
        for name in _CKKS_TYPES:
            found[name] = getattr(module, name)
        _all_types = found
    return _all_types


def _lookup(name: str) -> type | None:
    """The whitelisted class called ``name``, or ``None``."""
    cls = _EAGER_TYPES.get(name)
    if cls is None and name in _CKKS_TYPES:
        cls = _record_types()[name]
    return cls


def __getattr__(name: str) -> object:
    if name == "RECORD_TYPES":
        copy = dict(_record_types())
        globals()["RECORD_TYPES"] = copy
        return copy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_record_class(cls: type) -> bool:
    return dataclasses.is_dataclass(cls) and _lookup(cls.__name__) is cls


# --------------------------------------------------------------------------------- encoding


def dumps(message: object) -> bytes:
    """The bytes of one ``Value`` holding ``message``, an instance of a whitelisted record type.

    Deterministic: equal messages give equal bytes. Raises :class:`TypeError` for anything the
    codec cannot write (an unlisted class, an integer outside int64, an unsupported dtype,
    nesting deeper than :data:`MAX_DEPTH`).
    """
    if not _is_record_class(type(message)):
        raise TypeError(
            f"dumps() writes whitelisted messages only, not {type(message).__name__} "
            "(see fedfort.transport.codec.RECORD_TYPES)"
        )
    return to_value(message).SerializeToString(deterministic=True)


def to_value(obj: object) -> pb.Value:
    """``obj`` as a ``Value`` tree (any supported value, not only a record)."""
    value = pb.Value()
    _encode(obj, value, 1)
    return value


def _encode(obj: object, out: pb.Value, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise TypeError(f"cannot encode values nested deeper than {MAX_DEPTH}")
    if obj is None:
        out.none = True
    elif isinstance(obj, bool | np.bool_):
        out.boolean = bool(obj)
    elif isinstance(obj, int | np.integer):
        number = int(obj)
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise TypeError(f"cannot encode the integer {number}: outside int64")
        out.integer = number
    elif isinstance(obj, float | np.floating):
        out.real = float(obj)
    elif isinstance(obj, str):
        _check_encodable(obj)
        out.text = obj
    elif isinstance(obj, bytes):
        out.blob = bytes(obj)
    elif isinstance(obj, np.ndarray):
        _encode_array(obj, out.array)
    elif isinstance(obj, tuple | list):
        items = out.items
        items.SetInParent()
        for item in obj:
            _encode(item, items.items.add(), depth + 1)
    elif isinstance(obj, dict):
        mapping = out.mapping
        mapping.SetInParent()
        if not all(isinstance(key, str) for key in obj):
            raise TypeError("cannot encode a dict whose keys are not all str")
        for key in sorted(obj):
            _check_encodable(key)
            entry = mapping.entries.add()
            entry.name = key
            _encode(obj[key], entry.value, depth + 1)
    elif _is_record_class(type(obj)):
        record = out.record
        record.type = type(obj).__name__
        for name, spec in _schema(type(obj)).fields:
            field = record.fields.add()
            field.name = name
            item = getattr(obj, name)
            if isinstance(spec, _FloatSpec) and isinstance(item, int | np.integer):
                item = float(item)  # what the receiver builds: keeps dumps(loads(b)) == b
            _encode(item, field.value, depth + 1)
    else:
        raise TypeError(f"the wire codec cannot encode a {type(obj).__name__}")


def _check_encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TypeError("cannot encode a string that is not valid Unicode") from exc


def _encode_array(array: np.ndarray, out: pb.NdArray) -> None:
    little = array.dtype.newbyteorder("<")
    code = little.str
    if code not in ARRAY_DTYPES:
        raise TypeError(
            f"cannot encode an array of dtype {array.dtype}; allowed: {sorted(ARRAY_DTYPES)}"
        )
    out.SetInParent()
    out.dtype = code
    out.shape.extend(int(n) for n in array.shape)
    out.data = array.astype(little, copy=False).tobytes(order="C")


# --------------------------------------------------------------------------------- decoding


def loads(
    data: bytes,
    expected: type | tuple[type, ...] | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> object:
    """The message encoded in ``data`` (as written by :func:`dumps`).

    ``expected`` restricts the top-level record type. It is checked before any field is decoded
    or any constructor runs, so a receiver should always pass the types it can accept there:
    a peer then cannot make it build (and run the ``__post_init__`` checks of) other messages.
    ``max_bytes`` caps ``len(data)`` and the number of array elements in the message. Raises
    :class:`~fedfort.errors.MalformedMessage`, and nothing else, for any input it does not
    accept (see the module docstring); :class:`TypeError` only if ``expected`` is not a type.
    """
    wanted = _check_expected(expected)
    try:
        if not isinstance(data, bytes):
            raise MalformedMessage(f"expected bytes, got {type(data).__name__}")
        if len(data) > max_bytes:
            raise MalformedMessage(f"message of {len(data)} bytes exceeds the cap of {max_bytes}")
        value = pb.Value()
        value.ParseFromString(data)
        value.DiscardUnknownFields()
        if value.SerializeToString(deterministic=True) != data:
            raise MalformedMessage(
                "not a canonical encoding (unknown fields, repeated or padded fields)"
            )
        if value.WhichOneof("kind") != "record":
            raise MalformedMessage("the top-level value is not a record")
        return _decode_top(value, wanted, max_bytes)
    except MalformedMessage:
        raise
    except Exception as exc:  # protobuf, NumPy, constructors, recursion: all the peer's fault
        raise MalformedMessage(f"undecodable message: {_brief(exc)}") from exc


def from_value(
    value: pb.Value,
    expected: type | tuple[type, ...] | None = None,
    *,
    max_elements: int = DEFAULT_MAX_BYTES,
) -> object:
    """Rebuild the object a ``Value`` tree holds (any supported value, not only a record).

    Checked as strictly as :func:`loads` (unknown fields included), with ``max_elements``
    array elements at most; if ``expected`` is given the result must be an instance of it.
    Raises :class:`~fedfort.errors.MalformedMessage` and nothing else for a bad tree.
    """
    wanted = _check_expected(expected)
    try:
        if not isinstance(value, pb.Value):
            raise MalformedMessage(f"expected a Value, got {type(value).__name__}")
        stripped = pb.Value()
        stripped.CopyFrom(value)
        stripped.DiscardUnknownFields()
        if stripped.ByteSize() != value.ByteSize():
            raise MalformedMessage("the value tree carries unknown fields")
        return _decode_top(stripped, wanted, max_elements)
    except MalformedMessage:
        raise
    except Exception as exc:
        raise MalformedMessage(f"undecodable value: {_brief(exc)}") from exc


def _check_expected(expected: type | tuple[type, ...] | None) -> tuple[type, ...] | None:
    if expected is None:
        return None
    wanted = expected if isinstance(expected, tuple) else (expected,)
    if not wanted or not all(isinstance(t, type) for t in wanted):
        raise TypeError(f"expected must be a type or a tuple of types, got {expected!r}")
    return wanted


def _decode_top(value: pb.Value, wanted: tuple[type, ...] | None, max_elements: int) -> object:
    if wanted is not None:
        if value.WhichOneof("kind") != "record":
            raise MalformedMessage(f"expected {_names(wanted)}, got a {_kind_name(value)}")
        cls = _lookup(value.record.type)
        if cls is None:
            raise MalformedMessage(f"unknown record type {_show(value.record.type)}")
        if not issubclass(cls, wanted):
            raise MalformedMessage(f"expected {_names(wanted)}, got a {cls.__name__}")
    obj = _decode(_ANY, value, _Context(max_elements), 1)
    if wanted is not None and not isinstance(obj, wanted):  # pragma: no cover - checked above
        raise MalformedMessage(f"expected {_names(wanted)}, got a {type(obj).__name__}")
    return obj


def _names(types_: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types_)


def _show(text: str, limit: int = 40) -> str:
    """A peer's string, shortened for an error message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _brief(exc: BaseException, limit: int = 300) -> str:
    """An exception's message, shortened (it may quote whatever the peer sent)."""
    text = str(exc) if isinstance(exc, MalformedMessage) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "..."


def _kind_name(value: pb.Value) -> str:
    kind = value.WhichOneof("kind")
    if kind == "record":
        return f"{_show(value.record.type)} record"
    return str(kind)


class _Context:
    """Per-message decoding budget."""

    __slots__ = ("elements_left",)

    def __init__(self, max_elements: int) -> None:
        self.elements_left = max_elements


def _decode(spec: _Spec, value: pb.Value, ctx: _Context, depth: int) -> object:
    if depth > MAX_DEPTH:
        raise MalformedMessage(f"values nested deeper than {MAX_DEPTH}")
    kind = value.WhichOneof("kind")
    if kind is None:
        raise MalformedMessage("a value without a kind")
    return spec.decode(value, kind, ctx, depth)


# -- the decoders of the plain kinds, shared by the specs


def _text(text: str) -> str:
    # len(text) <= UTF-8 length <= 4 * len(text): encode only when the count is ambiguous
    if len(text) > MAX_TEXT_BYTES or (
        len(text) > MAX_TEXT_BYTES // 4 and len(text.encode("utf-8")) > MAX_TEXT_BYTES
    ):
        raise MalformedMessage(f"a string longer than {MAX_TEXT_BYTES} bytes")
    return text


def _array(message: pb.NdArray, ctx: _Context, family: type[np.generic] = np.generic) -> np.ndarray:
    code = message.dtype
    if code not in ARRAY_DTYPES:
        raise MalformedMessage(f"array dtype {_show(code)} is not allowed")
    dtype = np.dtype(code)
    if not np.issubdtype(dtype, family):
        raise MalformedMessage(f"expected an array of {family.__name__}, got {code}")
    shape = tuple(message.shape)
    if len(shape) > MAX_NDIM:
        raise MalformedMessage(f"an array of more than {MAX_NDIM} dimensions")
    count = 1
    bound = 1  # the product of the dimensions with zeros counted as ones: what NumPy checks
    for n in shape:
        bound *= max(n, 1)
        count *= n
        if bound > ctx.elements_left:
            raise MalformedMessage("the message holds too many array elements")
    data = message.data
    if count * dtype.itemsize != len(data):
        raise MalformedMessage(
            f"array of shape {shape} and dtype {code} needs {count * dtype.itemsize} bytes, "
            f"got {len(data)}"
        )
    ctx.elements_left -= count
    if code == "|b1" and data and np.frombuffer(data, dtype=np.uint8).max() > 1:
        raise MalformedMessage("a boolean array holds bytes other than 0 and 1")
    raw = np.frombuffer(data, dtype=dtype).reshape(shape)
    return raw.astype(dtype.newbyteorder("="), order="C", copy=True)


def _entries(count: int) -> None:
    if count > MAX_ENTRIES:
        raise MalformedMessage(f"a collection of {count} entries (at most {MAX_ENTRIES})")


def _plain(value: pb.Value, kind: str) -> object:
    """The Python value of a scalar kind."""
    if kind == "none":
        return None
    if kind == "boolean":
        return value.boolean
    if kind == "integer":
        return value.integer
    if kind == "real":
        return value.real
    if kind == "text":
        return _text(value.text)
    if kind == "blob":
        return value.blob
    raise MalformedMessage(f"unexpected {kind}")  # pragma: no cover - callers filter kinds


# -- specs: what an annotation accepts, compiled once per class


class _Spec:
    """The decoder of one annotation. ``kinds`` are the ``Value`` kinds it accepts."""

    kinds: frozenset[str] = frozenset()
    label: str = "?"

    def decode(self, value: pb.Value, kind: str, ctx: _Context, depth: int) -> object:
        if kind not in self.kinds:
            raise MalformedMessage(f"expected {self.label}, got a {_kind_name(value)}")
        return self._decode(value, kind, ctx, depth)

    def _decode(self, value: pb.Value, kind: str, ctx: _Context, depth: int) -> object:
        raise NotImplementedError


class _ScalarSpec(_Spec):
    def __init__(self, label: str, kind: str) -> None:
        self.label = label
        self.kinds = frozenset({kind})

    def _decode(self, value: pb.Value, kind: str, ctx: _Context, depth: int) -> object:
        return _plain(value, kind)


class _FloatSpec(_Spec):
    label = "float"
    kinds = frozenset({"real", "integer"})

    def _decode(self, value: pb.Value, kind: str, ctx: _Context, depth: int) -> object:
        return value.real if kind == "real" else float(value.integer)


class _ArraySpec(_Spec):
    """``np.ndarray``, or ``np.ndarray[shape, np.dtype[T]]`` (``NDArray[T]``): dtypes of ``T``."""

    kinds = frozenset({"array"})

    def __init__(self, family: type[np.generic] = np.generic) -> None:
        self.family = family
        self.label = "array" if family is np.generic else f"array of {family.__name__}"

    def _decode(self, value: pb.Value, kind: str, ctx: _Context, depth: int) -> object:
        return _array(value.array, ctx, self.family)


class _SequenceSpec(_Spec):
    """``tuple[T, ...]``, ``tuple[A, B]`` or ``list[T]``."""

    kinds = frozenset({"items"})

    def __init__(
        self, item: _Spec | None, fixed: tuple[_Spec, ...] | None, as_list: bool = False
    ) -> None:
        self.item = item
        self.fixed = fixed
        self.as_list = as_list
        if fixed is not None:
            self.label = f"tuple of {len(fixed)}"
        else:
            self.label = "list" if as_list else "tuple"

    def _decode(self, value: pb.Value, kind: str, ctx: _Context, depth: int) -> object:
        items = value.items.items
        _entries(len(items))
        if self.fixed is not None:
            if len(items) != len(self.fixed):
                raise MalformedMessage(f"expected {self.label} items, got {len(items)}")
            out = [_decode(s, v, ctx, depth + 1) for s, v in zip(self.fixed, items, strict=True)]
        else:
            item = self.item
            assert item is not None
            out = [_decode(item, v, ctx, depth + 1) for v in items]
        return out if self.as_list else tuple(out)


class _MappingSpec(_Spec):
    """``dict[str, T]``."""

    label = "map"
    kinds = frozenset({"mapping"})

    def __init__(self, item: _Spec) -> None:
        self.item = item

    def _decode(self, value: pb.Value, kind: str, ctx: _Context, depth: int) -> object:
        entries = value.mapping.entries
        _entries(len(entries))
        out: dict[str, object] = {}
        for entry in entries:
            key = _text(entry.name)
            if key in out:
                raise MalformedMessage(f"duplicate map key {_show(key)}")
            if not entry.HasField("value"):
                raise MalformedMessage(f"map key {_show(key)} has no value")
            out[key] = _decode(self.item, entry.value, ctx, depth + 1)
        return out


_LITERAL_KINDS: Final[dict[type, str]] = {
    bool: "boolean",
    int: "integer",
    str: "text",
    bytes: "blob",
    type(None): "none",
}


class _LiteralSpec(_Spec):
    def __init__(self, values: tuple[object, ...]) -> None:
        for v in values:
            if type(v) not in _LITERAL_KINDS:
                raise TypeError(f"the codec cannot express Literal values like {v!r}")
        self.values = values
        self.kinds = frozenset(_LITERAL_KINDS[type(v)] for v in values)
        self.label = "one of " + ", ".join(repr(v) for v in values)

    def _decode(self, value: pb.Value, kind: str, ctx: _Context, depth: int) -> object:
        got = _plain(value, kind)
        # compare by type too: True == 1, but a bool is not an allowed int
        if not any(type(got) is type(v) and got == v for v in self.values):
            shown = _show(got) if isinstance(got, str) else repr(got)[:40]
            raise MalformedMessage(f"expected {self.label}, got {shown}")
        return got


class _RecordSpec(_Spec):
    """A nested whitelisted dataclass: exactly that record type."""

    kinds = frozenset({"record"})

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.label = f"a {cls.__name__} record"

    def _decode(self, value: pb.Value, kind: str, ctx: _Context, depth: int) -> object:
        if value.record.type != self.cls.__name__:
            raise MalformedMessage(f"expected {self.label}, got a {_kind_name(value)}")
        return _decode_record(self.cls, value.record, ctx, depth)


class _AnySpec(_Spec):
    """Any value: the top level, and ``Any``/``object`` annotations."""

    label = "a value"
    kinds = frozenset(f.name for f in pb.Value.DESCRIPTOR.oneofs_by_name["kind"].fields)

    def _decode(self, value: pb.Value, kind: str, ctx: _Context, depth: int) -> object:
        if kind == "array":
            return _array(value.array, ctx)
        if kind == "items":
            items = value.items.items
            _entries(len(items))
            return tuple(_decode(self, v, ctx, depth + 1) for v in items)
        if kind == "mapping":
            return _MappingSpec(self)._decode(value, kind, ctx, depth)
        if kind == "record":
            cls = _lookup(value.record.type)
            if cls is None:
                raise MalformedMessage(f"unknown record type {_show(value.record.type)}")
            return _decode_record(cls, value.record, ctx, depth)
        return _plain(value, kind)


class _UnionSpec(_Spec):
    """``A | B | ...``: the first alternative that accepts the value's kind (records: by type).

    There is no backtracking: a value goes to one alternative, chosen by its kind alone.
    """

    def __init__(self, alternatives: tuple[_Spec, ...]) -> None:
        literals = [a for a in alternatives if isinstance(a, _LiteralSpec)]
        if len(literals) > 1:  # Literal["a"] | Literal["b"] is Literal["a", "b"]
            merged = _LiteralSpec(tuple(v for a in literals for v in a.values))
            first = alternatives.index(literals[0])
            alternatives = tuple(
                merged if i == first else a
                for i, a in enumerate(alternatives)
                if i == first or not isinstance(a, _LiteralSpec)
            )
        self.alternatives = alternatives
        self.label = " or ".join(a.label for a in alternatives)
        self.kinds = frozenset().union(*(a.kinds for a in alternatives))
        self.by_kind: dict[str, _Spec] = {}
        self.by_record: dict[str, _Spec] = {}
        for alt in alternatives:
            if isinstance(alt, _RecordSpec):
                self.by_record.setdefault(alt.cls.__name__, alt)
                continue
            for k in alt.kinds:
                self.by_kind.setdefault(k, alt)

    def _decode(self, value: pb.Value, kind: str, ctx: _Context, depth: int) -> object:
        spec = self.by_record.get(value.record.type) if kind == "record" else None
        if spec is None:
            spec = self.by_kind.get(kind)
        if spec is None:
            raise MalformedMessage(f"expected {self.label}, got a {_kind_name(value)}")
        return spec.decode(value, kind, ctx, depth)


_ANY: Final = _AnySpec()
_SCALARS: Final[dict[object, _Spec]] = {
    type(None): _ScalarSpec("None", "none"),
    bool: _ScalarSpec("bool", "boolean"),
    int: _ScalarSpec("int", "integer"),
    float: _FloatSpec(),
    str: _ScalarSpec("str", "text"),
    bytes: _ScalarSpec("bytes", "blob"),
    np.ndarray: _ArraySpec(),
    Any: _ANY,
    object: _ANY,
}


def _compile(annotation: object) -> _Spec:
    """The decoder of a resolved annotation; :class:`TypeError` if the codec cannot express it."""
    if annotation is None:
        annotation = type(None)
    spec = _SCALARS.get(annotation)
    if spec is not None:
        return spec
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return _LiteralSpec(args)
    if origin is typing.Union or origin is types.UnionType:
        return _UnionSpec(tuple(_compile(a) for a in args))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _SequenceSpec(_compile(args[0]), None)
        return _SequenceSpec(None, tuple(_compile(a) for a in args if a != ()))
    if origin is list and len(args) == 1:
        return _SequenceSpec(_compile(args[0]), None, as_list=True)
    if origin is dict and len(args) == 2 and args[0] is str:
        return _MappingSpec(_compile(args[1]))
    if origin is np.ndarray:  # np.ndarray[shape, np.dtype[T]], e.g. NDArray[np.float32]
        return _ArraySpec(_array_family(args))
    if isinstance(annotation, type) and _is_record_class(annotation):
        return _RecordSpec(annotation)
    raise TypeError(f"the wire codec cannot express the annotation {annotation!r}")


def _array_family(args: tuple[object, ...]) -> type[np.generic]:
    """The scalar type ``T`` of ``np.ndarray[shape, np.dtype[T]]`` (``np.generic`` if any)."""
    if len(args) != 2 or get_origin(args[1]) is not np.dtype:
        return np.generic
    (scalar,) = get_args(args[1]) or (Any,)
    if scalar is Any:
        return np.generic
    scalar = get_origin(scalar) or scalar  # np.floating[Any] -> np.floating
    if isinstance(scalar, type) and issubclass(scalar, np.generic):
        return scalar
    raise TypeError(f"the wire codec cannot express the array dtype {scalar!r}")


@dataclasses.dataclass(frozen=True)
class _Schema:
    """A record type's fields in declaration order, with their decoders."""

    fields: tuple[tuple[str, _Spec], ...]
    by_name: Mapping[str, _Spec]


_schemas: dict[type, _Schema] = {}


def _schema(cls: type) -> _Schema:
    schema = _schemas.get(cls)
    if schema is None:
        with _lock:
            schema = _schemas.get(cls)
            if schema is None:
                schema = _build_schema(cls)
                _schemas[cls] = schema
    return schema


def _build_schema(cls: type) -> _Schema:
    hints = get_type_hints(cls)
    fields: list[tuple[str, _Spec]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            raise TypeError(f"{cls.__name__}.{f.name} is not an __init__ field")
        try:
            spec = _compile(hints[f.name])
        except TypeError as exc:
            raise TypeError(f"{cls.__name__}.{f.name}: {exc}") from exc
        fields.append((f.name, spec))
    return _Schema(tuple(fields), dict(fields))


def _decode_record(cls: type, record: pb.Record, ctx: _Context, depth: int) -> object:
    schema = _schema(cls)
    name = cls.__name__
    if len(record.fields) > len(schema.fields):
        raise MalformedMessage(
            f"{name} has {len(schema.fields)} fields, the record carries {len(record.fields)}"
        )
    values: dict[str, object] = {}
    for field in record.fields:
        key = field.name
        spec = schema.by_name.get(key)
        if spec is None:
            raise MalformedMessage(f"{name} has no field {_show(key)}")
        if key in values:
            raise MalformedMessage(f"duplicate field {name}.{key}")
        if not field.HasField("value"):
            raise MalformedMessage(f"field {name}.{key} has no value")
        try:
            values[key] = _decode(spec, field.value, ctx, depth + 1)
        except MalformedMessage as exc:
            raise MalformedMessage(f"{name}.{key}: {_brief(exc)}") from exc
    missing = [f for f, _ in schema.fields if f not in values]
    if missing:
        raise MalformedMessage(f"{name} is missing fields {missing}")
    try:
        return cls(**values)
    except Exception as exc:  # __post_init__ checks: ValueError, TypeError, ConfigError...
        raise MalformedMessage(f"{name} refused its fields: {_brief(exc)}") from exc
