"""What fixed-size padding costs: payload bytes of updates and secure-aggregation messages.

For ClientUpdates of several model sizes (typical metrics, a sample count of 180) and for each
step of a masking session (SecAgg with 10 clients; SecAgg+ with 30 clients sized for 5%
corrupt clients, degree 10; each with two dropouts), prints the largest unpadded payload of
the kind, the padded size every client sends, the overhead in bytes and the ratio padded /
unpadded. The unpadded sizes are measured in the same run, from real messages (the masking
session runs its real state machines).

    .venv/bin/python benchmarks/bench_padding.py
"""

from __future__ import annotations

import numpy as np

from fedfort.crypto.primitives import SigningKey
from fedfort.messages import ClientUpdate, LocalTrainingConfig, TrainTask
from fedfort.secagg.client import MaskingClient
from fedfort.secagg.params import MaskingParams, graph_seed_for
from fedfort.secagg.policy import ClientPolicy
from fedfort.secagg.server import MaskingServer
from fedfort.secagg.session import Session
from fedfort.transport import codec
from fedfort.transport.padding import PaddingPolicy, SizeRule, pad_payload
from fedfort.transport.proto import fedfort_pb2 as pb

STEPS = ("keys", "shares", "masked input", "consistency", "unmask")


def _size(message: object, rule: SizeRule | None) -> int:
    return len(pad_payload(pb.Payload(body=codec.to_value(message)), rule))


def _row(name: str, plain: int, padded: int) -> None:
    print(f"{name:<34} {plain:>11,} {padded:>11,} {padded - plain:>9,} {padded / plain:>7.3f}")


def updates() -> None:
    policy = PaddingPolicy()
    for dim in (650, 10_000, 100_000, 1_000_000):
        for algorithm in ("fedavg", "scaffold"):
            weights = np.zeros(dim, np.float32)
            config = LocalTrainingConfig(algorithm=algorithm)
            task = TrainTask(3, 1, "client-007", weights, config, seed=1)
            control = weights if algorithm == "scaffold" else None
            metrics = {"train_loss": 0.4123, "train_time_s": 1.87}
            update = ClientUpdate(3, "client-007", weights, 180, metrics, control)
            name = f"update d={dim:,} {algorithm}"
            _row(name, _size(update, None), _size(update, policy.reply_rule(task)))


def session(variant: str, n: int, corrupt_fraction: float, dim: int) -> None:
    rng = np.random.default_rng(0)
    ids = tuple(f"client-{i:03d}" for i in range(n))
    keys = {c: SigningKey() for c in ids}
    directory = {c: k.public for c, k in keys.items()}
    sess = Session("bench", 1, 1)
    params = MaskingParams(
        ids,
        variant,  # type: ignore[arg-type]
        dim=dim + 1,
        bound=10.0,
        corrupt_fraction=corrupt_fraction,
        graph_seed=graph_seed_for(sess.sid),
    )
    clients = {
        c: MaskingClient(
            c,
            sess,
            keys[c],
            directory,
            rng.uniform(-1, 1, dim).astype(np.float32),
            1.0,
            policy=ClientPolicy(corrupt_fraction=corrupt_fraction),
        )
        for c in ids
    }
    server = MaskingServer(sess, params, directory)
    policy = PaddingPolicy()
    gone = {ids[1]: 1, ids[2]: 4}
    plain: dict[int, int] = {}
    padded: dict[int, int] = {}
    outbox = server.start()
    step = 0
    while not server.done:
        replies: dict[str, object] = {}
        for cid, request in outbox.items():
            policy.observe(request)
            if gone.get(cid, 99) <= step:
                continue
            reply = clients[cid].handle(request)
            plain[step] = max(plain.get(step, 0), _size(reply, None))
            padded[step] = _size(reply, policy.reply_rule(request))
            replies[cid] = reply
        outbox = server.step(replies)
        step += 1
    for s, name in enumerate(STEPS):
        _row(f"{variant} n={n} d={dim} {name}", plain[s], padded[s])


def main() -> None:
    print(f"{'payload':<34} {'unpadded':>11} {'padded':>11} {'overhead':>9} {'ratio':>7}")
    updates()
    session("secagg", 10, 1 / 3, 650)
    session("secagg+", 30, 0.05, 650)


if __name__ == "__main__":
    main()
