"""The declared schema and data-protection policy of a client's dataset (``[edge]``).

A schema declares, for every column a client's records may hold, its type, the values it may
take, what to do with a missing or invalid value, and how the field is masked before anything
else reads it. The same pydantic models are read from the ``[edge]`` table of a run's TOML
config and built directly from Python::

    schema = EdgeConfig(
        fields={
            "patient_id": FieldSpec(type="identifier", mask="pseudonymise"),
            "age": FieldSpec(type="int", min=0, max=120, mask="generalise", bins=[0, 40, 65, 120]),
        }
    )

The model's features are the dataset's numeric feature columns (``x``), checked against
``features``; declared ``fields`` are record columns next to them and are never model
features, whatever their mask.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "SYNTHETIC_COLUMNS",
    "EdgeConfig",
    "FeatureSpec",
    "FieldSpec",
    "FieldType",
    "MaskAction",
    "MissingPolicy",
    "SanitiseConfig",
    "check_run_settings",
]

#: the columns :func:`fedfort.edge.records.with_synthetic_identifiers` adds
SYNTHETIC_COLUMNS = ("patient_name", "patient_id", "zip", "birth_date", "age", "notes")

FieldType = Literal["float", "int", "category", "string", "identifier"]
MissingPolicy = Literal["reject", "impute", "drop_row"]
InvalidPolicy = Literal["reject", "drop_row"]
MaskAction = Literal["keep", "drop", "generalise", "pseudonymise"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class FeatureSpec(_Spec):
    """Checks on every numeric feature column (the model's input ``x``)."""

    min: float | None = Field(None, description="smallest allowed value")
    max: float | None = Field(None, description="largest allowed value")
    missing: MissingPolicy = "reject"
    fill: float | None = Field(None, description="the constant imputed when missing = 'impute'")
    invalid: InvalidPolicy = Field("reject", description="a value out of range: error or drop")

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        _check_range(self.min, self.max)
        if self.missing == "impute":
            if self.fill is None or not math.isfinite(self.fill):
                raise ValueError("missing = 'impute' needs a finite fill value")
            _check_in_range(self.fill, self.min, self.max, "fill")
        elif self.fill is not None:
            raise ValueError("fill applies only to missing = 'impute'")
        return self


class FieldSpec(_Spec):
    """One record column: type, allowed values, missing/invalid policy and mask.

    ``mask``: ``keep`` (as validated), ``drop`` (removed before anything reads it),
    ``generalise`` (a number into the declared ``bins``, a category into its ``groups``) or
    ``pseudonymise`` (HMAC-SHA-256 under the client's own key, see
    :class:`fedfort.edge.masking.PseudonymKey`). Free text (``string``) and identifiers may
    only be dropped or pseudonymised.
    """

    type: FieldType
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = Field(None, min_length=1)
    missing: MissingPolicy = "reject"
    fill: float | str | None = None
    invalid: InvalidPolicy = "reject"
    mask: MaskAction = "keep"
    bins: tuple[float, ...] | None = Field(None, min_length=2, description="increasing edges")
    groups: dict[str, tuple[str, ...]] | None = Field(None, description="coarse group -> values")

    @property
    def numeric(self) -> bool:
        return self.type in ("float", "int")

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if not self.numeric and (self.min is not None or self.max is not None):
            raise ValueError(f"min/max apply to float and int fields, not {self.type!r}")
        _check_range(self.min, self.max)
        if self.categories is not None and self.type != "category":
            raise ValueError("categories apply to category fields only")
        if self.type == "category" and self.categories is None:
            raise ValueError("a category field needs its allowed categories")
        if self.categories is not None and len(set(self.categories)) != len(self.categories):
            raise ValueError("categories are listed twice")
        self._check_fill()
        if self.type in ("string", "identifier") and self.mask not in ("drop", "pseudonymise"):
            raise ValueError(
                f"a {self.type} field may only be dropped or pseudonymised (mask = 'drop' or "
                "'pseudonymise'): raw identifiers and free text never stay in the records"
            )
        if self.mask == "pseudonymise" and self.type == "float":
            raise ValueError("pseudonymise needs exact values: use it on identifiers, not floats")
        self._check_generalise()
        return self

    def _check_fill(self) -> None:
        if self.missing != "impute":
            if self.fill is not None:
                raise ValueError("fill applies only to missing = 'impute'")
            return
        if self.fill is None:
            raise ValueError("missing = 'impute' needs a declared fill value")
        if self.numeric:
            if isinstance(self.fill, str) or not math.isfinite(self.fill):
                raise ValueError("fill of a numeric field must be a finite number")
            if self.type == "int" and float(self.fill) != int(self.fill):
                raise ValueError("fill of an int field must be a whole number")
            _check_in_range(float(self.fill), self.min, self.max, "fill")
        elif not isinstance(self.fill, str):
            raise ValueError(f"fill of a {self.type} field must be a string")
        elif self.categories is not None and self.fill not in self.categories:
            raise ValueError(f"fill {self.fill!r} is not one of the declared categories")

    def _check_generalise(self) -> None:
        if self.mask != "generalise":
            if self.bins is not None or self.groups is not None:
                raise ValueError("bins and groups apply only to mask = 'generalise'")
            return
        if self.numeric:
            if self.bins is None or self.groups is not None:
                raise ValueError("generalising a number needs bins (increasing edges), no groups")
            if any(b >= a for a, b in zip(self.bins[1:], self.bins[:-1], strict=True)):
                raise ValueError("bins must be strictly increasing")
            if (self.min is not None and self.min < self.bins[0]) or (
                self.max is not None and self.max > self.bins[-1]
            ):
                raise ValueError("bins must cover the field's [min, max]")
        elif self.type == "category":
            if self.groups is None or self.bins is not None:
                raise ValueError("generalising a category needs groups (group -> categories)")
            listed = [c for members in self.groups.values() for c in members]
            if sorted(listed) != sorted(self.categories or ()):
                raise ValueError("groups must list every declared category exactly once")
        else:
            raise ValueError(f"a {self.type} field cannot be generalised")


class SanitiseConfig(_Spec):
    """Out-of-distribution and label-noise filtering of the feature matrix before training.

    ``outliers``: ``robust_z`` flags a row whose largest robust z-score (median and
    normal-consistent MAD per feature) exceeds ``z_threshold``; ``isolation_forest`` flags the
    ``contamination`` share that scikit-learn's IsolationForest (Liu et al. 2008) isolates
    fastest. ``label_noise``: ``confident_learning`` flags rows whose label disagrees with
    the confident joint of cross-validated predicted probabilities (Northcutt, Jiang and
    Chuang, JAIR 2021); ``knn`` flags rows whose label disagrees with the majority of their
    ``k`` nearest neighbours (Wilson's edited nearest neighbour rule, 1972). ``action``:
    ``remove`` the flagged rows or only ``flag`` (count) them.
    """

    outliers: Literal["none", "robust_z", "isolation_forest"] = "none"
    z_threshold: float = Field(8.0, gt=0)
    contamination: float = Field(0.02, gt=0, le=0.5)
    label_noise: Literal["none", "confident_learning", "knn"] = "none"
    folds: int = Field(5, ge=2, description="cross-validation folds of confident learning")
    k: int = Field(5, ge=1, description="neighbours of the knn rule")
    action: Literal["remove", "flag"] = "remove"


class EdgeConfig(_Spec):
    """Client-side data protection: schema validation, masking and sanitisation.

    ``key_dir``: directory of the clients' pseudonym keys (``<client>.pseudonym.key``, created
    owner-only when missing); unset, a simulated client draws a fresh key from the OS for the
    run and a networked client keeps one in its ``--state`` directory.
    ``synthetic_identifiers`` (simulation and ``--data partition:K`` only) adds synthetic
    identifying columns (name, id, ZIP, birth date, age, notes) to each client's records, to
    exercise the declared masking.
    """

    enabled: bool = False
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    #: a feature column's own checks by its name (``[edge.by_feature.age] max = 120``);
    #: the others get ``features``
    by_feature: dict[str, FeatureSpec] = Field(default_factory=dict)
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    deduplicate_on: str | None = Field(None, description="a pseudonymised field; repeats dropped")
    key_dir: str | None = None
    sanitise: SanitiseConfig = Field(default_factory=SanitiseConfig)
    synthetic_identifiers: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> EdgeConfig:
        for name in self.fields:
            if name in ("x", "y") or not name.isidentifier():
                raise ValueError(f"field name {name!r}: use a Python identifier other than x, y")
        if self.synthetic_identifiers and set(self.fields) != set(SYNTHETIC_COLUMNS):
            raise ValueError(
                f"synthetic_identifiers adds the columns {list(SYNTHETIC_COLUMNS)}: declare "
                "exactly these in [edge.fields] (see examples/edge/breast-cancer.toml)"
            )
        if self.deduplicate_on is not None:
            spec = self.fields.get(self.deduplicate_on)
            if spec is None or spec.mask != "pseudonymise":
                raise ValueError("deduplicate_on must name a declared, pseudonymised field")
        return self


def check_run_settings(edge: EdgeConfig) -> None:
    """Refuse ``[edge]`` settings in a run config that leaves the pipeline switched off."""
    customised = (
        edge.fields
        or edge.features != FeatureSpec()
        or edge.by_feature
        or edge.sanitise != SanitiseConfig()
        or edge.deduplicate_on is not None
        or edge.key_dir is not None
        or edge.synthetic_identifiers
    )
    if not edge.enabled and customised:
        raise ValueError(
            "[edge] settings are given but edge.enabled = false: set enabled = true, or "
            "remove them (nothing would validate, mask or sanitise the records)"
        )


def _check_range(low: float | None, high: float | None) -> None:
    if low is not None and high is not None and low > high:
        raise ValueError(f"min ({low}) exceeds max ({high})")


def _check_in_range(value: float, low: float | None, high: float | None, what: str) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{what} {value} lies outside [min, max]")
