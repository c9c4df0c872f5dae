"""What every notebook maker here shares: its cells into a notebook with stable cell ids, and
the notebook written beside the maker (``python notebooks/make_<name>.py``)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A Python 3 notebook of ``(kind, source)`` cells, kind ``md`` or ``code``, no outputs."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in cells:
        nb.cells.append(new_markdown_cell(source) if kind == "md" else new_code_cell(source))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # stable ids: regenerating gives the same file
    return nb


def write(nb: nbformat.NotebookNode, name: str) -> Path:
    """``nb`` as ``notebooks/<name>``; prints and returns the path."""
    out = Path(__file__).with_name(name)
    nbformat.write(nb, out)
    print(out)
    return out
