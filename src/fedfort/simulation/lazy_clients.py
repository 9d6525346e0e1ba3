"""Clients materialised on demand: a registered client is an id and a partition index.

The in-process runtime builds one :class:`~fedfort.client.FederatedClient` per client, each
holding its data as tensors. A runtime for thousands of clients cannot: :class:`LazyClients`
keeps, per client, only what the client actually has across rounds:

- its persistent state (SCAFFOLD's control variate, the DP-SGD ledger, its own privacy
  ledger and the models it released masked inputs for), in a driver-side
  :class:`~fedfort.client.FederatedClient` *without data* that exists only while that state
  does;
- its Ed25519 identity key, created the first time the client is needed and kept, since the
  federation's directory must not change under a client.

The client's data lives where it trains (a Ray worker materialises its rows from the
partition), so the driver never holds a client's tensors. A driver-side client exists during
a round for every client that answered (it finalises the update with the client's own privacy
step, seals it for secure aggregation and answers the protocol) and is forgotten before the
next round unless it holds state.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fedfort.attacks.adversary import Coalition
from fedfort.client.client import FederatedClient
from fedfort.client.policy import ClientPrivacyPolicy
from fedfort.client.training import ClientData
from fedfort.crypto.primitives import SigningKey
from fedfort.errors import ConfigError
from fedfort.messages import ClientUpdate, TrainTask
from fedfort.secagg.policy import ClientPolicy
from fedfort.simulation.executors import _COALITION_KEY, SimulatedClients

__all__ = ["LazyClients"]

#: the data of a driver-side client: none (its rows live with the worker that trains it)
_NO_DATA = ClientData(torch.empty(0, dtype=torch.float32), torch.empty(0, dtype=torch.int64))


class _MaliciousClientState(FederatedClient):
    """The driver-side half of a malicious client: its update leaves it as crafted.

    Mirrors :meth:`fedfort.attacks.AdversarialClient.finalize`: an attacker neither clips nor
    adds privacy noise; the coalition crafts its members' updates after the round.
    """

    def training_task(self, task: TrainTask) -> TrainTask:
        self.receive_transform(task.transform)
        return task

    def finalize(self, task: TrainTask, update: ClientUpdate) -> ClientUpdate:
        return update


class LazyClients(SimulatedClients):
    """Registered clients by partition index; only clients with state become objects.

    ``malicious`` are the ids of the attack's coalition members (their data is poisoned where
    it is materialised, see :func:`fedfort.attacks.adversary.poisoned_data`).
    """

    def __init__(
        self,
        ids: Sequence[str],
        malicious: Collection[str] = (),
        coalition: Coalition | None = None,
        *,
        policy: ClientPrivacyPolicy | None = None,
        secure_policy: ClientPolicy | None = None,
        num_records: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__([], coalition)
        #: each client's training-set size (its partition): what its DP-SGD budget check needs
        self.num_records = dict(num_records or {})
        self.policy = policy
        self.secure_policy = secure_policy
        self._ids = list(ids)
        self._index = {cid: k for k, cid in enumerate(self._ids)}
        if len(self._index) != len(self._ids):
            raise ConfigError("client ids must be unique")
        unknown = set(malicious) - set(self._index)
        if unknown:
            raise ConfigError(f"malicious clients {sorted(unknown)[:3]} are not registered")
        self.malicious = frozenset(malicious)
        self._identities: dict[str, SigningKey] = {}

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def index(self, client_id: str) -> int:
        """The partition index of ``client_id`` (its rows of the training split)."""
        k = self._index.get(client_id)
        if k is None:
            raise ConfigError(f"task for unknown client {client_id!r}")
        return k

    def identity(self, client_id: str) -> SigningKey:
        """The client's identity key, created (from the OS CSPRNG) on first use and kept."""
        key = self._identities.get(client_id)
        if key is None:
            self.index(client_id)
            key = self._identities[client_id] = SigningKey()
        return key

    def get(self, client_id: str) -> FederatedClient:
        """The driver-side client (state, identity, secure sessions), created if needed."""
        client = self.clients.get(client_id)
        if client is None:
            kind = _MaliciousClientState if client_id in self.malicious else FederatedClient
            client = kind(
                client_id,
                _NO_DATA,
                identity=self.identity(client_id),
                policy=self.policy,
                secure_policy=self.secure_policy,
                num_records=self.num_records.get(client_id, 0),
            )
            self.clients[client_id] = client
        return client

    def control(self, client_id: str) -> np.ndarray | None:
        """The client's SCAFFOLD control variate ``c_i`` (``None`` until it has one)."""
        client = self.clients.get(client_id)
        return None if client is None else client.control

    def release(self) -> None:
        """Forget the driver-side clients that hold no state (call between rounds)."""
        self.clients = {cid: c for cid, c in self.clients.items() if c.state_dict()}

    @property
    def materialised(self) -> int:
        """How many driver-side client objects exist right now."""
        return len(self.clients)

    @property
    def directory(self) -> dict[str, bytes]:
        """Every client's registered identity public key (creates the missing keys)."""
        return {cid: self.identity(cid).public for cid in self._ids}

    def arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        raise ConfigError(
            "lazily registered clients hold no data on the driver: their rows are "
            "materialised where they train"
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clients = {}
        for cid, client_state in state.items():
            if cid != _COALITION_KEY and client_state:
                self.get(cid).load_state_dict(client_state)
        if self.coalition is not None:
            self.coalition.load_state_dict(state.get(_COALITION_KEY, {}))
