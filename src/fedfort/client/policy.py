"""The client's own privacy policy: the least protection it applies, whatever the server asks.

The privacy directive (:class:`~fedfort.messages.ClientPrivacy`) travels from the server to the
client, so a malicious server can weaken it: ask for less noise, a larger clip, no privacy at
all, or seeded noise (``secure_noise = False``) that it can regenerate and subtract. A client
therefore holds a :class:`ClientPrivacyPolicy` of its own and applies
:meth:`ClientPrivacyPolicy.effective` -- per field, the stronger of the policy and the
directive (the server's directive can only strengthen the protection):

============================  ===========================================  =================
field                         effective value                              weaker directive
============================  ===========================================  =================
clip norm                     ``min(policy.max_clip_norm, directive)``     overridden
Gaussian noise std (shares)   ``max(policy.min_noise_std, directive)``     overridden
local mechanism               the policy's when it sets one                none: overridden;
                                                                           other: refused
server's local mechanism      kept if its noise std >= ``min_noise_std``   refused
local epsilon / delta         ``min(policy, directive)``                   overridden
noise source                  the OS CSPRNG (unless ``reproducible``)      ignored
unknown mechanism             --                                           refused
============================  ===========================================  =================

A refusal raises :class:`~fedfort.errors.PolicyRefused`: the client sends nothing. The local
mechanisms are those of :mod:`fedfort.privacy.mechanisms` (Dwork and Roth 2014; the Gaussian
calibrated after Balle and Wang, ICML 2018). Each release the effective directive makes is
described by :class:`~fedfort.privacy.accounting.PrivacyEvent`\\ s for the client's own ledger
(:mod:`fedfort.client.ledger`): local DP by its mechanism's event, a distributed-DP noise share
as a Gaussian release of the client's clipped update on its own (noise over the ``2C``
diameter), which is all the client can check -- the extra protection of the sum depends on the
other clients and on secure aggregation.

``reproducible`` is an explicit, *non-secure* experiment mode set by the client itself (never by
the server): noise follows the directive's ``secure_noise`` and training is seeded from the
task's seed, so simulations repeat bit for bit. It gives no privacy against the server.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import dp_accounting

from fedfort.errors import ConfigError, PolicyRefused
from fedfort.messages import ClientPrivacy
from fedfort.privacy.accounting import AccountantName, PrivacyEvent
from fedfort.privacy.mechanisms import LocalGaussian, LocalLaplace
from fedfort.privacy.noise import NoiseSource, make_noise

__all__ = ["ClientPolicySection", "ClientPrivacyPolicy", "DpSgdSection", "LocalChoice"]

LocalChoice = Literal["none", "gaussian", "laplace"]
_MECHANISMS = ("gaussian", "laplace")


class ClientPolicySection(Protocol):
    """A ``[privacy.client]`` section (:class:`fedfort.config.ClientPolicyConfig`).

    The client role does not import the configuration layer above it; any object whose
    ``model_dump()`` gives this policy's fields serves.
    """

    def model_dump(self) -> dict[str, Any]: ...


class DpSgdSection(Protocol):
    """A ``[privacy.dp_sgd]`` section (:class:`fedfort.config.DpSgdConfig`): what the client
    reads of it for its own DP-SGD budget."""

    @property
    def enabled(self) -> bool: ...

    @property
    def target_epsilon(self) -> float | None: ...

    @property
    def delta(self) -> float: ...


@dataclass(frozen=True)
class ClientPrivacyPolicy:
    """The minimum protection one client applies to every update it releases.

    - ``local``: a local DP mechanism (``gaussian`` with an L2 clip, ``laplace`` with an L1
      clip) the client applies to every update at per-round ``max_round_epsilon`` or less;
      ``none`` applies the directive's mechanism, if any, within the bounds below.
    - ``max_clip_norm``: the largest clip norm the client accepts (``None``: the directive's).
    - ``min_noise_std``: the least Gaussian noise std on a release that is not local DP
      (a distributed-DP noise share); needs ``max_clip_norm``.
    - ``max_round_epsilon`` and ``delta``: the largest per-round epsilon of a local mechanism,
      at (at most) ``delta`` (the directive's delta when the policy sets no epsilon);
      ``delta`` is also where the ledger measures total epsilon.
    - ``max_total_epsilon``: the client refuses a task whose release would take its ledger past
      this (and any release without noise, whose epsilon is unbounded).
    - ``reproducible``: the non-secure experiment mode (see the module docstring).
    - ``max_dp_sgd_epsilon`` and ``dp_sgd_delta``: the client's record-level DP-SGD budget, from
      its own ``privacy.dp_sgd.target_epsilon`` and ``delta``: it refuses a DP-SGD round that
      would take its own DP-SGD ledger past it (:attr:`dp_sgd_budget`; without one,
      ``max_total_epsilon`` bounds that ledger too).
    """

    local: LocalChoice = "none"
    max_clip_norm: float | None = None
    min_noise_std: float = 0.0
    max_round_epsilon: float | None = None
    delta: float = 1e-5
    max_total_epsilon: float | None = None
    accountant: AccountantName = "rdp"
    reproducible: bool = False
    max_dp_sgd_epsilon: float | None = None
    dp_sgd_delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.local not in ("none", *_MECHANISMS):
            raise ConfigError(
                f"client policy: local must be 'none', 'gaussian' or 'laplace', not {self.local!r}"
            )
        for name in (
            "max_clip_norm",
            "max_round_epsilon",
            "max_total_epsilon",
            "max_dp_sgd_epsilon",
        ):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"client policy: {name} must be a finite number > 0, not {value}")
        if not (math.isfinite(self.min_noise_std) and self.min_noise_std >= 0):
            raise ConfigError(
                f"client policy: min_noise_std must be a finite number >= 0, not "
                f"{self.min_noise_std}"
            )
        if not 0 < self.delta < 1:
            raise ConfigError(f"client policy: delta must be in (0, 1), not {self.delta}")
        if not 0 < self.dp_sgd_delta < 1:
            raise ConfigError(
                f"client policy: dp_sgd_delta must be in (0, 1), not {self.dp_sgd_delta}"
            )
        if self.accountant not in ("rdp", "pld"):
            raise ConfigError("client policy: accountant must be 'rdp' or 'pld'")
        if self.local != "none" and (self.max_clip_norm is None or self.max_round_epsilon is None):
            raise ConfigError(
                f"client policy: local = {self.local!r} needs max_clip_norm and "
                "max_round_epsilon (the client calibrates its own noise from them)"
            )
        if self.min_noise_std > 0 and self.max_clip_norm is None:
            raise ConfigError(
                "client policy: min_noise_std needs max_clip_norm (noise protects only a "
                "clipped update)"
            )

    @classmethod
    def from_config(
        cls, config: ClientPolicySection, dp_sgd: DpSgdSection | None = None
    ) -> ClientPrivacyPolicy:
        """The policy of a ``[privacy.client]`` section, with the DP-SGD budget of the client's
        own ``[privacy.dp_sgd]`` section when given."""
        policy = cls(**config.model_dump())
        if dp_sgd is None or not dp_sgd.enabled:
            return policy
        return dataclasses.replace(
            policy, max_dp_sgd_epsilon=dp_sgd.target_epsilon, dp_sgd_delta=dp_sgd.delta
        )

    @property
    def dp_sgd_budget(self) -> float | None:
        """The record-level epsilon the client's DP-SGD ledger may reach: its own
        ``max_dp_sgd_epsilon``, else ``max_total_epsilon``, else none."""
        if self.max_dp_sgd_epsilon is not None:
            return self.max_dp_sgd_epsilon
        return self.max_total_epsilon

    @property
    def active(self) -> bool:
        """Whether the policy asks for any protection of its own (beyond the directive's)."""
        return (
            self.local != "none"
            or self.max_clip_norm is not None
            or self.min_noise_std > 0
            or self.max_total_epsilon is not None
        )

    # -- the effective directive ---------------------------------------------------------

    def effective(self, directive: ClientPrivacy | None) -> ClientPrivacy | None:
        """What the client actually applies for a task carrying ``directive``.

        Raises :class:`PolicyRefused` for an unknown mechanism, a local mechanism other than
        the policy's, or a directive this client's local policy cannot serve.
        """
        out = self._effective(directive)
        try:  # calibrate its mechanism now (cached): one no mechanism can serve is refused here
            self.events(out)
        except ConfigError as exc:
            raise PolicyRefused(f"the server's privacy directive cannot be applied: {exc}") from exc
        return out

    def _effective(self, directive: ClientPrivacy | None) -> ClientPrivacy | None:
        if directive is not None and directive.local not in (None, *_MECHANISMS):
            raise PolicyRefused(
                f"the server's privacy directive names the unknown local mechanism "
                f"{directive.local!r}; this client applies only 'gaussian' or 'laplace'"
            )
        if directive is not None:
            _check_numbers(directive)
        if self.local != "none":
            return self._local(directive)
        base = directive if directive is not None else ClientPrivacy()
        if base.local is not None:
            return self._noisy_enough(self._bounded_local(base, base.local))
        clip = _smaller(self.max_clip_norm, base.clip_norm)
        noise_std = max(self.min_noise_std, base.noise_std)
        if directive is None and clip is None and noise_std == 0:
            return None
        return dataclasses.replace(
            base, clip_norm=clip, noise_std=noise_std, secure_noise=self._secure(base)
        )

    def _local(self, directive: ClientPrivacy | None) -> ClientPrivacy:
        if directive is not None and directive.local not in (None, self.local):
            raise PolicyRefused(
                f"the server asks for local {directive.local} DP; this client's policy applies "
                f"local {self.local} DP only. Run the federation with "
                f"privacy.local_mechanism = {self.local!r}, or change the client's policy"
            )
        if directive is not None and directive.local is None and directive.report_clipped:
            raise PolicyRefused(
                "the server asks for an adaptive-clipping report with distributed or central "
                f"DP; this client's policy releases its update through local {self.local} DP "
                "only. Run the federation in local mode, or set the client's policy local = "
                "'none' with min_noise_std"
            )
        base = directive if directive is not None and directive.local else ClientPrivacy()
        out = self._bounded_local(base, self.local)
        if directive is not None and directive.noise_std > _local_std(out):
            raise PolicyRefused(
                f"the server asks for Gaussian noise std {directive.noise_std:g}, more than the "
                f"client's local mechanism adds ({_local_std(out):g}); lower the client's "
                "max_round_epsilon or run the federation in local mode"
            )
        return out

    def _noisy_enough(self, local: ClientPrivacy) -> ClientPrivacy:
        """``local`` (a local mechanism the *server* chose) unless its noise is below
        ``min_noise_std``: a large per-round epsilon must not undercut the client's floor."""
        if self.min_noise_std <= 0:
            return local
        std = _local_std_lower_bound(local)
        if std < self.min_noise_std:
            raise PolicyRefused(
                f"the server asks for local {local.local} DP at epsilon {local.local_epsilon:g}, "
                f"whose noise std ({std:.4g}) is below this client's min_noise_std "
                f"{self.min_noise_std:g}; lower privacy.local_epsilon on the server, or set the "
                "client's policy local = 'gaussian' with max_round_epsilon"
            )
        return local

    def _bounded_local(self, base: ClientPrivacy, mechanism: str) -> ClientPrivacy:
        clip = _smaller(self.max_clip_norm, base.clip_norm)
        epsilon = _smaller(self.max_round_epsilon, base.local_epsilon or None)
        # the policy's delta bounds a local mechanism's only when it bounds its epsilon too
        delta = base.local_delta or self.delta
        if self.max_round_epsilon is not None:
            delta = min(delta, self.delta)
        if clip is None or epsilon is None:
            raise PolicyRefused(
                f"local {mechanism} DP needs a clip norm and a per-round epsilon; neither the "
                "server's directive nor this client's policy gives both"
            )
        return ClientPrivacy(
            clip_norm=clip,
            local="gaussian" if mechanism == "gaussian" else "laplace",
            local_epsilon=epsilon,
            local_delta=delta if mechanism == "gaussian" else 0.0,
            secure_noise=self._secure(base),
        )

    def _secure(self, directive: ClientPrivacy) -> bool:
        """The directive's ``secure_noise`` counts only in the reproducible mode."""
        return directive.secure_noise if self.reproducible else True

    # -- noise and accounting ------------------------------------------------------------

    def noise(self, directive: ClientPrivacy, seed: int) -> NoiseSource:
        """The noise source for one release: the OS CSPRNG, or (``reproducible`` and a directive
        asking for seeded noise) a generator seeded from the task, as before."""
        if self.reproducible and not directive.secure_noise:
            from fedfort.client.privacy import noise_for

            return noise_for(directive, seed)
        return make_noise(True)

    def fresh(self, effective: ClientPrivacy | None) -> bool:
        """Whether a release under ``effective`` carries noise the client's *own policy*
        requires (local DP or ``min_noise_std``), drawn anew for it, so two releases of the same
        model differ by noise the client chose: from the OS, or -- in the reproducible mode,
        which keeps the secure mode's control flow but protects nothing against the server --
        from the task's seed. A directive's noise alone does not count: the server sizes it,
        and could make it negligible."""
        if effective is None or (self.local == "none" and self.min_noise_std <= 0):
            return False
        return self.reproducible or effective.secure_noise

    def events(self, effective: ClientPrivacy | None) -> list[PrivacyEvent] | None:
        """The privacy events of one release under ``effective`` for the client's ledger, or
        ``None`` when the release carries no noise (its epsilon is unbounded)."""
        if effective is None or effective.clip_norm is None:
            return None
        if effective.local == "gaussian":
            eps, dlt = effective.local_epsilon, effective.local_delta
            mech = LocalGaussian(eps, dlt, effective.clip_norm)
            return [PrivacyEvent("gaussian", mech.noise_multiplier)]
        if effective.local == "laplace":
            lap = LocalLaplace(effective.local_epsilon, effective.clip_norm)
            return [PrivacyEvent("laplace", lap.noise_multiplier)]
        if effective.noise_std <= 0:
            return None
        events = [PrivacyEvent("gaussian", effective.noise_std / (2.0 * effective.clip_norm))]
        if effective.report_clipped:
            if effective.indicator_noise_std <= 0:
                return None  # the clip bit leaves without noise
            # the bit is +-1/2: its sensitivity is 1
            events.append(PrivacyEvent("gaussian", effective.indicator_noise_std))
        return events


def _check_numbers(directive: ClientPrivacy) -> None:
    """Refuse a directive whose numbers no mechanism can take (NaN, infinite, a clip <= 0,
    negative noise): without this a server's directive crashed the client's accounting."""
    clip = directive.clip_norm
    fields = {
        "noise_std": directive.noise_std,
        "indicator_noise_std": directive.indicator_noise_std,
        "local_epsilon": directive.local_epsilon,
        "local_delta": directive.local_delta,
    }
    bad = [f"{k}={v}" for k, v in fields.items() if not (math.isfinite(v) and v >= 0)]
    if clip is not None and not (math.isfinite(clip) and clip > 0):
        bad.append(f"clip_norm={clip}")
    if directive.local_delta >= 1:
        bad.append(f"local_delta={directive.local_delta}")
    if bad:
        raise PolicyRefused(
            f"the server's privacy directive is malformed ({', '.join(bad)}): clip norms must "
            "be finite and > 0, noise and epsilon finite and >= 0, delta below 1"
        )


def _smaller(a: float | None, b: float | None) -> float | None:
    values = [float(v) for v in (a, b) if v is not None]
    return min(values) if values else None


def _local_std_lower_bound(directive: ClientPrivacy) -> float:
    """A lower bound on :func:`_local_std` that costs no PLD calibration: for the Gaussian,
    Balle and Wang's analytic multiplier (ICML 2018), which the calibrated one only exceeds, so
    a directive asking for a huge epsilon is refused before any accountant runs."""
    assert directive.clip_norm is not None
    if directive.local == "gaussian":
        z0 = float(dp_accounting.get_sigma_gaussian(directive.local_epsilon, directive.local_delta))
        return z0 * 2.0 * directive.clip_norm
    return _local_std(directive)


def _local_std(directive: ClientPrivacy) -> float:
    """Per-coordinate noise std of a local directive."""
    assert directive.clip_norm is not None
    if directive.local == "gaussian":
        mech = LocalGaussian(directive.local_epsilon, directive.local_delta, directive.clip_norm)
        return mech.std
    return math.sqrt(2.0) * LocalLaplace(directive.local_epsilon, directive.clip_norm).scale
