"""A federated client: its data, its persistent state, and how it answers a task."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import secrets
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fedfort.client.evaluation import EvaluationGuard, evaluate_holdout
from fedfort.client.ledger import ClientLedger
from fedfort.client.policy import ClientPrivacyPolicy
from fedfort.client.privacy import privatize
from fedfort.client.secure import SecureSessions
from fedfort.client.statistics import (
    checked_request,
    checked_transform,
    local_statistics,
    noised,
    statistics_events,
)
from fedfort.client.training import ClientData, LocalTrainer
from fedfort.crypto.primitives import SigningKey
from fedfort.data.preprocessing import Preprocessing
from fedfort.errors import PolicyRefused, PrivacyBudgetExhausted, ProtocolError
from fedfort.messages import (
    ClientPrivacy,
    ClientUpdate,
    DpSgdSettings,
    EvaluateTask,
    EvaluationReport,
    FeatureTransform,
    StatisticsReply,
    StatisticsRequest,
    TrainTask,
)
from fedfort.secagg.messages import MaskedInputRequest
from fedfort.secagg.policy import ClientPolicy

if TYPE_CHECKING:
    from fedfort.client.dp_sgd_ledger import DpSgdLedger

__all__ = ["FederatedClient", "model_sha256", "refusal_reason"]


class FederatedClient:
    """One data holder.

    The state a client keeps across rounds is SCAFFOLD's control variate ``c_i`` and, with
    DP-SGD, its own sample-level privacy ledger. Both advance only when the server confirms
    that the client's update was committed (:meth:`acknowledge`), so a discarded round leaves
    ``c = mean_i(c_i)`` intact and costs the client no privacy in its report.

    ``num_records`` is the size of the client's training set when ``data`` is a placeholder
    (the Ray runtime trains on the rows in its actors).

    ``identity`` is the client's Ed25519 identity key (a fresh one unless given); its public
    half is what the federation registers (the secure-aggregation protocol signs with it);
    ``secure_policy`` is the client's own floor for masking sessions.

    The client owns its privacy (see :mod:`fedfort.client.policy`): ``policy`` is the least
    protection it applies whatever the task's directive says, ``ledger`` its own account of
    the epsilon it has released (in memory unless given a file-backed one). Whenever the task
    asks for any privacy against the server (a directive, DP-SGD or secure aggregation) the
    client trains and draws its noise from its own OS randomness, not from the task's seed
    (unless ``policy.reproducible``), and it releases at most one masked secure-aggregation
    input per global model version unless that input carries its own fresh noise.

    ``holdout`` is the client's own evaluation data: it answers the server's
    :class:`~fedfort.messages.EvaluateTask` with metrics only, once per round and (given
    ``max_evaluation_round``, the run's planned rounds) for no round past the run's last
    (:mod:`fedfort.client.evaluation`).
    """

    def __init__(
        self,
        client_id: str,
        data: ClientData,
        data_metrics: Mapping[str, float] | None = None,
        *,
        identity: SigningKey | None = None,
        policy: ClientPrivacyPolicy | None = None,
        ledger: ClientLedger | None = None,
        secure_policy: ClientPolicy | None = None,
        holdout: ClientData | None = None,
        num_records: int | None = None,
        max_evaluation_round: int | None = None,
    ) -> None:
        self.client_id = client_id
        #: the rows the client trains on: its protected data, through the federation's feature
        #: transform once it has one (:meth:`receive_transform`)
        self.data = data
        #: the client's own hold-out rows, through the same transform
        self.holdout = holdout
        self._raw = (data, holdout)
        #: the feature transform the client applied (``None`` until the server sends one)
        self.transform: FeatureTransform | None = None
        self.evaluation = EvaluationGuard(client_id, max_evaluation_round)
        #: how many records the client trains on, when ``data`` is held elsewhere (a Ray
        #: actor trains on it); its DP-SGD budget check needs the number
        self.num_records = len(data) if num_records is None else int(num_records)
        #: counts of the client's data-protection pipeline (``edge_*``, see fedfort.edge)
        self.data_metrics = dict(data_metrics or {})
        self.control: np.ndarray | None = None
        self._dp_sgd: DpSgdLedger | None = None
        self.identity = SigningKey() if identity is None else identity
        self.secure = SecureSessions(client_id, self.identity, secure_policy)
        self.policy = ClientPrivacyPolicy() if policy is None else policy
        self.ledger = ledger if ledger is not None else self._memory_ledger()
        #: (round, attempt) -> (SHA-256 of the session's global model, fresh client noise)
        self._session_models: dict[tuple[int, int], tuple[str, bool]] = {}

    def _memory_ledger(self) -> ClientLedger:
        policy = self.policy
        return ClientLedger(
            accountant=policy.accountant,
            delta=policy.delta,
            max_total_epsilon=policy.max_total_epsilon,
        )

    def effective_privacy(self, task: TrainTask) -> ClientPrivacy | None:
        """What the client applies for ``task``: its policy strengthened by the task's directive
        (raises :class:`~fedfort.errors.PolicyRefused` for a directive it cannot serve)."""
        return self.policy.effective(task.privacy)

    @property
    def raw_data(self) -> ClientData:
        """The client's training rows before the federation's feature transform."""
        return self._raw[0]

    def receive_transform(self, transform: FeatureTransform | None) -> None:
        """Check and apply the federation's feature transform to the training and hold-out
        rows (once; raises :class:`~fedfort.errors.PolicyRefused` for a malformed one, or for
        one that differs from the transform already applied: a server that swapped transforms
        mid-run could probe one feature at a time)."""
        if transform is None:
            return
        if self.transform is not None:
            if transform.digest() != self.transform.digest():
                raise PolicyRefused(
                    f"{self.client_id} already applies feature transform "
                    f"{self.transform.digest()[:16]}...; the task carries another one"
                )
            return
        raw, holdout = self._raw
        # a driver-side client of the Ray runtime holds no rows: its worker applies the
        # transform this check passed
        num_features = raw.x.shape[1] if raw.x.ndim == 2 else np.asarray(transform.shift).size
        checked = checked_transform(transform, num_features)
        train = _applied(checked, raw) if raw.x.ndim == 2 else None
        held = None if holdout is None else _applied(checked, holdout)
        if train is not None:
            self.data = train
        if held is not None:
            self.holdout = held
        self.transform = transform

    def answer_statistics(
        self,
        request: StatisticsRequest,
        directory: Mapping[str, bytes],
        local: np.ndarray | None = None,
    ) -> StatisticsReply:
        """The client's statistics for ``request``: in the clear, or sealed into the request's
        secure-aggregation session (``local``: the statistics of its rows, when they were
        computed where the rows live).

        A client whose own configuration requires secure aggregation does not send its
        statistics without it; under secure aggregation it releases its statistics masked at
        most once unless they carry fresh noise of its own (as for a model update)."""
        mode = None if request.secure is None else request.secure.mode
        if not self.secure.policy.admits_mode(mode):
            raise PolicyRefused(
                f"the statistics request asks for secure aggregation {mode or 'none'}; this "
                f"client's own configuration requires {self.secure.policy.required_mode}"
            )
        checked_request(request)
        events = statistics_events(request)
        try:  # a client with a budget refuses a release it cannot afford, or one without noise
            self.ledger.check(events, "the feature statistics release")
        except PrivacyBudgetExhausted as exc:
            raise PolicyRefused(str(exc)) from None
        vector = local_statistics(self.raw_data.x.numpy(), request) if local is None else local
        if vector.shape != (3 * request.num_features,):
            raise ProtocolError(f"statistics of shape {vector.shape}")
        vector = noised(vector, request.noise_std)
        if request.secure is None:
            reply = StatisticsReply(request.round, self.client_id, vector)
        else:
            self.secure.open_statistics(request, vector, directory)
            # one masked release of the statistics per run: the request's noise is sized by
            # the server, which could make it negligible and difference two sessions
            version = "statistics:" + hashlib.sha256(request.secure.run_id.encode()).hexdigest()
            self._session_models[(request.round, request.attempt)] = (version, False)
            empty = np.empty(0, dtype=np.float64)
            reply = StatisticsReply(request.round, self.client_id, empty, sealed=True)
        if events is not None:
            self.ledger.record(events, request.round, request.attempt)
        return reply

    def training_task(self, task: TrainTask) -> TrainTask:
        """``task`` as this client trains it, after checking it against its own policy.

        Refuses (before any work) a secure-aggregation mode weaker than the client's own
        configuration requires, a directive the policy cannot serve and a release its ledger's
        budget cannot cover. When the task asks for privacy against the server, the task's seed
        (chosen by the server) is replaced by one from the client's OS randomness, so shuffling,
        dropout and DP-SGD noise are the client's own (unless ``policy.reproducible``).
        """
        self.receive_transform(task.transform)
        mode = None if task.secure is None else task.secure.mode
        if not self.secure.policy.admits_mode(mode):
            raise PolicyRefused(
                f"round {task.round} asks for secure aggregation {mode or 'none'}; this client's "
                f"own configuration requires {self.secure.policy.required_mode}, so it does not "
                "send its update in a weaker form. Run the federation with that "
                "secure_aggregation.mode, or change the client's configuration"
            )
        effective = self.effective_privacy(task)
        self.ledger.check(self.policy.events(effective), f"round {task.round} task")
        settings = task.config.dp_sgd
        if settings is not None:
            self._check_dp_sgd_budget(task, settings)
            # the noise source is the client's choice: the OS CSPRNG unless reproducible
            secure = dataclasses.replace(settings, secure_noise=not self.policy.reproducible)
            task = dataclasses.replace(task, config=dataclasses.replace(task.config, dp_sgd=secure))
        private = effective is not None or task.secure is not None or settings is not None
        if self.policy.reproducible or not private:
            return task
        return dataclasses.replace(task, seed=secrets.randbits(63))

    def _check_dp_sgd_budget(self, task: TrainTask, settings: DpSgdSettings) -> None:
        """Refuse (before any work) a DP-SGD round that would take the client's own ledger
        past its budget (:attr:`ClientPrivacyPolicy.dp_sgd_budget`).

        What the round costs is computed from what the client knows itself: its own number of
        records, the task's batch size and epochs (which fix its steps and rate, exactly as it
        will train) and the noise multiplier it will apply, at its own delta; the ledger holds
        every DP-SGD update that left the client, committed or not.
        """
        budget = self.policy.dp_sgd_budget
        if budget is None:
            return
        from fedfort.client.dp_sgd_ledger import DpSgdStats
        from fedfort.privacy.dp_sgd import dp_sgd_schedule

        z = settings.noise_multiplier
        if not (math.isfinite(z) and z >= 0):
            raise PolicyRefused(
                f"round {task.round} asks for DP-SGD with noise multiplier {z}; it must be a "
                "finite number >= 0"
            )
        q, steps = dp_sgd_schedule(self.num_records, task.config.batch_size, task.config.epochs)
        ledger, delta = self.dp_sgd_ledger(), self.policy.dp_sgd_delta
        upcoming = ledger.released_epsilon(delta, extra=DpSgdStats(steps, q, z, math.nan))
        if upcoming <= budget:
            return
        spent = ledger.released_epsilon(delta)
        raise PrivacyBudgetExhausted(
            f"round {task.round} refused: {self.client_id} has spent DP-SGD epsilon {spent:.4f} "
            f"of its budget {budget:g} (delta {delta:g}, one record) and this round's "
            f"{steps} steps would bring it to {upcoming:.4f}. Nothing was trained or sent; "
            "raise privacy.dp_sgd.target_epsilon in the client's own configuration only if "
            "you accept the loss",
            spent=spent,
            next_epsilon=upcoming,
            target=budget,
        )

    def seal(
        self, task: TrainTask, update: ClientUpdate, directory: Mapping[str, bytes]
    ) -> ClientUpdate:
        """Keep ``update`` for the task's secure aggregation session; the sealed reply."""
        sealed = self.secure.seal(task, update, directory)
        fresh = self.policy.fresh(self.effective_privacy(task))
        self._session_models = {k: v for k, v in self._session_models.items() if k[0] >= task.round}
        self._session_models[(task.round, task.attempt)] = (model_sha256(task.weights), fresh)
        return sealed

    def secure_handle(self, round_: int, attempt: int, message: object) -> object:
        """Answer one secure-aggregation message (see :class:`SecureSessions`).

        The request for the client's masked (or encrypted) input is refused with
        :class:`~fedfort.errors.ProtocolError` when the client already released an input for
        the same global model and this one carries no fresh noise of its own: two honest sums
        over the same model, with and without this client, would reveal its update.
        """
        if _releases_input(message):
            model, fresh = self._session_models.get((round_, attempt), ("", False))
            if not model:
                raise ProtocolError(
                    f"{self.client_id} has no secure-aggregation session for round {round_} "
                    f"attempt {attempt}"
                )
            if self.ledger.contributed(model) and not fresh:
                raise ProtocolError(
                    f"{self.client_id} already released a masked input for global model "
                    f"{model[:16]}...; a second one without fresh client noise would let the "
                    "server difference two sums. Use distributed or local DP (client noise) to "
                    "retry rounds on the same model"
                )
            self.ledger.add_model(model)
        return self.secure.handle(round_, attempt, message)

    def handle(self, task: TrainTask, trainer: LocalTrainer) -> ClientUpdate:
        """Train for ``task`` and return the update (does not change the client's state)."""
        return self.finalize(task, trainer.fit(self.training_task(task), self.data, self.control))

    def finalize(self, task: TrainTask, update: ClientUpdate) -> ClientUpdate:
        """The trained update as it leaves the client: with DP-SGD, the client's own epsilon
        (rounds committed so far plus this one) is attached, then the client's effective
        privacy (its policy strengthened by the task's directive) is applied with noise from
        the OS (see :func:`fedfort.client.privacy.privatize`) and the release is recorded in
        the client's ledger before the update leaves."""
        if self.data_metrics:
            update = dataclasses.replace(update, metrics={**update.metrics, **self.data_metrics})
        settings = task.config.dp_sgd
        stats = None
        if settings is not None and "dp_sgd_steps" in update.metrics:
            stats = _dp_sgd_stats(update)
            eps = self.dp_sgd_ledger().epsilon(settings.delta, extra=stats)
            update = dataclasses.replace(update, metrics={**update.metrics, "dp_sgd_epsilon": eps})
        effective = self.effective_privacy(task)
        events = self.policy.events(effective)
        self.ledger.check(events, f"round {task.round} release")
        if stats is not None:  # the update leaves the client: its DP-SGD steps are spent
            self.dp_sgd_ledger().record_release(stats)
        if effective is None:
            return update
        released = privatize(
            update, effective, task.seed, noise=self.policy.noise(effective, task.seed)
        )
        if events is not None:
            self.ledger.record(events, task.round, task.attempt)
        return released

    def admit_evaluation(self, task: EvaluateTask, dim: int) -> ClientData:
        """Check ``task`` (see :class:`EvaluationGuard`) and return the hold-out to score on;
        :class:`~fedfort.errors.ProtocolError` if refused or if the client keeps none."""
        if self.holdout is None or len(self.holdout) == 0:
            raise ProtocolError(f"{self.client_id} keeps no hold-out to evaluate on")
        self.evaluation.admit(task, dim)
        return self.holdout

    def evaluate(self, task: EvaluateTask, trainer: LocalTrainer) -> EvaluationReport:
        """Score the task's global model on the client's hold-out: metrics and a count only."""
        holdout = self.admit_evaluation(task, trainer.spec.dim)
        return evaluate_holdout(trainer, task, holdout)

    def dp_sgd_ledger(self) -> DpSgdLedger:
        """The client's own DP-SGD ledger (sample-level, committed rounds only)."""
        if self._dp_sgd is None:
            from fedfort.client.dp_sgd_ledger import DpSgdLedger

            self._dp_sgd = DpSgdLedger()
        return self._dp_sgd

    def acknowledge(self, update: ClientUpdate) -> None:
        """Apply the state change of an update the server committed."""
        update = self.secure.unsealed(update)
        if update.control_delta is not None:
            base = np.zeros_like(update.control_delta) if self.control is None else self.control
            self.control = (base + update.control_delta).astype(np.float32)
        if "dp_sgd_steps" in update.metrics:
            self.dp_sgd_ledger().record(_dp_sgd_stats(update))

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {} if self.control is None else {"control": self.control}
        if self._dp_sgd is not None and len(self._dp_sgd):
            state["dp_sgd"] = self._dp_sgd.state_dict()
        if self.ledger.path is None and len(self.ledger):
            state["privacy_ledger"] = self.ledger.state_dict()
        if self.evaluation.state_dict():
            state["evaluation"] = self.evaluation.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.evaluation.load_state_dict(state.get("evaluation", {}))
        control = state.get("control")
        self.control = None if control is None else np.asarray(control, dtype=np.float32)
        self._dp_sgd = None
        if "dp_sgd" in state:
            self.dp_sgd_ledger().load_state_dict(state["dp_sgd"])
        if self.ledger.path is None:  # a file-backed ledger is its own record
            self.ledger = self._memory_ledger()
            if "privacy_ledger" in state:
                self.ledger.load_state_dict(state["privacy_ledger"])


def refusal_reason(exc: PolicyRefused | PrivacyBudgetExhausted) -> str:
    """The reason code a client's refusal of a task is recorded under."""
    return (
        "privacy_budget_exhausted" if isinstance(exc, PrivacyBudgetExhausted) else "privacy_policy"
    )


def model_sha256(weights: np.ndarray) -> str:
    """SHA-256 of a global model's flat float32 vector: the model version a client sees."""
    return hashlib.sha256(np.ascontiguousarray(weights, dtype=np.float32).tobytes()).hexdigest()


def _releases_input(message: object) -> bool:
    """Whether answering ``message`` releases the client's (masked or encrypted) input."""
    if isinstance(message, MaskedInputRequest):
        return True
    ckks = sys.modules.get("fedfort.secagg.ckks")  # loaded only when a CKKS session exists
    return ckks is not None and isinstance(message, ckks.EncryptRequest)


def _dp_sgd_stats(update: ClientUpdate) -> Any:
    from fedfort.client.dp_sgd_ledger import DpSgdStats

    m = update.metrics
    return DpSgdStats(
        steps=int(m["dp_sgd_steps"]),
        sample_rate=float(m["dp_sgd_sample_rate"]),
        noise_multiplier=float(m["dp_sgd_noise_multiplier"]),
        train_loss=float("nan"),
    )


def _applied(transform: Preprocessing, rows: ClientData) -> ClientData | None:
    """``rows`` through ``transform`` (``None`` for no rows); :class:`PolicyRefused` when the
    result is not finite: a NaN fill for a value the client is missing, or a scale so small
    that its features overflow, would have it train on (and send an update of) garbage."""
    if rows.x.shape[0] == 0:
        return None
    with np.errstate(over="ignore", invalid="ignore"):  # refused below, not warned about
        x = transform.apply(rows.x.numpy())
    if not np.isfinite(x).all():
        raise PolicyRefused(
            "the feature transform leaves this client's rows missing or overflowing (a NaN "
            "fill for a missing value, or a vanishing scale): refusing to train on it"
        )
    return ClientData.from_numpy(x, rows.y.numpy())
