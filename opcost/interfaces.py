"""The small interfaces at the product's boundaries.

Tests replace an implementation by passing another object with the same methods; no
module patches another's imports. Constructors of implementations do no I/O.
"""
from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

from opcost.records import DeviceInfo, DeviceState, Measurement, RunSpec


@runtime_checkable
class Device(Protocol):
    """Something that can run a .tflite model and report a measurement: a phone over
    adb (``host.devices.AndroidDevice``) or this host (``device_bench.local.LocalDevice``)."""

    serial: str

    def info(self) -> DeviceInfo:
        """Identity and static description (model, SoC, ABI, CPU clusters)."""

    def state(self) -> DeviceState:
        """Governors, frequencies, temperatures, battery now."""

    def check_spec(self, spec: RunSpec) -> None:
        """Raise an ``OpcostError`` for settings this device cannot honour (before any run)."""

    def measure(self, model_path: str, spec: RunSpec, *, model_name: Optional[str] = None) -> Measurement:
        """Run ``model_path`` as ``spec`` says; raise an ``OpcostError`` subclass on failure."""
