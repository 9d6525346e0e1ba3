"""The clients' own data: files (CSV, Parquet, npz/npy, image folders) and Python objects.

A hospital's export becomes the model's input with its column names intact; every error names
the file, the field and the row; the schema is agreed, recorded in the run's identity and
checked; federated standardisation equals the pooled statistics; and a federation trained on
three hospitals' CSVs reaches the accuracy of centralised training on the pooled rows.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import fedfort
from fedfort.config import load_config, parse_config
from fedfort.data.files import TableSpec, read_table
from fedfort.data.preprocessing import FeatureStatistics, Preprocessing
from fedfort.data.schema import DataSchema
from fedfort.errors import ConfigError, DatasetError, InvalidRecord
from fedfort.run.data import split_data, with_data_schema
from hospitals import HOSPITALS, hospitals_toml, write_hospitals

SPEC = TableSpec(label="diagnosis", drop=("patient_id", "postcode"))


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hospitals")
    write_hospitals(root)
    return root


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d"],
            "mean_radius": [1.0, 2.0, 3.0, 4.0],
            "mean_perimeter": [10.0, 20.0, 30.0, 40.0],
            "diagnosis": ["benign", "malignant", "benign", "benign"],
        }
    )


# -- readers ------------------------------------------------------------------------------------


def test_csv_and_parquet_read_alike_with_column_names(tmp_path: Path) -> None:
    frame = _frame()
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    csv = read_table(tmp_path / "t.csv", SPEC)
    parquet = read_table(tmp_path / "t.parquet", SPEC)
    assert csv.features == parquet.features == ("mean_radius", "mean_perimeter")
    np.testing.assert_array_equal(csv.x, parquet.x)
    assert csv.labels.tolist() == ["benign", "malignant", "benign", "benign"]
    assert csv.label_set() == ("benign", "malignant")


def test_npz_and_npy_read_without_pickle(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    y = np.array([0, 1, 0, 1])
    np.savez(tmp_path / "xy.npz", x=x, y=y, feature_names=np.array(["a", "b", "c"]))
    table = read_table(tmp_path / "xy.npz", TableSpec(label="y"))
    assert table.features == ("a", "b", "c")
    np.testing.assert_array_equal(table.x, x.astype(np.float32))
    assert table.labels.tolist() == ["0", "1", "0", "1"]
    np.save(tmp_path / "m.npy", np.column_stack([x, y]))
    npy = read_table(tmp_path / "m.npy", TableSpec(label="out", columns=("a", "b", "c", "out")))
    np.testing.assert_array_equal(npy.x, table.x)
    # a pickled array is never loaded
    np.savez(tmp_path / "obj.npz", x=x, y=np.array([{"a": 1}] * 4, dtype=object))
    with pytest.raises(DatasetError, match="never unpickles"):
        read_table(tmp_path / "obj.npz", TableSpec(label="y"))


def test_image_folder_one_subfolder_per_class(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, suffix in (("cat", "png"), ("dog", "jpg")):
        (tmp_path / "img" / label).mkdir(parents=True)
        for i in range(3):
            pixels = (rng.random((6, 5)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "img" / label / f"{i}.{suffix}")
    table = read_table(tmp_path / "img", TableSpec())
    assert table.image_shape == (6, 5)
    assert table.x.shape == (6, 30) and table.x.min() >= 0.0 and table.x.max() <= 1.0
    assert table.features[0] == "pixel_0_0" and table.label_set() == ("cat", "dog")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "img" / "dog" / "odd.png")
    with pytest.raises(DatasetError, match="image_size"):
        read_table(tmp_path / "img", TableSpec())
    resized = read_table(tmp_path / "img", TableSpec(image_size=(6, 5)))
    assert resized.x.shape == (7, 30)


# -- errors a new user meets ----------------------------------------------------------------------


def test_errors_name_the_file_the_field_and_the_row(tmp_path: Path) -> None:
    frame = _frame()
    with pytest.raises(DatasetError, match="no such file"):
        read_table(tmp_path / "absent.csv", SPEC)
    frame.to_csv(tmp_path / "t.npz", index=False)
    with pytest.raises(DatasetError, match=r"not an \.npz archive.*CSV"):
        read_table(tmp_path / "t.npz", SPEC)
    with zipfile.ZipFile(tmp_path / "z.csv", "w") as z:
        z.writestr("x.npy", b"0")
    with pytest.raises(DatasetError, match="zip archive"):
        read_table(tmp_path / "z.csv", SPEC)
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DatasetError, match=r"label column 'diagnosys'.*did you mean 'diagnosis'"):
        read_table(tmp_path / "t.csv", TableSpec(label="diagnosys"))
    text = frame.assign(sex=["F", "M", "F", "M"])
    text.to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(InvalidRecord, match=r"field 'sex', row 0: 'F' is not a number.*categories"):
        read_table(tmp_path / "text.csv", SPEC)
    encoded = read_table(
        tmp_path / "text.csv",
        TableSpec(label="diagnosis", drop=("patient_id",), categories={"sex": ("F", "M")}),
    )
    assert encoded.features[-2:] == ("sex=F", "sex=M")
    np.testing.assert_array_equal(encoded.x[:, -2], [1, 0, 1, 0])
    with pytest.raises(InvalidRecord, match=r"field 'sex', row 1: 'M' is not one of \['F'\]"):
        read_table(
            tmp_path / "text.csv",
            TableSpec(label="diagnosis", drop=("patient_id",), categories={"sex": ("F",)}),
        )
    unlabelled = frame.astype({"diagnosis": object})
    unlabelled.loc[2, "diagnosis"] = None
    unlabelled.to_csv(tmp_path / "nolabel.csv", index=False)
    with pytest.raises(InvalidRecord, match="field 'diagnosis', row 2: label is missing"):
        read_table(tmp_path / "nolabel.csv", SPEC)


def test_missing_values_need_a_policy_named_by_field_and_row(
    hospitals: Path, tmp_path: Path
) -> None:
    frame = pd.read_csv(hospitals / "hospital-b" / "train.csv")
    frame.loc[3, "mean_perimeter"] = np.nan
    for name in HOSPITALS:
        (tmp_path / name).mkdir()
        source = frame if name == "hospital-b" else pd.read_csv(hospitals / name / "train.csv")
        source.to_csv(tmp_path / name / "train.csv", index=False)
    toml = hospitals_toml(tmp_path).replace('test = "', '# test = "')
    config = parse_config(_toml(toml))
    with pytest.raises(InvalidRecord, match=r"field 'mean_perimeter', row 3: value is missing"):
        split_data(config)
    imputed = parse_config(_toml(toml.replace("standardize = true", 'impute = "mean"')))
    data = split_data(imputed)
    assert np.isnan(data.client_arrays(1)[0]).sum() == 1  # imputed by the federated transform
    raw = [data.client_arrays(k)[0] for k in range(3)]
    transform = Preprocessing.from_statistics(
        FeatureStatistics.sum([FeatureStatistics.of(x) for x in raw]),
        standardize=False,
        impute=True,
    )
    filled = transform.apply(raw[1])
    column = list(data.schema.features).index("mean_perimeter")
    pooled = np.concatenate(raw)[:, column]
    assert filled[3, column] == pytest.approx(np.nanmean(pooled), rel=1e-6)


def _toml(text: str) -> dict[str, object]:
    import tomllib

    return tomllib.loads(text)


# -- the schema the federation agrees on --------------------------------------------------------


def test_schema_is_inferred_recorded_in_the_identity_and_checked(
    hospitals: Path, tmp_path: Path
) -> None:
    (tmp_path / "run.toml").write_text(hospitals_toml(hospitals))
    config = load_config(tmp_path / "run.toml")
    resolved = with_data_schema(config)
    assert resolved.data.classes == ["benign", "malignant"]
    assert resolved.data.features is not None and "mean_perimeter" in resolved.data.features
    assert "patient_id" not in resolved.data.features and "postcode" not in resolved.data.features
    assert resolved.identity_hash() != config.identity_hash()
    # a hospital whose export lacks a column is named with the column
    broken = tmp_path / "broken"
    for name in HOSPITALS:
        (broken / name).mkdir(parents=True)
        frame = pd.read_csv(hospitals / name / "train.csv")
        if name == "hospital-b":
            frame = frame.drop(columns=["mean_perimeter"])
        frame.to_csv(broken / name / "train.csv", index=False)
    pinned = hospitals_toml(broken).replace('test = "', '# test = "')
    body = _toml(pinned)
    body["data"]["features"] = resolved.data.features  # type: ignore[index]
    with pytest.raises(
        DatasetError, match=r"hospital-b/train.csv.*missing column 'mean_perimeter'"
    ):
        split_data(parse_config(body))


def test_schema_differences_in_words() -> None:
    agreed = DataSchema(("a", "b", "c"), ("benign", "malignant"))
    assert agreed.differences(DataSchema(("a", "b", "c"), ("benign",))) == []
    diffs = agreed.differences(DataSchema(("a", "c", "d"), ("benign", "unknown")))
    assert diffs == [
        "missing column 'b'",
        "unexpected column 'd'",
        "label 'unknown' not among the federation's classes 'benign', 'malignant'",
    ]
    assert "another order" in agreed.differences(DataSchema(("c", "b", "a"), ("benign",)))[0]
    assert agreed.digest() == DataSchema(("a", "b", "c"), ("benign", "malignant")).digest()
    assert DataSchema.from_dict(agreed.to_dict()) == agreed


# -- federated preprocessing ----------------------------------------------------------------------


def test_standardize_equals_the_pooled_statistics(hospitals: Path, tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text(hospitals_toml(hospitals, rounds=1))
    sim = fedfort.Simulation(load_config(tmp_path / "run.toml"))
    sim.run()  # the statistics round runs before round 1
    pooled = np.concatenate([sim.data.client_arrays(k)[0] for k in range(3)]).astype(np.float64)
    assert sim.preprocessing is not None
    np.testing.assert_allclose(sim.preprocessing.shift, pooled.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(sim.preprocessing.scale, pooled.std(axis=0), rtol=1e-7)
    x0 = sim.clients.get("hospital-a").data.x.numpy()
    expected = (sim.data.client_arrays(0)[0] - pooled.mean(axis=0)) / pooled.std(axis=0)
    np.testing.assert_allclose(x0, expected, rtol=1e-4, atol=1e-5)


def test_clients_are_named(hospitals: Path, tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text(hospitals_toml(hospitals, rounds=1))
    config = load_config(tmp_path / "run.toml")
    assert config.clients.count == 3 and config.clients.ids() == list(HOSPITALS)
    with pytest.raises(ConfigError, match="not valid"):
        parse_config({"clients": {"names": ["ok", "not ok"]}})
    with pytest.raises(ConfigError, match="appear twice"):
        parse_config({"clients": {"names": ["a", "a"]}})
    with pytest.raises(ConfigError, match="give only the names"):
        parse_config({"clients": {"names": ["a", "b"], "count": 3}})
    record = fedfort.Simulation(config).run().records[-1]
    assert record["selected"] == record["accepted"] == list(HOSPITALS)


# -- training on the hospitals' data --------------------------------------------------------------


def _pooled_test(sim: fedfort.Simulation) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for k in range(len(sim.ids)):
        held = sim.data.client_test_arrays(k)
        assert held is not None
        xs.append(held[0])
        ys.append(held[1])
    x = np.concatenate(xs)
    assert sim.preprocessing is not None
    return torch.from_numpy(sim.preprocessing.apply(x)), torch.from_numpy(np.concatenate(ys))


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.slow
def test_three_hospitals_match_centralised_training(hospitals: Path, tmp_path: Path) -> None:
    """Bar: within 2 points of centralised training on the pooled data (same model, same
    epochs over the data, pooled standardisation), both evaluated on the pooled test files."""
    rounds = 20
    (tmp_path / "run.toml").write_text(hospitals_toml(hospitals, rounds=rounds))
    sim = fedfort.Simulation(load_config(tmp_path / "run.toml"), out_dir=tmp_path / "run")
    last = sim.run().records[-1]
    x_test, y_test = _pooled_test(sim)
    federated = _accuracy(sim.global_module(), x_test, y_test)
    # each hospital evaluated the final model on its own test file; the example-weighted
    # overall is the accuracy on the pooled test files
    evaluation = last["evaluation"]
    assert sorted(evaluation["clients"]) == list(HOSPITALS)
    assert evaluation["overall"]["accuracy"] == pytest.approx(federated, abs=1e-6)
    assert {"auc", "f1", "balanced_accuracy"} <= set(evaluation["overall"])

    x = np.concatenate([sim.data.client_arrays(k)[0] for k in range(3)])
    y = np.concatenate([sim.data.client_arrays(k)[1] for k in range(3)])
    mean, std = x.mean(axis=0), x.std(axis=0)
    xt = torch.from_numpy(((x - mean) / std).astype(np.float32))
    yt = torch.from_numpy(y)
    torch.manual_seed(0)
    central = fedfort.models.MLP(x.shape[1], 2)
    opt = torch.optim.SGD(central.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    for _ in range(rounds * 2):  # the clients' epochs over the same rows
        order = torch.randperm(len(yt), generator=gen)
        for i in range(0, len(yt), 16):
            batch = order[i : i + 16]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(central(xt[batch]), yt[batch]).backward()
            opt.step()
    pooled = _accuracy(central, x_test, y_test)
    assert federated >= 0.9, federated
    assert abs(federated - pooled) <= 0.02, (federated, pooled)


def test_data_as_python_objects_trains_like_the_files(hospitals: Path, tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text(hospitals_toml(hospitals, rounds=2))
    config = load_config(tmp_path / "run.toml")
    from_files = fedfort.Simulation(config)
    from_files.run()
    frames = {h: pd.read_csv(hospitals / h / "train.csv") for h in HOSPITALS}
    body = config.to_dict()
    body["data"].update(source="embedded", train=None, test=None, standardize=False)
    body["data"].update(drop=["patient_id", "postcode"], label="diagnosis")
    body["clients"].pop("names")
    objects = fedfort.Simulation(body, out_dir=tmp_path / "objects", data=frames)
    assert objects.ids == list(HOSPITALS) and objects.config.data.source == "objects"
    objects.run(rounds=2)
    # the same rows, unscaled this time: differs from the standardized files run
    assert not np.array_equal(objects.model, from_files.model)
    # arrays and a torch Dataset give the same data as the frames
    arrays = {}
    for h, frame in frames.items():
        x = frame.drop(columns=["patient_id", "postcode", "diagnosis"]).to_numpy(np.float32)
        arrays[h] = (x, frame["diagnosis"].to_numpy())
    names = list(objects.schema.features)
    again = fedfort.Simulation(body, data=arrays, feature_names=names)
    assert again.config.data.digest == objects.config.data.digest
    tensors = {
        h: torch.utils.data.TensorDataset(
            torch.from_numpy(x), torch.from_numpy((y == "malignant").astype(np.int64))
        )
        for h, (x, y) in arrays.items()
    }
    numeric = fedfort.Simulation(body, data=tensors, feature_names=names)
    assert numeric.schema.classes == ("0", "1") and numeric.schema.features == tuple(names)
    # a resume needs the same data again, and refuses other data
    with pytest.raises(ConfigError, match="give the same data again"):
        fedfort.Simulation.resume(tmp_path / "objects", rounds=3)
    changed = {**frames, "hospital-a": frames["hospital-a"].iloc[1:]}
    with pytest.raises(Exception, match="digest"):
        fedfort.Simulation.resume(tmp_path / "objects", rounds=3, data=changed)
    resumed = fedfort.Simulation.resume(tmp_path / "objects", rounds=3, data=frames)
    assert resumed.run().records[-1]["round"] == 3


def test_edge_checks_name_the_features_of_the_files(hospitals: Path, tmp_path: Path) -> None:
    """The [edge] schema speaks the files' column names: per-feature checks by name, and
    errors naming the field, never ``x[:, j]``."""
    base = hospitals_toml(hospitals, rounds=1) + "\n[edge]\nenabled = true\n"
    strict = base + "\n[edge.by_feature.mean_radius]\nmax = 10.0\n"
    with pytest.raises(InvalidRecord, match=r"field 'mean_radius', row \d+: .* above the maximum"):
        fedfort.Simulation(parse_config(_toml(strict)))
    dropped = strict.replace("max = 10.0", "max = 10.0\ninvalid = 'drop_row'")
    sim = fedfort.Simulation(parse_config(_toml(dropped)))
    kept = sim.clients.get("hospital-a").data_metrics
    assert 0 < kept["edge_rows_dropped_invalid"] < kept["edge_rows_in"]
    unknown = base + "\n[edge.by_feature.mean_radios]\nmax = 10.0\n"
    with pytest.raises(DatasetError, match=r"by_feature\] names \['mean_radios'\]"):
        fedfort.Simulation(parse_config(_toml(unknown)))


def test_the_exported_model_and_its_transform_reload_with_plain_pytorch(
    hospitals: Path, tmp_path: Path
) -> None:
    """A model trained on standardised features is exported with the transform it needs: plain
    PyTorch and the JSON reproduce the hospitals' own evaluation of the final model."""
    import json

    from fedfort.cli import main

    (tmp_path / "run.toml").write_text(hospitals_toml(hospitals, rounds=3))
    sim = fedfort.Simulation(load_config(tmp_path / "run.toml"), out_dir=tmp_path / "run")
    last = sim.run().records[-1]
    sim.close()
    assert main(["model", "export", str(tmp_path / "run"), "--out", str(tmp_path / "m.pt")]) == 0
    transform = json.loads((tmp_path / "m.preprocessing.json").read_text())
    model = fedfort.models.MLP(len(transform["features"]), 2)
    model.load_state_dict(torch.load(tmp_path / "m.pt"))
    xs, ys = [], []
    for name in HOSPITALS:
        frame = pd.read_csv(hospitals / name / "test.csv")
        xs.append(frame[transform["features"]].to_numpy(np.float64))
        ys.append((frame["diagnosis"] == "malignant").to_numpy(np.int64))
    x = (np.concatenate(xs) - np.array(transform["shift"])) / np.array(transform["scale"])
    with torch.no_grad():
        predicted = model(torch.from_numpy(x.astype(np.float32))).argmax(1).numpy()
    accuracy = float((predicted == np.concatenate(ys)).mean())
    assert accuracy == pytest.approx(last["evaluation"]["overall"]["accuracy"], abs=1e-6)


def test_the_report_names_the_data_source_clients_and_features(
    hospitals: Path, tmp_path: Path
) -> None:
    from fedfort.report.html import build_report

    (tmp_path / "run.toml").write_text(hospitals_toml(hospitals, rounds=1))
    with fedfort.Simulation(load_config(tmp_path / "run.toml"), out_dir=tmp_path / "run") as sim:
        sim.run()
    page = build_report(tmp_path / "run")
    assert "hospital-a, hospital-b, hospital-c" in page
    assert "30 feature columns, in model-input order" in page and "mean_perimeter" in page
    assert "benign, malignant" in page and "standardize" in page


def test_a_federation_whose_labels_hold_one_class_is_refused(tmp_path: Path) -> None:
    frame = _frame().assign(diagnosis="benign")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        frame.to_csv(tmp_path / name / "train.csv", index=False)
    body = {
        "data": {
            "source": "files",
            "train": f"{tmp_path}/{{client}}/train.csv",
            "label": "diagnosis",
            "drop": ["patient_id"],
        },
        "clients": {"names": ["a", "b"]},
    }
    with pytest.raises(DatasetError, match="at least 2 classes"):
        split_data(parse_config(body))
