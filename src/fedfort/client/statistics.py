"""A client's side of the statistics round: its feature statistics, and the transform check.

Before round 1 of a run with ``[data] standardize`` or ``impute`` the server asks every client
for the per-feature counts, sums and sums of squares of the rows it trains on
(:class:`~fedfort.messages.StatisticsRequest`). :func:`local_statistics` computes them; under
differential privacy it first clips every value to the request's declared range, rescales it
to ``[-1, 1]`` and caps the rows the client contributes at ``max_count`` (by scaling its whole
vector down, which keeps its means), so one client changes the sum by at most
:func:`statistics_sensitivity` in L2 norm. :func:`noised` adds the client's Gaussian noise from
the OS CSPRNG.

Every task then carries the federation's transform (:class:`~fedfort.messages.FeatureTransform`);
:func:`checked_transform` refuses one a client must not apply: a wrong length, a non-finite
shift or fill, a scale that is not finite and positive.
"""

from __future__ import annotations

import math

import numpy as np

from fedfort.data.preprocessing import FeatureStatistics, Preprocessing
from fedfort.errors import PolicyRefused, ProtocolError
from fedfort.messages import FeatureTransform, StatisticsRequest
from fedfort.privacy.accounting import PrivacyEvent
from fedfort.privacy.noise import make_noise, snap, snapping_grid

__all__ = [
    "checked_request",
    "checked_transform",
    "local_statistics",
    "noised",
    "statistics_events",
    "statistics_sensitivity",
]

#: the most features a statistics request may name (a request is not a way to make a client
#: allocate without bound)
MAX_FEATURES = 1 << 20


def statistics_sensitivity(num_features: int, max_count: float) -> float:
    """L2 norm bound of one client's clipped, rescaled and capped statistics vector.

    Per feature the triple ``(count, sum, sum of squares)`` of values in ``[-1, 1]`` has
    ``|sum| <= count``, ``0 <= squares <= count`` and ``count <= max_count``.
    """
    return max_count * math.sqrt(3.0 * num_features)


def statistics_events(request: StatisticsRequest) -> list[PrivacyEvent] | None:
    """The client's own account of its statistics release, for its ledger: Gaussian noise of
    ``noise_std`` over the diameter of its clipped, rescaled and capped vectors (as for a
    local update); ``None`` when the release is not bounded or carries no noise."""
    if request.lower is None or request.max_count is None or request.noise_std <= 0:
        return None
    diameter = 2.0 * statistics_sensitivity(request.num_features, request.max_count)
    return [PrivacyEvent("gaussian", request.noise_std / diameter)]


def checked_request(request: StatisticsRequest, num_features: int | None = None) -> None:
    """Refuse a malformed request (:class:`~fedfort.errors.ProtocolError`)."""
    d = request.num_features
    if not 0 < d <= MAX_FEATURES:
        raise ProtocolError(f"a statistics request for {d} features")
    if num_features is not None and d != num_features:
        raise ProtocolError(f"statistics of {d} features asked; this client has {num_features}")
    if (request.lower is None) != (request.upper is None):
        raise ProtocolError("a statistics range needs both lower and upper bounds")
    if request.lower is not None and request.upper is not None:
        lo, hi = request.lower, request.upper
        if lo.shape != (d,) or hi.shape != (d,):
            raise ProtocolError(f"statistics bounds of shapes {lo.shape}, {hi.shape}; {d} wanted")
        if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (hi > lo).all()):
            raise ProtocolError("statistics bounds must be finite with lower < upper")
    if request.max_count is not None and not (
        math.isfinite(request.max_count) and request.max_count >= 1
    ):
        raise ProtocolError(f"a statistics row cap of {request.max_count}")
    if not (math.isfinite(request.noise_std) and request.noise_std >= 0):
        raise ProtocolError(f"statistics noise of std {request.noise_std}")


def local_statistics(x: np.ndarray, request: StatisticsRequest) -> np.ndarray:
    """The ``3 d`` statistics of the rows ``x`` as ``request`` asks for them (float64).

    With a range, values are clipped into it and rescaled to ``[-1, 1]``
    (``(v - mid) / half``); with ``max_count``, the vector is scaled by
    ``min(1, max_count / rows)``. NaN marks a missing value (counted as absent).
    """
    checked_request(request)
    values = np.asarray(x, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != request.num_features:
        raise ProtocolError(
            f"statistics of {request.num_features} features asked; the data has shape "
            f"{values.shape}"
        )
    if request.lower is not None and request.upper is not None:
        mid = (request.upper + request.lower) / 2.0
        half = (request.upper - request.lower) / 2.0
        values = (np.clip(values, request.lower, request.upper) - mid) / half
    vector = FeatureStatistics.of(values).vector()
    if request.max_count is not None and values.shape[0] > request.max_count:
        vector = vector * (request.max_count / values.shape[0])
    return vector


def noised(vector: np.ndarray, std: float) -> np.ndarray:
    """``vector`` plus Gaussian noise of ``std`` per coordinate from the OS CSPRNG, snapped to
    a grid below the noise scale (:mod:`fedfort.privacy.noise`); unchanged when ``std = 0``."""
    if std == 0.0:
        return vector
    noise = make_noise(True).gaussian(vector.shape[0], std)
    out: np.ndarray = snap(vector + noise, snapping_grid(std))
    return out


def checked_transform(transform: FeatureTransform, num_features: int) -> Preprocessing:
    """``transform`` as a :class:`~fedfort.data.preprocessing.Preprocessing` this client can
    apply, or :class:`~fedfort.errors.PolicyRefused`."""
    parts = {"fill": transform.fill, "shift": transform.shift, "scale": transform.scale}
    for name, array in parts.items():
        a = np.asarray(array)
        if a.shape != (num_features,):
            raise PolicyRefused(
                f"the feature transform's {name} has shape {a.shape}; this client has "
                f"{num_features} features: refusing to train on it"
            )
    fill = np.asarray(transform.fill, dtype=np.float64)
    shift = np.asarray(transform.shift, dtype=np.float64)
    scale = np.asarray(transform.scale, dtype=np.float64)
    if np.isinf(fill).any() or not np.isfinite(shift).all():
        raise PolicyRefused("the feature transform has a non-finite shift or fill: refusing it")
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise PolicyRefused("the feature transform has a scale that is not finite and > 0")
    return Preprocessing(fill, shift, scale)
