"""Load a script of benchmarks/ as a module (they are scripts, not a package)."""
from __future__ import annotations

import importlib.util
import os
from types import ModuleType

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py, executed as a fresh module named ``<name>_bench``."""
    spec = importlib.util.spec_from_file_location(f"{name}_bench", os.path.join(BENCHMARKS, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_li2024_slice(folder, networks) -> str:
    """The li2024 CNN files of data/li2024 restricted to ``networks``, written into ``folder``."""
    import pandas as pd

    data = os.path.join(os.path.dirname(BENCHMARKS), "data", "li2024")
    for name in ("tflite_cnn_e2e.csv", "tflite_cnn_ops_gpu.csv"):
        table = pd.read_csv(os.path.join(data, name))
        table[table["model"].isin(list(networks))].to_csv(os.path.join(str(folder), name), index=False)
    return str(folder)


def write_ganesan2020_copy(folder, device_files) -> str:
    """A ganesan2020 folder in ``folder``: data/ganesan2020's onnxEmbeddings.csv and the
    named ``mobileData/*.txt`` device files (add broken files to ``folder/mobileData``)."""
    import shutil

    data = os.path.join(os.path.dirname(BENCHMARKS), "data", "ganesan2020")
    mobile = os.path.join(str(folder), "mobileData")
    os.makedirs(mobile, exist_ok=True)
    shutil.copy(os.path.join(data, "onnxEmbeddings.csv"), str(folder))
    for name in device_files:
        shutil.copy(os.path.join(data, "mobileData", name), mobile)
    return str(folder)
