"""Typed run configuration, loaded from TOML and validated before anything runs.

A config file has top-level ``seed`` and ``rounds`` and the tables ``[data]``, ``[model]``,
``[clients]``, ``[server]``, ``[defense]``, ``[detection]``, ``[reputation]``, ``[simulation]``,
``[attack]``, ``[privacy]`` (with ``[privacy.dp_sgd]``) and ``[secure_aggregation]``; every key
has a default, so an empty file is a valid run. Unknown keys, wrong types and impossible
combinations raise :class:`~fedfort.errors.ConfigError` naming the key and what to change.
``docs/configuration.md`` lists every key.
``[edge]`` (client-side data protection) is described in :mod:`fedfort.edge.config`.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedfort import jsonio
from fedfort.aggregation.base import Aggregator
from fedfort.aggregation.registry import build_aggregator
from fedfort.attacks.config import AttackConfig, NoAttack
from fedfort.edge.config import EdgeConfig, check_run_settings
from fedfort.errors import ConfigError
from fedfort.evaluation.config import EvaluationConfig, Task, check_loss, default_loss
from fedfort.messages import LocalTrainingConfig
from fedfort.server.optimizers import build_server_optimizer

__all__ = [
    "AccessConfig",
    "AlertsConfig",
    "ClientPolicyConfig",
    "ClientsConfig",
    "DataConfig",
    "DefenseConfig",
    "DetectionConfig",
    "DpSgdConfig",
    "EdgeConfig",
    "GovernanceConfig",
    "ModelConfig",
    "MonitoringConfig",
    "NetworkConfig",
    "PrivacyConfig",
    "ReputationConfig",
    "RunConfig",
    "SecureAggregationConfig",
    "ServerConfig",
    "SimulationConfig",
    "load_config",
    "numbered_ids",
    "read_toml",
]


_HOST_PORT = re.compile(r"[A-Za-z0-9.\-]+:[0-9]{1,5}|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}")


def _no_server_update(model: Any) -> Any:
    """A stand-in for FLTrust's server update when a rule is built only to be checked."""
    return model


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


#: ``[data]`` keys of the files source; at their defaults they are not part of a run's
#: identity, so runs on the embedded datasets keep theirs
_FILES_KEYS: tuple[str, ...] = (
    "source",
    "train",
    "test",
    "validation",
    "label",
    "drop",
    "categories",
    "columns",
    "image_size",
    "standardize",
    "impute",
    "value_bound",
    "count_bound",
    "task",
    "features",
    "classes",
    "digest",
)

_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def numbered_ids(count: int) -> list[str]:
    """``client-000``, ``client-001``, ...: the ids of a federation without names."""
    width = max(3, len(str(count - 1)))
    return [f"client-{i:0{width}d}" for i in range(count)]


class DataConfig(_Section):
    """Where the clients' data comes from and how it is split across them.

    ``source = "embedded"`` (the default) splits one of the embedded datasets across the
    clients. ``fedprox_synthetic`` (Synthetic(alpha, beta) of the FedProx paper) is generated for
    ``clients.count`` clients and carries its own split: ``partition`` defaults to ``natural``
    for it (``iid``/``dirichlet``/``shards`` re-split its pooled training rows instead).

    ``source = "files"`` reads each client's own files (:mod:`fedfort.data.files`): ``train``
    and ``test`` are paths in which ``{client}`` stands for the client's name; ``label`` names
    the label column, ``drop`` columns never used, ``categories`` the one-hot encoding of text
    columns; ``standardize`` and ``impute`` are federated (:mod:`fedfort.data.preprocessing`).
    ``features`` and ``classes`` are the schema the federation agrees on
    (:class:`fedfort.data.schema.DataSchema`): a simulation infers them from the files and
    stores them with the run; a networked server needs them written down.
    """

    source: Literal["embedded", "files", "objects"] = "embedded"
    dataset: Literal[
        "digits", "mnist", "breast_cancer", "synthetic", "fedprox_synthetic", "diabetes"
    ] = "digits"
    train: str | None = Field(None, description="a client's training file; {client} = its name")
    test: str | None = Field(None, description="a client's own hold-out file (optional)")
    validation: str | None = Field(
        None, description="the server's own validation file (optional; FLTrust's root data)"
    )
    label: str = Field("label", min_length=1, description="the label column")
    drop: list[str] = Field(default_factory=list, description="columns never used as features")
    categories: dict[str, list[str]] = Field(
        default_factory=dict, description="text column -> its categories, one-hot encoded"
    )
    columns: list[str] | None = Field(None, description="column names of an .npy array")
    image_size: tuple[int, int] | None = Field(None, description="resize images to (h, w)")
    standardize: bool = Field(False, description="federated feature scaling (global mean, std)")
    impute: Literal["none", "mean"] = Field("none", description="fill missing values")
    value_bound: float | None = Field(
        None,
        gt=0,
        description="private runs: every feature value is clipped to [-value_bound, "
        "value_bound] for the statistics (default: [edge.features] min/max)",
    )
    count_bound: int | None = Field(
        None, ge=1, description="private runs: the most rows one client's statistics count"
    )
    task: Task = Field(
        "classification", description="classification | regression (one output, MSE loss)"
    )
    features: list[str] | None = Field(None, description="the agreed feature names, in order")
    classes: list[str] | None = Field(None, description="the agreed class labels, in order")
    digest: str | None = Field(
        None, description="source 'objects': SHA-256 of the data given to the run in Python"
    )
    partition: Literal["iid", "dirichlet", "shards", "natural"] = "dirichlet"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration; small = skewed")
    shards_per_client: int = Field(2, ge=1)
    min_samples_per_client: int = Field(2, ge=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    synthetic_samples: int = Field(10_000, ge=20)
    synthetic_features: int = Field(32, ge=2)
    synthetic_classes: int = Field(10, ge=2)
    fedprox_alpha: float = Field(1.0, ge=0, description="Synthetic(alpha, beta): model skew")
    fedprox_beta: float = Field(1.0, ge=0, description="Synthetic(alpha, beta): data skew")
    fedprox_max_samples: int = Field(1000, ge=2, description="cap on one client's samples")

    @model_validator(mode="before")
    @classmethod
    def _natural_by_default(cls, raw: Any) -> Any:
        if (
            isinstance(raw, dict)
            and raw.get("dataset") == "fedprox_synthetic"
            and "partition" not in raw
        ):
            return {**raw, "partition": "natural"}
        if isinstance(raw, dict) and raw.get("dataset") in _REGRESSION_DATASETS:
            raw = {"task": "regression", **raw}
        if isinstance(raw, dict) and raw.get("task") == "regression" and "partition" not in raw:
            raw = {**raw, "partition": "iid"}  # label-based splits need classes
        return raw

    @model_validator(mode="after")
    def _files_consistent(self) -> DataConfig:
        if self.source == "embedded":
            used = [k for k in ("train", "test", "validation") if getattr(self, k) is not None]
            if self.standardize or self.impute != "none":
                used.append("standardize" if self.standardize else "impute")
            used += [k for k in ("value_bound", "count_bound") if getattr(self, k) is not None]
            if used:
                raise ValueError(
                    f"data.{used[0]} applies to data.source = 'files' (each client's own "
                    "files); the embedded datasets come scaled and complete"
                )
            return self
        if self.source == "objects":
            if self.digest is None:
                raise ValueError(
                    "data.source = 'objects' is set by fedfort.Simulation(data=...): the data "
                    "is given in Python, not in the config"
                )
        elif self.train is None:
            raise ValueError(
                "data.source = 'files' needs data.train, a path in which {client} is the "
                "client's name, e.g. 'data/{client}/train.csv'"
            )
        for name in (self.label, *self.drop):
            if name in self.categories and name != self.label:
                raise ValueError(f"column {name!r} is both dropped and one-hot encoded")
        if self.label in self.drop or self.label in self.categories:
            raise ValueError(f"the label column {self.label!r} cannot be dropped or encoded")
        for column, values in self.categories.items():
            if not values or len(set(values)) != len(values):
                raise ValueError(f"data.categories.{column} needs distinct categories")
        if self.classes is not None and self.task == "regression":
            raise ValueError("data.classes applies to classification; a regression has none")
        return self

    @model_validator(mode="after")
    def _task_fits(self) -> DataConfig:
        if self.source != "embedded":
            return self  # each client's own rows: no split by class
        regression = self.dataset in _REGRESSION_DATASETS
        if regression != (self.task == "regression"):
            kind = "regression" if regression else "classification"
            raise ValueError(
                f"dataset {self.dataset!r} is a {kind} set, but data.task = {self.task!r}: "
                f"set data.task = {kind!r}"
            )
        if self.task == "regression" and self.partition in ("dirichlet", "shards"):
            raise ValueError(
                f"data.partition = {self.partition!r} splits by class, which a regression "
                "target has not: use partition = 'iid'"
            )
        return self

    @model_validator(mode="after")
    def _natural_needs_a_split(self) -> DataConfig:
        if self.source == "files":
            return self
        if self.partition == "natural" and self.dataset != "fedprox_synthetic":
            raise ValueError(
                f"data.partition = 'natural' uses a dataset's own per-client split, which "
                f"{self.dataset!r} does not have: use 'fedprox_synthetic' or partition "
                "'iid', 'dirichlet' or 'shards'"
            )
        return self


class ModelConfig(_Section):
    """A built-in or registered model and its constructor options.

    ``factory = "mypkg.nets:TabularNet"`` is another spelling of ``name`` for a model named
    by import path (an ``nn.Module`` class built as ``TabularNet(in_features, num_classes,
    **options)``); it is stored as ``name``, so both spellings are the same run.
    """

    name: str = "mlp"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _factory_is_a_name(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or "factory" not in raw:
            return raw
        body = dict(raw)
        factory = body.pop("factory")
        if "name" in body:
            raise ValueError(
                f"[model] has both name = {body['name']!r} and factory = {factory!r}: give one "
                "of them (factory is the import path of your model class)"
            )
        if not isinstance(factory, str) or ":" not in factory:
            raise ValueError(
                f"[model] factory = {factory!r} is not an import path 'package.module:NetClass'; "
                "a built-in or registered model is named with [model] name"
            )
        return {**body, "name": factory}


class ClientsConfig(_Section):
    """The federation's clients and how they train locally."""

    count: int = Field(10, ge=1, description="number of clients in the federation")
    names: list[str] | None = Field(
        None, description="the clients' names (certificates, audit, reports); sets count"
    )
    algorithm: Literal["fedavg", "fedprox", "scaffold"] = "fedavg"
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(16, ge=0, description="0 = full batch")
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    mu: float = Field(0.01, ge=0, description="FedProx proximal strength")
    loss: str | None = Field(
        None,
        description="cross_entropy | mse | 'pkg.mod:fn' marked @fedfort.loss (unset: "
        "the task's default)",
    )

    @model_validator(mode="before")
    @classmethod
    def _count_from_names(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("names"), list):
            names = raw["names"]
            if "count" in raw and raw["count"] != len(names):
                raise ValueError(
                    f"clients.count = {raw['count']} but clients.names lists {len(names)} "
                    "clients: give only the names"
                )
            return {**raw, "count": len(names)}
        return raw

    @model_validator(mode="after")
    def _names_valid(self) -> ClientsConfig:
        if self.names is None:
            return self
        bad = [n for n in self.names if not _CLIENT_NAME.fullmatch(n)]
        if bad:
            raise ValueError(
                f"client names {bad} are not valid: use letters, digits, '.', '_' or '-' "
                "(up to 63 characters, starting with a letter or digit)"
            )
        twice = sorted({n for n in self.names if self.names.count(n) > 1})
        if twice:
            raise ValueError(f"client names {twice} appear twice")
        if len(self.names) == 0:
            raise ValueError("clients.names lists no clients")
        return self

    def ids(self) -> list[str]:
        """The clients' ids: their names, or ``client-000``, ``client-001``... by count."""
        if self.names is not None:
            return list(self.names)
        return numbered_ids(self.count)

    def local_training(self, task: Task = "classification") -> LocalTrainingConfig:
        return LocalTrainingConfig(
            loss=self.loss or default_loss(task),
            algorithm=self.algorithm,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            mu=self.mu if self.algorithm == "fedprox" else 0.0,
        )


class ServerConfig(_Section):
    """Selection, collection, quorum and the server optimizer."""

    fraction: float = Field(1.0, gt=0, le=1, description="share of clients selected per round")
    min_clients: int = Field(1, ge=1, description="selected per round at least")
    min_participants: int = Field(1, ge=1, description="valid updates needed to commit")
    quorum: float = Field(0.5, ge=0, le=1, description="share of selected that must answer")
    deadline_s: float | None = Field(None, gt=0)
    max_attempts: int = Field(3, ge=1)
    optimizer: str = Field(
        "fedavg",
        description="fedavg | fedavgm | fedadam | a registered optimizer | 'pkg.mod:Optimizer'",
    )
    optimizer_options: dict[str, Any] = Field(
        default_factory=dict, description="the optimizer's own options, validated by its schema"
    )
    lr: float = Field(1.0, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)
    eval_every: int = Field(1, ge=1)
    max_sample_count: int | None = Field(
        None, ge=1, description="no update weighs more than this many samples (unset: no bound)"
    )
    declared_sample_counts: dict[str, int] = Field(
        default_factory=dict,
        description="client id -> the sample count it declared on joining; caps its weight",
    )
    sample_count_ratio: float = Field(
        2.0,
        ge=1,
        description="a client without a declared count weighs at most this times the round's "
        "lower median count",
    )

    @model_validator(mode="after")
    def _known_optimizer(self) -> ServerConfig:
        build_server_optimizer(self.model_dump())  # an unknown name or option fails here
        return self


class DefenseConfig(_Section):
    """The aggregation rule and its robustness parameters."""

    aggregator: str = Field(
        "fedavg",
        description="a registered rule (fedavg, median, krum...) or an import path 'pkg.mod:Rule'",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="the rule's own options, validated by its schema"
    )
    num_byzantine: int = Field(0, ge=0, description="f: malicious clients the rule tolerates")
    trim_ratio: float = Field(0.1, ge=0, lt=0.5, description="trimmed mean, when f = 0")
    norm_bound: float | None = Field(None, gt=0, description="clip every update to this norm")
    robust_lr_threshold: int | None = Field(
        None, ge=1, description="negate the step where fewer net sign votes agree"
    )
    centered_clipping_tau: float = Field(1.0, gt=0)
    centered_clipping_iterations: int = Field(1, ge=1)
    flame_noise: float = Field(0.001, ge=0, description="FLAME noise, times the clip norm")
    fltrust_root_samples: int = Field(100, ge=1, description="server's clean root dataset")

    @model_validator(mode="after")
    def _known_rule(self) -> DefenseConfig:
        self.rule()  # an unknown rule or option fails here, with a "did you mean"
        return self

    def rule(self, *, wrappers: bool = True) -> Aggregator:
        """The configured rule, built without the run's context (to check it)."""
        body = self.model_dump()
        if not wrappers:
            body.update(norm_bound=None, robust_lr_threshold=None)
        return build_aggregator(body, server_update=_no_server_update)


class DetectionConfig(_Section):
    """Anomaly detection on individual updates."""

    enabled: bool = False
    action: Literal["exclude", "downweight", "record"] = "exclude"
    threshold: float = Field(5.0, gt=0)
    components: tuple[Literal["norm", "cosine", "krum", "history"], ...] = Field(
        ("norm", "cosine", "krum", "history"), min_length=1
    )
    downweight_factor: float = Field(0.1, ge=0, le=1)


class ReputationConfig(_Section):
    """Client reputation, reputation-weighted selection and quarantine."""

    enabled: bool = False
    initial: float = Field(0.5, ge=0, le=1)
    reward: float = Field(0.1, ge=0, le=1)
    penalty: float = Field(0.5, ge=0, le=1)
    decay: float = Field(0.02, ge=0, le=1)
    quarantine_threshold: float = Field(0.2, ge=0, le=1)
    quarantine_rounds: int = Field(5, ge=0)
    min_weight: float = Field(0.05, ge=0, le=1)


class SimulationConfig(_Section):
    """How the simulation executes clients: in this process, or on Ray (docs/ray-runtime.md).

    None of ``workers``, ``runtime`` and the ``ray_*`` keys is part of a run's identity: a run
    may be resumed on another runtime (they are in :data:`RESUMABLE_KEYS`).
    """

    workers: int = Field(0, ge=0, description="0 = sequential; N = process pool of N")
    dropout_rate: float = Field(0.0, ge=0, lt=1, description="seeded share of clients that vanish")
    torch_threads: int = Field(1, ge=1)
    runtime: Literal["inprocess", "ray"] = Field(
        "inprocess", description="inprocess: this process (or workers); ray: Ray actors"
    )
    ray_address: str | None = Field(
        None, description="None = start a local Ray; 'auto' or 'HOST:PORT' = join a cluster"
    )
    ray_cpus_per_client: float = Field(1.0, gt=0, description="CPUs each Ray actor reserves")
    ray_gpus_per_client: float = Field(0.0, ge=0, description="GPUs (or a fraction) per actor")
    ray_actors: int | None = Field(
        None, ge=1, description="Ray actor pool size; default: cluster CPUs / cpus per client"
    )

    @model_validator(mode="after")
    def _runtime_keys(self) -> SimulationConfig:
        ray_keys = {
            "ray_address": self.ray_address is not None,
            "ray_cpus_per_client": self.ray_cpus_per_client != 1.0,
            "ray_gpus_per_client": self.ray_gpus_per_client != 0.0,
            "ray_actors": self.ray_actors is not None,
        }
        given = sorted(k for k, set_ in ray_keys.items() if set_)
        if self.runtime != "ray" and given:
            raise ValueError(
                f"simulation.{given[0]} applies to the Ray runtime: set simulation.runtime = "
                "'ray' (or --runtime ray), or drop it"
            )
        if self.runtime == "ray" and self.workers:
            raise ValueError(
                "simulation.workers sizes the in-process pool; with runtime = 'ray' size the "
                "actor pool with simulation.ray_actors instead"
            )
        address = self.ray_address
        if address is not None and address != "auto" and not _HOST_PORT.fullmatch(address):
            raise ValueError(
                f"simulation.ray_address = {address!r}: use 'auto' (the cluster this machine "
                "belongs to) or 'HOST:PORT' of the head node, e.g. '10.0.0.5:6379'"
            )
        if address is not None and address != "auto":
            port = int(address.rsplit(":", 1)[1])
            if not 0 < port < 65536:
                raise ValueError(f"simulation.ray_address port {port} is not in 1..65535")
        gpus = self.ray_gpus_per_client
        if gpus > 1 and gpus != int(gpus):
            raise ValueError(
                f"simulation.ray_gpus_per_client = {gpus}: Ray takes a fraction up to 1 or a "
                "whole number of GPUs"
            )
        return self


class DpSgdConfig(_Section):
    """Record-level DP-SGD at every client, through Opacus (see docs/privacy.md).

    ``target_epsilon`` calibrates ``noise_multiplier`` (when that is unset) so that every
    client's epsilon after ``rounds`` rounds stays within it, for the smallest client's data
    (the partition sizes in a simulation; ``min_samples`` and ``server.declared_sample_counts``
    over the network), and is each client's own budget: a client whose next round would pass
    it refuses to train. Without a target the noise multiplier defaults to 1.0.
    """

    enabled: bool = False
    noise_multiplier: float | None = Field(
        None, gt=0, description="default 1.0; calibrated from target_epsilon when that is set"
    )
    max_grad_norm: float = Field(1.0, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1, description="delta of each client's own epsilon")
    target_epsilon: float | None = Field(
        None, gt=0, description="each client's budget; calibrates noise_multiplier when unset"
    )
    min_samples: int | None = Field(
        None, ge=1, description="fewest training records a client holds (plans the noise)"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_noise(cls, data: Any) -> Any:
        # without a target the multiplier is 1.0, as it always was (and the identity with it)
        if (
            isinstance(data, Mapping)
            and data.get("target_epsilon") is None
            and data.get("noise_multiplier") is None
        ):
            return {**data, "noise_multiplier": 1.0}
        return data

    @model_validator(mode="after")
    def _budget(self) -> DpSgdConfig:
        if not self.enabled and (self.target_epsilon is not None or self.min_samples is not None):
            raise ValueError(
                "privacy.dp_sgd.target_epsilon / min_samples need privacy.dp_sgd.enabled = true"
            )
        return self


class ClientPolicyConfig(_Section):
    """A client's own privacy policy (``[privacy.client]``; see docs/privacy.md).

    The least protection a client applies whatever the server's directive asks: the server
    can only strengthen it. In simulation every client takes this policy; ``fedfort client``
    reads it from its own files and options. ``reproducible`` is an explicit, non-secure
    experiment mode: training and noise are seeded from the task (chosen by the server), as
    the directive asks, so runs repeat bit for bit and nothing is private from the server.
    """

    reproducible: bool = Field(
        False, description="non-secure: seed training and noise from the server's task seed"
    )
    local: Literal["none", "gaussian", "laplace"] = Field(
        "none", description="local DP mechanism the client always applies"
    )
    max_clip_norm: float | None = Field(None, gt=0, description="largest clip norm accepted")
    min_noise_std: float = Field(
        0.0, ge=0, description="least Gaussian noise std on a release that is not local DP"
    )
    max_round_epsilon: float | None = Field(
        None, gt=0, description="largest per-round epsilon of a local mechanism"
    )
    delta: float = Field(1e-5, gt=0, lt=1, description="per-round local and ledger delta")
    max_total_epsilon: float | None = Field(
        None, gt=0, description="the client refuses to train once its ledger would pass this"
    )
    accountant: Literal["rdp", "pld"] = "rdp"

    @model_validator(mode="after")
    def _complete(self) -> ClientPolicyConfig:
        if self.local != "none" and (self.max_clip_norm is None or self.max_round_epsilon is None):
            raise ValueError(
                f"privacy.client.local = {self.local!r} needs max_clip_norm and "
                "max_round_epsilon (the client calibrates its own noise from them)"
            )
        if self.min_noise_std > 0 and self.max_clip_norm is None:
            raise ValueError(
                "privacy.client.min_noise_std needs max_clip_norm: noise protects only a "
                "clipped update"
            )
        return self


class PrivacyConfig(_Section):
    """User-level differential privacy of the run (see docs/privacy.md).

    ``mode`` places the noise: ``central`` (the server clips and adds noise), ``distributed``
    (each client clips and adds its share, so the sum carries the noise), ``local`` (each
    client makes its own update private with per-round ``local_epsilon``).
    """

    mode: Literal["none", "central", "distributed", "local"] = "none"
    accountant: Literal["rdp", "pld"] = "rdp"
    delta: float = Field(1e-5, gt=0, lt=1)
    target_epsilon: float | None = Field(
        None, gt=0, description="budget; calibrates noise_multiplier when that is unset"
    )
    noise_multiplier: float | None = Field(None, gt=0)
    sampling: Literal["fixed", "poisson"] = Field(
        "fixed", description="poisson: each client joins with p = server.fraction (amplified)"
    )
    clip_norm: float = Field(1.0, gt=0, description="L2 clip of each update (initial if adaptive)")
    adaptive_clipping: bool = False
    target_quantile: float = Field(0.5, gt=0, lt=1)
    clip_learning_rate: float = Field(0.2, gt=0)
    clip_count_stddev: float | None = Field(
        None, gt=0, description="noise on the clipped count; default expected participants / 20"
    )
    noise_shares: int | None = Field(
        None, ge=1, description="distributed: noise shares a round needs; default all expected"
    )
    secure_noise: bool = Field(True, description="OS CSPRNG noise; false = seeded, no guarantee")
    local_mechanism: Literal["gaussian", "laplace"] = "gaussian"
    local_epsilon: float | None = Field(None, gt=0, description="local mode: per-round epsilon")
    local_delta: float = Field(1e-5, gt=0, lt=1, description="local Gaussian: per-round delta")
    dp_sgd: DpSgdConfig = Field(default_factory=DpSgdConfig)
    client: ClientPolicyConfig = Field(default_factory=ClientPolicyConfig)

    @property
    def user_level(self) -> bool:
        return self.mode in ("central", "distributed")


class SecureAggregationConfig(_Section):
    """Secure aggregation: the server learns only the sum (see docs/secure-aggregation.md).

    ``mode``: ``secagg`` (Bonawitz et al. 2017, every pair of clients), ``secagg+`` (Bell et al.
    2020, a random graph of degree ``O(log n)``) or ``ckks`` (homomorphic encryption).
    ``corrupt_fraction`` and ``dropout_fraction`` size the masking modes' degree and threshold
    (``2 t > k + 1 + c_max``, :mod:`fedfort.secagg.thresholds`); ``client_min_clients``,
    ``client_max_clients`` and ``corrupt_fraction`` are also each client's own floor
    (:class:`fedfort.secagg.policy.ClientPolicy`), read from the client's copy of the file.
    """

    mode: Literal["none", "secagg", "secagg+", "ckks"] = "none"
    bits: int = Field(32, ge=16, le=64, description="masking modulus 2**bits")
    value_range: float = Field(
        1.0, gt=0, description="largest |coordinate| of an update; used when nothing clips"
    )
    max_weight: int = Field(1000, ge=1, description="a client's sample count is capped at this")
    threshold: int | None = Field(None, ge=2, description="t; default: the papers' value")
    degree: int | None = Field(None, ge=2, description="secagg+ graph degree k; default O(log n)")
    corrupt_fraction: float = Field(
        1 / 3, ge=0, lt=0.5, description="share of a session's clients assumed to collude"
    )
    dropout_fraction: float = Field(
        0.1, ge=0, lt=0.5, description="share of a session's clients that may drop out"
    )
    client_min_clients: int = Field(
        3, ge=2, description="a client refuses masking sessions with fewer clients"
    )
    client_max_clients: int = Field(
        10_000, ge=2, description="a client refuses masking sessions with more clients"
    )
    ckks_poly_modulus_degree: Literal[4096, 8192, 16384, 32768] = 8192
    step_deadline_s: float | None = Field(None, gt=0, description="per protocol step")
    simulated_dropout: float = Field(
        0.0, ge=0, lt=1, description="simulation: share of clients vanishing at each step"
    )

    @property
    def enabled(self) -> bool:
        return self.mode != "none"


class NetworkConfig(_Section):
    """The gRPC runtime (``fedfort server`` / ``fedfort client``; see docs/deployment.md).

    Not part of :meth:`RunConfig.identity_hash`, but part of :meth:`RunConfig.config_identity`:
    a resumed server must keep them, except ``address``, ``start_clients`` and
    ``start_timeout_s`` (in :data:`RESUMABLE_KEYS`).
    """

    address: str = Field("127.0.0.1:50051", description="host:port the server listens on")
    round_deadline_s: float = Field(
        120.0, gt=0, description="collect deadline when server.deadline_s is unset"
    )
    step_deadline_s: float = Field(
        60.0, gt=0, description="secure aggregation step deadline when its own is unset"
    )
    poll_timeout_s: float = Field(5.0, gt=0, description="how long a client's poll may wait")
    heartbeat_s: float = Field(1.0, gt=0, description="client heartbeat period")
    liveness_s: float = Field(
        6.0, gt=0, description="a client silent this long is treated as dropped"
    )
    start_clients: int | None = Field(
        None, ge=1, description="enrolled clients to wait for before round 1 (default: all)"
    )
    start_timeout_s: float = Field(300.0, gt=0)
    chunk_bytes: int = Field(1 << 20, ge=1024, le=16 << 20, description="frame payload size")
    max_payload_bytes: int = Field(
        64 << 20, ge=1 << 16, description="largest message a peer may send"
    )
    rate_per_s: float = Field(50.0, gt=0, description="per-client request rate")
    burst: float = Field(100.0, ge=1)
    max_concurrent_rpcs: int = Field(256, ge=4, description="bounded concurrent streams")
    max_streams_per_client: int = Field(
        8, ge=3, description="RPCs one client may have open at once (poll, heartbeat, upload)"
    )
    max_upload_bytes_per_client: int | None = Field(
        None,
        ge=1 << 16,
        description="payload bytes one client's uploads may declare at once "
        "(default: twice the largest message)",
    )
    stream_idle_s: float = Field(
        10.0, gt=0, description="cancel a request stream that sends nothing this long"
    )
    upload_deadline_s: float = Field(
        300.0, gt=0, description="cancel a request stream still sending after this long"
    )
    linger_s: float = Field(10.0, ge=0, description="serve 'finished' this long after the run")
    backoff_initial_s: float = Field(0.2, gt=0)
    backoff_max_s: float = Field(5.0, gt=0)
    pad_messages: bool = Field(
        True,
        description="pad updates and secure-aggregation messages to fixed sizes "
        "(docs/side-channels.md); server and clients must agree",
    )
    submit_at_fraction_of_deadline: float | None = Field(
        None,
        gt=0,
        le=1,
        description="client: hold a trained update until this fraction of "
        "round_deadline_s after the task arrived, so its timing hides the training time",
    )


class GovernanceConfig(_Section):
    """The audit log and automatic rollback (see docs/governance.md)."""

    audit: bool = Field(
        True, description="keep the signed, hash-chained audit log (runs with an output dir)"
    )
    rollback_drop: float | None = Field(
        None,
        gt=0,
        le=1,
        description="roll back to the best version when validation accuracy falls this far below",
    )
    rollback_on: Literal["server", "federated"] = Field(
        "server",
        description="the accuracy rollback watches: the server's validation set or the "
        "clients' federated evaluation",
    )
    publish_head: bool = Field(
        False,
        description="print the audit log's signed head after every round and, with [alerts] "
        "and a webhook, send it there as an audit_head notice (a copy outside the run dir)",
    )


class MonitoringConfig(_Section):
    """Live monitoring endpoints; not part of :meth:`RunConfig.identity_hash`, but a resumed run
    must keep them (:meth:`RunConfig.config_identity`; see docs/governance.md)."""

    metrics_address: str | None = Field(
        None, description="host:port to serve Prometheus /metrics on (e.g. 127.0.0.1:9464)"
    )
    dashboard_address: str | None = Field(
        None, description="host:port to serve the live dashboard on (e.g. 127.0.0.1:8321)"
    )


AlertRuleName = Literal[
    "client_flag_rate",
    "accuracy_drop",
    "privacy_budget",
    "dropout_spike",
    "audit_chain",
    "bad_signatures",
]


class AlertsConfig(_Section):
    """Alert rules and their delivery to the log and a webhook (see docs/alerting.md).

    ``rules`` lists the rules that run (all by default); the other keys are their thresholds.
    Not part of :meth:`RunConfig.identity_hash`, but a resumed run must keep its alerting
    (:meth:`RunConfig.config_identity`).
    """

    enabled: bool = Field(False, description="evaluate the rules and deliver alerts")
    run_id: str | None = Field(
        None, description="run id in alerts; default: the run directory's name"
    )
    rules: tuple[AlertRuleName, ...] = Field(
        (
            "client_flag_rate",
            "accuracy_drop",
            "privacy_budget",
            "dropout_spike",
            "audit_chain",
            "bad_signatures",
        ),
        description="the rules that run",
    )
    flag_rate: float = Field(
        0.3, ge=0, lt=1, description="share of scored updates flagged by detection above this"
    )
    accuracy_drop: float = Field(
        0.1, gt=0, le=1, description="validation accuracy this far below the best so far"
    )
    accuracy_drop_round: float = Field(
        0.05, gt=0, le=1, description="validation accuracy this far below the previous round"
    )
    epsilon_margin: float = Field(0.5, ge=0, description="epsilon spent within this of the budget")
    epsilon_budget: float | None = Field(
        None, gt=0, description="budget to watch; default privacy.target_epsilon"
    )
    dropout_rate: float = Field(0.5, ge=0, lt=1, description="dropped / selected above this")
    audit_verify_every: int = Field(
        5, ge=1, description="verify the audit log every N rounds (rule audit_chain)"
    )
    bad_signatures: int = Field(
        5, ge=1, description="refusals of one client within the window that raise an alert"
    )
    bad_signature_window_s: float = Field(60.0, gt=0)
    bad_signature_reasons: tuple[str, ...] = Field(
        ("bad_signature",), min_length=1, description="gate reason codes that count"
    )
    webhook_url: str | None = Field(None, description="http(s) URL alerts are POSTed to")
    webhook_url_env: str | None = Field(
        None, description="environment variable holding the webhook URL (for secret URLs)"
    )
    webhook_attempts: int = Field(5, ge=1, le=20, description="tries per alert, first included")
    webhook_backoff_s: float = Field(0.5, gt=0, description="first retry delay; doubles")
    webhook_backoff_max_s: float = Field(30.0, gt=0)
    webhook_timeout_s: float = Field(5.0, gt=0, description="per HTTP request")
    webhook_queue_size: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> AlertsConfig:
        if self.webhook_url is not None and self.webhook_url_env is not None:
            raise ValueError(
                "set alerts.webhook_url or alerts.webhook_url_env (for a secret URL), not both"
            )
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError("alerts.webhook_url must start with http:// or https://")
        if self.webhook_backoff_max_s < self.webhook_backoff_s:
            raise ValueError("alerts.webhook_backoff_max_s must be >= alerts.webhook_backoff_s")
        if not self.enabled and (self.webhook_url or self.webhook_url_env):
            raise ValueError(
                "alerts has a webhook but alerts.enabled = false: set enabled = true to send it"
            )
        return self


class AccessConfig(_Section):
    """Role-based access control of the operator API, dashboard and /metrics (see
    docs/access-control.md). Off while ``tokens`` is unset. Not part of
    :meth:`RunConfig.identity_hash`, but a resumed run must keep it
    (:meth:`RunConfig.config_identity`): its token store decides who may start the run."""

    tokens: str | None = Field(
        None, description="SQLite token store (fedfort access token issue); enables access control"
    )
    operator_address: str | None = Field(
        None, description="host:port of the operator API (HTTPS; e.g. 127.0.0.1:8443)"
    )
    tls_cert: str | None = Field(None, description="certificate for HTTPS (server's, from the PKI)")
    tls_key: str | None = Field(None, description="its private key")
    tls_ca: str | None = Field(
        None, description="the federation's ca.pem (identifies client certs)"
    )
    ca_dir: str | None = Field(None, description="CA directory (ca.key) for clients.revoke")
    roles: dict[str, Literal["admin", "operator", "auditor", "viewer"]] = Field(
        default_factory=dict,
        description="client-certificate common name -> role (needs tls_ca and a CRL beside it)",
    )
    hold_at_start: bool = Field(False, description="wait for 'fedfort operator start'")
    audit_window_s: float = Field(
        60.0, gt=0, description="coalescing window of polled reads' access entries"
    )


def _check_statistics(config: RunConfig) -> None:
    """The statistics round of ``[data] standardize`` / ``impute`` must be able to run."""
    data = config.data
    if not (data.standardize or data.impute != "none"):
        return
    if config.secure_aggregation.mode == "ckks":
        raise ValueError(
            "data.standardize / impute sum the clients' statistics exactly, which CKKS cannot: "
            "use secure_aggregation.mode = 'secagg' or 'secagg+'"
        )
    if config.privacy.mode == "none":
        return
    features = config.edge.features if config.edge.enabled else None
    ranged = features is not None and features.min is not None and features.max is not None
    if data.value_bound is None and not ranged:
        raise ValueError(
            "a private run's federated statistics clip every feature value to a declared "
            "range: set data.value_bound, or [edge.features] min and max"
        )
    if data.count_bound is None:
        raise ValueError(
            "a private run's federated statistics cap the rows one client contributes: set "
            "data.count_bound (e.g. the largest client's row count, which is then public)"
        )


class RunConfig(_Section):
    """A whole simulation run."""

    seed: int = Field(0, ge=0)
    rounds: int = Field(30, ge=1)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    clients: ClientsConfig = Field(default_factory=ClientsConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    reputation: ReputationConfig = Field(default_factory=ReputationConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    attack: AttackConfig = Field(default_factory=NoAttack)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    secure_aggregation: SecureAggregationConfig = Field(default_factory=SecureAggregationConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    edge: EdgeConfig = Field(default_factory=EdgeConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        _check_privacy(self)
        _check_evaluation(self)
        _check_secure_aggregation(self)
        _check_statistics(self)
        check_run_settings(self.edge)
        if self.server.min_clients > self.clients.count:
            raise ValueError(
                f"server.min_clients ({self.server.min_clients}) exceeds clients.count "
                f"({self.clients.count})"
            )
        if self.server.min_participants > self.clients.count:
            raise ValueError(
                f"server.min_participants ({self.server.min_participants}) exceeds "
                f"clients.count ({self.clients.count}): no round could ever commit"
            )
        selected = min(
            self.clients.count,
            max(self.server.min_clients, math.ceil(self.server.fraction * self.clients.count)),
        )
        need = self.defense.rule().min_updates(self.defense.num_byzantine)
        if selected < need:
            raise ValueError(
                f"defense.aggregator = {self.defense.aggregator!r} with num_byzantine = "
                f"{self.defense.num_byzantine} needs at least {need} updates per round, but "
                f"only {selected} clients are selected: raise clients.count or "
                "server.fraction, or lower num_byzantine"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def identity_hash(self) -> str:
        """SHA-256 of what the rounds compute: the config without ``rounds`` and the runtime.

        Settings of the runtime (``network``, ``monitoring``, ``alerts``, ``access``,
        ``simulation.workers``, ``simulation.runtime`` and its ``ray_*`` keys) and the audit
        switch are not part of it; it names the run's secure aggregation sessions. What a
        resumed run must match is :meth:`config_identity`, which covers all of them.
        """
        body = _without_later_defaults(self.to_dict())
        body.pop("rounds")
        body.pop("network")
        body.pop("monitoring")
        body.pop("alerts", None)
        body.pop("access", None)
        for key in _RUNTIME_ONLY:
            body["simulation"].pop(key)
        if body["data"]["dataset"] != "fedprox_synthetic":
            # settings added later that only this dataset reads keep older runs' identity
            for key in ("fedprox_alpha", "fedprox_beta", "fedprox_max_samples"):
                body["data"].pop(key)
        if body["attack"].get("end_round") is None:
            # settings added later, at their defaults, keep the identity of older runs
            body["attack"].pop("end_round", None)
        if body["edge"] == _without_later_defaults(RunConfig().to_dict())["edge"]:
            body.pop("edge")  # runs without client-side data protection keep their identity
        if body["privacy"]["client"] == ClientPolicyConfig().model_dump(mode="json"):
            body["privacy"].pop("client")  # runs with the default client policy keep theirs
        governance = body.pop("governance")
        if governance["rollback_drop"] is not None:
            # drift rollback changes which models are committed; the audit switch does not
            body["rollback_drop"] = governance["rollback_drop"]
            if "rollback_on" in governance:
                body["rollback_on"] = governance["rollback_on"]
        return hashlib.sha256(jsonio.dumps(body, sort_keys=True).encode()).hexdigest()

    def config_identity(self) -> str:
        """SHA-256 of the whole config except :data:`RESUMABLE_KEYS`.

        Unlike :meth:`identity_hash` (what the rounds compute, which also names secure
        aggregation sessions) it covers every security-relevant table: ``[access]``,
        ``[alerts]``, ``[network]``, ``[monitoring]``, ``[governance]``, ``[privacy]``,
        ``[defense]``, ``[detection]``, ``[secure_aggregation]``, ``[edge]``... A checkpoint
        stores and signs it; a resume must match it.
        """
        body = _without_later_defaults(self.to_dict())
        for dotted in RESUMABLE_KEYS:
            *parents, leaf = dotted.split(".")
            node = body
            for key in parents:
                node = node[key]
            node.pop(leaf)
        return hashlib.sha256(jsonio.dumps(body, sort_keys=True).encode()).hexdigest()

    def with_overrides(self, overrides: dict[str, Any]) -> RunConfig:
        """A copy with dotted-key overrides applied, e.g. ``{"clients.count": 20}``."""
        body = self.to_dict()
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = body
            *parents, leaf = dotted.split(".")
            for key in parents:
                child = node.get(key) if isinstance(node, dict) else None
                if not isinstance(child, dict):
                    raise ConfigError(f"unknown config section in override {dotted!r}")
                node = child
            node[leaf] = value
        return parse_config(body)


#: dotted config keys a resumed run may change (docs/deployment.md): how many rounds to run,
#: how the simulation executes its clients, and where the server listens. Everything else must
#: equal what the run's signed checkpoint stores, or the resume is refused.
RESUMABLE_KEYS: tuple[str, ...] = (
    "rounds",
    "simulation.workers",
    "simulation.runtime",
    "simulation.ray_address",
    "simulation.ray_cpus_per_client",
    "simulation.ray_gpus_per_client",
    "simulation.ray_actors",
    "network.address",
    "network.start_clients",
    "network.start_timeout_s",
)


def _without_later_defaults(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without keys added after runs were stored, while they hold their defaults, so
    older runs keep their identity (``defense.options``, ``server.optimizer_options`` when
    empty)."""
    defaults = DataConfig().model_dump(mode="json")
    for key in _FILES_KEYS:
        if key in body["data"] and body["data"][key] == defaults[key]:
            body["data"].pop(key)
    edge = body.get("edge")
    if isinstance(edge, dict) and not edge.get("by_feature"):
        edge.pop("by_feature", None)  # runs from before per-feature checks keep their identity
    if body["clients"].get("names") is None:
        body["clients"].pop("names", None)
    if not body["defense"].get("options"):
        body["defense"].pop("options", None)
    if not body["server"].get("optimizer_options"):
        body["server"].pop("optimizer_options", None)
    if body.get("evaluation") == EvaluationConfig().model_dump(mode="json"):
        body.pop("evaluation")
    if body["data"].get("task") == "classification":
        body["data"].pop("task")
    if body["clients"].get("loss") is None:
        body["clients"].pop("loss", None)
    if body["governance"].get("rollback_on") == "server":
        body["governance"].pop("rollback_on")
    dp_sgd = body.get("privacy", {}).get("dp_sgd", {})
    for key in ("target_epsilon", "min_samples"):
        if dp_sgd.get(key) is None:
            dp_sgd.pop(key, None)
    return body


def config_differences(stored: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two config dicts, :data:`RESUMABLE_KEYS` apart."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if path in RESUMABLE_KEYS:
            return
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif a != b:
            out.append(path)

    walk(stored, given, "")
    return out


#: ``[simulation]`` keys that choose how clients are executed, not what is computed
_RUNTIME_ONLY = (
    "workers",
    "runtime",
    "ray_address",
    "ray_cpus_per_client",
    "ray_gpus_per_client",
    "ray_actors",
)


#: embedded datasets whose target is a number, not a class
_REGRESSION_DATASETS = frozenset({"diabetes"})


def federated_evaluation(cfg: RunConfig) -> bool:
    """Whether the clients evaluate the global model on hold-outs of their own: a share of
    each embedded partition (``[evaluation] client_holdout``), or each client's ``test`` file
    (``[data] test``; with data given in Python, its ``test_data=``)."""
    return cfg.evaluation.client_holdout > 0 or (
        cfg.data.source != "embedded" and cfg.data.test is not None
    )


def _check_evaluation(cfg: RunConfig) -> None:
    """Refuse metrics, losses and rollback settings the run could not compute."""
    task = cfg.data.task
    if cfg.data.source != "embedded" and cfg.evaluation.client_holdout > 0:
        raise ValueError(
            "evaluation.client_holdout splits an embedded dataset's partitions; the clients' "
            "own data brings its hold-out: set [data] test (or test_data= in Python)"
        )
    attack = getattr(cfg.attack, "name", None)
    if task == "regression" and attack in ("label_flip", "backdoor"):
        raise ValueError(
            f"attack {attack!r} changes class labels, which a regression run has not: choose "
            "a model-poisoning attack (sign_flip, gaussian_noise, alie...)"
        )
    if cfg.evaluation.metrics is not None:
        from fedfort.evaluation.metrics import metric_spec  # loads scikit-learn

        for name in cfg.evaluation.metrics:
            metric_spec(name, task)
    if cfg.clients.loss is not None:
        check_loss(cfg.clients.loss, task)
    if cfg.governance.rollback_drop is None:
        return
    if task == "regression":
        raise ValueError(
            "governance.rollback_drop watches accuracy, which a regression run has not: "
            "unset rollback_drop"
        )
    if cfg.governance.rollback_on == "server" and not cfg.evaluation.server:
        raise ValueError(
            "governance.rollback_drop watches the server's accuracy, but evaluation.server = "
            "false: set governance.rollback_on = 'federated' (with evaluation.client_holdout)"
        )
    metrics = cfg.evaluation.metrics
    if metrics is not None and "accuracy" not in metrics:
        raise ValueError(
            "governance.rollback_drop watches accuracy: add 'accuracy' to evaluation.metrics"
        )
    if cfg.governance.rollback_on == "federated" and not federated_evaluation(cfg):
        raise ValueError(
            "governance.rollback_on = 'federated' needs the clients' evaluation: set "
            "evaluation.client_holdout (e.g. 0.2)"
        )


def _check_privacy(cfg: RunConfig) -> None:
    """Refuse privacy settings whose guarantee would not hold or could not be computed."""
    p = cfg.privacy
    if p.mode == "none":
        if p.target_epsilon is not None or p.noise_multiplier is not None:
            raise ValueError(
                "privacy.target_epsilon / noise_multiplier need privacy.mode = 'central', "
                "'distributed' or 'local'"
            )
        return
    if p.mode == "local":
        if p.local_epsilon is None:
            raise ValueError("privacy.mode = 'local' needs privacy.local_epsilon (per round)")
        if p.noise_multiplier is not None or p.adaptive_clipping or p.sampling == "poisson":
            raise ValueError(
                "privacy.mode = 'local' is set by local_epsilon alone: drop noise_multiplier, "
                "adaptive_clipping and sampling = 'poisson'"
            )
        return
    if p.noise_multiplier is None and p.target_epsilon is None:
        raise ValueError(
            f"privacy.mode = {p.mode!r} needs privacy.noise_multiplier or privacy.target_epsilon "
            "(which calibrates the noise for the configured rounds)"
        )
    if p.local_epsilon is not None:
        raise ValueError("privacy.local_epsilon applies only to privacy.mode = 'local'")
    # the sensitivity analysis of DP-FedAvg holds for a plain sum of clipped updates from an
    # independent sample: data-dependent exclusion, weighting or selection breaks it
    # ... except central DP around a rule (PrivateAggregate with ``rule``): its output is
    # projected onto the clip ball, so any rule's sensitivity is the ball's diameter 2C
    robust = not cfg.defense.rule(wrappers=False).sum_compatible
    wrapped = cfg.defense.norm_bound is not None or cfg.defense.robust_lr_threshold is not None
    if (robust or wrapped) and (p.mode != "central" or cfg.secure_aggregation.enabled):
        raise ValueError(
            f"privacy.mode = {p.mode!r} aggregates the clipped updates as a noisy sum: set "
            "defense.aggregator = 'fedavg' without norm_bound or robust_lr_threshold "
            "(privacy.clip_norm clips); robust rules look at individual updates, which the "
            "guarantee covers only in central mode without secure aggregation"
        )
    if cfg.detection.enabled or cfg.reputation.enabled:
        raise ValueError(
            f"privacy.mode = {p.mode!r} cannot be combined with detection or reputation: they "
            "exclude or select clients by their updates, which the accounting does not cover"
        )
    if cfg.clients.algorithm == "scaffold":
        raise ValueError(
            "SCAFFOLD's control variates are released without noise: use fedavg or fedprox "
            "with user-level privacy"
        )
    if p.sampling == "poisson" and cfg.server.fraction >= 1.0:
        raise ValueError(
            "privacy.sampling = 'poisson' samples each client with p = server.fraction: set "
            "server.fraction below 1 (or use sampling = 'fixed' to take everyone every round)"
        )
    if p.sampling == "poisson" and cfg.server.min_clients > 1:
        raise ValueError("Poisson sampling ignores server.min_clients: leave it at 1")
    count_std, z = p.clip_count_stddev, p.noise_multiplier
    if p.adaptive_clipping and count_std is not None and z is not None and 2 * count_std <= z:
        raise ValueError(
            "adaptive clipping needs 2 * privacy.clip_count_stddev > noise_multiplier "
            "(the clipped count takes part of the noise budget): raise clip_count_stddev"
        )


def _check_secure_aggregation(cfg: RunConfig) -> None:
    """Refuse defences that would silently do nothing under secure aggregation.

    The server sees only the sum, so any rule or check that reads a single client's update
    cannot run on it.
    """
    sa = cfg.secure_aggregation
    if not sa.enabled:
        if sa.simulated_dropout > 0:
            raise ValueError("secure_aggregation.simulated_dropout needs a secure_aggregation.mode")
        return
    why = (
        f"secure_aggregation.mode = {sa.mode!r} shows the server only the sum of the round's "
        "updates, never a single one"
    )
    if not cfg.defense.rule(wrappers=False).sum_compatible:
        raise ValueError(
            f"{why}, so defense.aggregator = {cfg.defense.aggregator!r} (which compares or "
            "filters individual updates) cannot run. Use defense.aggregator = 'fedavg' with "
            "secure aggregation, or turn secure aggregation off to use a robust rule"
        )
    for key, value in (
        ("defense.norm_bound", cfg.defense.norm_bound),
        ("defense.robust_lr_threshold", cfg.defense.robust_lr_threshold),
    ):
        if value is not None:
            raise ValueError(
                f"{why}, so {key} (applied by the server to every update) cannot run; clip at "
                "the clients with privacy.clip_norm instead"
            )
    if cfg.detection.enabled:
        raise ValueError(
            f"{why}, so per-client anomaly scores ([detection]) cannot be computed: disable "
            "detection or secure aggregation"
        )
    if cfg.reputation.enabled:
        raise ValueError(
            f"{why}, so reputation (which scores and flags single clients) cannot run: disable "
            "reputation or secure aggregation"
        )
    if cfg.clients.algorithm == "scaffold":
        raise ValueError(
            f"{why}; SCAFFOLD's per-client control deltas would travel in the clear: use "
            "fedavg or fedprox with secure aggregation"
        )
    n = cfg.clients.count
    if n < 3:
        raise ValueError("secure aggregation needs at least 3 clients in the federation")
    if sa.threshold is not None and sa.threshold > n:
        raise ValueError(
            f"secure_aggregation.threshold = {sa.threshold} exceeds clients.count = {n}"
        )
    if sa.degree is not None and (sa.mode != "secagg+" or sa.degree % 2 or sa.degree >= n):
        raise ValueError(
            "secure_aggregation.degree applies to mode = 'secagg+' and must be even and below "
            "clients.count"
        )
    if sa.mode == "ckks" and sa.bits != 32:
        raise ValueError("secure_aggregation.bits applies to the masking modes, not ckks")
    if sa.mode in ("secagg", "secagg+"):
        _check_masking_thresholds(cfg)


def _check_masking_thresholds(cfg: RunConfig) -> None:
    """Refuse a masking setup with no safe and live ``(k, t)`` for the clients selected."""
    from fedfort.secagg.thresholds import derive  # scipy, only for the masking modes

    sa, srv, n = cfg.secure_aggregation, cfg.server, cfg.clients.count
    selected = min(n, max(srv.min_clients, math.ceil(srv.fraction * n)))
    if not sa.client_min_clients <= selected <= sa.client_max_clients:
        raise ValueError(
            f"{selected} clients are selected per round, but clients accept masking sessions of "
            f"{sa.client_min_clients} to {sa.client_max_clients} clients "
            "(secure_aggregation.client_min_clients / client_max_clients)"
        )
    try:
        found = derive(
            selected,
            sa.mode,
            corrupt_fraction=sa.corrupt_fraction,
            dropout_fraction=sa.dropout_fraction,
            degree=sa.degree,
        )
    except ConfigError as exc:
        raise ValueError(f"secure_aggregation with {selected} clients per round: {exc}") from exc
    if sa.threshold is not None and not (
        2 * sa.threshold > found.degree + 1 + found.corrupt_bound
        and sa.threshold <= found.degree + 1
    ):
        raise ValueError(
            f"secure_aggregation.threshold = {sa.threshold} is unsafe with degree "
            f"{found.degree} and up to {found.corrupt_bound} corrupt holders among "
            f"{selected} clients: it must exceed (k + 1 + c_max) / 2 = "
            f"{(found.degree + 1 + found.corrupt_bound) / 2} (leave it unset to derive it)"
        )


def _describe(error: ValidationError, known: dict[str, list[str]]) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "config"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            parent = ".".join(str(p) for p in item["loc"][:-1])
            close = difflib.get_close_matches(str(item["loc"][-1]), known.get(parent, []), n=1)
            msg = "unknown key" + (f"; did you mean {close[0]!r}?" if close else "")
        lines.append(f"{loc}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _known_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> dict[str, list[str]]:
    """Every section's keys by dotted path, nested sections included (``privacy.dp_sgd``)."""
    known = {prefix: list(model.model_fields)}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            known.update(_known_keys(annotation, f"{prefix}.{name}" if prefix else name))
    return known


def parse_config(raw: dict[str, Any]) -> RunConfig:
    """Validate a config mapping; raise :class:`ConfigError` with every problem found."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, _known_keys())) from None


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Parse a TOML file; a missing or malformed file raises :class:`ConfigError`."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from None


def load_config(path: str | Path | None = None) -> RunConfig:
    """Load and validate a TOML config; ``None`` gives the defaults."""
    if path is None:
        return RunConfig()
    return parse_config(read_toml(path))
