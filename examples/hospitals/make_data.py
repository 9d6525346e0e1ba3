"""Three hospitals' CSV exports, made from scikit-learn's breast-cancer set.

Each hospital has a patient id column, a sensitive column (``postcode``), its own label mix
and its own row count, and a train and a test file, as a hospital would export them::

    python examples/hospitals/make_data.py            # writes examples/hospitals/data/
    fedfort simulate --config examples/hospitals/run.toml --out runs/hospitals
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
#: the share of malignant (label 0) rows each hospital keeps: different label mixes
_MALIGNANT_SHARE = (0.6, 0.3, 0.45)
#: rows each hospital gets (train + test): different sizes
_ROWS = (240, 150, 179)


def hospital_frames(seed: int = 0) -> dict[str, object]:
    """Each hospital's rows as a DataFrame (columns: patient_id, postcode, features, diagnosis)."""
    import pandas as pd

    bunch = load_breast_cancer()
    names = [str(n).replace(" ", "_") for n in bunch.feature_names]
    x, y = bunch.data, bunch.target
    rng = np.random.default_rng(seed)
    malignant = rng.permutation(np.flatnonzero(y == 0)).tolist()
    benign = rng.permutation(np.flatnonzero(y == 1)).tolist()
    frames: dict[str, object] = {}
    for h, (name, share, rows) in enumerate(zip(HOSPITALS, _MALIGNANT_SHARE, _ROWS, strict=True)):
        want_m = min(len(malignant), round(rows * share)) if h < 2 else len(malignant)
        want_b = min(len(benign), rows - want_m) if h < 2 else len(benign)
        take = [malignant.pop() for _ in range(want_m)] + [benign.pop() for _ in range(want_b)]
        idx = np.array(sorted(take))
        frame = pd.DataFrame(x[idx], columns=names)
        frame.insert(0, "patient_id", [f"{name[-1].upper()}-{i:05d}" for i in idx])
        frame.insert(1, "postcode", rng.choice(["02115", "10016", "60611"], size=len(idx)))
        frame["diagnosis"] = np.where(y[idx] == 0, "malignant", "benign")
        frames[name] = frame
    return frames


def write_hospitals(root: Path, seed: int = 0, test_share: float = 0.25) -> dict[str, object]:
    """Write ``root/<hospital>/train.csv`` and ``test.csv``; the frames, split."""
    from sklearn.model_selection import train_test_split

    out: dict[str, object] = {}
    for name, frame in hospital_frames(seed).items():
        train, test = train_test_split(
            frame, test_size=test_share, random_state=seed, stratify=frame["diagnosis"]
        )
        (root / name).mkdir(parents=True, exist_ok=True)
        train.to_csv(root / name / "train.csv", index=False)
        test.to_csv(root / name / "test.csv", index=False)
        out[name] = (train, test)
    return out


def hospitals_toml(root: Path, *, rounds: int = 20, extra: str = "") -> str:
    """A run config over the hospitals' files (paths absolute, so any working directory)."""
    return f"""
seed = 0
rounds = {rounds}

[data]
source = "files"
train = "{root}/{{client}}/train.csv"
test = "{root}/{{client}}/test.csv"
label = "diagnosis"
drop = ["patient_id", "postcode"]
standardize = true

[clients]
names = ["hospital-a", "hospital-b", "hospital-c"]
epochs = 2
batch_size = 16
lr = 0.05

[model]
name = "mlp"

[server]
fraction = 1.0
{extra}
"""


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data"
    for name, (train, test) in write_hospitals(target).items():  # type: ignore[misc]
        print(f"{target / name}: {len(train)} training rows, {len(test)} held out")
