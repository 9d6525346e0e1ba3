"""Sanitisation of a client's feature matrix before local training.

Two filters, each configured in :class:`~fedfort.edge.config.SanitiseConfig`:

- **Out-of-distribution rows.** ``robust_z``: per feature, ``z = |x - median| / MAD`` with
  the normal-consistent MAD (``scipy.stats.median_abs_deviation(scale="normal")``; a
  feature with zero MAD falls back to its standard deviation, a constant one is ignored); a
  row whose largest ``z`` exceeds ``z_threshold`` is flagged (Rousseeuw and Hubert, "Robust
  statistics for outlier detection", 2011). ``isolation_forest``: scikit-learn's
  IsolationForest (Liu, Ting and Zhou, ICDM 2008) flags the ``contamination`` share of rows
  it isolates fastest.
- **Label noise.** ``confident_learning`` (Northcutt, Jiang and Chuang, "Confident Learning:
  Estimating Uncertainty in Dataset Labels", JAIR 2021): out-of-fold class probabilities
  from a cross-validated logistic regression; the per-class threshold ``t_j`` is the mean
  probability of class ``j`` over rows labelled ``j``; a row counts towards class
  ``argmax {p_j : p_j >= t_j}`` of the confident joint, and is flagged when that class is not
  its label. ``knn``: Wilson's edited nearest neighbour rule (IEEE Trans. SMC, 1972): a row
  is flagged when its label is not the most common among its ``k`` nearest neighbours.

Sanitisation defends an honest data holder against its own corrupted records (entry errors,
sensor faults, noisy labels): it does nothing against a malicious client, which can skip it.
Only counts leave this module.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import median_abs_deviation

from fedfort.edge.config import SanitiseConfig
from fedfort.errors import DatasetError

__all__ = [
    "SanitiseResult",
    "confident_learning_flags",
    "knn_label_flags",
    "outlier_flags",
    "sanitise",
]


@dataclass(frozen=True)
class SanitiseResult:
    """Rows to keep and how many each filter flagged (a row may be flagged by both)."""

    keep: np.ndarray
    outliers_flagged: int
    label_issues_flagged: int
    rows_removed: int
    label_check_skipped: bool


def outlier_flags(x: np.ndarray, config: SanitiseConfig, seed: int) -> np.ndarray:
    """Boolean mask of out-of-distribution rows under ``config.outliers``."""
    n = x.shape[0]
    if config.outliers == "none" or n < 3:
        return np.zeros(n, dtype=bool)
    if config.outliers == "isolation_forest":
        from sklearn.ensemble import IsolationForest  # scikit-learn loads when it is used

        forest = IsolationForest(contamination=config.contamination, random_state=seed)
        flags: np.ndarray = forest.fit_predict(x) == -1
        return flags
    values = x.astype(np.float64)
    center = np.median(values, axis=0)
    scale = median_abs_deviation(values, axis=0, scale="normal")
    scale = np.where(scale > 0, scale, values.std(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(scale > 0, np.abs(values - center) / scale, 0.0)
    flagged: np.ndarray = z.max(axis=1) > config.z_threshold
    return flagged


def confident_learning_flags(
    x: np.ndarray, y: np.ndarray, folds: int, seed: int
) -> np.ndarray | None:
    """Rows whose label is off the diagonal of the confident joint (``None``: too few rows)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes, counts = np.unique(y, return_counts=True)
    checked_classes = classes[counts >= 2]
    if checked_classes.shape[0] < 2:
        return None
    rows = np.isin(y, checked_classes)
    xs, ys = x[rows], y[rows]
    splits = int(min(folds, counts[counts >= 2].min()))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probs = cross_val_predict(model, xs, ys, cv=cv, method="predict_proba")
    label_index = np.searchsorted(checked_classes, ys)
    onehot = np.eye(checked_classes.shape[0], dtype=bool)[label_index]
    thresholds = (probs * onehot).sum(axis=0) / onehot.sum(axis=0)
    confident = probs >= thresholds
    has_candidate = confident.any(axis=1)
    assigned = np.where(confident, probs, -np.inf).argmax(axis=1)
    flags = np.zeros(y.shape[0], dtype=bool)
    flags[rows] = has_candidate & (assigned != label_index)
    return flags


def knn_label_flags(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray | None:
    """Rows whose label is not the most common among their ``k`` nearest neighbours."""
    from sklearn.neighbors import NearestNeighbors

    n = y.shape[0]
    if n <= k:
        return None
    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)
    classes, codes = np.unique(y, return_inverse=True)
    near = codes[neighbours[:, 1:]]  # the first neighbour is the row itself
    votes = np.zeros((n, classes.shape[0]), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(n), k), near.ravel()), 1)
    own_votes = votes[np.arange(n), codes]
    flags: np.ndarray = own_votes < votes.max(axis=1)
    return flags


def sanitise(x: np.ndarray, y: np.ndarray, config: SanitiseConfig, seed: int) -> SanitiseResult:
    """Flag out-of-distribution rows, then label issues among the rest; keep or remove them."""
    n = y.shape[0]
    outliers = outlier_flags(x, config, seed)
    label = np.zeros(n, dtype=bool)
    skipped = False
    if config.label_noise != "none":
        rest = ~outliers
        found = (
            confident_learning_flags(x[rest], y[rest], config.folds, seed)
            if config.label_noise == "confident_learning"
            else knn_label_flags(x[rest], y[rest], config.k)
        )
        if found is None:
            skipped = True
        else:
            label[rest] = found
    flagged = outliers | label
    keep = ~flagged if config.action == "remove" else np.ones(n, dtype=bool)
    if not keep.any():
        raise DatasetError(
            "sanitisation would remove every row: raise edge.sanitise.z_threshold, lower "
            "contamination, or use action = 'flag'"
        )
    return SanitiseResult(
        keep=keep,
        outliers_flagged=int(outliers.sum()),
        label_issues_flagged=int(label.sum()),
        rows_removed=int((~keep).sum()),
        label_check_skipped=skipped,
    )
