"""The Ray runtime: same models as in-process, dead workers are dropouts, lazy clients.

One local Ray instance (2 logical CPUs, its own temp dir and ports) serves the whole module;
every Simulation joins it and leaves it running, and the fixture shuts it down at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from fedfort import Simulation
from fedfort.cli import main
from fedfort.config import RunConfig, load_config, parse_config
from fedfort.errors import ConfigError
from fedfort.messages import TrainTask

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from fedfort.simulation.ray_runtime import RayConnection, RayExecutor  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    connection = RayConnection.open(None, local_cpus=2)
    assert connection.started, "another test left Ray running in this process"
    yield connection
    connection.close()
    assert not ray.is_initialized()


def ray_config(body: dict[str, object], **simulation: object) -> RunConfig:
    return parse_config({**body, "simulation": {"runtime": "ray", **simulation}})


def run(cfg: RunConfig, **kwargs):
    with Simulation(cfg, **kwargs) as sim:
        result = sim.run()
        executor = sim.executor
    return result, executor


STATEFUL_ATTACKED = {
    "rounds": 3,
    "clients": {"count": 8, "algorithm": "scaffold", "epochs": 1},
    "server": {"optimizer": "fedadam", "lr": 0.05, "fraction": 0.5},
    "attack": {"name": "backdoor", "fraction": 0.25},
}


def test_ray_and_in_process_commit_bit_identical_models() -> None:
    """SCAFFOLD state, a backdoor coalition (poisoned data, adjusted tasks, crafted updates),
    seeded dropouts and FedAdam: the Ray run commits exactly the in-process model."""
    body = {**STATEFUL_ATTACKED, "simulation": {"dropout_rate": 0.2}}
    local = run(parse_config(body))[0]
    on_ray, executor = run(ray_config(body, dropout_rate=0.2))
    assert isinstance(executor, RayExecutor)
    np.testing.assert_array_equal(local.model, on_ray.model)
    assert [r["dropped"] for r in on_ray.records] == [r["dropped"] for r in local.records]
    assert [r["accepted"] for r in on_ray.records] == [r["accepted"] for r in local.records]
    assert any(r["dropped"] for r in local.records), "the config should exercise dropouts"
    assert on_ray.malicious == local.malicious and on_ray.malicious
    attempts = [a for r in on_ray.records for a in (r, *r["discarded_attempts"])]
    trained = sum(len(a["selected"]) - len(a["dropped"]) for a in attempts)
    assert sum(executor.tasks_per_node.values()) == trained


@pytest.mark.slow
def test_secure_aggregation_runs_on_ray_like_in_process() -> None:
    """Sealing and the SecAgg protocol (with vanishing clients) run in the driver; the sum
    matches in-process up to the fixed-point encoding's stochastic rounding, which draws from
    the OS, so two in-process runs differ by as much."""
    body = {
        "rounds": 2,
        "clients": {"count": 6, "epochs": 1},
        "privacy": {
            "mode": "distributed",
            "noise_multiplier": 0.5,
            "secure_noise": False,
            "noise_shares": 3,
            # the clients' seeded, non-secure mode; their own (smaller) noise floor lets them
            # put a second masked input into a retried attempt, as secure clients would
            "client": {"reproducible": True, "max_clip_norm": 10.0, "min_noise_std": 1e-6},
        },
        "secure_aggregation": {"mode": "secagg", "simulated_dropout": 0.1},
    }
    local = run(parse_config(body))[0]
    on_ray = run(ray_config(body))[0]
    assert [r["accepted"] for r in on_ray.records] == [r["accepted"] for r in local.records]
    assert any(r["measurements"]["aggregate"]["protocol_dropped"] for r in on_ray.records)
    np.testing.assert_allclose(on_ray.model, local.model, rtol=0, atol=1e-6)


class KillOnce(nn.Module):
    """A linear model whose first training forward pass after ``flag`` appears kills its
    process with ``os._exit`` (the flag is claimed atomically, so exactly one worker dies)."""

    def __init__(self, in_features: int, num_classes: int, flag: str = "") -> None:
        super().__init__()
        self.flag = flag
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x):
        if self.training and self.flag and os.path.exists(self.flag):
            try:
                os.rename(self.flag, self.flag + ".taken")
            except OSError:
                pass
            else:
                os._exit(1)
        return self.linear(x)


def test_a_worker_that_dies_mid_round_is_a_dropped_client(tmp_path) -> None:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    flag = tmp_path / "die"
    flag.touch()
    cfg = ray_config(
        {
            "rounds": 2,
            "clients": {"count": 6, "epochs": 1},
            "model": {"name": "kill_once", "options": {"flag": str(flag)}},
        },
        ray_actors=1,
    )
    with Simulation(cfg, model_factory=KillOnce) as sim:
        result = sim.run()
        executor = sim.executor
        assert isinstance(executor, RayExecutor)
        first, *later = result.records
        assert (tmp_path / "die.taken").exists(), "no worker took the kill switch"
        assert len(first["dropped"]) == 1 and first["participants"] == 5
        assert all(r["dropped"] == [] and r["participants"] == 6 for r in later)
        assert executor.replaced_workers == 1
        assert [r["round"] for r in result.records] == [1, 2]
        # past the collect deadline: both clients are missing and the busy worker is cut off
        task = TrainTask(3, 0, "client-000", sim.model, cfg.clients.local_training(), seed=1)
        late = [task, dataclasses.replace(task, client_id="client-001")]
        outcome = executor.execute(late, deadline_s=1e-9)
        assert outcome.received == [] and outcome.missing == ["client-000", "client-001"]
        assert executor.replaced_workers == 2


@pytest.mark.slow
def test_ten_thousand_registered_clients_are_not_built() -> None:
    """The driver keeps a client only while it has something to keep."""
    cfg = ray_config(
        {
            "rounds": 2,
            "data": {"dataset": "synthetic", "synthetic_samples": 25_000, "partition": "iid"},
            "clients": {"count": 10_000, "epochs": 1, "algorithm": "scaffold"},
            "server": {"fraction": 0.001},
            "model": {"name": "logreg"},
        },
        ray_actors=1,
    )
    tracemalloc.start()
    try:
        with Simulation(cfg) as sim:
            built = tracemalloc.get_traced_memory()[1]
            assert sim.clients.materialised == 0
            sim.run()
            # only the 2 x 10 selected clients hold state (their SCAFFOLD c_i)
            assert 10 <= sim.clients.materialised <= 20
            assert set(sim.clients.state_dict()) == set(sim.clients.clients)
    finally:
        tracemalloc.stop()
    # data 25,000 x 32 float32 (3.2 MB) and 10,000 index arrays; no client objects or tensors
    assert built < 40 << 20, built


def test_ray_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="applies to the Ray runtime"):
        parse_config({"simulation": {"ray_actors": 2}})
    with pytest.raises(ConfigError, match=r"'auto'.*HOST:PORT"):
        parse_config({"simulation": {"runtime": "ray", "ray_address": "localhost"}})
    with pytest.raises(ConfigError, match="ray_actors instead"):
        parse_config({"simulation": {"runtime": "ray", "workers": 2}})
    with pytest.raises(ConfigError, match="fraction up to 1 or a whole number"):
        parse_config({"simulation": {"runtime": "ray", "ray_gpus_per_client": 1.5}})
    with pytest.raises(ConfigError, match="ray_cpus_per_client"):
        parse_config({"simulation": {"runtime": "ray", "ray_cpus_per_client": 0}})
    ok = parse_config({"simulation": {"runtime": "ray", "ray_address": "10.0.0.5:6379"}})
    assert ok.simulation.ray_address == "10.0.0.5:6379"
    # runtime keys do not change what a run computes, so not its identity
    assert ok.identity_hash() == parse_config({}).identity_hash()


@pytest.mark.parametrize(
    ("simulation", "message"),
    [
        ({"ray_gpus_per_client": 0.5}, "has 0 GPUs"),
        ({"ray_actors": 5}, "do not fit the Ray cluster"),
        ({"ray_cpus_per_client": 4}, "has 2 CPUs"),
    ],
)
def test_requests_the_cluster_cannot_meet_are_refused_before_any_work(simulation, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Simulation(ray_config({"rounds": 1}, **simulation))


def test_cli_refuses_a_bad_ray_address(tmp_path: Path, capsys) -> None:
    args = ["simulate", "--rounds", "1", "--quiet", "--out", str(tmp_path / "x")]
    assert main([*args, "--ray-address", "nowhere"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
    # this process is connected to the module's local Ray: another cluster is refused
    assert main([*args, "--ray-address", "127.0.0.1:1"]) == 2
    assert "already connected to the Ray cluster" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cli_runs_on_ray_and_resumes_in_process_with_the_same_model(tmp_path: Path, capsys) -> None:
    base = ["simulate", "--clients", "4", "--quiet"]
    moved, stayed = tmp_path / "moved", tmp_path / "stayed"
    assert main([*base, "--rounds", "1", "--runtime", "ray", "--out", str(moved)]) == 0
    resume = ["simulate", "--resume", "--rounds", "2", "--quiet", "--out", str(moved)]
    assert main([*resume, "--runtime", "inprocess"]) == 0
    assert main([*base, "--rounds", "2", "--out", str(stayed)]) == 0
    out = capsys.readouterr().out
    assert out.count("finished 2 rounds") == 2
    final = [json.loads((d / "results.json").read_text())["final"] for d in (moved, stayed)]
    assert final[0]["model_sha256"] == final[1]["model_sha256"]


class PeakMemory:
    """Peak summed RSS of this process and all its descendants (the local Ray's processes)."""

    def __init__(self, period_s: float = 0.2) -> None:
        self.period_s = period_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _watch(self) -> None:
        while not self._stop.wait(self.period_s):
            self.peak = max(self.peak, self._sample())

    def __enter__(self) -> PeakMemory:
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


@pytest.mark.slow
def test_a_thousand_clients_ten_rounds_stay_under_four_gib(tmp_path: Path, capsys) -> None:
    """The bar: 1,000 clients on Synthetic(1, 1), 10 rounds, 10% sampled, through the CLI
    with its progress bar and results; peak RSS of driver + Ray processes < 4 GiB."""
    config = tmp_path / "bar.toml"
    config.write_text(
        "rounds = 10\n"
        "[data]\ndataset = 'fedprox_synthetic'\n"
        "[clients]\ncount = 1000\n"
        "[server]\nfraction = 0.1\n"
        "[model]\nname = 'logreg'\n"
        "[simulation]\nruntime = 'ray'\n"
    )
    out = tmp_path / "run"
    with PeakMemory() as memory:
        assert main(["simulate", "--config", str(config), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "rounds: 100%" in captured.err and "finished 10 rounds" in captured.out
    body = json.loads((out / "results.json").read_text())
    assert [r["participants"] for r in body["rounds"]] == [100] * 10
    assert memory.peak < 4 << 30, f"peak RSS {memory.peak / 2**30:.2f} GiB"


@pytest.mark.slow
def test_edge_data_protection_runs_in_the_ray_workers_like_in_process() -> None:
    """Validation, masking, de-duplication and sanitisation run in the actors on each client's
    own rows: the same model and the same per-client counts as the in-process runtime."""
    example = Path(__file__).resolve().parents[1] / "examples" / "edge" / "breast-cancer.toml"
    config = load_config(example).with_overrides({"rounds": 2})
    assert config.edge.sanitise.outliers != "none" and config.edge.sanitise.label_noise != "none"
    local = run(config)[0]
    on_ray, executor = run(config.with_overrides({"simulation.runtime": "ray"}))
    assert isinstance(executor, RayExecutor)
    np.testing.assert_array_equal(local.model, on_ray.model)
    counts = [r["measurements"]["edge"] for r in on_ray.records]
    assert counts == [r["measurements"]["edge"] for r in local.records]
    assert counts[-1]["totals"]["fields_dropped"] > 0  # the pipeline did run


@pytest.mark.slow
def test_federated_evaluation_on_ray_equals_in_process() -> None:
    """The actors score each client's hold-out; the driver keeps each client's guard."""
    body = {
        "rounds": 2,
        "data": {"dataset": "breast_cancer", "partition": "iid"},
        "model": {"name": "logreg"},
        "clients": {"count": 4, "epochs": 1},
        "evaluation": {"client_holdout": 0.25},
    }
    local = run(parse_config(body))[0]
    on_ray, executor = run(ray_config(body))
    assert isinstance(executor, RayExecutor)
    np.testing.assert_array_equal(local.model, on_ray.model)
    evaluations = [r["evaluation"] for r in on_ray.records]
    assert evaluations == [r["evaluation"] for r in local.records]
    assert all(len(e["clients"]) == 4 and not e["rejected"] for e in evaluations)
