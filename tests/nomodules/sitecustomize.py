"""Hide installed modules, for tests of a machine without an extra: put this folder on PYTHONPATH
and name the modules in ``HIDE_MODULES`` (comma-separated); importing them then fails, and
``importlib.util.find_spec`` finds nothing, as where they are not installed."""

from __future__ import annotations

import os
import sys

for _name in filter(None, (os.environ.get("HIDE_MODULES") or "").split(",")):
    sys.modules[_name.strip()] = None  # type: ignore[assignment]
