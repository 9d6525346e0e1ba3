"""Model parameters as one flat float32 vector.

Everything above this module works on flat vectors of length ``d`` and on stacked
``(n_clients, d)`` update matrices. :class:`ParamSpec` records which tensor of a
:class:`torch.nn.Module` lives where in the vector, so a model can be flattened and restored
without per-tensor bookkeeping elsewhere.

Floating-point buffers (e.g. BatchNorm running statistics) are part of the vector and are
averaged like parameters; integer buffers (``num_batches_tracked``) are local counters and are
left out. Parameters come first, buffers after, so ``vector[:spec.num_params]`` is exactly the
trainable part.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedfort.errors import ConfigError

if TYPE_CHECKING:  # torch loads when a module is flattened or loaded, not to hash a vector
    import torch
    from torch import nn

__all__ = ["BoundParams", "ParamSpec", "TensorSlot", "vector_sha256"]


@dataclass(frozen=True)
class TensorSlot:
    """Where one named tensor lives in the flat vector."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int
    is_buffer: bool


@dataclass(frozen=True)
class ParamSpec:
    """Names, shapes and offsets of a module's tensors in the flat vector."""

    slots: tuple[TensorSlot, ...]
    num_params: int
    dim: int

    @classmethod
    def from_module(cls, module: nn.Module) -> ParamSpec:
        """Build the spec of ``module``: trainable parameters, then floating-point buffers."""
        import torch

        slots: list[TensorSlot] = []
        offset = 0
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            numel = param.numel()
            slots.append(TensorSlot(name, tuple(param.shape), offset, numel, False))
            offset += numel
        num_params = offset
        for name, buf in module.named_buffers():
            if not torch.is_floating_point(buf):
                continue
            numel = buf.numel()
            slots.append(TensorSlot(name, tuple(buf.shape), offset, numel, True))
            offset += numel
        if offset == 0:
            raise ConfigError("the model has no trainable parameters or floating-point buffers")
        return cls(tuple(slots), num_params, offset)

    def _tensors(self, module: nn.Module) -> list[torch.Tensor]:
        import torch

        params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        buffers = {n: b for n, b in module.named_buffers() if torch.is_floating_point(b)}
        if len(params) + len(buffers) != len(self.slots):
            raise ConfigError(
                f"module does not match the parameter spec: it has {len(params) + len(buffers)} "
                f"trainable tensors and floating buffers, the spec {len(self.slots)}; "
                "build the model with the same architecture as the spec"
            )
        out: list[torch.Tensor] = []
        for slot in self.slots:
            table = buffers if slot.is_buffer else params
            tensor = table.get(slot.name)
            if tensor is None or tuple(tensor.shape) != slot.shape:
                raise ConfigError(
                    f"module does not match the parameter spec at {slot.name!r}: "
                    "build the model with the same architecture as the spec"
                )
            out.append(tensor)
        return out

    def bind(self, module: nn.Module) -> BoundParams:
        """Resolve the spec against ``module`` once, for repeated fast flatten/load calls."""
        return BoundParams(self, self._tensors(module))

    def flatten(self, module: nn.Module) -> np.ndarray:
        """Return the module's tensors as one new float32 vector of length ``dim``."""
        return self.bind(module).flatten()

    def load(self, module: nn.Module, vector: np.ndarray) -> None:
        """Copy ``vector`` into the module's tensors in place."""
        self.bind(module).load(vector)

    def split(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """View ``vector`` as a name -> array mapping with the original shapes (no copy)."""
        self.check(vector)
        return {s.name: vector[s.offset : s.offset + s.numel].reshape(s.shape) for s in self.slots}

    def check(self, vector: np.ndarray) -> None:
        """Raise :class:`ConfigError` unless ``vector`` is a float32 vector of length ``dim``."""
        if vector.shape != (self.dim,) or vector.dtype != np.float32:
            raise ConfigError(
                f"expected a float32 vector of shape ({self.dim},), "
                f"got {vector.dtype} {vector.shape}"
            )

    def describe(self) -> list[dict[str, object]]:
        """A JSON-friendly description of the layout."""
        return [
            {"name": s.name, "shape": list(s.shape), "offset": s.offset, "buffer": s.is_buffer}
            for s in self.slots
        ]


class BoundParams:
    """A spec resolved against one module: flatten and load without name lookups.

    Training code binds once per model instance and then moves whole vectors in and out with a
    single ``torch.cat`` / one ``copy_`` per tensor.
    """

    def __init__(self, spec: ParamSpec, tensors: list[torch.Tensor]) -> None:
        self.spec = spec
        self.tensors = tensors
        self.params = tensors[: sum(1 for s in spec.slots if not s.is_buffer)]

    def flatten(self) -> np.ndarray:
        import torch

        with torch.no_grad():
            flat = torch.cat([t.detach().reshape(-1).to(torch.float32) for t in self.tensors])
        return flat.numpy().copy()

    def flatten_torch(self) -> torch.Tensor:
        import torch

        with torch.no_grad():
            return torch.cat([t.detach().reshape(-1).to(torch.float32) for t in self.tensors])

    def load(self, vector: np.ndarray | torch.Tensor) -> None:
        import torch

        flat = torch.as_tensor(vector)
        if flat.shape != (self.spec.dim,):
            raise ConfigError(
                f"expected a vector of length {self.spec.dim}, got {tuple(flat.shape)}"
            )
        with torch.no_grad():
            for slot, tensor in zip(self.spec.slots, self.tensors, strict=True):
                chunk = flat[slot.offset : slot.offset + slot.numel]
                tensor.copy_(chunk.view(slot.shape) if slot.shape else chunk.view(()))

    def split_params(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Split the trainable part of ``vector`` into views shaped like the parameters."""
        out = []
        for slot in self.spec.slots:
            if slot.is_buffer:
                break
            out.append(vector[slot.offset : slot.offset + slot.numel].view(slot.shape))
        return out


def vector_sha256(vector: np.ndarray) -> str:
    """SHA-256 of a vector's float32 little-endian bytes: the identity of a model version."""
    return hashlib.sha256(np.ascontiguousarray(vector, dtype="<f4").tobytes()).hexdigest()
