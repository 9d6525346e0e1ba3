"""The messages a round exchanges between the server and its clients.

They are plain data: the simulation runtime passes them in-process or to worker processes, and
the network runtime will serialise the same objects. Vectors are float32 NumPy arrays of the
model's flat dimension (see :mod:`fedfort.params`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedfort import jsonio

__all__ = [
    "Algorithm",
    "ClientPrivacy",
    "ClientUpdate",
    "DpSgdSettings",
    "EvaluateTask",
    "EvaluationReport",
    "FeatureTransform",
    "LocalTrainingConfig",
    "LossName",
    "SecureAggregation",
    "SecureMode",
    "StatisticsReply",
    "StatisticsRequest",
    "TrainTask",
    "session_task_digest",
    "statistics_digest",
]

Algorithm = Literal["fedavg", "fedprox", "scaffold"]
#: ``cross_entropy``, ``mse`` or the import path of a loss the client marked with
#: ``@fedfort.loss`` (a plain string on the wire; see :mod:`fedfort.evaluation.losses`)
LossName = str
LocalMechanism = Literal["gaussian", "laplace"]
SecureMode = Literal["secagg", "secagg+", "ckks"]


@dataclass(frozen=True)
class DpSgdSettings:
    """Sample-level DP-SGD at the client (Abadi et al., CCS 2016), run through Opacus.

    Every per-sample gradient is clipped to L2 norm ``max_grad_norm`` and Gaussian noise with
    std ``noise_multiplier * max_grad_norm`` is added to each batch sum; batches are Poisson
    samples of the client's data. ``delta`` is the delta at which the client reports epsilon.

    ``secure_noise`` draws the Gaussian noise from the OS CSPRNG instead of a generator seeded
    from the task. The client sets it itself before training
    (:meth:`fedfort.client.FederatedClient.training_task`: on unless its own policy is
    ``reproducible``); the server's value is never used.
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float = 1e-5
    secure_noise: bool = False


@dataclass(frozen=True)
class LocalTrainingConfig:
    """How a client trains locally; chosen by the server and sent with every task.

    ``algorithm`` selects FedAvg (plain local SGD), FedProx (adds the proximal term
    ``mu/2 * ||w - w_global||^2``, Li et al. 2020) or SCAFFOLD (control-variate drift
    correction, Karimireddy et al. 2020).
    """

    algorithm: Algorithm = "fedavg"
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    mu: float = 0.0
    loss: LossName = "cross_entropy"
    dp_sgd: DpSgdSettings | None = None


@dataclass(frozen=True)
class ClientPrivacy:
    """What the server asks a client to do to its update before it leaves the client.

    - ``clip_norm``: clip the update to this L2 norm (L1 norm for local Laplace); ``None``
      leaves the update unclipped (central DP clips at the server).
    - ``noise_std``: std of the Gaussian noise the client adds to its clipped update, its
      share of the distributed DP noise (0 for none).
    - ``report_clipped``: send ``clip_indicator`` for adaptive clipping (1 if the update's
      norm was within ``clip_norm``, centred to +-1/2), plus ``indicator_noise_std`` noise.
    - ``local``: a local DP mechanism with per-round ``local_epsilon`` (and ``local_delta``
      for Gaussian); the client clips and noises so that its single update is private on its
      own, trusting no one.
    - ``secure_noise``: draw noise from the OS CSPRNG (otherwise from a generator seeded with
      the task seed, for reproducible experiments only).
    """

    clip_norm: float | None = None
    noise_std: float = 0.0
    report_clipped: bool = False
    indicator_noise_std: float = 0.0
    local: LocalMechanism | None = None
    local_epsilon: float = 0.0
    local_delta: float = 0.0
    secure_noise: bool = True


@dataclass(frozen=True)
class SecureAggregation:
    """The round is securely aggregated: the update stays at the client until the protocol.

    The client answers the task with a *sealed* :class:`ClientUpdate` (no vector, no sample
    count, no metrics) and keeps ``[w x, w]`` for the session ``(run_id, round, attempt,
    nonce)`` of ``mode`` (see :mod:`fedfort.secagg`), where ``w`` is its sample count capped at
    ``max_weight`` (1 under differential privacy). ``ckks_*`` configure the HE mode.
    """

    mode: SecureMode
    run_id: str
    nonce: bytes
    max_weight: int = 1
    ckks_poly_modulus_degree: int = 8192


@dataclass(frozen=True)
class FeatureTransform:
    """The federation's feature transform (``[data] standardize`` / ``impute``).

    A missing value of feature ``j`` becomes ``fill[j]`` (``NaN``: left missing), then
    ``(x - shift) / scale``. float64 vectors of the schema's feature count; a client checks
    them before it applies them (:mod:`fedfort.client.statistics`).
    """

    fill: np.ndarray
    shift: np.ndarray
    scale: np.ndarray

    def digest(self) -> str:
        """SHA-256 of the three vectors (float64 bytes): the transform's identity."""
        h = hashlib.sha256(b"fedfort-feature-transform\x00")
        for array in (self.fill, self.shift, self.scale):
            data = np.ascontiguousarray(array, dtype=np.float64).tobytes()
            h.update(len(data).to_bytes(8, "big") + data)
        return h.hexdigest()


@dataclass(frozen=True)
class StatisticsRequest:
    """The server asks every client for its per-feature statistics, once, before round 1.

    The client answers with the counts, sums and sums of squares of its training features
    (:class:`StatisticsReply`), or, when ``secure`` is set, with a sealed reply and then its
    input to the secure-aggregation session ``(run_id, round, attempt, nonce)``. Under
    differential privacy ``lower``/``upper`` are the declared range every value is clipped
    to (and rescaled from, to ``[-1, 1]``), ``max_count`` caps the rows one client
    contributes and ``noise_std`` is the Gaussian noise the client adds to each coordinate
    of its (rescaled) statistics.
    """

    round: int
    attempt: int
    run_id: str
    nonce: bytes
    num_features: int
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    max_count: float | None = None
    noise_std: float = 0.0
    secure: SecureAggregation | None = None


@dataclass(frozen=True)
class StatisticsReply:
    """A client's statistics: ``[count, sum, sum of squares]`` per feature (``3 d`` values,
    float64), or an empty ``vector`` and ``sealed`` when they go into secure aggregation."""

    round: int
    client_id: str
    vector: np.ndarray
    sealed: bool = False


@dataclass(frozen=True)
class TrainTask:
    """The server's broadcast to one selected client for one round attempt.

    ``transform`` is the federation's feature transform, sent with every task so a client
    that joins late or restarts has it before it trains."""

    round: int
    attempt: int
    client_id: str
    weights: np.ndarray
    config: LocalTrainingConfig
    seed: int
    server_control: np.ndarray | None = None
    privacy: ClientPrivacy | None = None
    secure: SecureAggregation | None = None
    transform: FeatureTransform | None = None


@dataclass(frozen=True)
class ClientUpdate:
    """A client's answer: the model delta ``w_local - w_global`` and its sample count.

    ``control_delta`` is SCAFFOLD's ``c_i+ - c_i`` and is ``None`` for other algorithms.
    ``metrics`` holds local measurements such as ``train_loss`` and ``train_time_s``.
    ``clip_indicator`` is the (possibly noised) adaptive-clipping bit asked for by
    :class:`ClientPrivacy`. A ``sealed`` update answers a securely aggregated task: its
    ``delta`` is empty, ``num_samples`` is 1 and it carries no metrics; the vector takes part
    only in the secure aggregation session.
    """

    round: int
    client_id: str
    delta: np.ndarray
    num_samples: int
    metrics: dict[str, float] = field(default_factory=dict)
    control_delta: np.ndarray | None = None
    clip_indicator: float | None = None
    sealed: bool = False


@dataclass(frozen=True)
class EvaluateTask:
    """The server asks one client to score the global model ``weights`` on its own hold-out.

    ``metrics`` names what to report (see :mod:`fedfort.evaluation.metrics`), ``loss`` the
    loss the ``loss`` metric means and ``task`` the run's task. A client answers at most one
    evaluation per round, for increasing rounds only (:mod:`fedfort.client.evaluation`).
    """

    round: int
    client_id: str
    weights: np.ndarray
    metrics: tuple[str, ...]
    loss: LossName = "cross_entropy"
    task: Literal["classification", "regression"] = "classification"


@dataclass(frozen=True)
class EvaluationReport:
    """A client's answer to an :class:`EvaluateTask`: metric values and how many hold-out
    examples they were computed on. Nothing else about the hold-out leaves the client; a
    metric undefined on it (an AUC with one class present) is left out."""

    round: int
    client_id: str
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


def _hash_arrays(
    h: Any, arrays: tuple[np.ndarray | None, ...], dtype: type[np.floating[Any]]
) -> None:
    """Feed optional arrays into ``h``, each tagged and length-prefixed (``None`` marked)."""
    for array in arrays:
        if array is None:
            h.update(b"\x00")
        else:
            data = np.ascontiguousarray(array, dtype=dtype).tobytes()
            h.update(b"\x01" + len(data).to_bytes(8, "big") + data)


def _secure_fields(secure: SecureAggregation | None) -> dict[str, Any] | None:
    """A secure-aggregation directive as digest fields (its nonce as hex)."""
    if secure is None:
        return None
    return {**dataclasses.asdict(secure), "nonce": secure.nonce.hex()}


def session_task_digest(task: TrainTask) -> bytes:
    """SHA-256 of what every client of one secure-aggregation session must be asked alike.

    Covers the round and attempt, the global model and SCAFFOLD's ``c`` (float32 bytes), the
    training settings, the privacy directive and the secure-aggregation fields (the weight cap
    among them); not the client id or the training seed, which differ by design. A server that
    gave some clients a weight cap of 0, a learning rate of 0 or a clip norm near 0 would cancel
    their inputs and leave one client's update alone in the secure sum; the digest is part of
    the session's signed parameters (:class:`fedfort.secagg.params.MaskingParams`), so the
    clients of a session can tell. This is the defence against the model-inconsistency attack
    of Pasquini, Francati and Ateniese ("Eluding Secure Aggregation in Federated Learning via
    Model Inconsistency", CCS 2022), extended from the model to every field of the task.
    """
    h = hashlib.sha256(b"fedfort-session-task\x00")
    _hash_arrays(h, (task.weights, task.server_control), np.float32)
    secure = _secure_fields(task.secure)
    fields = {
        "round": task.round,
        "attempt": task.attempt,
        "config": dataclasses.asdict(task.config),
        "privacy": None if task.privacy is None else dataclasses.asdict(task.privacy),
        "secure": secure,
    }
    if task.transform is not None:  # absent when off: the digests of other runs are unchanged
        fields["transform"] = task.transform.digest()
    h.update(jsonio.dumps(fields, sort_keys=True, non_finite="null").encode())
    return h.digest()


def statistics_digest(request: StatisticsRequest) -> bytes:
    """SHA-256 of everything a statistics request asks, which every client of its secure
    session must be asked alike (the session's parameters carry it, as they carry
    :func:`session_task_digest` for a round): a server that asked one client for statistics
    with a narrower range or without noise could not run that client in the same session."""
    h = hashlib.sha256(b"fedfort-statistics-request\x00")
    _hash_arrays(h, (request.lower, request.upper), np.float64)
    secure = _secure_fields(request.secure)
    fields = {
        "round": request.round,
        "attempt": request.attempt,
        "run_id": request.run_id,
        "nonce": request.nonce.hex(),
        "num_features": request.num_features,
        "max_count": request.max_count,
        "noise_std": request.noise_std,
        "secure": secure,
    }
    h.update(jsonio.dumps(fields, sort_keys=True, non_finite="null").encode())
    return h.digest()
