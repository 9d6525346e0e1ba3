"""Every fenced ``python`` block of README.md and docs/*.md runs as it is written.

The examples teach users, so each one is run on its own in a fresh interpreter, with a
temporary directory as the working directory (holding a link to the repository's
``examples/``, which the examples name by relative path, as from the repository root) and a
timeout. A block that cannot run on its own is marked in the markdown by an HTML comment on
the line before its fence, saying why::

    <!-- fedfort: no-run -- the arrays are the client's own data -->

and one that trains for longer than a test should wait is marked ``<!-- fedfort: slow -->``
and runs in the slow suite. The skipped blocks and their reasons appear in pytest's summary
(``-ra``), beside the count of blocks that ran.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT_S = 180.0

FENCE = re.compile(r"^(?P<indent>\s*)```python\s*$")
MARKER = re.compile(r"^\s*<!--\s*fedfort:\s*(?P<kind>no-run|slow)\b(?P<why>.*?)-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced python block: where it is, its code, and how it is marked."""

    document: Path
    line: int
    code: str
    marker: str | None
    reason: str

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def python_blocks(document: Path) -> list[Block]:
    """The fenced python blocks of ``document``, dedented, with the marker before each."""
    lines = document.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent = opening.group("indent")
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"{document.name}:{i + 1}: a python fence is never closed")
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        code = textwrap.dedent("\n".join(line.removeprefix(indent) for line in lines[i + 1 : end]))
        blocks.append(
            Block(
                document,
                i + 1,
                code + "\n",
                marker.group("kind") if marker else None,
                marker.group("why").strip(" -:") if marker else "",
            )
        )
        i = end + 1
    return blocks


BLOCKS = [block for document in DOCUMENTS for block in python_blocks(document)]


def _param(block: Block) -> object:
    marks = [pytest.mark.slow] if block.marker == "slow" else []
    return pytest.param(block, id=block.name, marks=marks)


def test_the_documents_have_python_examples_and_every_marker_says_why() -> None:
    assert len(BLOCKS) >= 8, [b.name for b in BLOCKS]
    unexplained = [b.name for b in BLOCKS if b.marker == "no-run" and not b.reason]
    assert not unexplained, f"no-run markers must say why the block cannot run: {unexplained}"
    ran = sum(b.marker is None for b in BLOCKS)
    assert ran > len(BLOCKS) // 2, "most examples must run; mark only true fragments"


def test_blocks_are_found_with_their_markers_and_indentation(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n```python\nprint(1)\n```\n\n"
        "<!-- fedfort: no-run -- needs a running server -->\n```python\nconnect()\n```\n"
        "- a list item:\n\n  <!-- fedfort: slow -->\n"
        "  ```python\n  if True:\n      train()\n  ```\n"
        "```toml\nrounds = 1\n```\n",
        encoding="utf-8",
    )
    found = [(b.line, b.code, b.marker, b.reason) for b in python_blocks(page)]
    assert found == [
        (3, "print(1)\n", None, ""),
        (8, "connect()\n", "no-run", "needs a running server"),
        (14, "if True:\n    train()\n", "slow", ""),
    ]
    page.write_text("```python\nprint(1)\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="never closed"):
        python_blocks(page)


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_the_example_runs(block: Block, tmp_path: Path) -> None:
    if block.marker == "no-run":
        pytest.skip(f"{block.name} is marked no-run: {block.reason}")
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    script = tmp_path / "example.py"
    script.write_text(block.code, encoding="utf-8")
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": _pythonpath()}
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"{block.name} ran for more than {TIMEOUT_S:.0f} s: shorten the example's run or "
            "mark it <!-- fedfort: slow -->"
        )
    assert done.returncode == 0, (
        f"{block.name} failed (exit {done.returncode}):\n{block.code}\n--- stderr ---\n"
        f"{done.stderr[-4000:]}"
    )


def _pythonpath() -> str:
    """This checkout's package first, then whatever the caller set."""
    parts = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)
