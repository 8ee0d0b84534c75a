"""Every notebook in examples/ runs top to bottom without a cell error (nbclient + ipykernel), and none
is committed with outputs."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
CELL_TIMEOUT = 120  # seconds; a cell that takes longer is an error


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for i, cell in enumerate(book.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: cell {i} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_without_errors(bpf, path, monkeypatch):
    book = nbformat.read(path, as_version=4)
    # Quick runs in the test suite (the notebooks record for 10 s when a person runs them). The kernel
    # inherits this environment; its plots go through the inline backend into the cells' outputs.
    monkeypatch.setenv("PYNETMON_NOTEBOOK_SECONDS", "2")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    # The kernel runs in examples/: it imports this checkout's pynetmon (built in place, maybe not installed).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(EXAMPLES.parent),
                                                                   os.environ.get("PYTHONPATH")])))
    client = NotebookClient(book, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(EXAMPLES)}})
    client.execute()  # raises CellExecutionError naming the cell and its traceback
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert any(o.get("data", {}).get("image/png") for c in book.cells if c.cell_type == "code"
               for o in c.outputs) or "quick_start" in path.name, "the notebook drew no plot"
