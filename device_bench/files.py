"""Checks of the files the host sends to a device: the .tflite model and the
benchmark_model binary (its ELF machine, so a wrong build is refused before a push)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from opcost.errors import ModelFileError

TFLITE_MAGIC = b"TFL3"  # flatbuffer file identifier at bytes 4..8
ABI_MACHINE = {"arm64-v8a": 183, "armeabi-v7a": 40, "armeabi": 40, "x86_64": 62, "x86": 3}
MACHINE_NAME = {183: "arm64 (aarch64)", 40: "32-bit ARM", 62: "x86_64", 3: "x86"}
HOST_MACHINE = {"x86_64": 62, "amd64": 62, "aarch64": 183, "arm64": 183, "i686": 3, "i386": 3, "armv7l": 40}


def check_model_file(model_path: str) -> Path:
    """The resolved path of ``model_path``; ModelFileError when it is missing, unreadable
    or not a TFLite flatbuffer (so nothing is pushed to a phone in vain)."""
    path = Path(model_path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {model_path}")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ModelFileError(f"cannot read model file {model_path}: {e}") from None
    if len(head) < 8 or head[4:8] != TFLITE_MAGIC:
        raise ModelFileError(f"{model_path} is not a TFLite model (no 'TFL3' identifier)",
                             hint="give a .tflite file (e.g. from `opcost zoo build` or the TFLite converter)")
    return path.resolve()


def elf_machine(path: str) -> Optional[int]:
    """The ELF ``e_machine`` of ``path`` (183 aarch64, 40 ARM, 62 x86_64, 3 x86), or None when
    it is not an ELF file."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def machine_name(machine: Optional[int]) -> str:
    return MACHINE_NAME.get(machine, f"ELF machine {machine}") if machine is not None else "not an ELF file"
