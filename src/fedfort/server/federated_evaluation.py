"""Federated evaluation: the clients score the round's model on hold-outs of their own.

:class:`FederatedEvaluate` runs in the ``evaluate`` slot every ``every`` rounds and after the
final round. It sends every client of the federation an
:class:`~fedfort.messages.EvaluateTask` with the candidate model and collects the
:class:`~fedfort.messages.EvaluationReport` answers through the runtime's
:class:`~fedfort.server.engine.FederatedEvaluator` capability. The overall value of a metric is
the mean of the clients' values weighted by their example counts (the value a pooled
evaluation would give for the averaged metrics: accuracy, loss, MSE, MAE; an approximation for
AUC, F1, balanced accuracy and R2, which do not decompose over rows).

A client may lie. Every report is checked, and a bad one is dropped with its reason in the
round record, never failing the round: a report from a client that was not asked or that came
twice, for another round, with an example count that is not positive or exceeds the client's
cap (its declared sample count, else ``server.max_sample_count``, else
``evaluation.max_examples``), naming a metric that was not asked for, or holding a value that is
not finite or lies outside the metric's range (:class:`~fedfort.evaluation.metrics.MetricSpec`).
A lying client can still shift the overall values within those bounds, by at most its share of
the examples: the example cap is what keeps that share bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fedfort.errors import ConfigError
from fedfort.evaluation.config import Task
from fedfort.evaluation.metrics import MetricSpec, metric_spec
from fedfort.measurements import FederatedEvaluationMeasurement
from fedfort.messages import EvaluateTask, EvaluationReport
from fedfort.server.engine import FederatedEvaluator, RoundContext, Stage

__all__ = ["FederatedEvaluate", "weighted_overall"]


def weighted_overall(
    values: Mapping[str, Mapping[str, float]], examples: Mapping[str, int], metrics: Sequence[str]
) -> dict[str, float]:
    """Per metric, the example-weighted mean over the clients that reported it."""
    clients = list(values)
    if not clients:
        return {}
    table = np.array(
        [[values[c].get(m, np.nan) for m in metrics] for c in clients], dtype=np.float64
    )
    counts = np.array([examples[c] for c in clients], dtype=np.float64)[:, None]
    present = ~np.isnan(table)
    weight = (counts * present).sum(axis=0)
    total = np.where(present, table * counts, 0.0).sum(axis=0)
    return {m: float(total[j] / weight[j]) for j, m in enumerate(metrics) if weight[j] > 0}


class FederatedEvaluate(Stage):
    """Ask every client to evaluate the new model on its own hold-out; check and combine the
    reports (see the module docstring)."""

    name = "federated_evaluation"

    def __init__(
        self,
        metrics: Sequence[str],
        loss: str,
        task: Task,
        *,
        every: int = 1,
        caps: Callable[[], Mapping[str, int]] | None = None,
        max_examples: int = 1_000_000,
        deadline_s: float | None = None,
    ) -> None:
        if every < 1:
            raise ConfigError(f"evaluation.every must be >= 1, got {every}")
        self.metrics = tuple(metrics)
        self.specs: dict[str, MetricSpec] = {m: metric_spec(m, task) for m in self.metrics}
        self.loss = loss
        self.task: Task = task
        self.every = every
        self.caps = caps
        self.max_examples = max_examples
        self.deadline_s = deadline_s

    def run(self, ctx: RoundContext) -> None:
        if ctx.new_model is None:
            raise ConfigError("federated evaluation needs a new model: put it after the optimizer")
        if not (ctx.final or ctx.round % self.every == 0):
            return
        executor = ctx.executor
        if not isinstance(executor, FederatedEvaluator):
            raise ConfigError(
                f"the runtime {type(executor).__name__} cannot carry evaluation tasks: unset "
                "evaluation.client_holdout or use a runtime that can"
            )
        tasks = [
            EvaluateTask(ctx.round, cid, ctx.new_model, self.metrics, self.loss, self.task)
            for cid in ctx.client_ids
        ]
        outcome = executor.evaluate(tasks, self.deadline_s)
        caps = dict(self.caps()) if self.caps is not None else {}
        asked = {t.client_id for t in tasks}
        values: dict[str, dict[str, float]] = {}
        examples: dict[str, int] = {}
        rejected: dict[str, str] = {}
        for report in outcome.reports:
            reason = self._check(report, ctx.round, asked, caps, examples)
            if reason is not None:
                rejected.setdefault(str(getattr(report, "client_id", "?")), reason)
                continue
            values[report.client_id] = {k: float(v) for k, v in report.metrics.items()}
            examples[report.client_id] = int(report.num_examples)
        for cid in rejected:  # a client that also sent a bad report is not counted
            values.pop(cid, None)
            examples.pop(cid, None)
        overall = weighted_overall(values, examples, self.metrics)
        answered = set(values) | set(rejected)
        missing = sorted(asked - answered)
        body: dict[str, Any] = {
            "overall": overall,
            "clients": {c: {**values[c], "examples": examples[c]} for c in sorted(values)},
            "rejected": rejected,
        }
        if missing:
            body["missing"] = missing
        ctx.federated_evaluation = body
        ctx.measure(
            FederatedEvaluationMeasurement(
                overall=overall,
                examples={c: examples[c] for c in sorted(examples)},
                rejected=rejected,
                missing=missing,
            )
        )

    def _check(
        self,
        report: EvaluationReport,
        round_: int,
        asked: set[str],
        caps: Mapping[str, int],
        seen: Mapping[str, int],
    ) -> str | None:
        """Why ``report`` is dropped, or ``None`` when it is sound."""
        if not isinstance(report, EvaluationReport):
            return "malformed: not an evaluation report"
        cid = report.client_id
        if cid not in asked:
            return "not asked: the server sent this client no evaluation task"
        if cid in seen:
            return "duplicate: the client answered twice"
        if report.round != round_:
            return f"wrong round: the report is for round {report.round}, not {round_}"
        n = report.num_examples
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            return f"examples: the count {n!r} is not a positive integer"
        cap = caps.get(cid, self.max_examples)
        if n > cap:
            return f"examples: {n} exceeds the client's cap of {cap}"
        if not report.metrics:
            return "empty: the report holds no metric"
        for name, value in report.metrics.items():
            spec = self.specs.get(name)
            if spec is None:
                return f"unknown metric {str(name)[:40]!r}: it was not asked for"
            if not isinstance(value, int | float | np.floating) or not spec.admits(float(value)):
                return f"{name} = {value!r} is not a finite value in [{spec.low}, {spec.high}]"
        return None
