"""The user's model in, the trained model out.

A model class in the user's own module (written here into a temporary folder on the path) is
named in a TOML config with ``[model] factory``, trained through ``fedfort simulate``,
exported with ``fedfort model export`` and reloaded by plain PyTorch in a fresh interpreter
that never imports fedfort. The export is verified against the run's signed checkpoint, and
neither it nor :func:`fedfort.load_model` writes to the run. A model given to the Python API
as ``model_factory=`` is recorded by its import path, so a resume rebuilds it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fedfort
from fedfort.cli import main
from fedfort.config import parse_config
from fedfort.errors import CheckpointError, ConfigError
from fedfort.params import vector_sha256
from fedfort.run.data import split_data
from fedfort.run.export import export_model
from fedfort.run.resume import stored_config
from fedfort.simulation import Simulation

#: the user's module: a tabular network with a BatchNorm (running statistics are weights too,
#: and its integer counter must survive the round trip) and one that cannot be built
NETS = """
import torch
from torch import nn


class TabularNet(nn.Module):
    def __init__(self, in_features: int, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class TinyNet(nn.Module):
    def __init__(self, in_features: int, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, width), nn.Tanh(), nn.Linear(width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Broken(nn.Module):
    def __init__(self, in_features: int, num_classes: int) -> None:
        raise RuntimeError("no weights for\\nthis shape")
"""

CONFIG = """
rounds = 2
seed = 3

[data]
dataset = "digits"
partition = "iid"

[clients]
count = 4
epochs = 1

[model]
factory = "clinic_nets:TabularNet"
options = { width = 12 }
"""


@pytest.fixture(scope="module")
def nets_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The user's module ``clinic_nets`` on ``sys.path`` and ``PYTHONPATH``."""
    folder = tmp_path_factory.mktemp("nets")
    (folder / "clinic_nets.py").write_text(NETS, encoding="utf-8")
    sys.path.insert(0, str(folder))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), old) if p)
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("clinic_nets", None)
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def trained(nets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of ``clinic_nets:TabularNet`` trained from a TOML config through the CLI."""
    base = tmp_path_factory.mktemp("trained")
    config = base / "clinic.toml"
    config.write_text(CONFIG, encoding="utf-8")
    run = base / "run"
    assert main(["simulate", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    return run


def _files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative path, with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _export(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["model", "export", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_factory_names_the_model_and_the_stored_run_records_it(trained: Path) -> None:
    results = json.loads((trained / "results.json").read_text())
    assert results["config"]["model"] == {
        "name": "clinic_nets:TabularNet",
        "options": {"width": 12},
    }
    assert stored_config(trained)["model"]["name"] == "clinic_nets:TabularNet"
    # factory is another spelling of an import-path name: the same run, the same identity
    by_name = parse_config({"model": {"name": "clinic_nets:TabularNet", "options": {"width": 12}}})
    by_factory = parse_config(
        {"model": {"factory": "clinic_nets:TabularNet", "options": {"width": 12}}}
    )
    assert by_name.identity_hash() == by_factory.identity_hash()
    assert by_name.to_dict() == by_factory.to_dict()


def test_a_pt_export_reloads_in_plain_pytorch_with_the_runs_accuracy(
    trained: Path, nets_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(trained)
    code, out, _ = _export(capsys, str(trained), "--format", "pt")
    assert code == 0, out
    path = trained / "export" / "model-v2.pt"
    assert str(path) in out and "signature verified" in out
    # exporting writes its file and nothing else: the audit log and checkpoints are untouched
    after = _files(trained)
    assert {k: v for k, v in after.items() if not k.startswith("export")} == before

    config = parse_config(stored_config(trained))
    dataset = split_data(config).dataset
    data = tmp_path / "test_split.npz"
    np.savez(data, x=dataset.x_test, y=dataset.y_test)
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import torch
        from clinic_nets import TabularNet

        model = TabularNet({dataset.num_features}, {dataset.num_classes}, width=12)
        model.load_state_dict(torch.load({str(path)!r}))
        model.eval()
        split = np.load({str(data)!r})
        x, y = torch.from_numpy(split["x"]), torch.from_numpy(split["y"])
        with torch.no_grad():
            correct = int((model(x).argmax(dim=1) == y).sum())
        assert not any(m.split(".")[0] == "fedfort" for m in sys.modules), "fedfort was imported"
        print(correct / len(y))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(nets_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    final = json.loads((trained / "results.json").read_text())["final"]["accuracy"]
    assert final > 0.5  # a trained model, not a constant
    assert abs(float(done.stdout.strip()) - final) <= 1e-6


def test_safetensors_export_holds_the_same_tensors(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    code, _, err = _export(capsys, str(trained), "--format", "safetensors")
    assert code == 0, err
    loaded = load_file(str(trained / "export" / "model-v2.safetensors"))
    reference = fedfort.load_model(trained).state_dict()
    assert set(loaded) == set(reference)
    assert "body.1.num_batches_tracked" in loaded
    for name, tensor in reference.items():
        assert torch.equal(loaded[name], tensor), name


def test_a_missing_export_package_says_which_extra_installs_it(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # import fails as if absent
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    for fmt in ("safetensors", "onnx"):
        with pytest.raises(ConfigError, match=r"pip install 'fedfort\[export\]'"):
            export_model(trained, fmt, out=tmp_path / f"m.{fmt}")
        assert not (tmp_path / f"m.{fmt}").exists()


@pytest.mark.slow
def test_onnx_export_is_a_valid_model_with_a_dynamic_batch(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    out = tmp_path / "model.onnx"
    code, _, err = _export(capsys, str(trained), "--format", "onnx", "--out", str(out))
    assert code == 0, err
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    (graph_input,) = proto.graph.input
    batch, features = graph_input.type.tensor_type.shape.dim
    assert batch.dim_param and not batch.dim_value  # any batch size
    assert features.dim_value == 64
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        x = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
        session = onnxruntime.InferenceSession(str(out))
        (logits,) = session.run(None, {graph_input.name: x})
        with torch.no_grad():
            expected = fedfort.load_model(trained)(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_a_version_a_new_folder_and_a_suffix_of_ones_own(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new" / "folder" / "weights.bin"
    code, stdout, err = _export(capsys, str(trained), "--version", "1", "--out", str(out))
    assert code == 0, err
    assert out.is_file() and "version 1" in stdout
    state = torch.load(out)
    first = fedfort.load_model(trained, version=1).state_dict()
    latest = fedfort.load_model(trained).state_dict()
    assert all(torch.equal(state[k], v) for k, v in first.items())
    assert not torch.equal(state["head.weight"], latest["head.weight"])
    # a path without a suffix gets the format's
    code, _, err = _export(
        capsys, str(trained), "--format", "safetensors", "--out", str(tmp_path / "w")
    )
    assert code == 0, err
    assert (tmp_path / "w.safetensors").is_file()
    # the flat vector, as the run stores it
    code, _, err = _export(
        capsys, str(trained), "--version", "0", "--out", str(tmp_path / "v0.npy")
    )
    assert code == 0, err
    with sqlite3.connect(trained / "checkpoints.sqlite") as db:
        digest = db.execute("SELECT model_sha256 FROM checkpoints WHERE round = 0").fetchone()[0]
    assert vector_sha256(np.load(tmp_path / "v0.npy")) == digest


def test_an_unknown_version_is_refused_with_the_runs_versions(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _export(capsys, str(trained), "--version", "9", "--out", str(tmp_path / "x.pt"))
    assert code == 2
    assert "version 9 does not exist: the run has versions 0..2" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = _export(capsys, str(trained), "--version", "newest")
    assert code == 2 and "is not 'latest' or a round number" in err
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(ConfigError, match=r"the run has versions 0\.\.2"):
        fedfort.load_model(trained, version=3)


def test_a_tampered_checkpoint_is_refused(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("export"))
    with sqlite3.connect(run / "checkpoints.sqlite") as db:
        blob = db.execute("SELECT model FROM checkpoints WHERE round = 2").fetchone()[0]
        poisoned = (-3.0 * np.load(io.BytesIO(blob), allow_pickle=False)).astype(np.float32)
        buffer = io.BytesIO()
        np.save(buffer, poisoned, allow_pickle=False)
        # a recomputed SHA-256 does not help without the run's audit key
        db.execute(
            "UPDATE checkpoints SET model = ?, model_sha256 = ? WHERE round = 2",
            (buffer.getvalue(), vector_sha256(poisoned)),
        )
    for fmt in ("pt", "npy"):
        code, _, err = _export(capsys, str(run), "--format", fmt)
        assert code == 2
        assert "round 2" in err and "fails its signature check" in err
    assert not (run / "export").exists()
    with pytest.raises(CheckpointError, match="fails its signature check"):
        fedfort.load_model(run)
    fedfort.load_model(run, version=1)  # an untouched version still loads


def test_load_model_reads_without_touching_the_run(trained: Path) -> None:
    before = _files(trained)
    model = fedfort.load_model(trained)
    fedfort.load_model(trained, version="0")
    assert _files(trained) == before
    assert type(model).__name__ == "TabularNet" and type(model).__module__ == "clinic_nets"
    assert not model.training
    from fedfort.params import ParamSpec

    with sqlite3.connect(trained / "checkpoints.sqlite") as db:
        digest = db.execute("SELECT model_sha256 FROM checkpoints WHERE round = 2").fetchone()[0]
    assert vector_sha256(ParamSpec.from_module(model).flatten(model)) == digest


def test_a_factory_that_fails_is_one_line_naming_it(
    nets_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "broken.toml"
    config.write_text(CONFIG.replace("TabularNet", "Broken").replace("{ width = 12 }", "{}"))
    capsys.readouterr()
    out = tmp_path / "run"
    assert main(["simulate", "--config", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "fedfort: error: model 'clinic_nets:Broken' failed to build as (64 features, 10 "
        "classes, options {}): RuntimeError: no weights for this shape"
    )
    assert not (out / "checkpoints.sqlite").exists()
    assert main(["simulate", "--config", str(config), "--out", str(out), "--quiet",
                 "--model", "clinic_nets:Missing"]) == 2  # fmt: skip
    assert "'clinic_nets' has no 'Missing'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="give one of them"):
        parse_config({"model": {"name": "mlp", "factory": "clinic_nets:TinyNet"}})
    with pytest.raises(ConfigError, match="is not an import path"):
        parse_config({"model": {"factory": "mlp"}})


def test_a_model_factory_object_is_recorded_and_a_resume_rebuilds_it(
    nets_dir: Path, tmp_path: Path
) -> None:
    from clinic_nets import TinyNet

    config = parse_config({**_TINY, "model": {"options": {"width": 10}}})
    out = tmp_path / "api"
    with Simulation(config, out_dir=out, model_factory=TinyNet) as sim:
        assert sim.config.model.name == "clinic_nets:TinyNet"
        first = sim.run(rounds=1)
    assert stored_config(out)["model"] == {"name": "clinic_nets:TinyNet", "options": {"width": 10}}
    # the Python API writes the run's outputs like the command does
    assert json.loads((out / "results.json").read_text())["final"]["rounds"] == 1
    assert (out / "training.png").stat().st_size > 0
    with Simulation.resume(out) as sim:  # no factory given: the stored import path rebuilds it
        assert type(sim.global_module()) is TinyNet
        resumed = sim.run()
    with Simulation(config, model_factory=TinyNet) as sim:
        straight = sim.run()
    assert first.records[0]["model_sha256"] == straight.records[0]["model_sha256"]
    assert resumed.records[-1]["model_sha256"] == straight.records[-1]["model_sha256"]
    assert type(fedfort.load_model(out)) is TinyNet


def test_a_class_only_this_process_can_import_is_given_again_on_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class LocalNet(nn.Module):
        def __init__(self, in_features: int, num_classes: int) -> None:
            super().__init__()
            self.linear = nn.Linear(in_features, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x)

    class OtherNet(LocalNet):
        pass

    config = parse_config({**_TINY, "rounds": 2})
    out = tmp_path / "local"
    with Simulation(config, out_dir=out, model_factory=LocalNet) as sim:
        sim.run(rounds=1)
    name = stored_config(out)["model"]["name"]
    assert name.endswith(".<locals>.LocalNet") and name.startswith("test_model_export:")
    with pytest.raises(ConfigError, match=r"defined inside a function .*model_factory="):
        Simulation.resume(out)
    with pytest.raises(ConfigError, match="the run was trained with model"):
        Simulation.resume(out, model_factory=OtherNet)
    with Simulation.resume(out, model_factory=LocalNet) as sim:
        assert sim.run().records[-1]["round"] == 2
    assert type(fedfort.load_model(out, model_factory=LocalNet)) is LocalNet
    # from the command line the class cannot be imported: one line that says why
    capsys.readouterr()
    assert main(["model", "export", str(out)]) == 2
    err = capsys.readouterr().err
    assert "defined inside a function" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_class_of_a_script_resumes_from_that_script_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            import fedfort
            from torch import nn

            class ScriptNet(nn.Module):
                def __init__(self, in_features, num_classes):
                    super().__init__()
                    self.linear = nn.Linear(in_features, num_classes)

                def forward(self, x):
                    return self.linear(x)

            config = {_TINY!r}
            if sys.argv[1] == "start":
                with fedfort.Simulation(config, out_dir="run", model_factory=ScriptNet) as sim:
                    sim.run(rounds=1)
            else:
                with fedfort.Simulation.resume("run", rounds=2) as sim:
                    print(type(sim.global_module()).__name__, sim.run().records[-1]["round"])
            """
        ),
        encoding="utf-8",
    )
    for step in ("start", "resume"):
        done = subprocess.run(
            [sys.executable, str(script), step],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ScriptNet", "2"]
    assert stored_config(tmp_path / "run")["model"]["name"] == "__main__:ScriptNet"
    capsys.readouterr()
    assert main(["simulate", "--out", str(tmp_path / "run"), "--resume", "--rounds", "3"]) == 2
    err = capsys.readouterr().err
    assert "was defined in the script that started the run" in err


def test_server_and_client_take_a_model_by_import_path() -> None:
    from fedfort.cli.app import _parser

    parser = _parser()
    server = parser.parse_args(
        ["server", "--config", "c.toml", "--pki", "p", "--model", "clinic_nets:TabularNet"]
    )
    client = parser.parse_args(
        ["client", "--config", "c.toml", "--pki", "p", "--name", "a", "--data", "partition:0",
         "--model", "clinic_nets:TabularNet"]
    )  # fmt: skip
    assert server.model == client.model == "clinic_nets:TabularNet"


#: a run of a second or two: digits over 4 clients, one full-batch epoch per round
_TINY = {
    "rounds": 2,
    "data": {"dataset": "digits", "partition": "iid"},
    "clients": {"count": 4, "epochs": 1, "batch_size": 0, "lr": 0.5},
}
