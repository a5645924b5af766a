"""One error hierarchy for the whole product.

Every error says what went wrong and what to do about it. Errors that come from a
device or a process carry the context a user needs to act: the device serial, the argv
that ran, its exit code and the last lines of its output. The CLI prints ``str(err)``
and exits non-zero; it never shows a traceback for an ``OpcostError``.
"""
from __future__ import annotations

from typing import Optional, Sequence

OUTPUT_TAIL_LINES = 20


def tail(text: Optional[str], lines: int = OUTPUT_TAIL_LINES) -> str:
    """Last ``lines`` lines of ``text`` (empty string for None)."""
    if not text:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def short_list(items: Sequence[object], n: int = 10) -> str:
    """The first ``n`` of ``items`` joined by commas, with "(+K more)" for the rest."""
    shown = ", ".join(map(str, items[:n]))
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


class OpcostError(Exception):
    """Base class. ``hint`` tells the user what to do next."""

    default_hint: str = ""

    def __init__(
        self,
        message: str,
        *,
        hint: Optional[str] = None,
        serial: Optional[str] = None,
        argv: Optional[Sequence[str]] = None,
        exit_code: Optional[int] = None,
        output_tail: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.serial = serial
        self.argv = list(argv) if argv is not None else None
        self.exit_code = exit_code
        self.output_tail = tail(output_tail) if output_tail else ""

    def __str__(self) -> str:
        parts = [self.message]
        if self.serial:
            parts.append(f"  device: {self.serial}")
        if self.argv:
            parts.append("  command: " + " ".join(str(a) for a in self.argv))
        if self.exit_code is not None:
            parts.append(f"  exit code: {self.exit_code}")
        if self.output_tail:
            parts.append("  last output:\n" + "\n".join("    " + ln for ln in self.output_tail.splitlines()))
        if self.hint:
            parts.append(f"  what to do: {self.hint}")
        return "\n".join(parts)

    def to_dict(self) -> dict:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            "serial": self.serial,
            "argv": self.argv,
            "exit_code": self.exit_code,
            "output_tail": self.output_tail,
        }


class UsageError(OpcostError):
    """Bad arguments or input files given by the user."""


class DeviceError(OpcostError):
    """A device is unknown, offline, unauthorized or went away."""

    default_hint = "run `opcost devices` to see the connected devices and their state"


class DeviceDisconnected(DeviceError):
    """The device disappeared while we were talking to it (transient for campaigns)."""

    default_hint = "check the USB cable and `adb devices`; a campaign resumes with `opcost campaign run` again"


class AdbError(OpcostError):
    """The adb server could not be reached or answered with an error."""

    default_hint = "start the adb server (`adb start-server`) or set ADB_SERVER_HOST/ADB_SERVER_PORT"


class DeviceStorageFull(DeviceError):
    """A push failed because the device is out of space."""

    default_hint = "free space on the device (e.g. `adb shell rm -r /data/local/tmp/opcost`) and run again"


class BinaryError(OpcostError):
    """The benchmark_model binary is missing, not executable, or of the wrong ABI."""

    default_hint = ("download the official TFLite benchmark_model build for the device's ABI "
                    "and pass it with --binary PATH")


class BenchmarkFailed(OpcostError):
    """benchmark_model ran but did not produce a measurement."""


class DelegateError(BenchmarkFailed):
    """The model cannot run on the requested delegate (unsupported op, delegate init failure)."""

    default_hint = "run the model on --delegate cpu or xnnpack, or check which op the delegate rejects above"


class RunTimeout(BenchmarkFailed):
    """A run exceeded its hard wall-clock limit."""

    default_hint = "raise --timeout-s or lower --runs / --max-secs"


class ParseError(OpcostError):
    """Tool output could not be understood (garbage or truncated)."""

    default_hint = "the output is shown above; if it is a format we do not know yet, file it with this output"


class ModelFileError(OpcostError):
    """A .tflite file is missing, unreadable or not a TFLite flatbuffer."""

    default_hint = "check the path; the file must be a TFLite flatbuffer (magic 'TFL3')"


class StoreError(OpcostError):
    """The SQLite store cannot be opened, is not an opcost store, or is of a newer schema."""

    default_hint = "check the --store path; a store written by a newer opcost needs that version"


class PlanError(OpcostError):
    """A campaign plan file is invalid."""

    default_hint = "see README.md, section 'Campaigns', or `opcost campaign --help` for the plan format"


class PredictorError(OpcostError):
    """A predictor file cannot be fitted, loaded or applied."""


class DatasetError(OpcostError):
    """A public dataset directory is missing files or has an unexpected format."""


class ZooError(OpcostError):
    """A model could not be generated or converted."""
