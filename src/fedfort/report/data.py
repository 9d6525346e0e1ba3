"""The report's account of the data: where it came from and the schema the clients agreed on.

The clients' rows never reach the server; what the report can state is the source, the
clients' names, the feature columns in model-input order (by name, as the clients' files
have them), the classes or the regression target, and the federated preprocessing.
"""

from __future__ import annotations

from typing import Any

from fedfort.report.markup import esc, table

__all__ = ["data_section"]


def data_section(config: dict[str, Any]) -> str | None:
    """The section's HTML, or ``None`` when the run's config is not known."""
    data: dict[str, Any] = config.get("data") or {}
    if not data:
        return None
    source = data.get("source", "embedded")
    clients: dict[str, Any] = config.get("clients") or {}
    names = clients.get("names")
    rows: list[list[Any]] = [
        ["source", source if source != "embedded" else f"embedded: {data.get('dataset')}"],
        ["clients", ", ".join(names) if names else f"{clients.get('count')} (numbered)"],
        ["task", data.get("task", "classification")],
    ]
    if source == "files":
        rows += [["train file", data.get("train")], ["test file", data.get("test") or "none"]]
    classes = data.get("classes")
    if classes:
        rows.append(["classes", ", ".join(map(str, classes))])
    scaling = [k for k in ("standardize",) if data.get(k)]
    if data.get("impute", "none") != "none":
        scaling.append(f"impute {data['impute']}")
    rows.append(["federated preprocessing", ", ".join(scaling) or "none"])
    html = table(["", ""], rows)
    features = data.get("features")
    if features:
        listed = ", ".join(esc(f) for f in features)
        html += (
            f"<details><summary>{len(features)} feature columns, in model-input order"
            f"</summary><p>{listed}</p></details>"
        )
    return html
