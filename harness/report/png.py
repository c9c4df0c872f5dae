"""A figure written as a PNG: rendered to memory, then written atomically (``store.write_bytes``).

Every figure of the report goes through ``save_png``, so a half-written PNG never sits under its
name. It imports only matplotlib and store: any report module may use it without an import cycle.
"""

from __future__ import annotations

import io
from pathlib import Path

from harness import store

DPI = 100


def save_png(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        # zlib level 1: a third of the time of the default level for ~6% larger files
        fig.savefig(buf, dpi=DPI, format="png", pil_kwargs={"compress_level": 1})
    finally:
        plt.close(fig)
    store.write_bytes(path, buf.getvalue())
    return Path(path)
