"""Run a session with every party in this process: for tests, benchmarks and simulation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fedfort.errors import ProtocolError, SecAggAbort
from fedfort.secagg.session import ClientMachine, SecureSum, ServerMachine

__all__ = ["LocalRun", "run_locally"]


@dataclass
class LocalRun:
    """What happened: the result, and which clients vanished or aborted at which step."""

    result: SecureSum
    vanished: dict[str, int] = field(default_factory=dict)
    aborted: dict[str, str] = field(default_factory=dict)


def run_locally(
    server: ServerMachine,
    clients: Mapping[str, ClientMachine],
    vanish: Callable[[int, str], bool] | None = None,
) -> LocalRun:
    """Drive ``server`` and ``clients`` to the end of the session.

    ``vanish(step, client_id)`` says whether a client goes silent from step ``step`` on (0 is
    the server's first message); a client that aborts or refuses a message also goes silent.
    Raises :class:`SecAggAbort` when the server aborts.
    """
    vanished: dict[str, int] = {}
    aborted: dict[str, str] = {}
    outbox = server.start()
    step = 0
    while not server.done:
        replies: dict[str, object] = {}
        for cid, message in outbox.items():
            if cid in vanished or cid in aborted:
                continue
            if vanish is not None and vanish(step, cid):
                vanished[cid] = step
                continue
            client = clients.get(cid)
            if client is None:
                continue
            try:
                replies[cid] = client.handle(message)
            except (ProtocolError, SecAggAbort) as exc:
                aborted[cid] = str(exc)
        outbox = server.step(replies)
        step += 1
    return LocalRun(server.result(), vanished, aborted)
