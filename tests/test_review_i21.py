"""A malicious server or client against the checks of the user's-own-data features."""

from __future__ import annotations

import numpy as np
import pytest

from fedfort.client.client import FederatedClient
from fedfort.client.training import ClientData
from fedfort.errors import ProtocolError
from fedfort.messages import EvaluateTask


def _client(max_round: int | None) -> FederatedClient:
    rng = np.random.default_rng(0)
    rows = ClientData.from_numpy(rng.normal(size=(8, 3)).astype(np.float32), np.arange(8) % 2)
    return FederatedClient("hospital-a", rows, holdout=rows, max_evaluation_round=max_round)


def _task(round_: int) -> EvaluateTask:
    return EvaluateTask(round_, "hospital-a", np.zeros(5, dtype=np.float32), ("accuracy",))


def test_a_client_answers_no_evaluation_past_its_runs_last_round() -> None:
    """A server walking the round counter up (round 4, 5, ... of a 3-round run) with models of
    its choice would score without bound on the hold-out: the client stops at its rounds."""
    client = _client(3)
    for round_ in (1, 3):
        client.admit_evaluation(_task(round_), 5)
    with pytest.raises(ProtocolError, match="its run has 3 rounds"):
        client.admit_evaluation(_task(4), 5)
    assert client.evaluation.last_round == 3


def test_without_planned_rounds_the_guard_keeps_its_order_check() -> None:
    client = _client(None)
    client.admit_evaluation(_task(7), 5)
    with pytest.raises(ProtocolError, match="already evaluated round 7"):
        client.admit_evaluation(_task(7), 5)
