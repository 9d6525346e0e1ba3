"""The server's half of a federation, shared by every runtime.

:class:`Federation` builds from a :class:`~fedfort.config.RunConfig` everything the server
holds: the embedded dataset's held-out split for evaluation, the model, the stage pipeline of
the :class:`~fedfort.server.RoundEngine`, the SQLite checkpoints and the resume logic. A
runtime subclass supplies only the :class:`~fedfort.server.engine.ClientExecutor` that carries
tasks to clients and the directory of their identity keys: :class:`~fedfort.simulation.Simulation`
runs simulated clients in this process, :class:`~fedfort.transport.NetworkServer` serves real
ones over gRPC. One round engine, one pipeline; only the runtime differs.

:func:`split_data` is the data split both sides agree on: a networked client started with
``--data partition:K`` trains on exactly the rows a simulated client ``K`` would.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedfort import jsonio
from fedfort._version import __version__
from fedfort.aggregation.registry import build_aggregator
from fedfort.alerts import AlertManager, webhook_url
from fedfort.audit import AUDIT_FILE, AuditLog, AuditTrail, run_audit_key
from fedfort.audit.head import SignedHead
from fedfort.client.training import ClientData, LocalTrainer, evaluate_vector
from fedfort.config import RunConfig
from fedfort.crypto.primitives import SigningKey
from fedfort.data.datasets import Dataset
from fedfort.data.partition import Partition
from fedfort.data.preprocessing import Preprocessing
from fedfort.data.schema import DataSchema
from fedfort.detection.reputation import ReputationLedger
from fedfort.errors import CheckpointError, ConfigError, PrivacyBudgetExhausted
from fedfort.evaluation.config import default_loss
from fedfort.evaluation.metrics import default_metrics
from fedfort.messages import TrainTask
from fedfort.models import ModelFactory, ModelSpec, build_model
from fedfort.monitoring.guarding import RequestGuard
from fedfort.monitoring.metrics import FederationMetrics, MetricsServer
from fedfort.params import vector_sha256
from fedfort.run.composition import name_model_factory
from fedfort.run.data import (
    FederationData,
    client_ids,
    local_training_data,
    partition_records,
    server_data,
    split_data,
    with_data_schema,
)
from fedfort.run.features import Feature, RunParts, assemble, default_features
from fedfort.run.files import GivenTables
from fedfort.run.preprocess import (
    fit_transform,
    needs_preprocessing,
    recorded_event,
    transform_message,
)
from fedfort.run.privacy import PrivacySetup, calibrated, calibrated_dp_sgd, dp_sgd_sizes
from fedfort.run.result import RunResult, SimulationResult
from fedfort.run.resume import (
    CHECKPOINT_FILE,
    PIPELINE_META,
    check_audit_log,
    check_rollback_request,
    pipeline_identity,
    resume_key,
    resumed_config,
    stage_list,
    stored_config,
)
from fedfort.run.threads import run_threads
from fedfort.server.checkpoint import CheckpointStore
from fedfort.server.control import RunControl
from fedfort.server.engine import (
    ClientExecutor,
    CommitHook,
    RoundEngine,
    RoundRecord,
    Stage,
    Stateful,
)
from fedfort.server.stages import Broadcast, task_seed
from fedfort.server.versions import PENDING_ROLLBACK_META

#: checkpoint meta key of the statistics round's record (the transform, its privacy release)
STATISTICS_META = "feature_statistics"

__all__ = [
    "CHECKPOINT_FILE",
    "PENDING_ROLLBACK_META",
    "Federation",
    "FederationData",
    "RunResult",
    "SimulationResult",
    "client_ids",
    "local_training_data",
    "model_spec",
    "partition_records",
    "split_data",
]


def _build(factory: ModelFactory | None, spec: ModelSpec, seed: int) -> nn.Module:
    return build_model(spec, seed=seed, factory=factory)


def model_spec(config: RunConfig, schema: DataSchema) -> ModelSpec:
    """The recipe of the run's model: ``[model]`` on the schema's features and classes."""
    return ModelSpec(
        config.model.name, schema.num_features, schema.num_classes, dict(config.model.options)
    )


class _CheckpointHook:
    def __init__(self, store: CheckpointStore) -> None:
        self.store = store
        #: a rollback was applied since the last commit (its request may now be cleared)
        self.rolled_back = False

    def on_commit(self, engine: RoundEngine, record: RoundRecord) -> None:
        self.store.save(engine.round, engine.model, engine.state_dict(), record.to_dict())
        if self.rolled_back:
            # the applied rollback is part of a committed state now; a request filed while
            # this process ran (not yet applied) stays for the next resume
            self.store.delete_meta(PENDING_ROLLBACK_META)
            self.rolled_back = False


class Federation(ABC):
    """The server side of a federated training run; subclasses supply the runtime.

    With ``out_dir`` every committed round is checkpointed to ``out_dir/checkpoints.sqlite``;
    :meth:`resume` continues such a run from its last committed round. ``model_factory``
    (``factory(in_features, num_classes, **options)``) replaces the registry lookup of
    ``config.model.name`` for a user-defined ``nn.Module``; with worker processes it must be
    importable (a module-level class or function).
    """

    #: config keys (dotted) a resume of the stored config may override (a subset of
    #: :data:`fedfort.config.RESUMABLE_KEYS`)
    resumable_overrides: tuple[str, ...] = ("rounds", "simulation.workers")
    #: whether this runtime holds the clients' rows (a simulation) or only the schema and its
    #: own validation data (a served run: :func:`~fedfort.run.data.server_data`)
    holds_client_data: bool = True

    def __init__(
        self,
        config: RunConfig,
        out_dir: str | Path | None = None,
        *,
        model_factory: ModelFactory | None = None,
        features: Sequence[Feature] = (),
        data_tables: GivenTables | None = None,
        _resuming: bool = False,
    ) -> None:
        key: SigningKey | None = None
        #: the run's own features, after the ones its config switches on (fedfort.run.features)
        self._features = list(features)
        if model_factory is not None:
            # the stored run names the model that trained (fedfort.run.composition)
            config = name_model_factory(config, model_factory, resuming=_resuming)
        if out_dir is not None and _resuming:
            # before anything is built: the stored checkpoint is verified with the run's
            # audit key and ``config`` must match it (fedfort.run.resume)
            key = resume_key(Path(out_dir))
            config = resumed_config(out_dir, config)
        if self.holds_client_data:
            # a schema inferred from the files is recorded
            config = with_data_schema(config, data_tables)
        config = calibrated(config)
        if config.alerts.enabled:
            webhook_url(config.alerts)  # a missing secret URL fails before the runtime starts
        self.config = config
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.data = (
            split_data(config, data_tables) if self.holds_client_data else server_data(config)
        )
        self.dataset: Dataset = self.data.dataset
        self.root_idx = self.data.root_idx
        self.partition: Partition = self.data.partition
        #: the schema the federation agrees on: the model's input and output sizes
        self.schema: DataSchema = self.data.schema
        self.model_spec = model_spec(config, self.schema)
        #: the federated feature transform (``[data] standardize`` / ``impute``), fitted by
        #: the statistics round before round 1 (:mod:`fedfort.run.preprocess`) and kept in
        #: the signed checkpoint; the server applies it to its own data too
        self.preprocessing: Preprocessing | None = None
        self.build_module: Callable[[], nn.Module] = functools.partial(
            _build, model_factory, self.model_spec, config.seed
        )
        self.trainer = LocalTrainer(self.build_module())
        self.spec = self.trainer.spec
        initial = self.trainer.bound.flatten()
        self._evaluator = LocalTrainer(self.build_module())
        self.ids = config.clients.ids()
        if config.privacy.dp_sgd.enabled:
            # DP-SGD's noise is planned for the clients' data sizes, known only now
            sizes = dp_sgd_sizes(config, self._training_set_sizes(), self.ids)
            config = self.config = calibrated_dp_sgd(config, sizes)
        self.malicious: list[str] = []
        self.executor, extra_state = self._runtime()
        self._x_test = torch.from_numpy(self._server_features(self.dataset.x_test))
        self._y_test = torch.from_numpy(self.dataset.y_test)
        if self.out_dir is not None and key is None:
            # only once the runtime is up: a run refused before it starts leaves no files
            key = run_audit_key(self.out_dir)
        self._key = key
        self._backdoor = self._backdoor_test_set()

        self.store: CheckpointStore | None = None
        self.audit: AuditTrail | None = None
        private = config.privacy.mode != "none" or config.privacy.dp_sgd.enabled
        self.metrics = FederationMetrics(
            epsilon_budget=config.privacy.target_epsilon if private else None
        )
        self._servers: list[MetricsServer | Any] = []
        #: the run's access control, built from ``[access]`` once its servers start
        #: (:func:`fedfort.access.setup.federation_guard`)
        self.access_guard: RequestGuard | None = None
        #: operator control of the run loop (pause, resume, stop between rounds)
        self.control = RunControl(hold=config.access.hold_at_start)
        hooks: list[CommitHook] = []
        self._checkpoints: _CheckpointHook | None = None
        if self.out_dir is not None:
            self.store = CheckpointStore(self.out_dir / CHECKPOINT_FILE, key)
            self._checkpoints = _CheckpointHook(self.store)
            hooks.append(self._checkpoints)
            if config.governance.audit:
                log = AuditLog(self.out_dir / AUDIT_FILE, run_audit_key(self.out_dir))
                self.audit = AuditTrail(log, self.store)
                hooks.append(self.audit)
        hooks.append(self.metrics)
        self.alerts: AlertManager | None = None
        if config.alerts.enabled:
            self.alerts = self._alert_manager(config, private)
            hooks.append(self.alerts)
        if self.audit is not None and config.governance.publish_head:
            self.audit.round_head_listeners.append(self._publish_head)
        self.engine = RoundEngine(
            initial,
            self.ids,
            self._stages(config),
            self.executor,
            seed=config.seed,
            max_attempts=config.server.max_attempts,
            hooks=hooks,
            extra_state=extra_state,
        )
        if self.store is not None:
            self._open_store(_resuming)

    def fit_preprocessing(self) -> Preprocessing | None:
        """Run the statistics round now, if the run needs one and has no transform yet; the
        transform (:meth:`run` calls this before round 1).

        The statistics go through the runtime (:mod:`fedfort.run.preprocess`); the transform
        is stored, signed, in the checkpoint, recorded in the audit log, applied to the
        server's own rows and sent with every task.
        """
        if self.preprocessing is not None or not needs_preprocessing(self.config):
            return self.preprocessing
        fitted = fit_transform(
            self.config, self.engine.executor, self.ids, self.directory, self.schema.num_features
        )
        if self.store is not None:
            self.store.set_meta(STATISTICS_META, jsonio.dumps(fitted.record, sort_keys=True))
        if self.audit is not None:
            # metadata and the transform's hash; its values live in the signed checkpoint
            body = {k: v for k, v in fitted.record.items() if k != "transform"}
            self.audit.event("feature_statistics", body, 0)
        self._install_preprocessing(fitted.transform, fitted.record)
        return fitted.transform

    def _install_preprocessing(self, transform: Preprocessing, record: dict[str, Any]) -> None:
        """Apply the federation's transform to the server's own rows, send it with every task
        and count its privacy release in the run's ledger."""
        self.preprocessing = transform
        self._x_test = torch.from_numpy(self._server_features(self.dataset.x_test))
        self._root = self._root_data()
        broadcast = self.engine.stage("broadcast")
        if not isinstance(broadcast, Broadcast):
            raise ConfigError(
                "[data] standardize / impute send the feature transform with every task, which "
                f"the run's own broadcast stage {type(broadcast).__name__} does not: subclass "
                "fedfort.server.stages.Broadcast"
            )
        broadcast.transform = transform_message(transform)
        event = recorded_event(record)
        if event is not None and self.privacy_ledger is not None:
            self.privacy_ledger.before_rounds = [(event, 1)]

    def _alert_manager(self, config: RunConfig, private: bool) -> AlertManager:
        """The ``[alerts]`` rules of this run, after the audit and metrics hooks."""
        default_id = self.out_dir.name if self.out_dir is not None else config.identity_hash()[:12]
        audited = self.out_dir is not None and config.governance.audit
        return AlertManager(
            config.alerts,
            run_id=config.alerts.run_id or default_id,
            epsilon_budget=config.privacy.target_epsilon if private else None,
            run_dir=self.out_dir if audited else None,
            registry=self.metrics.registry,
        )

    def _publish_head(self, round_: int, head: SignedHead) -> None:
        """``governance.publish_head``: the audit log's signed head after ``round_``, printed
        and sent to the alert webhook, so copies of it live outside the run directory."""
        text = jsonio.dumps(head.to_dict(), sort_keys=True)
        print(f"fedfort: audit head after round {round_}: {text}", flush=True)
        if self.alerts is not None:
            self.alerts.publish_head(round_, head.to_dict())

    @abstractmethod
    def _runtime(self) -> tuple[ClientExecutor, dict[str, Stateful]]:
        """The executor that reaches the clients, and runtime state to checkpoint."""

    @abstractmethod
    def directory(self) -> Mapping[str, bytes]:
        """Every client's registered Ed25519 identity public key, by client id."""

    def _training_set_sizes(self) -> dict[str, int]:
        """What the run knows of its clients' training-set sizes (DP-SGD plans its noise for
        the smallest): over the network, the counts they declared."""
        return self._declared_sample_counts()

    def _declared_sample_counts(self) -> dict[str, int]:
        """Each client's declared sample count, which caps its weight (see
        :mod:`fedfort.server.sample_cap`): ``server.declared_sample_counts`` of the config."""
        declared = dict(self.config.server.declared_sample_counts)
        unknown = sorted(set(declared) - set(self.ids))
        if unknown:
            raise ConfigError(
                f"server.declared_sample_counts names {unknown}, which are not clients of this "
                f"run ({self.ids[0]} .. {self.ids[-1]}): fix the client ids"
            )
        return declared

    def _backdoor_test_set(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Triggered test inputs for a backdoor the runtime knows of (none by default)."""
        return None

    def _server_update(self, model: np.ndarray) -> np.ndarray:
        """FLTrust's server update: local training on the server's root dataset."""
        assert self._root is not None
        local = dataclasses.replace(
            self.config.clients.local_training(self.config.data.task), algorithm="fedavg"
        )
        task = TrainTask(0, 0, "server", model, local, task_seed(self.config.seed, 0, 0, "root"))
        return self._evaluator.fit(task, self._root).delta

    def _server_features(self, x: np.ndarray) -> np.ndarray:
        """The server's own rows (validation, FLTrust's root) through the federated transform."""
        if self.preprocessing is None or x.shape[0] == 0:
            return x
        return self.preprocessing.apply(x)

    def _root_data(self) -> ClientData | None:
        """FLTrust's root data on the server, through the federated transform (if any)."""
        root = self.data.root_arrays()
        if root is None:
            return None
        return ClientData.from_numpy(self._server_features(root[0]), root[1])

    def _stages(self, config: RunConfig) -> list[Stage]:
        """The round's stages: the config's features and the run's own, assembled in slots
        (:mod:`fedfort.run.features`)."""
        self._root = self._root_data()
        aggregator = build_aggregator(
            config.defense.model_dump(),
            seed=config.seed,
            server_update=self._server_update if self._root is not None else None,
        )
        privacy = PrivacySetup(config, aggregator)
        self.privacy_ledger = privacy.ledger
        rep = config.reputation
        self.ledger: ReputationLedger | None = None
        if rep.enabled:
            self.ledger = ReputationLedger(
                initial=rep.initial,
                reward=rep.reward,
                penalty=rep.penalty,
                decay=rep.decay,
                quarantine_threshold=rep.quarantine_threshold,
                quarantine_rounds=rep.quarantine_rounds,
                min_weight=rep.min_weight,
            )
        parts = RunParts(
            config,
            self.spec.dim,
            aggregator,
            privacy,
            self.ledger,
            self._declared_sample_counts,
            self.evaluate,
            self._load_version,
            self.directory,
        )
        return assemble(parts, default_features(config, self._features))

    def _open_store(self, resuming: bool) -> None:
        assert self.store is not None
        identity = self.config.identity_hash()
        latest = self.store.latest_round()
        if not resuming:
            if latest is not None:
                raise ConfigError(
                    f"{self.store.path} already holds a run (up to round {latest}): resume it "
                    "with --resume or choose another --out directory"
                )
            self.store.set_meta("config", jsonio.dumps(self.config.to_dict(), sort_keys=True))
            self.store.set_meta("identity", identity)
            self.store.set_meta("config_identity", self.config.config_identity())
            self.store.set_meta("fedfort_version", __version__)
            self.store.set_meta("param_spec", jsonio.dumps(self.spec.describe()))
            self.store.save(0, self.engine.model, self.engine.state_dict(), {"round": 0})
            if self.audit is not None:
                self.audit.run_start(
                    self.config,
                    runtime=type(self).__name__,
                    model_sha256=vector_sha256(self.engine.model),
                    param_spec=self.spec.describe(),
                )
            return
        if self.store.verified_meta("identity") != identity:
            raise CheckpointError(
                f"{self.store.path} was written by a different configuration; only the keys "
                "listed in docs/deployment.md may change when resuming"
            )
        # every committed round (the rollback targets and the results' history) is verified
        self.store.verify_all()
        assert self.out_dir is not None and self._key is not None
        pending = self.store.verified_meta(PENDING_ROLLBACK_META, required=False) or None
        if self.audit is not None:
            check_audit_log(self.out_dir, self._key, self.store, self.audit)
            # before this resume writes anything
            check_rollback_request(self.out_dir, None if pending is None else json.loads(pending))
        checkpoint = self.store.load()
        self.engine.load_state_dict(checkpoint.model, checkpoint.state)
        statistics = self.store.verified_meta(STATISTICS_META, required=False)
        if statistics:  # a resume neither recomputes nor changes the transform
            record = json.loads(statistics)
            self._install_preprocessing(Preprocessing.from_dict(record["transform"]), record)
        # the resumable settings (rounds, workers...) as this run now uses them
        self.store.set_meta("config", jsonio.dumps(self.config.to_dict(), sort_keys=True))
        self.store.set_meta("config_identity", self.config.config_identity())
        if self.audit is not None:
            self.audit.event(
                "run_resumed",
                {"runtime": type(self).__name__, "model_sha256": checkpoint.model_sha256},
                checkpoint.round,
            )
        if pending is not None:
            request = json.loads(pending)
            self.rollback(int(request["to_version"]), str(request["reason"]), requested=request)

    def _load_version(self, round_: int) -> tuple[np.ndarray, dict[str, Any]]:
        """The committed model of ``round_`` and its server optimizer state (for rollback)."""
        if self.store is None:
            raise ConfigError("rolling back to an earlier version needs a run directory (--out)")
        checkpoint = self.store.load(round_)
        return checkpoint.model, dict(checkpoint.state["stages"].get("server_optimizer", {}))

    def rollback(
        self, version: int, reason: str, *, requested: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Continue from committed version ``version`` (a round) instead of the current model.

        Call it between rounds. The global model and the server optimizer's state become
        those of ``version``; the next round trains from there. The rollback is audited and
        survives a crash before the next commit (it is applied again on resume).
        """
        if not 0 <= version <= self.engine.round:
            raise ConfigError(
                f"version {version} does not exist: the run has versions 0..{self.engine.round}"
            )
        model, optimizer_state = self._load_version(version)
        body: dict[str, Any] = {
            "automatic": False,
            "reason": reason,
            "at_round": self.engine.round,
            "from_sha256": vector_sha256(self.engine.model),
            "to_version": version,
            "to_sha256": vector_sha256(model),
        }
        if requested is not None:
            body["requested_at"] = requested.get("requested_at")
        assert self.store is not None and self._checkpoints is not None
        self.store.set_meta(PENDING_ROLLBACK_META, jsonio.dumps({**body, **(requested or {})}))
        self._checkpoints.rolled_back = True
        self.engine.model = model.astype(np.float32, copy=True)
        self.engine.stage("server_optimizer").load_state_dict(optimizer_state)
        if self.audit is not None:
            self.audit.event("rollback", body, self.engine.round)
        self.metrics.rolled_back()
        return body

    @classmethod
    def _reopen_config(cls, out_dir: str | Path, overrides: dict[str, Any]) -> RunConfig:
        """The configuration stored with the run in ``out_dir`` (its signature checked with the
        run's audit key), with resumable overrides."""
        bad = set(overrides) - set(cls.resumable_overrides)
        if bad:
            raise ConfigError(f"cannot change {sorted(bad)} when resuming a run")
        return RunConfig.model_validate(stored_config(out_dir)).with_overrides(overrides)

    def evaluate(self, vector: np.ndarray) -> dict[str, float]:
        """The ``[evaluation]`` metrics of ``vector`` on the server's held-out test set (none
        when the server has no test set: ``evaluation.server = false``).

        Under a simulated backdoor attack, ``backdoor_asr`` is the share of triggered test
        inputs whose true label is not the target that the model classifies as the target.
        """
        if self._y_test.shape[0] == 0:
            # the server holds no validation set (evaluation.server = false, or the clients'
            # own files without [data] validation)
            return {}
        cfg = self.config
        task = cfg.data.task
        result = evaluate_vector(
            self._evaluator,
            vector,
            self._x_test,
            self._y_test,
            cfg.clients.loss or default_loss(task),
            metrics=cfg.evaluation.metrics or default_metrics(task),
            task=task,
        )
        if self._backdoor is not None:
            triggered = evaluate_vector(self._evaluator, vector, *self._backdoor)
            result["backdoor_asr"] = triggered["accuracy"]
        return result

    @property
    def model(self) -> np.ndarray:
        """The current global model vector."""
        return self.engine.model

    def global_module(self) -> nn.Module:
        """The current global model as a ``torch.nn.Module``."""
        self._evaluator.bound.load(self.engine.model)
        return self._evaluator.model

    def run(
        self,
        rounds: int | None = None,
        on_round: Callable[[RoundRecord], None] | None = None,
    ) -> RunResult:
        """Run until ``rounds`` rounds (default: the config's) are committed; with an
        ``out_dir``, write ``results.json`` and ``training.png`` there (:mod:`fedfort.run.outputs`).

        torch and the BLAS pool use ``simulation.torch_threads`` threads while it runs; the
        process's previous thread counts are restored when it returns (:func:`run_threads`).
        """
        with run_threads(self.config.simulation.torch_threads):
            try:
                result = self._run_rounds(rounds, on_round)
            except PrivacyBudgetExhausted as exc:
                if isinstance(exc.result, RunResult):
                    self._write_results(exc.result)
                raise
        self._write_results(result)
        return result

    def _write_results(self, result: RunResult) -> None:
        """``results.json`` and ``training.png`` in the run directory (one writer for the
        Python API and every command)."""
        if self.out_dir is not None:
            from fedfort.run.outputs import write_results

            write_results(result, self.out_dir)

    def _run_rounds(
        self, rounds: int | None, on_round: Callable[[RoundRecord], None] | None
    ) -> RunResult:
        target = self.config.rounds if rounds is None else rounds
        if target < self.engine.round:
            raise ConfigError(
                f"the run already committed {self.engine.round} rounds; ask for more than that"
            )
        records: list[dict[str, Any]] = []
        if self.store is not None:
            records = [r for r in self.store.records() if r["round"] >= 1]
        self._check_pipeline()
        if self.engine.round < target:
            self.fit_preprocessing()
        stopped: str | None = None
        self.control.begin()
        try:
            while self.engine.round < target:
                if not self.control.between_rounds(self.engine.round):
                    stopped = "operator_stop"
                    break
                try:
                    record = self.engine.run_round(final=self.engine.round + 1 == target)
                except PrivacyBudgetExhausted as exc:
                    stopped = "privacy_budget_exhausted"
                    self._run_end(stopped)
                    exc.result = RunResult(
                        self.config,
                        records,
                        self.engine.model.copy(),
                        list(self.malicious),
                        stopped=stopped,
                    )
                    raise
                records.append(record.to_dict())
                if on_round is not None:
                    on_round(record)
            self._run_end(stopped)
        finally:
            self.control.finished(stopped, self.engine.round)
        return RunResult(
            self.config, records, self.engine.model.copy(), list(self.malicious), stopped=stopped
        )

    def _check_pipeline(self) -> None:
        """The stage pipeline is part of a stored run's identity: a stage inserted by hand
        (``engine.stages.insert(...)``) is recorded when the run starts, and a resume whose
        pipeline differs (a stage missing, added, moved or of another class) is refused."""
        if self.store is None:
            return
        current = jsonio.dumps(pipeline_identity(self.engine.stages))
        stored = self.store.verified_meta(PIPELINE_META, required=False)
        if not stored:
            self.store.set_meta(PIPELINE_META, current)
            return
        if stored != current:
            raise ConfigError(
                f"{self.store.path} was run with the stage pipeline {stage_list(stored)}, but "
                f"this run has {stage_list(current)}: insert the same stages (in the same "
                "places) before resuming, or start a new run"
            )

    def _run_end(self, stopped: str | None) -> None:
        if self.audit is not None:
            self.audit.run_end(
                rounds=self.engine.round,
                model_sha256=vector_sha256(self.engine.model),
                stopped=stopped,
            )

    def close(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
        if self.alerts is not None:
            self.alerts.close()
        self.executor.close()
        if self.audit is not None:
            self.audit.log.close()
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
