"""One report figure: its file name, how it is drawn from the run's analysis, and its caption.

The caption is what report.md prints above the figure; it is written beside the figure's drawing
function (plots.py, techniques.py, serving.py), never in a list of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """``draw(analysis, path)`` writes the PNG and returns its path, or None without data."""

    name: str
    draw: Callable[..., Path | None]
    caption: str
