"""Hardware knobs as a suite axis: set a profile's knobs before its cases, restore them after.

The knobs are fields of a hardware profile (harness/suite.py, ``Hardware``):

* ``power_limit_w``: the power management limit of the profile's GPU, in watts (NVIDIA through
  NVML, AMD through amdsmi: ``harness.sensors.gpu.control``);
* ``gpu_locked_clocks_mhz: [low, high]``: the GPU's SM clocks locked to a range; restored by
  resetting the lock, as NVML cannot say what lock (if any) was there before;
* ``cpu_max_mhz``: ``scaling_max_freq`` of every cpufreq policy;
* ``cpu_governor``: ``scaling_governor`` of every cpufreq policy;
* ``knob_command: {query, set, restore}``: a board's own tool (Jetson ``nvpmodel``). ``query``
  prints the current setting, its last output line is saved as the original; ``set`` changes it;
  ``restore`` puts it back, with ``{original}`` in an argument replaced by the saved line.

The runner (one process per run) calls ``ProfileKnobs.enter`` before each case; on a new profile
it restores the previous profile's knobs and sets the new one's, so the idle baseline and every
case of the profile are measured with its knobs. A knob that cannot be set (no cpufreq, no
permission, a value the device refuses) fails that profile's cases with one line saying which
call or file and how to grant it; the rest of the run goes on.

Crash safety: before a knob is changed, what it was is written to ``RUN_DIR/knobs.json`` and then
to a machine-wide file beside the machine lock (``<lock file>.knobs.json``). A run that dies with
knobs set leaves both; the next run on this machine, or the resume of this one, restores them
(``restore_left_over``) before it measures anything. The machine lock makes sure no other run
holds knobs at that moment.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from harness import store
from harness.errors import HarnessError, KnobError
from harness.lock import lock_path
from harness.suite import KNOB_FIELDS

KNOBS_FILE = "knobs.json"
#: seconds a knob_command may take before it counts as failed
COMMAND_TIMEOUT_S = 120
#: held: entries whose original is saved; "set" once the change went through
SAVED, SET = "saved", "set"

Echo = Callable[[str], None]


def knobs_of(hw: dict) -> list[str]:
    """The knob fields a profile sets, in the order they are applied."""
    return [k for k in KNOB_FIELDS if hw.get(k) is not None]


def machine_file() -> Path:
    """The machine-wide record of knobs held by a run, beside the machine lock."""
    lock = lock_path()
    return lock.with_name(lock.name + "." + KNOBS_FILE)


def describe(hw: dict) -> str:
    """``cpu_max_mhz 1200, power_limit_w 250`` for progress lines."""
    return ", ".join(f"{k} {_value_text(hw[k])}" for k in knobs_of(hw))


def _value_text(value) -> str:
    if isinstance(value, dict):
        return " ".join(value.get("set") or [])
    if isinstance(value, list):
        return "-".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def refuse_on_ray(cases: list[dict]) -> None:
    """Knobs are set by the runner on its own machine; a Ray run cannot honour them."""
    for case in cases:
        hw = case.get("hardware") or {}
        if knobs_of(hw):
            raise HarnessError(
                f"hardware {hw.get('name')!r}: {', '.join(knobs_of(hw))} can only be set on this "
                "machine; run the suite without --ray"
            )


# ------------------------------------------------------------------------------ the record
class KnobState:
    """What a run holds (``held``) and has done (``history``), kept in RUN_DIR/knobs.json."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.held: list[dict] = []
        self.history: list[dict] = []
        try:
            data = store.read_json(self.run_dir / KNOBS_FILE)
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict):
            self.held = list(data.get("held") or [])
            self.history = list(data.get("history") or [])

    def save(self) -> None:
        """The run's file first, then the machine's (removed once nothing is held)."""
        data = {
            "schema_version": store.SCHEMA_VERSION,
            "run_dir": str(self.run_dir.resolve()),
            "held": self.held,
            "history": self.history,
        }
        try:
            store.write_json(self.run_dir / KNOBS_FILE, data)
        except OSError as e:
            raise KnobError(
                f"{self.run_dir / KNOBS_FILE}: cannot save the knobs' originals: {e}"
            ) from None
        mine = machine_file()
        try:
            if self.held:
                store.write_json(mine, {"run_dir": data["run_dir"], "held": self.held})
            else:
                drop_machine_file(data["run_dir"])
        except OSError as e:
            raise KnobError(f"{mine}: cannot save the knobs' originals: {e}") from None


def drop_machine_file(run_dir: str) -> None:
    """Remove the machine-wide record if it still names ``run_dir`` (and so nothing newer)."""
    if _machine_run_dir() == run_dir:
        machine_file().unlink(missing_ok=True)


def _machine_run_dir() -> str | None:
    try:
        data = store.read_json(machine_file())
    except (OSError, ValueError):
        return None
    return data.get("run_dir") if isinstance(data, dict) else None


# ------------------------------------------------------------------------------ one knob each
def _cuda_index(hw: dict) -> int:
    from harness.hardware import parse_device

    kind, index = parse_device(hw.get("device", "cpu"))
    if kind != "cuda":
        raise KnobError(f"a GPU knob needs a cuda:N device, not {hw.get('device')}")
    return index or 0


def _vendor(entry: dict) -> str:
    """The GPU vendor a held entry was set through (entries from before AMD: NVML)."""
    return entry["gpu"].get("vendor", "nvml")


def _read_original(knob: str, hw: dict) -> dict:
    """An entry for ``knob`` with what it is now; raises KnobError if it cannot be read."""
    entry: dict = {"knob": knob, "profile": hw.get("name"), "wanted": hw[knob], "state": SAVED}
    if knob in ("cpu_max_mhz", "cpu_governor"):
        from harness.sensors.cpufreq import CpuFreq

        cpu = CpuFreq()
        entry["original"] = cpu.max_khz() if knob == "cpu_max_mhz" else cpu.governors()
    elif knob in ("power_limit_w", "gpu_locked_clocks_mhz"):
        from harness.sensors.gpu.control import GpuControl

        with GpuControl() as nv:
            gpu = nv.by_cuda_index(_cuda_index(hw))
            entry["gpu"] = {"uuid": gpu.uuid, "index": gpu.index, "name": gpu.name}
            entry["gpu"]["vendor"] = nv.vendor
            entry["original"] = nv.power_limit_w(gpu) if knob == "power_limit_w" else None
    elif knob == "knob_command":
        spec = hw[knob]
        entry["restore"] = list(spec["restore"])
        entry["original"] = None
        if spec.get("query"):
            lines = [ln.strip() for ln in _run(spec["query"], "query").splitlines() if ln.strip()]
            if not lines:
                raise KnobError(f"knob_command query {_shown(spec['query'])} printed nothing")
            entry["original"] = lines[-1]
    return entry


def _set(entry: dict, hw: dict) -> None:
    knob, wanted = entry["knob"], entry["wanted"]
    if knob == "cpu_max_mhz":
        from harness.sensors.cpufreq import CpuFreq

        CpuFreq().set_max_khz(int(round(wanted * 1000)))
    elif knob == "cpu_governor":
        from harness.sensors.cpufreq import CpuFreq

        CpuFreq().set_governor(wanted)
    elif knob == "power_limit_w":
        from harness.sensors.gpu.control import GpuControl

        with GpuControl(_vendor(entry)) as nv:
            nv.set_power_limit_w(nv.by_uuid(entry["gpu"]["uuid"]), float(wanted))
    elif knob == "gpu_locked_clocks_mhz":
        from harness.sensors.gpu.control import GpuControl

        with GpuControl(_vendor(entry)) as nv:
            nv.lock_clocks_mhz(nv.by_uuid(entry["gpu"]["uuid"]), wanted[0], wanted[1])
    elif knob == "knob_command":
        _run(hw[knob]["set"], "set")


def _applied(entry: dict) -> object:
    """What the knob reads now it is set (the kernel or driver may keep less than was asked)."""
    knob = entry["knob"]
    try:
        if knob == "cpu_max_mhz":
            from harness.sensors.cpufreq import CpuFreq

            return max(CpuFreq().max_khz().values()) / 1000.0
        if knob == "cpu_governor":
            from harness.sensors.cpufreq import CpuFreq

            return sorted(set(CpuFreq().governors().values()))
        if knob == "power_limit_w":
            from harness.sensors.gpu.control import GpuControl

            with GpuControl(_vendor(entry)) as nv:
                return nv.power_limit_w(nv.by_uuid(entry["gpu"]["uuid"]))
    except KnobError:
        return None
    return entry["wanted"]


def _restore(entry: dict) -> None:
    knob, original = entry["knob"], entry.get("original")
    if knob == "cpu_max_mhz":
        from harness.sensors.cpufreq import restore_files

        restore_files(original or {}, "scaling_max_freq")
    elif knob == "cpu_governor":
        from harness.sensors.cpufreq import restore_files

        restore_files(original or {}, "scaling_governor")
    elif knob in ("power_limit_w", "gpu_locked_clocks_mhz"):
        from harness.sensors.gpu.control import GpuControl

        with GpuControl(_vendor(entry)) as nv:
            gpu = nv.by_uuid(entry["gpu"]["uuid"])
            if knob == "gpu_locked_clocks_mhz":
                nv.reset_clocks(gpu)
            elif nv.power_limit_w(gpu) != original:
                nv.set_power_limit_w(gpu, float(original))
    elif knob == "knob_command":
        args = [a.replace("{original}", original or "") for a in entry["restore"]]
        _run(args, "restore")


def _shown(args: list[str]) -> str:
    return "[" + " ".join(args) + "]"


def _run(args: list[str], what: str) -> str:
    """Run one of a knob_command's commands; its stdout, or KnobError with its last line."""
    try:
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise KnobError(f"knob_command {what} {_shown(args)}: no such program") from None
    except PermissionError:
        raise KnobError(f"knob_command {what} {_shown(args)}: not executable") from None
    except subprocess.TimeoutExpired:
        raise KnobError(
            f"knob_command {what} {_shown(args)}: no answer in {COMMAND_TIMEOUT_S} s"
        ) from None
    if done.returncode != 0:
        tail = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        said = f": {store.sanitise_text(tail[-1])[:200]}" if tail else ""
        raise KnobError(
            f"knob_command {what} {_shown(args)} exited with status {done.returncode}{said}; "
            "if it needs root, run the harness as root or allow the command in sudoers and "
            "start it with sudo -n"
        )
    return done.stdout


def _entry_text(entry: dict) -> str:
    where = f" of GPU {entry['gpu']['index']}" if entry.get("gpu") else ""
    return f"{entry['knob']}{where}"


# ------------------------------------------------------------------------------ restoring
def restore_held(state: KnobState, echo: Echo, why: str = "") -> list[str]:
    """Restore what ``state`` holds, last set first; returns one line per knob that failed.

    A knob whose change was never confirmed (``saved``) is put back quietly: nothing is known to
    have changed, so its failure is no news. One that fails stays held, for the next start.
    """
    problems, kept = [], []
    for entry in reversed(state.held):
        try:
            _restore(entry)
            if entry.get("state") == SET:
                echo(f"knobs: restored {_entry_text(entry)} of {entry['profile']}{why}")
        except HarnessError as e:
            if entry.get("state") == SET:
                problems.append(f"cannot restore {_entry_text(entry)} of {entry['profile']}: {e}")
                kept.insert(0, entry)
    state.held = kept
    if state.history and state.history[-1].get("restored") is None:
        state.history[-1]["restored"] = store.utc_now()
        state.history[-1]["restore_problems"] = problems
    state.save()
    for line in problems:
        echo(
            f"knobs: {line}; the original is kept in {state.run_dir / KNOBS_FILE} and restored "
            "at the next start"
        )
    return problems


def restore_left_over(run_dir: Path, echo: Echo) -> None:
    """At a run's start or resume: undo the knobs a dead run left set on this machine.

    First those the machine-wide file names (any run), then the run's own (a resume). A knob that
    cannot be put back stops the run (KnobError) before it measures a machine in a state nobody
    chose; its original stays saved for the next try.
    """
    problems: list[str] = []
    try:
        data = store.read_json(machine_file())
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and data.get("held"):
        other = Path(data.get("run_dir") or run_dir)
        state = KnobState(other) if (other / KNOBS_FILE).is_file() else KnobState(run_dir)
        if not state.held:  # the run folder is gone or stale: trust the machine's copy
            state.held = list(data["held"])
        problems += restore_held(state, echo, f", left set by {other.name} (it did not finish)")
        if not state.held:
            drop_machine_file(data.get("run_dir"))
    own = KnobState(run_dir)
    if own.held and not problems:
        problems += restore_held(own, echo, " (left set when this run stopped)")
    if problems:
        raise KnobError(f"{problems[0]}; nothing is measured until it is restored")


# ------------------------------------------------------------------------------ the runner's hook
class ProfileKnobs:
    """The runner's view: ``enter(hw)`` before each case, ``close()`` (or ``with``) at the end."""

    def __init__(self, run_dir: Path, echo: Echo):
        self.state = KnobState(run_dir)
        self.echo = echo
        self.profile: str | None = None
        #: profile name -> the line its cases fail with
        self.refused: dict[str, str] = {}

    def enter(self, hw: dict) -> str | None:
        """Set ``hw``'s knobs if it is a new profile; the line its cases fail with, or None."""
        name = hw.get("name")
        if name == self.profile:
            return self.refused.get(name)
        self.leave()
        self.profile = name
        wanted = knobs_of(hw)
        if not wanted:
            return None
        self.state.history.append(
            {
                "profile": name,
                "knobs": {k: hw[k] for k in wanted},
                "set": store.utc_now(),
                "restored": None,
            }
        )
        try:
            for knob in wanted:
                entry = _read_original(knob, hw)
                self.state.held.append(entry)
                self.state.save()  # the original is on disk before anything changes
                _set(entry, hw)
                entry["state"] = SET
                entry["applied"] = _applied(entry)
                self.state.save()
        except HarnessError as e:
            line = f"hardware {name!r}: {wanted_text(knob, hw)}: {e}"
            self.state.history[-1]["refused"] = line
            self.refused[name] = line
            self.leave()
            self.echo(f"knobs: {line}")
            return line
        self.echo(f"knobs of {name}: {self._applied_text()}")
        return None

    def _applied_text(self) -> str:
        parts = []
        for e in self.state.held:
            applied = e.get("applied")
            shown = _value_text(applied) if applied is not None else "?"
            was = _original_text(e)
            if was is not None:
                shown += f" (was {was})"
            parts.append(f"{_entry_text(e)} {shown}")
        return ", ".join(parts)

    def leave(self) -> list[str]:
        """Restore what the current profile set."""
        if not self.state.held:
            return []
        return restore_held(self.state, self.echo)

    def close(self) -> None:
        self.leave()

    def __enter__(self) -> ProfileKnobs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _original_text(entry: dict) -> str | None:
    """The original in the knob's own unit (policy files hold kHz)."""
    original = entry.get("original")
    if original is None:
        return None
    if entry["knob"] == "cpu_max_mhz":
        return _value_text(max(original.values()) / 1000.0) if original else None
    if entry["knob"] == "cpu_governor":
        return "/".join(sorted(set(original.values())))
    return _value_text(original)


def wanted_text(knob: str, hw: dict) -> str:
    return f"{knob} {_value_text(hw[knob])}"
