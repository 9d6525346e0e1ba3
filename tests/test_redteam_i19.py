"""Red-team attacks on the client-side defences, run as a malicious server would.

Each test performs the attack, asserts it fails against the defended code, and (where the old
behaviour can still be reached through public objects) asserts it succeeds without the defence.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import demo_config
from fedfort.audit import AUDIT_FILE, AUDIT_PUBLIC_KEY_FILE, AuditLog, read_entries, verify_run
from fedfort.audit.chain import key_id
from fedfort.audit.head import HEAD_FILE
from fedfort.audit.rollback_request import request_rollback
from fedfort.client.client import FederatedClient
from fedfort.client.policy import ClientPrivacyPolicy
from fedfort.client.privacy import privatize
from fedfort.client.secure import client_policy
from fedfort.client.training import ClientData
from fedfort.config import SecureAggregationConfig
from fedfort.crypto.primitives import SigningKey
from fedfort.errors import CheckpointError, ConfigError, PolicyRefused, SecAggAbort
from fedfort.messages import (
    ClientPrivacy,
    ClientUpdate,
    LocalTrainingConfig,
    SecureAggregation,
    SecureMode,
    TrainTask,
    session_task_digest,
)
from fedfort.privacy.mechanisms import MIN_NOISE_MULTIPLIER, gaussian_noise_multiplier
from fedfort.secagg.local import run_locally
from fedfort.secagg.params import MaskingParams
from fedfort.secagg.server import MaskingServer
from fedfort.secagg.session import Session
from fedfort.server.versions import PENDING_ROLLBACK_META, ModelRegistry
from fedfort.simulation import Simulation

DIM = 50_000

# -- a local-DP directive with a huge epsilon must not undercut min_noise_std -----------------

SHARE_FLOOR = ClientPrivacyPolicy(max_clip_norm=1.0, min_noise_std=1.0)
# the server switches from distributed DP (where min_noise_std applies) to local Laplace at a
# per-round epsilon it chose: noise std sqrt(2) * C / eps = 0.035, 28x below the floor
WEAK_LOCAL = ClientPrivacy(clip_norm=1.0, local="laplace", local_epsilon=40.0)


def _released_noise_std(directive: ClientPrivacy) -> float:
    """What the server measures: the std of a released zero update (only the noise is left)."""
    update = ClientUpdate(1, "victim", np.zeros(DIM, dtype=np.float32), 10)
    released = privatize(update, directive, 0, noise=SHARE_FLOOR.noise(directive, 0))
    return float(np.std(released.delta.astype(np.float64)))


def test_without_the_floor_check_a_local_directive_strips_the_share_noise() -> None:
    """The attack as the client applied it before: the directive's own local mechanism."""
    undercut = _released_noise_std(WEAK_LOCAL)
    assert undercut < SHARE_FLOOR.min_noise_std / 10  # about 0.07 against a floor of 1.0
    # and the version rule counted that negligible noise as the client's own fresh noise
    assert SHARE_FLOOR.fresh(WEAK_LOCAL)


@pytest.mark.parametrize(
    "directive",
    [
        WEAK_LOCAL,
        ClientPrivacy(clip_norm=1.0, local="gaussian", local_epsilon=50.0, local_delta=0.1),
        # calibrating this one through the PLD accountant would ask for ~150 GiB: the refusal
        # must come from the analytic bound, before any accountant runs
        ClientPrivacy(clip_norm=1.0, local="gaussian", local_epsilon=1e6, local_delta=0.5),
    ],
)
def test_a_local_directive_below_min_noise_std_is_refused(directive: ClientPrivacy) -> None:
    with pytest.raises(PolicyRefused, match="min_noise_std"):
        SHARE_FLOOR.effective(directive)


def test_a_client_without_a_noise_floor_refuses_an_uncalibratable_epsilon() -> None:
    """A directive at epsilon 1e6 made the client's PLD check ask for ~150 GiB (a server could
    stall or kill every client); now its mechanism refuses to calibrate below a noise
    multiplier of MIN_NOISE_MULTIPLIER, and the client refuses the task."""
    huge = ClientPrivacy(clip_norm=1.0, local="gaussian", local_epsilon=1e6, local_delta=0.5)
    with pytest.raises(PolicyRefused, match="noise multiplier"):
        ClientPrivacyPolicy().effective(huge)
    with pytest.raises(ConfigError, match="noise multiplier"):
        gaussian_noise_multiplier(1e6, 0.5)
    # the largest epsilon a legitimate run uses still calibrates (the privacy red team's 100)
    assert gaussian_noise_multiplier(100.0, 1e-5) >= MIN_NOISE_MULTIPLIER


def test_a_local_directive_above_min_noise_std_is_kept() -> None:
    strong = ClientPrivacy(clip_norm=1.0, local="laplace", local_epsilon=1.0)  # std 1.41
    effective = SHARE_FLOOR.effective(strong)
    assert effective == strong
    assert _released_noise_std(strong) > SHARE_FLOOR.min_noise_std


MALFORMED = [
    ClientPrivacy(clip_norm=1.0, local="laplace", local_epsilon=math.nan),
    ClientPrivacy(clip_norm=1.0, local="laplace", local_epsilon=-1.0),
    ClientPrivacy(clip_norm=1.0, local="gaussian", local_epsilon=1.0, local_delta=1.5),
    ClientPrivacy(clip_norm=-1.0, local="laplace", local_epsilon=1.0),
    ClientPrivacy(clip_norm=0.0, noise_std=1.0),  # crashed the ledger: division by zero
    ClientPrivacy(clip_norm=math.nan, noise_std=1.0),
    ClientPrivacy(clip_norm=1.0, noise_std=math.inf),
    ClientPrivacy(clip_norm=1.0, noise_std=1.0, report_clipped=True, indicator_noise_std=-1.0),
]


@pytest.mark.parametrize("directive", MALFORMED)
def test_a_malformed_directive_is_refused_as_a_policy_matter(directive: ClientPrivacy) -> None:
    """Refused (the network client then sends nothing and goes on) instead of raising an
    arithmetic or configuration error that ended ``fedfort client``'s run loop."""
    for policy in (ClientPrivacyPolicy(), ClientPrivacyPolicy(max_total_epsilon=10.0)):
        with pytest.raises(PolicyRefused, match="malformed"):
            policy.events(policy.effective(directive))


# -- a server that simply does not ask for secure aggregation -----------------------------------

VICTIM_UPDATE = np.random.default_rng(3).normal(size=DIM).astype(np.float32)


class _Trainer:
    """Local training stand-in: the victim's update, whatever the task (what matters here is
    what leaves the client)."""

    def fit(self, task: TrainTask, data: ClientData, control: object) -> ClientUpdate:
        return ClientUpdate(task.round, task.client_id, VICTIM_UPDATE.copy(), 40)


def _secure_client(mode: str) -> FederatedClient:
    data = ClientData(torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64))
    policy = client_policy(SecureAggregationConfig(mode=mode))  # the client's own config
    return FederatedClient("victim", data, secure_policy=policy)


def _train_task(mode: SecureMode | None) -> TrainTask:
    secure = None if mode is None else SecureAggregation(mode, "run", b"n" * 16)
    weights = np.zeros(DIM, dtype=np.float32)
    return TrainTask(3, 1, "victim", weights, LocalTrainingConfig(), 7, secure=secure)


def test_without_a_required_mode_a_plaintext_task_gets_the_update_in_the_clear() -> None:
    client = FederatedClient("victim", ClientData(torch.zeros(4, 2), torch.zeros(4).long()))
    update = client.handle(_train_task(None), _Trainer())  # type: ignore[arg-type]
    assert np.array_equal(update.delta, VICTIM_UPDATE)  # the server reads it exactly


@pytest.mark.parametrize(("own", "asked"), [("secagg+", None), ("secagg", "ckks"), ("ckks", None)])
def test_a_client_refuses_a_weaker_secure_aggregation_mode_than_its_own_config(
    own: str, asked: SecureMode | None
) -> None:
    client = _secure_client(own)
    with pytest.raises(PolicyRefused, match=f"requires {own}"):
        client.handle(_train_task(asked), _Trainer())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("own", "asked"),
    [("secagg+", "secagg"), ("secagg", "secagg+"), ("ckks", "secagg+"), ("none", "ckks")],
)
def test_an_equal_or_stronger_mode_is_served(own: str, asked: SecureMode) -> None:
    task = _train_task(asked)
    assert _secure_client(own).training_task(task).secure == task.secure


# -- a signed rollback request replayed into checkpoints.sqlite --------------------------------


def _two_rounds_with_a_rollback_request(tmp_path: Path, reason: str) -> Path:
    """A finished two-round run in which the operator has filed a rollback to version 1."""
    out = tmp_path / "run"
    cfg = demo_config({"rounds": 2, "clients.count": 5, "clients.epochs": 1})
    with Simulation(cfg, out_dir=out) as sim:
        sim.run()
    with ModelRegistry(out) as registry:
        request_rollback(registry, 1, reason)
    return out


def test_a_replayed_rollback_request_is_not_applied_again(tmp_path: Path) -> None:
    """The operator once rolled back to version 1; that request (a signed meta row) was applied,
    committed and cleared. Someone who can write checkpoints.sqlite but has no audit key puts
    the same signed row back: the next resume must not roll the run back again."""
    out = _two_rounds_with_a_rollback_request(tmp_path, "drift seen")
    db = sqlite3.connect(out / "checkpoints.sqlite")
    saved = db.execute(
        "SELECT key, value, signature FROM meta WHERE key = ?", (PENDING_ROLLBACK_META,)
    ).fetchone()
    db.close()
    with Simulation.resume(out, rounds=3) as sim:  # the genuine rollback, applied once
        sim.run()
    with ModelRegistry(out) as registry:
        assert registry.pending() is None
        version_1 = registry.store.load(1).model
        version_3 = registry.store.load(3).model
    assert not np.array_equal(version_1, version_3)

    db = sqlite3.connect(out / "checkpoints.sqlite")  # the attack: replay the signed row
    db.execute("INSERT INTO meta (key, value, signature) VALUES (?, ?, ?)", saved)
    db.commit()
    db.close()
    with pytest.raises(CheckpointError, match="already applied"):
        Simulation.resume(out, rounds=4).close()


def test_a_deleted_rollback_request_is_not_silently_dropped(tmp_path: Path) -> None:
    """The operator files a rollback away from a poisoned version; someone who can write
    checkpoints.sqlite deletes the request (no key needed to delete a row), so the run would go
    on from the poisoned version."""
    out = _two_rounds_with_a_rollback_request(tmp_path, "version 2 is poisoned")
    db = sqlite3.connect(out / "checkpoints.sqlite")
    db.execute("DELETE FROM meta WHERE key = ?", (PENDING_ROLLBACK_META,))
    db.commit()
    db.close()
    with pytest.raises(CheckpointError, match="never applied"):
        Simulation.resume(out, rounds=3).close()
    with ModelRegistry(out) as registry:  # filed again, the resume applies it
        request_rollback(registry, 1, "version 2 is poisoned")
        version_1 = registry.store.load(1).model
    with Simulation.resume(out, rounds=3) as sim:
        assert np.array_equal(sim.model, version_1)


# -- the audit log rewritten under the attacker's key, handed back to the run's key ---------------


def test_a_log_rewritten_under_another_key_and_rotated_back_is_not_resumed(
    tmp_path: Path,
) -> None:
    """Someone who can write the run directory but not use the audit key rewrites the whole
    audit log under a key of their own (here: one round's accuracy raised), replaces
    audit-key.pub and the checkpoints' copy of the head, and ends the forged chain with an
    ``audit_key_rotated`` entry naming the run's real (public) key. The log then verifies
    against the run directory's own pin and its *current* key is the run's key; the resume must
    still refuse it, because the run's key never signed its first entry."""
    out = tmp_path / "run"
    cfg = demo_config({"rounds": 2, "clients.count": 5, "clients.epochs": 1})
    with Simulation(cfg, out_dir=out) as sim:
        sim.run()
    real = list(read_entries(out / AUDIT_FILE))
    run_public = bytes.fromhex((out / AUDIT_PUBLIC_KEY_FILE).read_text().strip())
    for path in out.iterdir():
        if path.name.startswith(AUDIT_FILE) or path.name == HEAD_FILE:
            path.unlink()
    forger = SigningKey()
    items = []
    for entry in real:
        body = entry.data
        if entry.kind == "model_version" and entry.round == 1:
            body = {**body, "accuracy": 0.99}  # the rewritten history
        items.append((entry.kind, entry.round, body))
    items.append(
        (
            "audit_key_rotated",
            None,
            {
                "new_key": key_id(run_public),
                "new_public_key": run_public.hex(),
                "reason": "scheduled rotation",
            },
        )
    )
    with AuditLog(out / AUDIT_FILE, forger) as log:
        log.append_many(items)
        head = log.signed_head
    assert head is not None
    (out / AUDIT_PUBLIC_KEY_FILE).write_text(forger.public.hex() + "\n")
    db = sqlite3.connect(out / "checkpoints.sqlite")
    db.execute(
        "UPDATE meta SET value = ? WHERE key = 'audit_head'",
        (json.dumps(head.to_dict(), sort_keys=True),),
    )
    db.commit()
    db.close()
    forged = verify_run(out)  # the run directory's own pin accepts the forgery ...
    assert forged.ok and forged.keys[-1] == key_id(run_public), forged.describe()
    assert not verify_run(out, public_key=run_public).ok  # ... an auditor's pinned key does not
    with pytest.raises(CheckpointError, match="signed by key"):
        Simulation.resume(out, rounds=3).close()


# -- checkpoint rows deleted below the last one ---------------------------------------------------


@pytest.fixture(scope="module")
def three_rounds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rows") / "run"
    cfg = demo_config({"rounds": 3, "clients.count": 5, "clients.epochs": 1})
    with Simulation(cfg, out_dir=out) as sim:
        sim.run()
    return out


@pytest.mark.parametrize(
    ("deleted", "first"),
    [
        ("round > 0", 1),  # every committed round: the run would resume from round 0
        ("round = 1", 1),  # a middle version: gone from the history and from rollback
    ],
)
def test_deleted_checkpoint_rows_fail_verification_and_are_not_resumed(
    three_rounds: Path, tmp_path: Path, deleted: str, first: int
) -> None:
    run = tmp_path / "run"
    shutil.copytree(three_rounds, run)
    db = sqlite3.connect(run / "checkpoints.sqlite")
    db.execute(f"DELETE FROM checkpoints WHERE {deleted}")  # plain sqlite3, no key needed
    db.commit()
    db.close()
    result = verify_run(run)
    assert not result.ok
    assert f"the checkpoint of round {first} was deleted" in result.describe()
    with pytest.raises(CheckpointError, match=f"checkpoint of round {first} was deleted"):
        Simulation.resume(run, rounds=4).close()


# -- a server that zeroes every other client's weight --------------------------------------------

SESSION_IDS = ["client-a", "client-b", "client-c", "victim"]
SESSION_DIM = 2000


class _Via:
    """A client's side of one session, answered through ``FederatedClient.secure_handle``."""

    def __init__(self, client: FederatedClient) -> None:
        self.client = client

    def handle(self, message: object) -> object:
        return self.client.secure_handle(5, 1, message)


def _weighted_session(
    max_weights: dict[str, int],
    digest_of: str | None,
    aborted: dict[str, str | None] | None = None,
) -> tuple[np.ndarray, float, np.ndarray]:
    """One honest SecAgg session over four clients whose tasks carry ``max_weights`` (the
    server's choice, per client); the sum, its weight and the victim's true update."""
    rng = np.random.default_rng(9)
    data = ClientData(torch.zeros(2, 2), torch.zeros(2, dtype=torch.int64))
    clients = {cid: FederatedClient(cid, data) for cid in SESSION_IDS}
    directory = {cid: c.identity.public for cid, c in clients.items()}
    model = np.zeros(SESSION_DIM, dtype=np.float32)
    updates = {
        cid: ClientUpdate(5, cid, (rng.normal(size=SESSION_DIM) * 0.1).astype(np.float32), 50)
        for cid in SESSION_IDS
    }
    tasks = {}
    for cid, client in clients.items():
        secure = SecureAggregation("secagg", "run", b"w" * 16, max_weight=max_weights[cid])
        tasks[cid] = TrainTask(5, 1, cid, model, LocalTrainingConfig(), 1, secure=secure)
        client.seal(tasks[cid], updates[cid], directory)
    # the server proposes the victim's task as the session's (the others abort) or, on the old
    # code, has nothing to propose
    extra = {} if digest_of is None else {"task_digest": session_task_digest(tasks[digest_of])}
    params = MaskingParams(
        tuple(SESSION_IDS),
        "secagg",
        dim=SESSION_DIM + 1,
        bits=48,
        bound=100.0,
        dropout_fraction=0.0,
        **extra,  # type: ignore[arg-type]
    )
    server = MaskingServer(Session("run", 5, 1, b"w" * 16), params, directory)
    try:
        result = run_locally(server, {cid: _Via(c) for cid, c in clients.items()}).result
    finally:
        if aborted is not None:  # each client's own reason to leave the session, if any
            for cid, client in clients.items():
                machine = client.secure._machines[(5, 1)]
                aborted[cid] = getattr(machine, "aborted", None)
    return result.total, result.weight, updates["victim"].delta


def test_zeroed_weights_of_the_other_clients_unmask_the_victim() -> None:
    """The weight cap travels in each client's own task, so a server gives the victim a cap of
    1000 and everyone else 0: the others' inputs [0 x, 0] vanish and the secure sum is the
    victim's update, with no corrupt client at all (weight 50 of the victim alone, its update
    recovered to 6e-14 on the code before the task digest). The session's parameters now carry
    a digest of the task, signed into every advertisement, and a client whose task differs
    aborts."""
    caps = {cid: 0 for cid in SESSION_IDS} | {"victim": 1000}
    aborted: dict[str, str | None] = {}
    with pytest.raises(SecAggAbort, match="clients remain after advertising"):
        _weighted_session(caps, digest_of="victim", aborted=aborted)
    assert aborted["victim"] is None
    for cid in SESSION_IDS[:3]:
        assert "weight cap" in str(aborted[cid])
    total, weight, victim = _weighted_session({cid: 1000 for cid in SESSION_IDS}, "victim")
    assert weight == pytest.approx(200.0)  # one cap for all: an honest weighted sum
    assert np.abs(total / weight - victim).max() > 0.05
