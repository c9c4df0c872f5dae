"""Any program, measured as a case: each repetition runs it once inside one meter window.

The program succeeds when it exits 0. If its last line of output is a JSON object, the numeric
fields named like record columns (``tokens_out``, ``queries``, ``samples``, ``accuracy``...,
see ``harness.records.WORK_FIELDS``) join the repetition's record, so a script can report the work
it did and the energy per unit follows.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from harness.errors import HarnessError
from harness.records import WORK_FIELDS
from harness.redact import last_line
from harness.schema import CaseShape, WorkloadSettings, check_name
from harness.workloads.base import Repetition, Workload

#: at most this much of the program's output is kept in the case folder
OUTPUT_KEEP_BYTES = 64 * 1024


def _status_text(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class CommandSettings(WorkloadSettings):
    """The suite's command block: one case per hardware profile."""

    type: Literal["command"]
    name: str
    run: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None

    _name = field_validator("name")(check_name)

    @field_validator("env", mode="before")
    @classmethod
    def _numbers_as_text(cls, value):
        # OMP_NUM_THREADS: 4 in YAML is a number; the environment only holds text
        if isinstance(value, dict):
            return {
                k: str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                for k, v in value.items()
            }
        return value

    def shapes(self) -> list[tuple[dict, str, str]]:
        spec = {"type": self.type, "name": self.name, "run": list(self.run),
                "env": dict(self.env), "cwd": self.cwd}  # fmt: skip
        return [(spec, self.name, self.name)]


class CommandCase(CaseShape):
    """One command case's workload dict (``CommandSettings.shapes``: the block as written)."""

    type: Literal["command"]
    name: str
    run: Annotated[list[str], Field(min_length=1)]
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None


class CommandWorkload(Workload):
    type = "command"
    settings = CommandSettings
    case = CommandCase
    shape: CommandCase
    own_program = True

    def setup(self) -> dict:
        shape = self.shape
        self.cwd = shape.cwd or None
        if self.cwd and not Path(self.cwd).is_dir():
            raise HarnessError(f"command {shape.name}: cwd {self.cwd} is not a folder")
        program = shape.run[0]
        if os.sep in program:
            base = Path(self.cwd or ".") / program
            found = base if base.is_file() and os.access(base, os.X_OK) else None
        else:
            found = shutil.which(program, path={**os.environ, **shape.env}.get("PATH"))
        if found is None:
            raise HarnessError(f"command {shape.name}: program not found: {program}")
        self.argv = list(shape.run)
        self.env = {**os.environ, **shape.env}
        self.exit_status: int | None = None
        self.notes: list[str] = []
        return {}

    def _execute(self) -> subprocess.CompletedProcess:
        try:
            # same process group as the worker: a case timeout kills the program too
            done = subprocess.run(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
            )
        except OSError as e:
            raise HarnessError(
                f"command {self.shape.name}: cannot start {self.argv[0]}: {e}"
            ) from None
        self.exit_status = done.returncode
        self._keep_output(done)
        if done.returncode != 0:
            why = last_line(done.stderr) or last_line(done.stdout)
            msg = f"command {_status_text(done.returncode)}"
            raise HarnessError(f"{msg}: {why[:300]}" if why else msg)
        return done

    def _keep_output(self, done: subprocess.CompletedProcess) -> None:
        from harness.atomic import write_bytes
        from harness.redact import sanitise_text

        text = (
            f"$ exit status {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
        data = sanitise_text(text).encode(errors="replace")[-OUTPUT_KEEP_BYTES:]
        try:
            write_bytes(self.ctx.case_dir / "output.log", data)
        except OSError:
            pass

    def warmup(self, iterations: int) -> None:
        for _ in range(iterations):
            self._execute()

    def run(self, repetition: int) -> Repetition:
        with self.ctx.meter.window(f"command-{repetition}") as w:
            done = self._execute()
        columns = {"exit_status": done.returncode, **self._reported(done.stdout)}
        return Repetition(measurement=w.measurement, columns=columns)

    def _reported(self, stdout: str) -> dict:
        """The numeric column fields of a JSON object on the last output line."""
        line = last_line(stdout)
        if not line.startswith("{"):
            return {}
        try:
            data = json.loads(line)
        except ValueError:
            self._note(f"last output line looks like JSON but does not parse: {line[:80]!r}")
            return {}
        if not isinstance(data, dict):
            return {}
        out: dict = {}
        for key, value in data.items():
            if key == "metric" and isinstance(value, str):
                out[key] = value
            elif key in WORK_FIELDS and _is_number(value):
                out[key] = value
            else:
                self._note(f"ignored field {key!r} of the last output line")
        return out

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            print(f"note: {text}", file=sys.stderr)

    def summary(self) -> dict:
        return {"exit_status": self.exit_status, "notes": list(self.notes)}


def _is_number(value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )
