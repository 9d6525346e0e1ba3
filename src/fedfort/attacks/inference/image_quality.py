"""How close a reconstruction is to the true image: MSE, PSNR, SSIM and label accuracy.

Images are compared as a batch: ``true`` and ``recovered`` are arrays of shape ``(n, H, W)``
(or ``(H, W)`` for one image) with pixels in ``[0, data_range]``; every function returns one
value per image. Reconstructions are clipped to the data range before they are scored, so an
attack cannot score by leaving the valid range.

- PSNR (peak signal-to-noise ratio): ``10 log10(data_range**2 / MSE)`` in dB; ``inf`` for an
  exact copy.
- SSIM (Wang, Bovik, Sheikh and Simoncelli, "Image quality assessment: from error visibility
  to structural similarity", IEEE TIP 2004) by scikit-image's
  ``skimage.metrics.structural_similarity`` with a uniform ``win_size`` x ``win_size`` window
  (3 by default: the paper's 11x11 Gaussian window does not fit an 8x8 digit) and
  ``data_range`` 1.0. The whole batch is one call (the images as channels, ``full=True``)
  and each image's SSIM is the mean of its own map over the window-valid interior, exactly
  what scikit-image reports for a single image.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from fedfort.errors import ConfigError

__all__ = ["label_accuracy", "mse", "psnr", "ssim"]


def _pair(true: np.ndarray, recovered: np.ndarray, data_range: float) -> tuple[np.ndarray, ...]:
    if not (np.isfinite(data_range) and data_range > 0):
        raise ConfigError(f"data_range must be a finite number > 0, got {data_range!r}")
    a = np.asarray(true, dtype=np.float64)
    b = np.asarray(recovered, dtype=np.float64)
    if a.shape != b.shape:
        raise ConfigError(
            f"true and recovered images must have the same shape, got {a.shape} and {b.shape}"
        )
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.ndim != 3 or a.shape[0] == 0:
        raise ConfigError(f"images must be (H, W) or a non-empty (n, H, W) batch, got {a.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ConfigError("images contain NaN or Inf")
    return a, np.clip(b, 0.0, data_range)


def mse(true: np.ndarray, recovered: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Mean squared error per image, shape ``(n,)``."""
    a, b = _pair(true, recovered, data_range)
    out: np.ndarray = ((a - b) ** 2).mean(axis=(1, 2))
    return out


def psnr(true: np.ndarray, recovered: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio in dB per image (``inf`` where the images are identical)."""
    err = mse(true, recovered, data_range)
    with np.errstate(divide="ignore"):
        out: np.ndarray = 10.0 * np.log10(data_range**2 / err)
    return out


def ssim(
    true: np.ndarray, recovered: np.ndarray, data_range: float = 1.0, win_size: int = 3
) -> np.ndarray:
    """Structural similarity per image (1 for identical images), shape ``(n,)``."""
    a, b = _pair(true, recovered, data_range)
    if (
        isinstance(win_size, bool)
        or not isinstance(win_size, int)
        or win_size < 3
        or win_size % 2 == 0
        or win_size > min(a.shape[1:])
    ):
        raise ConfigError(
            f"win_size must be an odd integer >= 3 that fits the {a.shape[1:]} images, "
            f"got {win_size!r}"
        )
    _, full = structural_similarity(  # type: ignore[no-untyped-call]
        a, b, win_size=win_size, data_range=data_range, channel_axis=0, full=True
    )
    pad = (win_size - 1) // 2
    out: np.ndarray = np.asarray(full)[:, pad:-pad, pad:-pad].mean(axis=(1, 2))
    return out


def label_accuracy(true: np.ndarray, recovered: np.ndarray) -> float:
    """Fraction of recovered labels equal to the true ones (both 1-D integer arrays)."""
    t = np.asarray(true)
    r = np.asarray(recovered)
    if t.shape != r.shape or t.ndim != 1 or t.size == 0:
        raise ConfigError(
            f"labels must be two non-empty 1-D arrays of equal length, got {t.shape}, {r.shape}"
        )
    return float((t == r).mean())
