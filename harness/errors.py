"""The project's own exceptions. Each carries a one-line message a user can act on."""

from __future__ import annotations


class HarnessError(Exception):
    """Bad input or an unusable environment: the CLI prints the message alone and exits 2."""


class SensorError(HarnessError):
    """A sensor could not be read; the message names the file or library and the fix."""


class SensorPermissionError(SensorError):
    """A sensor exists but this user may not read it."""


class KnobError(HarnessError):
    """A hardware knob (power limit, frequency cap, board mode) could not be read or set."""


class KnobPermissionError(KnobError):
    """A knob exists but this user may not change it; the message says how to grant it."""
