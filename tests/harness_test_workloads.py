"""Workloads that misbehave inside the worker itself, loaded there through $HARNESS_PLUGINS.

The worker imports this module before it creates the workload, so these types exist only in the
worker processes of the tests that ask for them.
"""

from __future__ import annotations

import os
import signal
import time

from harness.workloads import REGISTRY
from harness.workloads.base import Repetition, Workload


class MisbehavingWorkload(Workload):
    type = "misbehave"

    def run(self, repetition: int) -> Repetition:
        mode = self.spec["mode"]
        with self.ctx.meter.window(f"rep-{repetition}") as w:
            if mode == "raise":
                raise ValueError("the workload broke")
            if mode == "exit":
                os._exit(3)
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "hang":
                time.sleep(3600)
            if mode == "planned":
                time.sleep(0.01)
        return Repetition(measurement=w.measurement, columns={"samples": 10 * (repetition + 1)})

    def planned_repetitions(self) -> int | None:
        return 4 if self.spec["mode"] == "planned" else None

    def summary(self) -> dict:
        return {"mode": self.spec["mode"]}


REGISTRY["misbehave"] = f"{__name__}:MisbehavingWorkload"
