"""What a client declares when it joins, and the server's check of it (sans-I/O).

One global model only makes sense when every member trains it on data of the same shape and
under the same rules. So a client's first enrollment request carries a *declaration*:

* the identity of the run its config describes (:func:`federation_identity`): the hash of
  everything the rounds compute, without what is each party's own (the clients' file paths,
  the client's own privacy policy, the runtime's settings);
* the schema of its own data (:class:`~fedfort.data.schema.DataSchema`: feature names in
  model-input order, the labels its rows hold), when the federation trains on the clients'
  own files.

The server holds its :class:`EnrollmentTerms` and refuses, with a reason code that is counted,
logged and audited like every refusal at the gate:

==================  ===================================================================
``undeclared``      a first enrollment without a declaration (or a files run's schema)
``schema_mismatch`` the client's data differs from the federation's schema; the detail
                    names the differences ("missing column 'mean_perimeter'")
``config_mismatch`` the client's config describes another run
==================  ===================================================================

A key rotation of an enrolled client (``fedfort keys rotate``) needs no declaration; one sent
is checked all the same. The check catches a misconfigured member (an export that lacks a
column, a label spelled differently, a stale config), not a lying one: a malicious member can
declare anything, and its updates meet the round's defences like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedfort.config import ClientPolicyConfig, RunConfig
from fedfort.data.schema import DataSchema
from fedfort.errors import FedfortError, Refused
from fedfort.transport.proto import fedfort_pb2 as pb

__all__ = [
    "ENROLLMENT_REFUSALS",
    "EnrollmentTerms",
    "declaration",
    "federation_identity",
    "schema_from_proto",
    "schema_to_proto",
]

#: the reason codes of a refused declaration
ENROLLMENT_REFUSALS = frozenset({"undeclared", "schema_mismatch", "config_mismatch"})

#: ``[data]`` keys each party sets for itself, at their defaults in the shared identity
_OWN_DATA_KEYS: dict[str, object] = {
    "train": None,
    "test": None,
    "validation": None,
    "label": "label",
    "drop": [],
    "categories": {},
    "columns": None,
}


def federation_identity(config: RunConfig) -> str:
    """The hash of the run that a client and the server must agree on.

    :meth:`RunConfig.identity_hash` (what the rounds compute, without ``rounds`` and the
    runtime's settings) of ``config`` without what each party sets for itself: where its data
    files are and how they are read (``[data] train``/``test``/``validation``, ``label``,
    ``drop``, ``categories``, ``columns``: every hospital keeps and names its exports as it
    likes, and what reaches the model is checked against the schema instead), the client's own
    privacy policy (``[privacy.client]``), and a noise multiplier that the server calibrates
    from ``target_epsilon`` over its rounds.
    """
    data = config.data.model_copy(update=_OWN_DATA_KEYS)
    privacy_update: dict[str, object] = {"client": ClientPolicyConfig()}
    if config.privacy.target_epsilon is not None:
        privacy_update["noise_multiplier"] = None
    privacy = config.privacy.model_copy(update=privacy_update)
    shared = config.model_copy(update={"data": data, "privacy": privacy})
    return shared.identity_hash()


def schema_to_proto(schema: DataSchema) -> pb.DataSchema:
    """``schema`` as the wire message."""
    return pb.DataSchema(
        features=list(schema.features),
        classes=list(schema.classes),
        task=schema.task,
        image_shape=[] if schema.image_shape is None else list(schema.image_shape),
    )


def schema_from_proto(message: pb.DataSchema) -> DataSchema:
    """The schema a peer declared; raises :class:`Refused` (``malformed``) for one that
    cannot be a schema (no features, a name twice, an unknown task...)."""
    if message.task not in ("classification", "regression"):
        raise Refused("malformed", f"declared task {message.task[:40]!r} is not known")
    shape = tuple(int(v) for v in message.image_shape)
    if shape and len(shape) != 2:
        raise Refused("malformed", f"declared image shape {shape} is not (height, width)")
    try:
        return DataSchema(
            tuple(message.features),
            tuple(message.classes),
            "classification" if message.task == "classification" else "regression",
            (shape[0], shape[1]) if shape else None,
        )
    except FedfortError as exc:
        raise Refused("malformed", f"declared schema is not valid: {exc}") from None


def declaration(config: RunConfig, schema: DataSchema | None) -> pb.Declaration:
    """What a client configured by ``config`` declares, with its own data's ``schema``."""
    out = pb.Declaration(config_identity=federation_identity(config))
    if schema is not None:
        out.schema.CopyFrom(schema_to_proto(schema))
    return out


@dataclass(frozen=True)
class EnrollmentTerms:
    """What the server requires of a joining client's declaration.

    ``schema`` is the federation's (``None`` when the run trains on an embedded dataset, whose
    shape every client shares by construction).
    """

    config_identity: str
    schema: DataSchema | None = None

    @classmethod
    def of(cls, config: RunConfig, schema: DataSchema | None) -> EnrollmentTerms:
        """The terms of the run ``config`` describes, with the federation's ``schema``."""
        return cls(federation_identity(config), schema)

    def check(self, declared: pb.Declaration | None) -> None:
        """Raise :class:`Refused` unless ``declared`` agrees with these terms.

        The schema is compared first: its differences name what to fix in the client's files,
        where a config mismatch can only say that the configs differ.
        """
        if declared is None or not declared.config_identity:
            raise Refused(
                "undeclared",
                "the enrollment declares no config identity: run a fedfort client of this "
                "version with the federation's config",
            )
        if self.schema is not None:
            if not declared.HasField("schema"):
                raise Refused(
                    "undeclared",
                    "the enrollment declares no data schema, and this federation trains on "
                    "the clients' own files: start the client with [data] source = 'files'",
                )
            differences = self.schema.differences(schema_from_proto(declared.schema))
            if differences:
                raise Refused(
                    "schema_mismatch",
                    "data differs from the federation's schema: " + "; ".join(differences),
                )
        if declared.config_identity != self.config_identity:
            raise Refused(
                "config_mismatch",
                f"the client's config describes another run (identity "
                f"{declared.config_identity[:12]}, the server's {self.config_identity[:12]}): "
                "give the client the federation's config",
            )
