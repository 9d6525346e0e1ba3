"""What a finished run returns: its round records, final model and summaries.

:class:`RunResult` is returned by :meth:`fedfort.run.federation.Federation.run` in every runtime
(simulation and networked server) and written as ``results.json``. ``SimulationResult`` is its
former name, kept as an alias so code written against it still works.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedfort.attacks.metrics import security_summary
from fedfort.config import RunConfig
from fedfort.measurements import (
    AggregateMeasurement,
    CollectMeasurement,
    MeasurementSet,
    PrivacyMeasurement,
    SampleCapMeasurement,
)

__all__ = ["RunResult", "SimulationResult"]


@dataclass(frozen=True)
class RunResult:
    """Per-round records of the whole run (including resumed parts) and the final model."""

    config: RunConfig
    records: list[dict[str, Any]]
    model: np.ndarray
    malicious: list[str] = dataclasses.field(default_factory=list)
    stopped: str | None = None

    @property
    def privacy(self) -> dict[str, Any] | None:
        """The run's privacy settings and what it spent (``None`` without privacy)."""
        p = self.config.privacy
        if p.mode == "none" and not p.dp_sgd.enabled:
            return None
        last = self.records[-1] if self.records else {}
        body: dict[str, Any] = {
            "mode": p.mode,
            "accountant": p.accountant,
            "delta": p.delta,
            "target_epsilon": p.target_epsilon,
            "epsilon": last.get("epsilon"),
            "noise_multiplier": p.noise_multiplier,
            "sampling": p.sampling if p.user_level else None,
            "secure_noise": p.secure_noise,
            "stopped_by_budget": self.stopped == "privacy_budget_exhausted",
        }
        if p.mode == "local":
            body.update(
                local_mechanism=p.local_mechanism,
                local_epsilon_per_round=p.local_epsilon,
                local_delta_per_round=p.local_delta if p.local_mechanism == "gaussian" else 0.0,
                basic_composition_epsilon=(p.local_epsilon or 0.0) * len(self.records),
            )
        if p.dp_sgd.enabled:
            measured = MeasurementSet.of_record(last).get(PrivacyMeasurement)
            clients, exhausted = self._dp_sgd_clients()
            body["dp_sgd"] = {
                **p.dp_sgd.model_dump(mode="json"),
                "client_epsilon_max": None if measured is None else measured.dp_sgd_epsilon_max,
                "client_epsilon_mean": None if measured is None else measured.dp_sgd_epsilon_mean,
                "client_epsilon": clients,
                "budget_exhausted": exhausted,
            }
        return body

    def _dp_sgd_clients(self) -> tuple[dict[str, float], dict[str, int]]:
        """Each client's last reported DP-SGD epsilon (one record of that client, at
        ``privacy.dp_sgd.delta``), and the first round each client refused because its own
        budget was spent."""
        latest: dict[str, float] = {}
        exhausted: dict[str, int] = {}
        for record in self.records:
            measured = MeasurementSet.of_record(record)
            privacy = measured.get(PrivacyMeasurement)
            if privacy is not None and privacy.dp_sgd_epsilon:
                latest.update(privacy.dp_sgd_epsilon)
            collect = measured.get(CollectMeasurement)
            for cid, why in ((collect.refused or {}) if collect is not None else {}).items():
                if why == "privacy_budget_exhausted":
                    exhausted.setdefault(cid, int(record["round"]))
        return dict(sorted(latest.items())), dict(sorted(exhausted.items()))

    @property
    def secure_aggregation(self) -> dict[str, Any] | None:
        """The secure aggregation mode and its cost over the run (``None`` when off)."""
        sa = self.config.secure_aggregation
        if not sa.enabled:
            return None
        measured = [
            MeasurementSet.of_record(r).get(AggregateMeasurement) or AggregateMeasurement()
            for r in self.records
        ]
        included = sum(m.included or 0 for m in measured)
        aborted = [
            d["reason"]
            for r in self.records
            for d in r.get("discarded_attempts", [])
            if "secure aggregation" in d["reason"]
        ]
        return {
            "mode": sa.mode,
            "bits": sa.bits if sa.mode != "ckks" else None,
            "rounds": len(measured),
            "protocol_s_mean": float(np.mean([m.protocol_s or 0.0 for m in measured]))
            if measured
            else None,
            "upload_bytes_per_client": sum(m.bytes_client_to_server or 0 for m in measured)
            / max(included, 1),
            "protocol_dropouts": sum(len(m.protocol_dropped or {}) for m in measured),
            "aborted_attempts": len(aborted),
        }

    @property
    def security(self) -> dict[str, Any] | None:
        """Attack and defence figures (see :func:`fedfort.attacks.security_summary`)."""
        if self.config.attack.name == "none":
            return None
        return {
            "attack": self.config.attack.model_dump(mode="json"),
            **security_summary(self.records, self.malicious),
        }

    @property
    def verification(self) -> dict[str, Any]:
        """What verification refused and capped over the run's committed rounds: rejected
        updates by reason code (``non_finite_metric``, ...) and the clients whose sample
        count was capped (see :mod:`fedfort.server.sample_cap`)."""
        rejected: dict[str, int] = {}
        capped: dict[str, int] = {}
        for r in self.records:
            for rejection in r.get("rejected", []):
                reason = rejection["reason"]
                rejected[reason] = rejected.get(reason, 0) + 1
            cap = MeasurementSet.of_record(r).get(SampleCapMeasurement)
            for cid in {} if cap is None else cap.claimed:
                capped[cid] = capped.get(cid, 0) + 1
        return {
            "rejected": dict(sorted(rejected.items())),
            "capped_sample_counts": sum(capped.values()),
            "capped_clients": dict(sorted(capped.items())),
        }

    @property
    def federated(self) -> dict[str, Any] | None:
        """The clients' last evaluation on their hold-outs: its round, the example-weighted
        ``overall`` values, each client's values and example count, and the reports dropped
        (``None`` when the clients never evaluated)."""
        evaluated = [r for r in self.records if r.get("evaluation")]
        if not evaluated:
            return None
        last = evaluated[-1]
        return {"round": last["round"], **last["evaluation"]}

    def summary_lines(self) -> list[str]:
        """What the command line prints about the final model: the server's test metrics (when
        it has a test set) and the clients' federated evaluation (when they ran one)."""
        final = self.final
        lines = []
        if final["accuracy"] is not None:
            lines.append(f"test accuracy {final['accuracy']:.4f}")
        elif final["loss"] is not None:
            lines.append(f"test loss {final['loss']:.4f}")
        else:
            lines.append("no server test set")
        federated = self.federated
        if federated is not None:
            values = ", ".join(f"{k} {v:.4f}" for k, v in federated["overall"].items())
            clients = len(federated["clients"])
            dropped = len(federated["rejected"])
            lines.append(
                f"federated evaluation (round {federated['round']}, {clients} clients"
                + (f", {dropped} reports dropped" if dropped else "")
                + f"): {values or 'no valid report'}"
            )
        return lines

    @property
    def final(self) -> dict[str, Any]:
        evaluated = [
            r for r in self.records if r.get("accuracy") is not None or r.get("loss") is not None
        ]
        last = evaluated[-1] if evaluated else {}
        return {
            "rounds": self.records[-1]["round"] if self.records else 0,
            "accuracy": last.get("accuracy"),
            "loss": last.get("loss"),
            "best_accuracy": max(
                (r["accuracy"] for r in evaluated if r.get("accuracy") is not None), default=None
            ),
            "model_sha256": self.records[-1]["model_sha256"] if self.records else None,
            "epsilon": self.records[-1].get("epsilon") if self.records else None,
            "delta": self.records[-1].get("delta") if self.records else None,
            "stopped": self.stopped,
        }


#: the former name of :class:`RunResult` (a network server returns one too)
SimulationResult = RunResult
