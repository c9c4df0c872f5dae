"""CSV files a spreadsheet cannot execute (OWASP CSV injection guidance).

A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to
Excel, LibreOffice and Google Sheets. Such cells get a leading single quote, which makes them plain
text. Numbers stay numbers: only text columns are touched, so ``-0.5`` in a numeric column
is written as a number. Every text cell is also wrapped in double quotes (as OWASP advises), which
keeps embedded commas, quotes, tabs and carriage returns inside their cell; numbers are unquoted.
"""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def restore_cell(value: object) -> object:
    """The text a neutralised cell stood for (reading back a CSV this project wrote)."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value


def neutralise(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot start a formula; numeric columns are left as they are."""
    out = frame.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):
            values = out[col].to_numpy(dtype=object)
            risky = np.fromiter(
                (isinstance(v, str) and v.startswith(FORMULA_STARTS) for v in values),
                dtype=bool,
                count=len(values),
            )
            if risky.any():
                out[col] = out[col].astype(object)
                out.loc[risky, col] = "'" + out.loc[risky, col].astype(str)
    out.columns = [neutralise_cell(str(c)) for c in out.columns]
    return out


def to_csv_text(frame: pd.DataFrame) -> str:
    return neutralise(frame).to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
