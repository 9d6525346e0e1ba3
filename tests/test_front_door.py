"""The front door stays light and sets nothing global.

``import fedfort``, ``fedfort --help`` and the commands that only read a run directory or the
certificate authority (``audit verify``, ``model list``, ``certs ...``) load no heavy
dependency; every public name still resolves. Importing fedfort's plotting modules leaves the
matplotlib backend alone, and a run gives back the torch and BLAS thread counts it set. Each
check runs in a fresh interpreter, since this test process has long imported everything.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import fedfort
from fedfort.config import parse_config
from fedfort.simulation import Simulation

#: what the parser and the read-only commands must never load
HEAVY = (
    "torch",
    "sklearn",
    "matplotlib",
    "prometheus_client",
    "grpc",
    "tenseal",
    "opacus",
    "dp_accounting",
    "ray",
    "mlxtend",
)

GROUPS = (
    "simulate",
    "redteam",
    "privacy",
    "certs",
    "server",
    "client",
    "keys",
    "audit",
    "model",
    "dashboard",
    "report",
    "access",
    "operator",
)

#: runs ``fedfort ARGS`` through ``fedfort.cli.main`` and reports the heavy modules it loaded
_CLI_PROBE = f"""
import json, sys
from fedfort.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)
sys.exit(code)
"""


def _python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
    )


def _fedfort(*args: str, cwd: Path | None = None) -> tuple[int, str, list[str]]:
    """Exit status, stdout and the heavy modules loaded by ``fedfort ARGS``."""
    proc = _python(_CLI_PROBE, *args, cwd=cwd)
    lines = proc.stderr.strip().splitlines()
    assert lines, f"fedfort {' '.join(args)} printed nothing on stderr"
    return proc.returncode, proc.stdout, json.loads(lines[-1])


def test_import_fedfort_loads_no_heavy_dependency() -> None:
    proc = _python(
        f"import sys, fedfort; print([m for m in {HEAVY!r} if m in sys.modules])"
        "; print(fedfort.__version__)"
    )
    assert proc.returncode == 0, proc.stderr
    loaded, version = proc.stdout.splitlines()
    assert loaded == "[]"
    assert version == fedfort.__version__


def test_every_public_name_resolves() -> None:
    from fedfort.simulation.simulation import Simulation as Defined

    for name in fedfort.__all__:
        assert getattr(fedfort, name) is not None, name
    assert fedfort.Simulation is Defined
    assert set(fedfort.__all__) <= set(dir(fedfort))
    ns: dict[str, object] = {}
    exec("from fedfort import *", ns)
    assert set(fedfort.__all__) <= set(ns)
    with pytest.raises(AttributeError, match="has no attribute 'Simulatoin'"):
        _ = fedfort.Simulatoin  # type: ignore[attr-defined]


#: packages whose public names resolve lazily (fedfort/_lazy.py)
LAZY_PACKAGES = (
    "fedfort.access",
    "fedfort.aggregation",
    "fedfort.attacks",
    "fedfort.audit",
    "fedfort.charts",
    "fedfort.client",
    "fedfort.edge",
    "fedfort.monitoring",
    "fedfort.redteam",
    "fedfort.report",
    "fedfort.server",
    "fedfort.simulation",
    "fedfort.transport",
)


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_subpackage_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    for sub in pkgutil.iter_modules(module.__path__):
        # a submodule imported on its own must not shadow a public name it shares
        importlib.import_module(f"{package}.{sub.name}")
    for name in module.__all__:
        value = getattr(module, name)  # AttributeError when the package's table misses it
        assert not isinstance(value, types.ModuleType), f"{package}.{name} is a module"
        assert name in vars(module), f"{package}.{name} is not stored once resolved"
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'nothing'"):
        _ = module.nothing


def test_run_result_keeps_its_old_name() -> None:
    from fedfort.run.federation import SimulationResult as FromFederation
    from fedfort.run.result import RunResult, SimulationResult

    assert SimulationResult is RunResult
    assert FromFederation is RunResult
    assert fedfort.SimulationResult is RunResult
    assert fedfort.RunResult is RunResult


def test_network_server_is_exported_by_transport() -> None:
    proc = _python(
        "import sys, fedfort.transport as t; heavy = 'grpc' in sys.modules; "
        "from fedfort.transport.server import NetworkServer; "
        "print(heavy, t.NetworkServer is NetworkServer, 'NetworkServer' in t.__all__)"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "True"]


def test_help_loads_no_heavy_dependency() -> None:
    code, out, loaded = _fedfort("--help")
    assert code == 0
    assert out.startswith("usage: fedfort")
    assert loaded == []


@pytest.mark.parametrize("group", GROUPS)
def test_group_help_loads_no_heavy_dependency(group: str) -> None:
    code, out, loaded = _fedfort(group, "--help")
    assert code == 0
    assert out.startswith(f"usage: fedfort {group}")
    assert loaded == []


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("front") / "run"
    config = parse_config({"rounds": 2, "clients": {"count": 3}, "data": {"dataset": "digits"}})
    with Simulation(config, out_dir=out) as sim:
        sim.run()
    return out


def test_audit_verify_and_model_list_load_no_heavy_dependency(finished_run: Path) -> None:
    code, out, loaded = _fedfort("audit", "verify", str(finished_run))
    assert code == 0, out
    assert out.startswith("audit log verified")
    assert loaded == []
    code, out, loaded = _fedfort("model", "list", str(finished_run), "--json")
    assert code == 0
    assert [v["version"] for v in json.loads(out)][-1] == 2
    assert loaded == []


def test_certs_load_no_heavy_dependency(tmp_path: Path) -> None:
    ca, out = tmp_path / "ca", tmp_path / "server"
    code, _, loaded = _fedfort("certs", "init", "--dir", str(ca), "--federation", "front")
    assert (code, loaded) == (0, [])
    code, _, loaded = _fedfort(
        "certs",
        "issue",
        "--dir",
        str(ca),
        "--out",
        str(out),
        "--name",
        "server",
        "--role",
        "server",
    )
    assert (code, loaded) == (0, [])
    code, printed, loaded = _fedfort(
        "certs", "revoke", "--dir", str(ca), "--cert", str(out / "server.pem")
    )
    assert (code, loaded) == (0, [])
    assert printed.startswith("revoked serial")


def test_importing_fedfort_keeps_the_matplotlib_backend() -> None:
    proc = _python(
        "import matplotlib; matplotlib.use('svg')\n"
        "import fedfort, fedfort.report, fedfort.report.plots, fedfort.redteam.report\n"
        "import fedfort.redteam.privacy_report, fedfort.simulation.results, fedfort.cli\n"
        "print(matplotlib.get_backend())"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "svg"


def test_a_run_restores_the_thread_counts(tmp_path: Path) -> None:
    """A run pins torch and BLAS to ``simulation.torch_threads`` and gives the counts back."""
    proc = _python(
        """
import json, sys
import torch
from threadpoolctl import threadpool_info, threadpool_limits
from fedfort.config import parse_config
from fedfort.simulation import Simulation

torch.set_num_threads(2)
threadpool_limits(2, user_api="blas")
blas = lambda: sorted(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
before = blas()
config = parse_config({"rounds": 2, "clients": {"count": 3}, "simulation": {"torch_threads": 1}})
during = []
with Simulation(config, out_dir=sys.argv[1]) as sim:
    built = torch.get_num_threads()
    sim.run(on_round=lambda record: during.append((torch.get_num_threads(), set(blas()))))
print(json.dumps({"built": built, "during": [[d[0], sorted(d[1])] for d in during],
                  "after": torch.get_num_threads(), "blas_same": blas() == before}))
""",
        str(tmp_path / "run"),
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"built": 2, "during": [[1, [1]], [1, [1]]], "after": 2, "blas_same": True}
