"""What the notebook tests share: a kernel that runs this very interpreter."""

import json
import sys
from pathlib import Path


def write_kernelspec(folder: Path) -> None:
    """A python3 kernelspec that runs this interpreter, found first through JUPYTER_PATH."""
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3 (test)", "language": "python"})
    )
