"""Privacy accounting: one accountant interface over dp-accounting's RDP and PLD accountants.

fedfort never computes an epsilon itself. Every release of a noisy mechanism is described by a
:class:`PrivacyEvent` (JSON-serialisable, so the ledger lives in checkpoints), converted to a
``dp_accounting`` ``DpEvent`` and composed by one of Google's accountants:

- ``rdp``: Renyi DP (Mironov, CSF 2017) with the Poisson-subsampled Gaussian analysis of
  Mironov, Talwar and Zhang (2019) -- fast, slightly loose;
- ``pld``: privacy loss distributions (Koskela et al. 2020; Doroshenko et al., PETS 2022) --
  numerically tight, slower.

The :class:`Accountant` keeps a run-length ledger of events (identical consecutive events are
one entry with a count) and recomputes epsilon from a fresh ``dp_accounting`` accountant on
demand, so asking "what would epsilon be after one more round?" never changes the ledger.

Noise multipliers are always ``noise std / sensitivity`` of the released sum. The ledger's
neighbouring relation is ``add_remove`` (a user's data added or removed: DP-FedAvg, DP-SGD,
local Gaussian/Laplace with the sensitivity set to the input diameter) or ``replace_one``
(randomized response, whose analysis needs it).
"""

from __future__ import annotations

import contextlib
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import dp_accounting
from dp_accounting import pld, rdp
from dp_accounting.privacy_accountant import NeighboringRelation, PrivacyAccountant

from fedfort.errors import ConfigError

__all__ = [
    "Accountant",
    "AccountantName",
    "Neighboring",
    "PldAccountant",
    "PrivacyEvent",
    "RdpAccountant",
    "calibrate_noise_multiplier",
    "epsilon_curve",
    "make_accountant",
]

AccountantName = Literal["rdp", "pld"]
Neighboring = Literal["add_remove", "replace_one"]
Mechanism = Literal["gaussian", "laplace", "randomized_response"]

_RELATIONS = {
    "add_remove": NeighboringRelation.ADD_OR_REMOVE_ONE,
    "replace_one": NeighboringRelation.REPLACE_ONE,
}


@dataclass(frozen=True)
class PrivacyEvent:
    """One release of a noisy mechanism, as the accountant sees it.

    ``noise_multiplier`` is the noise std over the L2 sensitivity (Gaussian), the Laplace scale
    over the L1 sensitivity (Laplace), or the noise parameter ``p`` of randomized response over
    ``num_buckets`` (output a uniform bucket with probability ``p``). ``sampling_rate`` < 1
    means the release ran on a Poisson sample of the population (amplification by sampling).
    """

    mechanism: Mechanism
    noise_multiplier: float
    sampling_rate: float = 1.0
    num_buckets: int = 2

    def __post_init__(self) -> None:
        if self.mechanism not in ("gaussian", "laplace", "randomized_response"):
            raise ConfigError(f"unknown mechanism {self.mechanism!r}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ConfigError(
                f"a privacy event needs a finite noise multiplier > 0, got {self.noise_multiplier}"
            )
        if not 0.0 < self.sampling_rate <= 1.0:
            raise ConfigError(f"sampling rate must be in (0, 1], got {self.sampling_rate}")
        if self.mechanism == "randomized_response":
            if self.noise_multiplier > 1.0 or self.num_buckets < 2:
                raise ConfigError("randomized response needs p in (0, 1] and >= 2 buckets")
            if self.sampling_rate < 1.0:
                raise ConfigError("randomized response is accounted without sampling")

    def to_dp_event(self) -> dp_accounting.DpEvent:
        """The equivalent ``dp_accounting`` event."""
        inner: dp_accounting.DpEvent
        if self.mechanism == "gaussian":
            inner = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        elif self.mechanism == "laplace":
            inner = dp_accounting.LaplaceDpEvent(self.noise_multiplier)
        else:
            return dp_accounting.RandomizedResponseDpEvent(self.noise_multiplier, self.num_buckets)
        if self.sampling_rate < 1.0:
            return dp_accounting.PoissonSampledDpEvent(self.sampling_rate, inner)
        return inner

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PrivacyEvent:
        return cls(
            mechanism=raw["mechanism"],
            noise_multiplier=float(raw["noise_multiplier"]),
            sampling_rate=float(raw.get("sampling_rate", 1.0)),
            num_buckets=int(raw.get("num_buckets", 2)),
        )


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """Silence dp-accounting's per-order convergence warnings (those orders are skipped and
    the bound stays valid); anything worse still gets through."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_delta(delta: float) -> None:
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")


class Accountant(ABC):
    """A ledger of privacy events and the epsilon they add up to, by one accounting method."""

    name: AccountantName

    def __init__(self, neighboring: Neighboring = "add_remove") -> None:
        if neighboring not in _RELATIONS:
            raise ConfigError(
                f"neighboring must be 'add_remove' or 'replace_one', got {neighboring}"
            )
        self.neighboring: Neighboring = neighboring
        self._ledger: list[tuple[PrivacyEvent, int]] = []

    @abstractmethod
    def _fresh(self) -> PrivacyAccountant:
        """A new, empty ``dp_accounting`` accountant of this kind."""

    @property
    def events(self) -> list[tuple[PrivacyEvent, int]]:
        """The ledger: (event, how many times in a row), oldest first."""
        return list(self._ledger)

    @property
    def count(self) -> int:
        """Number of releases composed so far."""
        return sum(n for _, n in self._ledger)

    def compose(self, event: PrivacyEvent, count: int = 1) -> None:
        """Record ``count`` releases of ``event``."""
        if count < 1:
            raise ConfigError(f"count must be >= 1, got {count}")
        self._check_supported(event)
        if self._ledger and self._ledger[-1][0] == event:
            self._ledger[-1] = (event, self._ledger[-1][1] + count)
        else:
            self._ledger.append((event, count))

    def _check_supported(self, event: PrivacyEvent) -> None:
        probe = self._fresh()
        if not probe.supports(event.to_dp_event()):
            raise ConfigError(
                f"the {self.name} accountant with {self.neighboring} neighbours cannot account "
                f"for {event}; randomized response needs 'replace_one', sampling 'add_remove'"
            )

    def _runs(self, extra: Sequence[tuple[PrivacyEvent, int]] = ()) -> _Runs:
        # merge runs of identical events, ledger and extra alike, so that "n rounds" is always
        # one self-composition however it was reached (PLD's numerics depend on the grouping)
        runs: list[tuple[PrivacyEvent, int]] = []
        for event, n in [*self._ledger, *extra]:
            if runs and runs[-1][0] == event:
                runs[-1] = (event, runs[-1][1] + n)
            else:
                runs.append((event, n))
        return tuple(runs)

    def _build(self, extra: Sequence[tuple[PrivacyEvent, int]] = ()) -> PrivacyAccountant:
        return _compose(self._fresh(), self._runs(extra))

    @property
    def _key(self) -> tuple[str, str, float]:
        """What, besides the events, determines this accountant's answers."""
        return (self.name, self.neighboring, 0.0)

    def epsilon(self, delta: float, extra: Sequence[tuple[PrivacyEvent, int]] = ()) -> float:
        """Epsilon of the ledger (plus ``extra`` releases, not recorded) at ``delta``.

        Answers are memoised per (accountant, ledger, delta): a run asks for the same
        composition when it checks its budget and when it records the round, and repeated
        runs of one configuration share their epsilon curve.
        """
        _check_delta(delta)
        if not self._ledger and not extra:
            return 0.0
        return _epsilon_of(self._key, self._fresh, self._runs(extra), delta)

    def delta(self, epsilon: float) -> float:
        """Delta of the ledger at ``epsilon``."""
        if not epsilon >= 0:
            raise ConfigError(f"epsilon must be >= 0, got {epsilon}")
        if not self._ledger:
            return 0.0
        with _quiet_absl():
            return float(self._build().get_delta(epsilon))

    def state_dict(self) -> dict[str, Any]:
        return {
            "accountant": self.name,
            "neighboring": self.neighboring,
            "events": [[e.to_dict(), n] for e, n in self._ledger],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            self._ledger = []
            return
        if state.get("accountant") != self.name or state.get("neighboring") != self.neighboring:
            raise ConfigError(
                f"a {state.get('accountant')} ledger cannot be loaded into a {self.name} one"
            )
        self._ledger = [(PrivacyEvent.from_dict(e), int(n)) for e, n in state["events"]]


_Runs = tuple[tuple[PrivacyEvent, int], ...]


def _compose(acc: PrivacyAccountant, runs: _Runs) -> PrivacyAccountant:
    for event, n in runs:
        if event.mechanism == "randomized_response" and isinstance(acc, pld.PLDAccountant):
            # dp-accounting 0.6's PLD accountant drops the count of a randomized-response
            # event (it composes it once), so compose each release on its own
            for _ in range(n):
                acc.compose(event.to_dp_event())
        else:
            acc.compose(event.to_dp_event(), n)
    return acc


_EPSILONS: dict[tuple[tuple[str, str, float], _Runs, float], float] = {}


def _epsilon_of(
    key: tuple[str, str, float],
    fresh: Callable[[], PrivacyAccountant],
    runs: _Runs,
    delta: float,
) -> float:
    memo = (key, runs, delta)
    if memo not in _EPSILONS:
        if len(_EPSILONS) > 4096:
            _EPSILONS.clear()
        with _quiet_absl():
            _EPSILONS[memo] = float(_compose(fresh(), runs).get_epsilon(delta))
    return _EPSILONS[memo]


class RdpAccountant(Accountant):
    """Renyi-DP accounting (``dp_accounting.rdp.RdpAccountant`` with its default orders)."""

    name: AccountantName = "rdp"

    def _fresh(self) -> PrivacyAccountant:
        return rdp.RdpAccountant(neighboring_relation=_RELATIONS[self.neighboring])


class PldAccountant(Accountant):
    """Privacy-loss-distribution accounting (``dp_accounting.pld.PLDAccountant``)."""

    name: AccountantName = "pld"

    def __init__(
        self, neighboring: Neighboring = "add_remove", value_discretization_interval: float = 1e-4
    ) -> None:
        super().__init__(neighboring)
        self.value_discretization_interval = value_discretization_interval

    @property
    def _key(self) -> tuple[str, str, float]:
        return (self.name, self.neighboring, self.value_discretization_interval)

    def _fresh(self) -> PrivacyAccountant:
        return pld.PLDAccountant(
            neighboring_relation=_RELATIONS[self.neighboring],
            value_discretization_interval=self.value_discretization_interval,
        )


def make_accountant(name: AccountantName, neighboring: Neighboring = "add_remove") -> Accountant:
    """The accountant called ``name`` (``rdp`` or ``pld``)."""
    if name == "rdp":
        return RdpAccountant(neighboring)
    if name == "pld":
        return PldAccountant(neighboring)
    raise ConfigError(f"unknown accountant {name!r}; choose 'rdp' or 'pld'")


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    rounds: int,
    event: Callable[[float], PrivacyEvent],
    accountant: AccountantName = "rdp",
    once: Callable[[float], PrivacyEvent] | None = None,
) -> float:
    """The smallest noise multiplier ``z`` whose ``rounds`` releases of ``event(z)`` (after
    one release of ``once(z)``, when given) stay within ``(target_epsilon, delta)``, found by
    ``dp_accounting.calibrate_dp_mechanism``.

    The result is checked: its accounted epsilon is at most the target and, for a continuous
    search, within 1% below it.
    """
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ConfigError(f"target epsilon must be > 0, got {target_epsilon}")
    _check_delta(delta)
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}")
    probe = make_accountant(accountant)

    def fresh() -> PrivacyAccountant:
        return probe._fresh()

    def make_event(z: float) -> dp_accounting.DpEvent:
        repeated = dp_accounting.SelfComposedDpEvent(event(z).to_dp_event(), rounds)
        if once is None:
            return repeated
        return dp_accounting.ComposedDpEvent([once(z).to_dp_event(), repeated])

    def releases(z: float) -> list[tuple[PrivacyEvent, int]]:
        return [(event(z), rounds)] + ([] if once is None else [(once(z), 1)])

    bracket: dp_accounting.BracketInterval = dp_accounting.LowerEndpointAndGuess(1e-3, 1.0)
    if accountant == "pld":
        # PLD is tighter than RDP, so its z is below RDP's; bracketing it there keeps the PLD
        # search away from tiny multipliers, whose loss distributions do not fit in memory
        upper = calibrate_noise_multiplier(target_epsilon, delta, rounds, event, "rdp", once)
        bracket = dp_accounting.ExplicitBracketInterval(0.25 * upper, upper)
    try:
        with _quiet_absl():
            z = float(
                dp_accounting.calibrate_dp_mechanism(
                    fresh, make_event, target_epsilon, delta, bracket, tol=1e-5
                )
            )
    except dp_accounting.mechanism_calibration.NoBracketIntervalFoundError:
        raise ConfigError(
            f"no noise multiplier reaches epsilon {target_epsilon} at delta {delta} over "
            f"{rounds} rounds; raise the target or lower the rounds"
        ) from None
    # the search tolerance is in z; make sure the returned z is on the private side
    check = make_accountant(accountant)
    while True:
        eps = check.epsilon(delta, releases(z))
        if eps <= target_epsilon:
            return z
        z *= 1.0 + 1e-6


def epsilon_curve(
    event: PrivacyEvent,
    delta: float,
    rounds: int,
    accountant: AccountantName = "rdp",
    points: int | None = None,
    before: Sequence[tuple[PrivacyEvent, int]] = (),
) -> list[tuple[int, float]]:
    """Epsilon after each of ``rounds`` identical releases (or ``points`` evenly spaced ones),
    after the releases ``before`` them."""
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}")
    steps = list(range(1, rounds + 1))
    if points is not None and points < rounds:
        spaced = {max(1, round(i * rounds / points)) for i in range(1, points + 1)}
        steps = sorted(spaced | {1, rounds})
    acc = make_accountant(accountant)
    return [(r, acc.epsilon(delta, [*before, (event, r)])) for r in steps]
