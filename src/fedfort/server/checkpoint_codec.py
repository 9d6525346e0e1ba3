"""How a checkpoint stores arrays and state trees without pickle.

A model vector is one ``.npy`` blob (:func:`encode_array`, :func:`decode_array`); an engine
state tree (round counter, RNG state, stage and client states) is split by :func:`pack_state`
into JSON text and one ``.npz`` blob holding its arrays, and put back together by
:func:`unpack_state`. Both use ``numpy`` with ``allow_pickle=False``, so decoding a checkpoint
cannot run code. :mod:`fedfort.server.checkpoint` stores what these produce.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from fedfort import jsonio
from fedfort.errors import CheckpointError

__all__ = ["decode_array", "encode_array", "pack_state", "unpack_state"]


def encode_array(array: np.ndarray) -> bytes:
    """``array`` as the bytes of an ``.npy`` file."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def decode_array(blob: bytes) -> np.ndarray:
    """The array of an ``.npy`` blob (object arrays are refused)."""
    return np.load(io.BytesIO(blob), allow_pickle=False)  # type: ignore[no-any-return]


def pack_state(tree: Any) -> tuple[str, bytes]:
    """Split a state tree into JSON text and one ``.npz`` blob holding its arrays."""
    arrays: dict[str, np.ndarray] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, np.ndarray):
            if node.dtype.hasobject:
                raise CheckpointError("object arrays cannot be stored in a checkpoint")
            key = f"a{len(arrays)}"
            arrays[key] = node
            return {"__array__": key}
        if isinstance(node, dict):
            if not all(isinstance(k, str) for k in node):
                raise CheckpointError("state dictionaries must have string keys")
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [walk(v) for v in node]
        if isinstance(node, np.generic):
            return node.item()
        if node is None or isinstance(node, bool | int | float | str):
            return node
        raise CheckpointError(f"cannot store a {type(node).__name__} in a checkpoint")

    text = jsonio.dumps(walk(tree), sort_keys=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return text, buf.getvalue()


def unpack_state(text: str, blob: bytes) -> Any:
    """Inverse of :func:`pack_state`."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"__array__"}:
                return arrays[node["__array__"]]
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(json.loads(text))
