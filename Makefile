# Two commands a fresh machine needs: `make demo` and `make test`.
# Both create the virtual environment on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedfort-installed
# The pinned CPU build of PyTorch; an unpinned torch would pull CUDA packages.
TORCH := torch==2.13.0

.PHONY: demo test test-slow test-all lint typecheck bench redteam clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo runs/demo-redteam runs/demo-private runs/demo-secure runs/demo-rollback \
		runs/demo-privacy-redteam runs/demo-hospitals
	$(BIN)/fedfort simulate --config examples/demo.toml --out runs/demo
	$(BIN)/python examples/hospitals/make_data.py
	$(BIN)/fedfort simulate --config examples/hospitals/run.toml --out runs/demo-hospitals
	$(BIN)/fedfort redteam --config examples/redteam-demo.toml --out runs/demo-redteam
	$(BIN)/fedfort simulate --config examples/privacy/dp-fedavg-eps3.toml --out runs/demo-private
	$(BIN)/fedfort simulate --config examples/secure-aggregation.toml --out runs/demo-secure
	$(BIN)/fedfort simulate --config examples/rollback.toml --out runs/demo-rollback
	$(BIN)/fedfort model list runs/demo-rollback
	$(BIN)/fedfort audit verify runs/demo-rollback
	$(BIN)/fedfort report runs/demo-rollback
	$(BIN)/fedfort redteam privacy --config examples/redteam-privacy.toml \
		--out runs/demo-privacy-redteam

test: $(STAMP)
	bash scripts/ensure-debian-package.sh chromium chromium "the dashboard's browser test"
	bash scripts/ensure-debian-package.sh softhsm2 /usr/lib/softhsm/libsofthsm2.so "the PKCS#11 key-store test"
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 --dist loadfile -m "not slow" --durations=10

# End-to-end runs and the attack-vs-defence bar matrices (tests marked slow); CI runs both.
test-slow: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile -m slow --durations=10

test-all: test test-slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_round_overhead.py
	$(BIN)/python benchmarks/bench_aggregators.py
	$(BIN)/python benchmarks/bench_privacy.py
	$(BIN)/python benchmarks/bench_secagg.py
	$(BIN)/python benchmarks/bench_grpc_load.py
	$(BIN)/python benchmarks/bench_fuzz_codec.py
	$(BIN)/python benchmarks/bench_audit_overhead.py
	$(BIN)/python benchmarks/bench_runtimes.py

redteam: $(STAMP)
	$(BIN)/fedfort redteam --config examples/redteam.toml --out runs/redteam

clean:
	rm -rf $(VENV) runs test-artifacts .pytest_cache .mypy_cache .ruff_cache
