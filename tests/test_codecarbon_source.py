"""codecarbon as a cross-check beside the estimate: reported apart, never in totals, offline."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from harness.errors import HarnessError
from harness.meter import Meter
from harness.sensors.base import CODECARBON, OK, UNAVAILABLE
from harness.sensors.codecarbon_source import CodecarbonSource
from harness.sensors.estimate import EstimateSource

LOCAL = ("127.0.0.1", "::1", "localhost")


@pytest.fixture
def no_network(monkeypatch):
    """Refuse, and record, every connection or name lookup that leaves this machine."""
    attempts: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def is_local(address) -> bool:
        return not isinstance(address, tuple) or str(address[0]) in LOCAL

    def connect(self, address):
        if not is_local(address):
            attempts.append(f"connect {address}")
            raise OSError("network disabled in this test")
        return real_connect(self, address)

    def connect_ex(self, address):
        if not is_local(address):
            attempts.append(f"connect_ex {address}")
            return 111
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOCAL and host is not None:
            attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror("network disabled in this test")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def busy_loop(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_crosscheck_beside_estimate(tmp_path, monkeypatch, no_network):
    monkeypatch.chdir(tmp_path)
    codecarbon = CodecarbonSource(country="FRA")
    (row,) = codecarbon.probe()
    assert (row.source, row.domain, row.kind, row.status) == (
        "codecarbon",
        "codecarbon",
        CODECARBON,
        OK,
    )
    with Meter(sensors=[EstimateSource(), codecarbon], sample_hz=None) as meter:
        with meter.window("busy") as w:
            busy_loop(2.0)
    m = w.measurement
    assert m.crosscheck_j["codecarbon"] > 0
    assert "codecarbon" not in m.energy_j and "codecarbon" not in m.sources
    assert m.total_j == pytest.approx(m.energy_j["cpu"] + m.energy_j["ram"])
    assert m.method == "estimated"
    assert list(tmp_path.iterdir()) == []  # no emissions.csv, no lock file in the cwd
    assert no_network == []
    assert codecarbon._tracker is None  # stopped by meter.close()


def test_bad_country_is_a_one_line_error():
    with pytest.raises(HarnessError, match="3-letter ISO code"):
        CodecarbonSource(country="France")


def test_missing_codecarbon_is_unavailable_and_skipped(monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)
    source = CodecarbonSource()
    (row,) = source.probe()
    assert row.status == UNAVAILABLE and "codecarbon" in row.reason
    with Meter(sensors=[EstimateSource(tdp_w=10), source], sample_hz=None) as meter:
        with meter.window("w") as w:
            pass
    assert w.measurement.crosscheck_j == {}
