"""Typed measurement records, the one registry of their names, and the reader over a round.

A stage publishes what it measured as one small frozen dataclass, a subclass of
:class:`Measurement` whose class attribute ``name`` is the key it has in the round record
(``measurements.<name>`` in ``results.json``, checkpoints and reports). The name is declared
once, by :func:`register_measurement`; a second type under a name already taken is refused.

A record serialises (:meth:`Measurement.to_dict`) to the same dictionary the round record has
always held under that name: its declared fields in order (a field whose metadata says
``omit_none`` is left out while it is ``None``) followed by the free-form ``extra`` mapping.
:meth:`Measurement.from_dict` reads such a dictionary back (stored runs, hand-built records),
with each missing field at its default and unknown keys in ``extra``.

Each type also says what it adds to the audit log (:meth:`Measurement.audit_entries`) and to
the Prometheus series (:attr:`Measurement.metrics` declares them, :meth:`Measurement.metric_values`
gives this round's values), so the audit trail and the metrics hook iterate over what a round
published instead of knowing every stage's keys.

:class:`MeasurementSet` is the reader: ``MeasurementSet(record["measurements"]).get(T)`` gives
the record of type ``T`` or ``None``; :meth:`MeasurementSet.require` raises
:class:`~fedfort.errors.MeasurementMissing` instead. A name no type is registered for reads
back as an :class:`UntypedMeasurement` (stages that call ``ctx.measure("name", **values)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from fedfort.errors import ConfigError, MeasurementMissing

__all__ = [
    "OMIT_NONE",
    "AuditItem",
    "Measurement",
    "MeasurementSet",
    "MetricSpec",
    "MetricValue",
    "UntypedMeasurement",
    "measurement_type",
    "measurement_types",
    "register_measurement",
]

#: one audit entry a measurement adds to its round: ``(kind, body)``
AuditItem = tuple[str, dict[str, Any]]

M = TypeVar("M", bound="Measurement")

#: fields of every record, not published under their own key
_BASE_FIELDS = frozenset({"extra", "stored_keys"})

#: ``field(metadata=OMIT_NONE)``: left out of :meth:`Measurement.to_dict` while ``None``
OMIT_NONE: Mapping[str, bool] = {"omit_none": True}


@dataclass(frozen=True)
class MetricSpec:
    """A Prometheus series a measurement type feeds.

    ``kind`` ``"counter"`` adds each value, ``"gauge"`` sets it. A ``per_round`` gauge
    (unlabelled) describes the last round only: it reads 0 after a round that did not publish
    the type. Other gauges keep their last value.
    """

    name: str
    help: str
    kind: Literal["counter", "gauge"]
    labels: tuple[str, ...] = ()
    per_round: bool = False


@dataclass(frozen=True)
class MetricValue:
    """One value of a declared series (:class:`MetricSpec`) for the round."""

    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Measurement:
    """What one stage measured in a round; subclasses declare ``name`` and their fields.

    ``extra`` holds values beyond the declared fields (e.g. an aggregator's diagnostics);
    they follow the fields in :meth:`to_dict`.
    """

    name: ClassVar[str] = ""
    #: the Prometheus series :meth:`metric_values` feeds (declared once per type)
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()

    extra: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
    #: the keys of the stored dictionary this record was read from (``None`` when a stage
    #: built it); :meth:`to_dict` then gives back exactly those keys, in their order
    stored_keys: tuple[str, ...] | None = field(
        default=None, compare=False, repr=False, kw_only=True
    )

    def to_dict(self) -> dict[str, Any]:
        """The record as the round record stores it under :attr:`name`."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in _BASE_FIELDS:
                continue
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = value
        out.update(self.extra)
        if self.stored_keys is not None:
            return {k: out[k] for k in self.stored_keys if k in out}
        return out

    @classmethod
    def from_dict(cls: type[M], values: Mapping[str, Any]) -> M:
        """Read a stored record back; missing fields take their defaults."""
        declared = {f.name for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS}
        known = {k: v for k, v in values.items() if k in declared}
        extra = {k: v for k, v in values.items() if k not in declared}
        return cls(**known, extra=extra, stored_keys=tuple(values))

    def audit_entries(self) -> list[AuditItem]:
        """The audit entries this record adds to its round (none by default)."""
        return []

    def metric_values(self) -> list[MetricValue]:
        """This round's values of the series in :attr:`metrics` (none by default)."""
        return []


@dataclass(frozen=True)
class UntypedMeasurement(Measurement):
    """Values a stage recorded with ``ctx.measure("name", **values)``, under ``stage``."""

    stage: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.extra)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> UntypedMeasurement:
        return cls(extra=dict(values))


_REGISTRY: dict[str, type[Measurement]] = {}
_METRIC_OWNERS: dict[str, str] = {}


def register_measurement(cls: type[M]) -> type[M]:
    """Declare ``cls`` as the one type published under ``cls.name`` (a class decorator).

    Built-in types are registered when :mod:`fedfort.measurements` is imported; the round's
    audit entries follow the order of registration, a user's types after fedfort's own.
    """
    if not cls.name:
        raise ConfigError(f"{cls.__qualname__} declares no name: set the class attribute `name`")
    taken = _REGISTRY.get(cls.name)
    if taken is not None and taken is not cls:
        raise ConfigError(
            f"measurement name {cls.name!r} is already declared by {taken.__qualname__}: "
            f"give {cls.__qualname__} another name"
        )
    for spec in cls.metrics:
        owner = _METRIC_OWNERS.get(spec.name)
        if owner is not None and owner != cls.name:
            raise ConfigError(
                f"metric {spec.name} is already fed by measurement {owner!r}: "
                f"{cls.__qualname__} must declare a series of its own"
            )
    for spec in cls.metrics:
        _METRIC_OWNERS[spec.name] = cls.name
    _REGISTRY[cls.name] = cls
    return cls


def measurement_type(name: str) -> type[Measurement] | None:
    """The type registered under ``name``, if any."""
    return _REGISTRY.get(name)


def measurement_types() -> tuple[type[Measurement], ...]:
    """Every registered type, in the order of registration."""
    return tuple(_REGISTRY.values())


def _parse(name: str, values: Any) -> Measurement:
    if not isinstance(values, Mapping):
        return UntypedMeasurement(stage=name, extra={"value": values})
    cls = _REGISTRY.get(name)
    if cls is None:
        return UntypedMeasurement(stage=name, extra=dict(values))
    return cls.from_dict(values)


class MeasurementSet:
    """Typed reads over a round record's ``measurements`` (a live or a stored one)."""

    def __init__(self, measurements: Mapping[str, Any] | None) -> None:
        self.raw: Mapping[str, Any] = measurements if measurements is not None else {}

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> MeasurementSet:
        """The measurements of a round record read from JSON (``results.json``, a checkpoint)."""
        measurements = record.get("measurements")
        return cls(measurements if isinstance(measurements, Mapping) else {})

    def get(self, cls: type[M]) -> M | None:
        """The record of type ``cls`` the round published, or ``None``."""
        values = self.raw.get(cls.name)
        if not isinstance(values, Mapping):
            return None
        return cls.from_dict(values)

    def require(self, cls: type[M]) -> M:
        """The record of type ``cls``; :class:`MeasurementMissing` when the round has none."""
        found = self.get(cls)
        if found is None:
            published = ", ".join(sorted(self.raw)) or "nothing"
            raise MeasurementMissing(
                f"the round published no {cls.__qualname__} (name {cls.name!r}; it published "
                f"{published}): add the stage that publishes it to the round's pipeline"
            )
        return found

    def __iter__(self) -> Iterator[Measurement]:
        """Every record, typed where a type is registered, in the order of registration
        (audit entries are written in this order), then untyped ones as published."""
        order = {cls.name: i for i, cls in enumerate(_REGISTRY.values())}
        names = sorted(self.raw, key=lambda n: order.get(n, len(order)))
        return iter([_parse(name, self.raw[name]) for name in names])
