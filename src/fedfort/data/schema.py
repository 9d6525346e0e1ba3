"""The data schema a federation agrees on: feature names and order, label set, task.

A :class:`DataSchema` is what every client's data must look like for one global model to make
sense of it: the model's input size is the number of features, its output size the number of
classes (one output for regression). The schema is part of the run's identity (it is written
into ``[data] features`` / ``classes`` of the stored config), and a networked client whose
columns or classes differ is refused at enrollment with the differences named
(:meth:`DataSchema.differences`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fedfort import jsonio
from fedfort.errors import DatasetError

__all__ = ["DataSchema", "Task", "label_text"]

Task = Literal["classification", "regression"]


def label_text(value: object) -> str:
    """A label value as the text the schema lists: ``1`` and ``1.0`` are both ``"1"``."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item"):  # a NumPy scalar
        return label_text(value.item())
    return str(value)


@dataclass(frozen=True)
class DataSchema:
    """Feature names (in model-input order), class labels (in output order) and the task.

    ``classes`` is empty for regression. ``image_shape`` is ``(height, width)`` for
    single-channel images (pixels flattened row by row into the features).
    """

    features: tuple[str, ...]
    classes: tuple[str, ...]
    task: Task = "classification"
    image_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.features:
            raise DatasetError("the data has no feature columns")
        if len(set(self.features)) != len(self.features):
            twice = sorted(f for f, n in Counter(self.features).items() if n > 1)
            raise DatasetError(f"feature names {_listed(twice)} appear twice: rename the columns")
        if self.task == "classification" and not self.classes:
            raise DatasetError("a classification task needs its classes")
        if self.task == "regression" and self.classes:
            raise DatasetError("a regression task has no classes")
        if len(set(self.classes)) != len(self.classes):
            raise DatasetError(f"classes {list(self.classes)} list a label twice")

    @property
    def num_features(self) -> int:
        return len(self.features)

    @property
    def num_classes(self) -> int:
        """The model's output size: the number of classes, 1 for regression."""
        return len(self.classes) if self.task == "classification" else 1

    def check_learnable(self) -> None:
        """A federation's schema: classification needs at least two classes."""
        if self.task == "classification" and len(self.classes) < 2:
            raise DatasetError(
                f"a classification task needs at least 2 classes, the labels hold "
                f"{list(self.classes)}: check the label column, or set [data] task = 'regression'"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "classes": list(self.classes),
            "task": self.task,
            "image_shape": None if self.image_shape is None else list(self.image_shape),
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> DataSchema:
        shape = body.get("image_shape")
        return cls(
            features=tuple(str(f) for f in body["features"]),
            classes=tuple(str(c) for c in body.get("classes", ())),
            task=body.get("task", "classification"),
            image_shape=None if shape is None else (int(shape[0]), int(shape[1])),
        )

    def digest(self) -> str:
        """SHA-256 of the schema: two parties with the same digest agree on it."""
        text = jsonio.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(b"fedfort-data-schema\x00" + text.encode()).hexdigest()

    def differences(self, other: DataSchema) -> list[str]:
        """What ``other`` (a client's data) lacks or adds against this schema, in words.

        Empty when they agree. A client missing some classes is fine (label mixes differ);
        a label this schema does not list is a difference.
        """
        out: list[str] = []
        if other.task != self.task:
            out.append(f"task is {other.task!r}, the federation's is {self.task!r}")
        # one set each (a client's declaration may list many names: no quadratic work)
        theirs, ours = set(other.features), set(self.features)
        missing = [f for f in self.features if f not in theirs]
        extra = [f for f in other.features if f not in ours]
        if missing:
            out.append(f"missing column{'s' if len(missing) > 1 else ''} {_listed(missing)}")
        if extra:
            out.append(f"unexpected column{'s' if len(extra) > 1 else ''} {_listed(extra)}")
        if not missing and not extra and other.features != self.features:
            out.append(
                f"columns in another order: {_listed(other.features)}, the federation's are "
                f"{_listed(self.features)}"
            )
        known = set(self.classes)
        unknown = [c for c in other.classes if c not in known]
        if unknown:
            out.append(
                f"label{'s' if len(unknown) > 1 else ''} {_listed(unknown)} not among the "
                f"federation's classes {_listed(self.classes)}"
            )
        shapes = (other.image_shape, self.image_shape)
        if None not in shapes and other.image_shape != self.image_shape:
            out.append(f"image shape {other.image_shape}, the federation's is {self.image_shape}")
        return out

    def check(self, other: DataSchema, who: str) -> None:
        """Raise :class:`DatasetError` naming every difference of ``other`` from this one."""
        diffs = self.differences(other)
        if diffs:
            raise DatasetError(
                f"{who} does not match the federation's data schema: " + "; ".join(diffs)
            )


def _listed(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{shown}{more}"
