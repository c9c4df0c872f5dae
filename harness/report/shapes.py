"""The one rule for setting setups side by side: at a shape every one of them measured.

A setup's energy per query depends on the shape it ran at as much as on the setup: a batch of 8
shares each step's weights over 8 queries, a server with 8 requests in flight shares them over 8
streams. One setup at batch 8 against another at batch 1 compares batch sizes, not setups. So
every comparison between setups (the techniques table, the report's answer sentence, recommend,
the lifetime saving, the site's compare) takes its figures at a shape all of them measured:

- in-process (``infer`` cases): the largest batch size they all have, at the same prompt and new
  tokens (at that batch size: the most new tokens, then the longest prompt, that all have);
- served (closed-loop ``serve`` cases): the largest concurrency they all have, likewise; a served
  request is one query, so ``energy_per_request_j`` stands as its energy per query.

Where they share none, :meth:`Shapes.shared` returns None and the comparison prints no figure: it
says so, naming what each measured (:meth:`Shapes.measured`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.report.tables import SETUP, Tables
from harness.workloads import REGISTRY, trait

#: the figures a comparison takes at its shape (each with ``_ci_low`` / ``_ci_high``)
FIGURES = ["energy_per_query_j", "energy_per_token_j", "tokens_per_s"]
_COLUMNS = [c for m in FIGURES for c in (m, f"{m}_ci_low", f"{m}_ci_high")]
#: latency beside them, in-process only (the site's compare shows it at the shape compared)
LATENCY = ["ttft_s", "latency_p90_s"]
_SHAPE = ["size", "prompt_tokens", "new_tokens"]


def _family(kind: str) -> tuple:
    """What makes two workloads' shapes comparable: the same shape key, both in-process or both
    served (an exported model's queries at batch 8 are infer's batch 8)."""
    return trait(kind, "shape_key"), trait(kind, "engines") == "served"


def _with_shapes() -> list[str]:
    """The registered workloads whose cases are compared shape by shape (a ``shape_key``)."""
    return [kind for kind in REGISTRY if trait(kind, "shape_key")]


def shaped_kinds() -> tuple[str, ...]:
    """One workload for each family of comparable shapes (the first registered), the in-process
    ones first: a comparison prefers an in-process shape to a served one. A shape names it."""
    first: dict[tuple, str] = {}
    for kind in _with_shapes():
        first.setdefault(_family(kind), kind)
    return tuple(sorted(first.values(), key=lambda k: _family(k)[1]))


def _named(kind: str) -> str:
    """The workload that names ``kind``'s family of shapes."""
    return next(k for k in shaped_kinds() if _family(k) == _family(kind))


def size_word(workload: str) -> str:
    """What a shape's size is for ``workload``: ``batch``, ``concurrency``."""
    return trait(workload, "shape_word") or "size"


@dataclass(frozen=True)
class Shape:
    """A workload shape: a batch size (infer) or a concurrency (serve) at a prompt and new tokens."""

    workload: str
    size: int
    prompt_tokens: float
    new_tokens: float
    #: whether the run measured more than one prompt/new-token length (then the label names them)
    lengths_vary: bool = False

    @property
    def label(self) -> str:
        """``batch 8`` or ``concurrency 4`` (``batch 8 p32 n16`` where lengths vary in the run)."""
        text = f"{size_word(self.workload)} {self.size}"
        if self.lengths_vary:
            text += f" p{_int(self.prompt_tokens)} n{_int(self.new_tokens)}"
        return text


def _int(value) -> str:
    return str(int(value)) if pd.notna(value) and value >= 0 else "?"


def _in_process_rows(tables: Tables, kind: str) -> pd.DataFrame:
    """Cases of an in-process workload (``infer``): the case table's figures at each shape."""
    c = tables.cases
    rows = c[(c["workload"] == kind) & c["model"].notna()].copy()
    rows["energy_method"] = rows["energy_method"].fillna("unknown")
    rows["size"] = pd.to_numeric(rows.get(trait(kind, "shape_key")), errors="coerce")
    return rows[[*SETUP, *_SHAPE, *_COLUMNS, *LATENCY]].assign(workload=_named(kind))


def _served_rows(tables: Tables, kind: str) -> pd.DataFrame:
    """Closed-loop cases of a served workload (``serve``): medians and intervals per setup and
    shape, per request (a served request is one query)."""
    from harness.report.stats import aggregate

    f = tables.run.frame
    key = trait(kind, "shape_key")
    if "workload" not in f.columns or key not in f.columns:
        return pd.DataFrame(columns=[*SETUP, *_SHAPE, *_COLUMNS, "workload"])
    serve = f[(f["workload"] == kind) & (f["status"] == "ok") & f["model"].notna()].copy()
    if "rate_rps" in serve.columns:  # open loop: the offered rate, not a concurrency, shapes it
        serve = serve[pd.to_numeric(serve["rate_rps"], errors="coerce").isna()]
    if serve.empty or "energy_per_request_j" not in serve.columns:
        return pd.DataFrame(columns=[*SETUP, *_SHAPE, *_COLUMNS, "workload"])
    serve["energy_method"] = serve["energy_method"].fillna("unknown")
    serve["size"] = pd.to_numeric(serve[key], errors="coerce")
    serve["energy_per_query_j"] = pd.to_numeric(serve["energy_per_request_j"], errors="coerce")
    for col in ("energy_per_token_j", "tokens_per_s"):
        serve[col] = pd.to_numeric(serve.get(col), errors="coerce")
    stats = aggregate(serve, [*SETUP, *_SHAPE], FIGURES, with_cv=False).reset_index()
    return stats[[*SETUP, *_SHAPE, *_COLUMNS]].assign(workload=_named(kind))


def _rows(tables: Tables, kind: str) -> pd.DataFrame:
    if trait(kind, "engines") == "served":
        return _served_rows(tables, kind)
    return _in_process_rows(tables, kind)


def _order(shape: tuple) -> tuple:
    """Larger first: the size, then the new tokens, then the prompt."""
    size, prompt, new = shape
    return (size, new, prompt)


class Shapes:
    """Every shape each setup of a run measured, with its figures: built once per report."""

    def __init__(self, tables: Tables):
        parts = [p for p in (_rows(tables, k) for k in _with_shapes()) if not p.empty]
        rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if rows.empty:
            rows = pd.DataFrame(columns=[*SETUP, *_SHAPE, *_COLUMNS, "workload"])
        rows = rows[rows["size"].notna()].copy()
        # an unknown length is a length of its own (NaN never equals NaN in a set of shapes)
        rows[["prompt_tokens", "new_tokens"]] = rows[["prompt_tokens", "new_tokens"]].fillna(-1)
        self.rows = rows
        self._by = {tuple(k): g for k, g in rows.groupby(SETUP, sort=False)} if len(rows) else {}
        self._none = rows.iloc[0:0]
        self._vary = {
            w: g[["prompt_tokens", "new_tokens"]].drop_duplicates().shape[0] > 1
            for w, g in rows.groupby("workload")
        }

    @classmethod
    def of(cls, tables: Tables) -> Shapes:
        """The shapes of ``tables``, built once per report and kept with them."""
        found = getattr(tables, "_shapes", None)
        if found is None:
            found = cls(tables)
            tables._shapes = found
        return found

    def _of(self, key) -> pd.DataFrame:
        return self._by.get(tuple(key), self._none)

    def _found(self, key, workload: str, size: int | None) -> set[tuple]:
        r = self._of(key)
        r = r[r["workload"] == workload]
        if size is not None:
            r = r[r["size"].astype(float) == size]
        return set(map(tuple, r[_SHAPE].astype(float).to_numpy().tolist()))

    def shared(self, keys, size: int | None = None) -> Shape | None:
        """The shape every setup of ``keys`` measured (see the module's docstring), or None.

        In-process before served; the largest size, then the most new tokens, then the longest
        prompt (``size``: only shapes of that batch size or concurrency). This is the one rule
        every comparison between setups follows.
        """
        keys = list(keys)
        if not keys:
            return None
        for workload in shaped_kinds():
            common = None
            for key in keys:
                found = self._found(key, workload, size)
                common = found if common is None else common & found
                if not common:
                    break
            if common:
                return self._shape(workload, max(common, key=_order))
        return None

    def most_shared(self, keys, size: int | None = None) -> tuple[Shape | None, list]:
        """For many setups that may share no shape (recommend): :meth:`shared` where they all
        share one; else the shape the most of them measured (ties: by :meth:`shared`'s order),
        and the setups measured at it. The others have no figure to compare."""
        keys = list(keys)
        shape = self.shared(keys, size)
        if shape is not None or not keys:
            return shape, keys
        for workload in shaped_kinds():
            count: dict[tuple, list] = {}
            for key in keys:
                for found in self._found(key, workload, size):
                    count.setdefault(found, []).append(key)
            if count:
                best = max(count, key=lambda t: (len(count[t]), _order(t)))
                return self._shape(workload, best), count[best]
        return None, []

    def _shape(self, workload: str, found: tuple) -> Shape:
        size, prompt, new = found
        return Shape(workload, int(size), prompt, new, self._vary.get(workload, False))

    def at(self, key, shape: Shape | None) -> pd.Series:
        """The figures (:data:`FIGURES` with intervals) of ``key`` at ``shape`` (NaN where none)."""
        empty = pd.Series(math.nan, index=_COLUMNS, dtype=float)
        if shape is None:
            return empty
        r = self._of(key)
        r = r[
            (r["workload"] == shape.workload)
            & (r["size"].astype(float) == shape.size)
            & (r["prompt_tokens"].astype(float) == shape.prompt_tokens)
            & (r["new_tokens"].astype(float) == shape.new_tokens)
        ]
        if r.empty:
            return empty
        return r.iloc[-1][_COLUMNS].astype(float)

    def headline(self, key) -> str | None:
        """The label of the shape of a setup's unsuffixed summary figures: its headline, the
        largest batch it measured in-process (:meth:`shared` of the setup alone)."""
        shape = self.shared([key])
        in_process = shape is not None and trait(shape.workload, "engines") != "served"
        return shape.label if in_process else None

    def listed(self, key) -> list[tuple[Shape, pd.Series]]:
        """Every shape ``key`` measured with its figures, in the order :meth:`shared` prefers
        (in-process first, then the largest): the first of one setup's list that another setup
        also has is the shape both are compared at."""
        out = []
        r = self._of(key)
        for workload in shaped_kinds():
            g = r[r["workload"] == workload]
            found = {tuple(float(x) for x in t[_SHAPE]): t for _, t in g.iterrows()}
            for t in sorted(found, key=_order, reverse=True):
                out.append((self._shape(workload, t), found[t]))
        return out

    def measured(self, key) -> str:
        """What ``key`` measured, for a comparison that has no shared shape: ``batch 1, 8``."""
        r = self._of(key)
        if r.empty:
            return "no energy per query"
        parts = []
        for workload, g in r.groupby("workload", sort=False):
            sizes = sorted({int(s) for s in g["size"]})
            parts.append(f"{size_word(workload)} {', '.join(str(s) for s in sizes)}")
        return "; ".join(parts)

    def no_shared(self, keys) -> str:
        """``no shape both measured (a at batch 1; b at batch 8)``."""
        what = "; ".join(f"{'/'.join(k[:3])} at {self.measured(k)}" for k in keys)
        both = "both" if len(list(keys)) == 2 else "all"
        return f"no shape {both} measured ({what})"
