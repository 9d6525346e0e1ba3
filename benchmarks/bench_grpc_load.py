"""The gRPC runtime under load: many clients on one server, over mutual TLS on localhost.

A throwaway PKI (one server certificate, ``--clients`` client certificates) is issued in a
temporary directory. A :class:`~fedfort.transport.server.NetworkServer` runs in this process;
``--processes`` worker processes (spawned) each run their share of
:class:`~fedfort.transport.client.NetworkClient` loops, one thread per client, each with its
own channel and state directory. Every round samples ``--fraction`` of the clients, so most
clients sit in a long poll while the others train: all of them must stay connected, keep
polling and hear "finished" at the end.

Measured:

- enrollment: from launching the worker processes until every client enrolled and is
  polling, and the client-side Enroll RPC latency;
- per round: selected, participants, dropped and the engine's round time;
- Submit RPC latency, wall time around each client's ``stub.submit`` call (the upload of
  the signed frames, the gate's checks, the hand-over to the round and the verdict);
- the server process's resident memory (``/proc/self/status``: VmRSS now, VmHWM the peak)
  before the server listens, once everyone enrolled, and at the end;
- the baseline: the same configuration run in-process (``Simulation``, sequential
  executor) in the same run; the ratio is network round time / in-process round time.

Correctness bar (exit code 1): fewer rounds completed than ``--rounds``, or a lost client,
i.e. one whose loop did not end with the server's "finished", or that was selected but
never trained. Nothing asserts on timings.

    .venv/bin/python benchmarks/bench_grpc_load.py [--clients 200] [--processes 4]
        [--rounds 5] [--fraction 0.5]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from fedfort.config import RunConfig, parse_config
from fedfort.crypto.pki import init_ca, issue_certificate, issue_clients
from fedfort.errors import RoundFailed
from fedfort.server.engine import RoundRecord
from fedfort.simulation import Simulation
from fedfort.transport.client import NetworkClient, _Stub
from fedfort.transport.enrollment import declaration
from fedfort.transport.server import Credentials, NetworkServer

FEDERATION = "bench-grpc-load"


# -- measuring ------------------------------------------------------------------------------


def proc_status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class CountLogs(logging.Handler):
    """Counts the records of the ``fedfort`` loggers and keeps the first few messages."""

    def __init__(self, keep: int = 5) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.first: list[str] = []
        self.keep = keep
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            self.counts[record.levelname] += 1
            if len(self.first) < self.keep:
                self.first.append(f"{record.levelname} {record.getMessage()}"[:160])


def count_logs() -> CountLogs:
    handler = CountLogs()
    logger = logging.getLogger("fedfort")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    return handler


def percentiles_ms(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    a = np.asarray(values) * 1e3
    p50, p99 = np.percentile(a, [50, 99])
    return f"p50 {p50:8.1f}  p99 {p99:8.1f}  max {a.max():8.1f} ms  (n={a.size})"


# -- the clients (worker processes) ---------------------------------------------------------


class TimedClient(NetworkClient):
    """A NetworkClient whose Enroll and Submit RPCs are timed (fedfort itself unchanged)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.submit_s: list[float] = []
        self.submit_errors: Counter[str] = Counter()
        self.enroll_s: list[float] = []
        self.enrolled_at: float | None = None

    def _connect(self) -> _Stub:
        fresh = self._stub is None
        stub = super()._connect()
        if fresh:
            stub.submit = self._timed(stub.submit)  # type: ignore[assignment]
        return stub

    def _timed(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def submit(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                verdict = call(*args, **kwargs)
            except Exception as exc:
                self.submit_errors[type(exc).__name__] += 1
                raise
            self.submit_s.append(time.perf_counter() - start)
            return verdict

        return submit

    def enroll(self) -> None:
        start = time.perf_counter()
        super().enroll()
        self.enroll_s.append(time.perf_counter() - start)
        if self.enrolled_at is None:
            self.enrolled_at = time.monotonic()


def run_clients(
    config_body: dict[str, Any],
    pki: str,
    port: int,
    indices: list[int],
    state_root: str,
    timeout_s: float,
) -> dict[str, Any]:
    """One worker process: its clients' loops in threads; their reports and latencies."""
    import torch

    from fedfort.client.training import ClientData, LocalTrainer
    from fedfort.models import ModelSpec, build_model
    from fedfort.run.federation import split_data

    started = time.monotonic()  # CLOCK_MONOTONIC: comparable with the parent's stamps on Linux
    torch.set_num_threads(1)
    logs = count_logs()
    config = parse_config(config_body)
    data = split_data(config)
    spec = ModelSpec(
        config.model.name,
        data.dataset.num_features,
        data.dataset.num_classes,
        dict(config.model.options),
    )
    ids = config.clients.ids()
    declared = declaration(config, None)  # the run every client says it joins
    clients: list[TimedClient] = []
    for k in indices:
        x, y = data.client_arrays(k)
        clients.append(
            TimedClient(
                ids[k],
                ClientData.from_numpy(x, y),
                LocalTrainer(build_model(spec, seed=config.seed)),
                target=f"localhost:{port}",
                credentials=Credentials.from_pki(pki, ids[k]),
                state_dir=Path(state_root) / ids[k],
                network=config.network,
                declaration=declared,
            )
        )
    errors: dict[str, str] = {}

    def loop(client: TimedClient) -> None:
        try:
            client.run(timeout_s=timeout_s)
        except Exception as exc:  # a refusal ends the loop; report it as a lost client
            errors[client.client_id] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=loop, args=(c,), daemon=True) for c in clients]
    ready = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reports = []
    for c in clients:
        report = dataclasses.asdict(c.report)
        report["error"] = errors.get(c.client_id)
        reports.append(report)
    return {
        "reports": reports,
        "submit_s": [s for c in clients for s in c.submit_s],
        "submit_errors": sum((c.submit_errors for c in clients), Counter()),
        "enroll_s": [s for c in clients for s in c.enroll_s],
        "started": started,
        "ready": ready,
        "enrolled": [c.enrolled_at for c in clients if c.enrolled_at is not None],
        "logs": dict(logs.counts),
        "first_logs": logs.first,
        "peak_rss_mb": proc_status_mb("VmHWM"),
    }


# -- the run --------------------------------------------------------------------------------


def make_config(args: argparse.Namespace) -> RunConfig:
    """Digits, logistic regression, an iid split (about 7 rows per client at 200 clients).

    Every idle client holds one long poll, so the server admits ``clients + 32`` concurrent
    RPCs; the rate limit is far above what a client sends; liveness is generous so that a
    client starved of CPU on an oversubscribed machine is not counted as dropped.
    """
    n = args.clients
    return parse_config(
        {
            "seed": 0,
            "rounds": args.rounds,
            "data": {"dataset": "digits", "partition": "iid", "min_samples_per_client": 2},
            "model": {"name": "logreg"},
            "clients": {"count": n},
            "server": {"fraction": args.fraction},
            "network": {
                "address": "127.0.0.1:0",
                "max_concurrent_rpcs": n + 32,
                "poll_timeout_s": args.poll_timeout,
                "heartbeat_s": 1.0,
                "liveness_s": 10.0,
                "linger_s": 5.0,
                "rate_per_s": 1000.0,
                "burst": 1000.0,
                "start_timeout_s": args.timeout,
                "round_deadline_s": 60.0,
            },
        }
    )


def in_process_rounds(config: RunConfig, out_dir: Path) -> tuple[list[float], np.ndarray]:
    """The engine's round time of the same configuration with simulated clients."""
    with Simulation(config, out_dir) as sim:
        result = sim.run()
        return [float(r["duration_s"]) for r in result.records], result.model


def lost_clients(
    reports: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]], ids: Sequence[str]
) -> tuple[dict[str, str], int]:
    """Lost clients (id -> why), and selected (client, round) pairs that did not train."""
    selected: dict[str, set[int]] = {}
    for r in records:
        for cid in r["selected"]:
            selected.setdefault(cid, set()).add(int(r["round"]))
    by_id = {rep["client_id"]: rep for rep in reports}
    lost: dict[str, str] = {}
    missed = 0
    for cid in ids:
        rep = by_id.get(cid)
        if rep is None:
            lost[cid] = "no report (worker process failed)"
            continue
        trained = set(rep["rounds_trained"])
        missed += len(selected.get(cid, set()) - trained)
        if rep["error"]:
            lost[cid] = rep["error"]
        elif not rep["finished"]:
            lost[cid] = "never heard 'finished'"
        elif selected.get(cid) and not trained:
            lost[cid] = f"selected in rounds {sorted(selected[cid])}, never trained"
    return lost, missed


def wait_for_clients(
    server: NetworkServer, workers: Sequence[Future[dict[str, Any]]], timeout_s: float
) -> None:
    """The server's wait for every client, failing fast when a worker process died."""
    end = time.monotonic() + timeout_s
    while True:
        try:
            server.wait_for_clients(timeout_s=0.5)
            return
        except RoundFailed:
            for w in workers:
                if w.done():
                    w.result()  # raises the worker's error
                    raise RuntimeError("a worker process ended before the run started") from None
            if time.monotonic() >= end:
                raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--poll-timeout", type=float, default=5.0, help="network.poll_timeout_s")
    parser.add_argument("--timeout", type=float, default=240.0, help="give up after (s)")
    args = parser.parse_args()
    if not 1 <= args.processes <= args.clients:
        parser.error("--processes must be between 1 and --clients")
    wall_start = time.monotonic()
    server_logs = count_logs()
    config = make_config(args)
    ids = config.clients.ids()

    with tempfile.TemporaryDirectory(prefix="bench-grpc-") as tmp:
        root = Path(tmp)
        ca, pki = root / "ca", root / "pki"  # the CA key stays out of the server's directory
        start = time.perf_counter()
        init_ca(ca, FEDERATION)
        issue_certificate(ca, pki, "server", role="server")
        issue_clients(ca, pki, args.clients)
        pki_s = time.perf_counter() - start

        server = NetworkServer(
            config, root / "server", credentials=Credentials.from_pki(pki, "server")
        )
        rss_base = proc_status_mb("VmRSS")
        port = server.start()
        shares = [list(range(p, args.clients, args.processes)) for p in range(args.processes)]
        round_rss: list[float] = []

        def on_round(record: RoundRecord) -> None:
            round_rss.append(proc_status_mb("VmRSS"))
            print(
                f"  round {record.round}: {record.participants}/{len(record.selected)} "
                f"in {record.duration_s:.2f}s",
                flush=True,
            )

        pool = ProcessPoolExecutor(args.processes, mp_context=mp.get_context("spawn"))
        try:
            launched = time.monotonic()
            futures: list[Future[dict[str, Any]]] = [
                pool.submit(
                    run_clients,
                    config.to_dict(),
                    str(pki),
                    port,
                    share,
                    str(root / "clients"),
                    args.timeout,
                )
                for share in shares
            ]
            try:
                wait_for_clients(server, futures, args.timeout)
            except BaseException:
                server.network.finish()  # tell the clients that came online to stop
                time.sleep(config.network.linger_s)
                raise
            enrolled = time.monotonic()
            rss_enrolled = proc_status_mb("VmRSS")
            print(f"  all {args.clients} clients online after {enrolled - launched:.1f}s")
            result = server.serve(on_round=on_round)
            served = time.monotonic()
            rss_end = proc_status_mb("VmRSS")
            rss_peak = proc_status_mb("VmHWM")
            rejections = server.rejections
            late = server.network.late
            workers = [f.result(timeout=args.timeout) for f in futures]
        finally:
            server.close()
            pool.shutdown(wait=True, cancel_futures=True)
        network_done = time.monotonic()

        base_rounds, base_model = in_process_rounds(config, root / "sim")

    records = result.records
    reports = [rep for w in workers for rep in w["reports"]]
    lost, missed = lost_clients(reports, records, ids)
    submit_s = [s for w in workers for s in w["submit_s"]]
    enroll_s = [s for w in workers for s in w["enroll_s"]]
    submit_errors: Counter[str] = sum((w["submit_errors"] for w in workers), Counter())
    client_logs: Counter[str] = sum((Counter(w["logs"]) for w in workers), Counter())
    first_logs = [m for w in workers for m in w["first_logs"]][:5]
    reconnects = sum(rep["reconnects"] for rep in reports)
    refused: Counter[str] = sum((Counter(rep["refused"]) for rep in reports), Counter())
    net_rounds = [float(r["duration_s"]) for r in records]

    print()
    print(
        f"clients={args.clients} processes={args.processes} rounds={args.rounds} "
        f"fraction={args.fraction} poll_timeout_s={args.poll_timeout} "
        f"max_concurrent_rpcs={config.network.max_concurrent_rpcs}"
    )
    print(f"PKI: {args.clients + 1} certificates in {pki_s:.2f}s")
    entered = max(w["started"] for w in workers) - launched
    ready = max(w["ready"] for w in workers) - launched
    stamps = sorted(t - launched for w in workers for t in w["enrolled"])
    first_enroll = stamps[0] if stamps else float("nan")
    last_enroll = stamps[-1] if stamps else float("nan")
    print(
        f"enrollment: all online {enrolled - launched:.1f}s after launch; last worker "
        f"imported at {entered:.1f}s, its clients built at {ready:.1f}s; enrolls done "
        f"between {first_enroll:.1f}s and {last_enroll:.1f}s"
    )
    print(f"  Enroll RPC   {percentiles_ms(enroll_s)}")
    print(f"rounds completed: {len(records)} of {args.rounds}")
    print(" round  selected  participants  dropped  accuracy  duration_s  in-process_s")
    for r, base in zip(records, base_rounds, strict=False):
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        print(
            f" {r['round']:5d}  {len(r['selected']):8d}  {r['participants']:12d}  "
            f"{len(r['dropped']):7d}  {acc:>8}  {r['duration_s']:10.3f}  {base:12.3f}"
        )
    print(f"Submit RPC     {percentiles_ms(submit_s)}")
    if submit_errors:
        print(f"  failed Submit calls: {dict(submit_errors)}")
    print(
        f"server RSS: before listening {rss_base:.0f} MB, enrolled {rss_enrolled:.0f} MB, "
        f"end {rss_end:.0f} MB, peak (VmHWM) {rss_peak:.0f} MB; "
        f"per round {' '.join(f'{m:.0f}' for m in round_rss)} MB"
    )
    worker_rss = " ".join(f"{w['peak_rss_mb']:.0f}" for w in workers)
    print(f"worker processes' peak RSS: {worker_rss} MB")
    print(f"lost clients: {len(lost)}; selected-but-not-trained (client, round) pairs: {missed}")
    for cid, why in sorted(lost.items())[:10]:
        print(f"  {cid}: {why}")
    print(f"reconnects total: {reconnects}; client-side refusals: {dict(refused)}")
    print(f"server rejections: {rejections}; late submits: {late}")
    print(f"log warnings: server {dict(server_logs.counts)}, clients {dict(client_logs)}")
    for m in server_logs.first + first_logs:
        print(f"  {m}")
    for label, skip in (("all rounds", 0), ("rounds 2+ (warm)", 1)):
        net, sim = net_rounds[skip:], base_rounds[skip:]
        if not net or not sim:
            continue
        print(
            f"{label}: network round {np.mean(net) * 1e3:8.1f} ms, in-process round "
            f"(Simulation, same config; baseline) {np.mean(sim) * 1e3:8.1f} ms, "
            f"ratio network / in-process {np.mean(net) / np.mean(sim):5.2f}x"
        )
    same = records and np.array_equal(base_model, result.model)
    print(f"network model identical to in-process model: {bool(same)}")
    print(
        f"wall: enrollment {enrolled - launched:.1f}s, rounds+linger {served - enrolled:.1f}s, "
        f"network total {network_done - wall_start:.1f}s, "
        f"with baseline {time.monotonic() - wall_start:.1f}s"
    )
    ok = len(records) >= args.rounds and not lost
    print("PASS" if ok else "FAIL: rounds missing or clients lost")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
