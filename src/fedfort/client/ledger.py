"""The client's own privacy ledger, and the global models it has put a masked input into.

A client cannot take the server's word for how much privacy it has spent, so it keeps its own
account of every noisy release of its update (:class:`ClientLedger`): the events of
:meth:`fedfort.client.policy.ClientPrivacyPolicy.events` are composed by a ``dp_accounting``
accountant (:mod:`fedfort.privacy.accounting`; RDP after Mironov, CSF 2017, or PLD after
Koskela et al. 2020), never by hand. Releases are recorded when the update *leaves* the
client -- committed or not, a discarded attempt's release is as visible to the server as a
committed one -- and before training the client checks that one more release stays within its
``max_total_epsilon`` (:class:`~fedfort.errors.PrivacyBudgetExhausted` otherwise).

The ledger also remembers the SHA-256 of every global model the client has released a masked
secure-aggregation input for: a second session over the same model would let the server
difference two honest sums (see docs/secure-aggregation.md), so the client contributes at most
one masked input per model version unless its input carries its own fresh noise.

With a ``path`` the ledger lives in a strict-JSON file, mode 0600, rewritten atomically (a
temporary file in the same directory, then ``os.replace``) before the release it records
leaves the client, so it survives restarts and crashes. Without one it lives in memory and in
the client's ``state_dict`` (simulation checkpoints).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedfort import jsonio
from fedfort.crypto.keyfiles import write_private_file
from fedfort.errors import ConfigError, PrivacyBudgetExhausted
from fedfort.privacy.accounting import AccountantName, PrivacyEvent, make_accountant

__all__ = ["ClientLedger"]

_FORMAT = "fedfort-client-ledger/1"


class ClientLedger:
    """Epsilon a client has spent against the server, by its own account."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        accountant: AccountantName = "rdp",
        delta: float = 1e-5,
        max_total_epsilon: float | None = None,
    ) -> None:
        if not 0 < delta < 1:
            raise ConfigError(f"the client ledger's delta must be in (0, 1), got {delta}")
        self.path = None if path is None else Path(path)
        self.delta = float(delta)
        self.max_total_epsilon = max_total_epsilon
        self.accountant = make_accountant(accountant)
        self.releases: list[dict[str, Any]] = []
        self.models: set[str] = set()
        if self.path is not None and self.path.exists():
            self.load_state_dict(self._read(self.path))

    def __len__(self) -> int:
        return len(self.releases) + len(self.models)

    # -- epsilon ---------------------------------------------------------------------------

    def spent(self) -> float:
        """Epsilon of every recorded release at the ledger's delta."""
        return self.accountant.epsilon(self.delta)

    def after(self, events: Sequence[PrivacyEvent]) -> float:
        """Epsilon once one more release made of ``events`` is recorded (nothing changes)."""
        return self.accountant.epsilon(self.delta, [(e, 1) for e in events])

    def check(self, events: Sequence[PrivacyEvent] | None, what: str) -> None:
        """Refuse (before any work) a release that would exceed ``max_total_epsilon``.

        ``events`` is ``None`` for a release without noise: its epsilon is unbounded, so a
        client with a budget refuses it too.
        """
        target = self.max_total_epsilon
        if target is None:
            return
        spent = self.spent()
        upcoming = math.inf if events is None else self.after(events)
        if upcoming > target:
            reason = (
                "it carries no noise (unbounded epsilon)"
                if events is None
                else f"it would bring the client's epsilon to {upcoming:.4f}"
            )
            raise PrivacyBudgetExhausted(
                f"{what} refused: the client has spent epsilon {spent:.4f} of its budget "
                f"{target:g} (delta {self.delta:g}) and {reason}. Nothing was trained or sent; "
                "raise max_total_epsilon in the client's policy only if you accept the loss",
                spent=spent,
                next_epsilon=upcoming,
                target=target,
            )

    def record(self, events: Sequence[PrivacyEvent], round_: int, attempt: int) -> float:
        """Compose one release (persisted before returning); the epsilon spent after it."""
        for event in events:
            self.accountant.compose(event)
        epsilon = self.spent()
        # an unbounded epsilon is kept as null (strict JSON has no infinity)
        finite = epsilon if math.isfinite(epsilon) else None
        self.releases.append({"round": round_, "attempt": attempt, "epsilon": finite})
        self._save()
        return epsilon

    # -- model versions --------------------------------------------------------------------

    def contributed(self, model_sha256: str) -> bool:
        """Whether the client already released a masked input for this global model."""
        return model_sha256 in self.models

    def add_model(self, model_sha256: str) -> None:
        """Remember a global model the client released a masked input for (persisted)."""
        self.models.add(model_sha256)
        self._save()

    # -- persistence -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "delta": self.delta,
            "accountant": self.accountant.state_dict(),
            "releases": list(self.releases),
            "models": sorted(self.models),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != _FORMAT:
            raise ConfigError(
                f"not a fedfort client ledger (format {state.get('format')!r}); move the file "
                "away only if you accept losing the client's record of its spent privacy"
            )
        if float(state["delta"]) != self.delta:
            raise ConfigError(
                f"the client ledger measures epsilon at delta {state['delta']}, the policy asks "
                f"for {self.delta}; keep the policy's delta for the life of a ledger"
            )
        self.accountant.load_state_dict(state["accountant"])
        self.releases = [
            {
                "round": int(r["round"]),
                "attempt": int(r["attempt"]),
                "epsilon": None if r["epsilon"] is None else float(r["epsilon"]),
            }
            for r in state["releases"]
        ]
        self.models = {str(m) for m in state["models"]}

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = jsonio.dumps(self.state_dict(), sort_keys=True, indent=1)
        write_private_file(self.path, body.encode())

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            state = jsonio.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"the client privacy ledger {path} cannot be read ({exc}); restore it from a "
                "backup -- starting a fresh one would forget the privacy already spent"
            ) from None
        if not isinstance(state, dict):
            raise ConfigError(f"the client privacy ledger {path} is not a JSON object")
        return state
