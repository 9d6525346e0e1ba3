"""Client-reported metrics are verified like the update: finite, numbers, bounded, in range."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedfort import Simulation
from fedfort.config import parse_config
from fedfort.errors import InvalidUpdate
from fedfort.messages import ClientUpdate
from fedfort.simulation.results import write_results
from fedfort.transport import codec
from tampering import tamper

DIM = 3


def update(metrics: object) -> ClientUpdate:
    return ClientUpdate(1, "c0", np.zeros(DIM, np.float32), 10, metrics=metrics)  # type: ignore[arg-type]


def verify(u: object) -> ClientUpdate:
    from fedfort.server.verify import verify_update

    return verify_update(u, round_=1, dim=DIM, selected={"c0"}, seen=set())


def strict_loads(text: str) -> object:
    def refuse(token: str) -> object:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_the_metrics_fedfort_clients_send_pass() -> None:
    good = {
        "train_loss": 0.25,
        "local_steps": 12.0,
        "train_time_s": 0.4,
        "dp_sgd_steps": 3,
        "dp_sgd_sample_rate": 0.1,
        "dp_sgd_noise_multiplier": 1.1,
        "dp_sgd_epsilon": 2.5,
        "edge_rows_in": 100.0,
        "edge_rows_dropped_invalid": np.float64(2),
        "custom_metric": -3.5,  # other names: finite numbers, ignored by fedfort
    }
    assert verify(update(good)).metrics == good


@pytest.mark.parametrize(
    "value",
    [
        math.inf,
        -math.inf,
        math.nan,
        np.float32("nan"),
        pytest.param(10**400, id="int_beyond_float"),
    ],
)
def test_a_non_finite_metric_rejects_the_update(value: object) -> None:
    with pytest.raises(InvalidUpdate) as info:
        verify(update({"train_loss": 0.5, "train_time_s": value}))
    assert info.value.reason == "non_finite_metric"


@pytest.mark.parametrize(
    ("metrics", "problem"),
    [
        ([("train_loss", 1.0)], "not a dict"),
        ({"train_loss": "0.1"}, "not a number"),
        ({"train_loss": True}, "not a number"),
        ({"train_loss": None}, "not a number"),
        ({"train_loss": -1.0}, "not a number in"),
        ({"dp_sgd_sample_rate": 1.5}, "not a number in"),
        ({"edge_rows_in": 2.5}, "not a whole number"),
        ({"edge_rows_in": -1.0}, "not a whole number"),
        ({"Train Loss": 1.0}, "metric name"),
        ({"x" * 65: 1.0}, "metric name"),
        ({f"m{i}": 1.0 for i in range(65)}, "65 metrics"),
    ],
)
def test_malformed_metrics_reject_the_update(metrics: object, problem: str) -> None:
    with pytest.raises(InvalidUpdate, match=problem) as info:
        verify(update(metrics))
    assert info.value.reason == "bad_metrics"


def test_non_finite_metrics_from_the_network_are_rejected_after_decoding() -> None:
    """The codec carries floats faithfully; verification is where they are refused."""
    for bad in (math.inf, math.nan):
        wire = codec.dumps(update({"train_loss": bad}))
        decoded = codec.loads(wire, ClientUpdate)
        assert isinstance(decoded, ClientUpdate)
        with pytest.raises(InvalidUpdate) as info:
            verify(decoded)
        assert info.value.reason == "non_finite_metric"


def test_inf_and_nan_train_loss_are_rejected_and_results_json_is_strict(tmp_path: Path) -> None:
    """Attack: in round 2 one client reports train_loss = inf and another NaN.

    Both updates are rejected with ``non_finite_metric``, the round record counts them, the
    round's train_loss stays a number and results.json parses with a strict parser.
    """
    cfg = parse_config({"rounds": 3, "clients": {"count": 6}, "server": {"quorum": 0.5}})
    with Simulation(cfg) as sim:
        liars = {
            sim.ids[1]: lambda u: dataclasses.replace(
                u, metrics={**u.metrics, "train_loss": math.inf}
            ),
            sim.ids[4]: lambda u: dataclasses.replace(
                u, metrics={**u.metrics, "train_loss": math.nan}
            ),
        }
        tamper(sim, 2, liars)
        result = sim.run()
    path = write_results(result, tmp_path)
    body = strict_loads(path.read_text(encoding="utf-8"))  # raises on NaN / Infinity
    assert isinstance(body, dict)
    second = body["rounds"][1]
    assert {(r["client_id"], r["reason"]) for r in second["rejected"]} == {
        (sim.ids[1], "non_finite_metric"),
        (sim.ids[4], "non_finite_metric"),
    }
    assert second["measurements"]["verify"]["rejected"] == {"non_finite_metric": 2}
    assert second["participants"] == 4 and not set(liars) & set(second["accepted"])
    assert math.isfinite(second["train_loss"])
    assert body["verification"]["rejected"] == {"non_finite_metric": 2}
