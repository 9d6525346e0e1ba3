"""A client's side of secure aggregation: seal the update, then answer the protocol.

When a task asks for secure aggregation (:class:`~fedfort.messages.SecureAggregation`), the
client does not send its update. It keeps ``[w x, w]`` (with the adaptive-clipping bit appended
when the privacy directive asks for one) in a client state machine of the requested mode and
answers the task with a *sealed* update that says only "trained, ready". The server then runs
the session through the runtime, message by message (:meth:`SecureSessions.handle`).

The client's own floor for a masking session (:class:`~fedfort.secagg.policy.ClientPolicy`:
the corrupt fraction it assumes, the roster sizes it accepts) comes from the client's own
configuration (:func:`client_policy`), never from the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from fedfort.crypto.primitives import SigningKey
from fedfort.errors import ProtocolError
from fedfort.messages import (
    ClientUpdate,
    SecureAggregation,
    StatisticsRequest,
    TrainTask,
    session_task_digest,
    statistics_digest,
)
from fedfort.secagg.client import MaskingClient
from fedfort.secagg.encoding import split_limbs
from fedfort.secagg.policy import ClientPolicy, RequiredMode
from fedfort.secagg.session import ClientMachine, Session

__all__ = ["SecureAggregationSection", "SecureSessions", "client_policy", "secure_vector"]


class SecureAggregationSection(Protocol):
    """The client's own settings in ``[secure_aggregation]``
    (:class:`fedfort.config.SecureAggregationConfig`; the client role does not import the
    configuration layer above it)."""

    @property
    def mode(self) -> RequiredMode: ...
    @property
    def corrupt_fraction(self) -> float: ...
    @property
    def client_min_clients(self) -> int: ...
    @property
    def client_max_clients(self) -> int: ...


def secure_vector(task: TrainTask, update: ClientUpdate) -> tuple[np.ndarray, float]:
    """The vector and weight a client contributes to the secure sum of ``task``."""
    assert task.secure is not None
    vector = update.delta.astype(np.float32, copy=False)
    if task.privacy is not None and task.privacy.report_clipped:
        bit = 0.0 if update.clip_indicator is None else update.clip_indicator
        vector = np.append(vector, np.float32(bit))
    return vector, float(min(update.num_samples, task.secure.max_weight))


def client_policy(config: SecureAggregationSection) -> ClientPolicy:
    """The client-side settings of ``[secure_aggregation]`` in the client's own config file."""
    return ClientPolicy(
        corrupt_fraction=config.corrupt_fraction,
        min_clients=config.client_min_clients,
        max_clients=config.client_max_clients,
        required_mode=config.mode,
    )


class SecureSessions:
    """The open sessions of one client, by (round, attempt); older rounds are forgotten.

    ``policy`` is what the client insists on before it joins a masking session.
    """

    def __init__(
        self, client_id: str, identity: SigningKey, policy: ClientPolicy | None = None
    ) -> None:
        self.client_id = client_id
        self.identity = identity
        self.policy = ClientPolicy() if policy is None else policy
        self._machines: dict[tuple[int, int], ClientMachine] = {}
        self._updates: dict[int, ClientUpdate] = {}

    def seal(
        self, task: TrainTask, update: ClientUpdate, directory: Mapping[str, bytes]
    ) -> ClientUpdate:
        """Open the session of ``task`` with ``update`` and return the sealed reply."""
        secure = task.secure
        if secure is None:
            raise ProtocolError("the task does not ask for secure aggregation")
        vector, weight = secure_vector(task, update)
        session = Session(secure.run_id, task.round, task.attempt, secure.nonce)
        self._open(session, secure, vector, weight, session_task_digest(task), directory)
        self._updates = {r: u for r, u in self._updates.items() if r >= task.round}
        self._updates[task.round] = update
        return ClientUpdate(
            round=task.round,
            client_id=self.client_id,
            delta=np.empty(0, dtype=np.float32),
            num_samples=1,
            sealed=True,
        )

    def open_statistics(
        self, request: StatisticsRequest, vector: np.ndarray, directory: Mapping[str, bytes]
    ) -> None:
        """Open the statistics session of ``request`` with the client's statistics ``vector``.

        The vector enters the masked sum as exact limbs
        (:func:`fedfort.secagg.encoding.split_limbs`)
        with weight 1; the session's parameters must carry the request's digest."""
        secure = request.secure
        if secure is None:
            raise ProtocolError("the statistics request does not ask for secure aggregation")
        if secure.mode == "ckks":
            raise ProtocolError("statistics are summed exactly: not over CKKS")
        session = Session(secure.run_id, request.round, request.attempt, secure.nonce)
        digest = statistics_digest(request)
        self._open(session, secure, split_limbs(vector), 1.0, digest, directory)

    def _open(
        self,
        session: Session,
        secure: SecureAggregation,
        vector: np.ndarray,
        weight: float,
        digest: bytes,
        directory: Mapping[str, bytes],
    ) -> None:
        machine: ClientMachine
        if secure.mode == "ckks":
            from fedfort.secagg.ckks import CkksClient, CkksParams  # loads TenSEAL on demand

            params = CkksParams(poly_modulus_degree=secure.ckks_poly_modulus_degree)
            machine = CkksClient(
                self.client_id, session, self.identity, directory, params, vector, weight
            )
        else:
            machine = MaskingClient(
                self.client_id,
                session,
                self.identity,
                directory,
                vector,
                weight,
                policy=self.policy,
                task_digest=digest,
            )
        self._machines = {k: m for k, m in self._machines.items() if k[0] >= session.round}
        self._machines[(session.round, session.attempt)] = machine

    def handle(self, round_: int, attempt: int, message: object) -> object:
        """Answer a protocol message of the session of (``round_``, ``attempt``)."""
        machine = self._machines.get((round_, attempt))
        if machine is None:
            raise ProtocolError(
                f"{self.client_id} has no secure-aggregation session for round {round_} "
                f"attempt {attempt}"
            )
        return machine.handle(message)

    def unsealed(self, update: ClientUpdate) -> ClientUpdate:
        """The update a sealed acknowledgement stands for (to advance the client's state)."""
        if not update.sealed:
            return update
        return self._updates.get(update.round, update)
