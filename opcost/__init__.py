"""opcost: measure and predict neural-network latency on phones and on the host.

Shared types live here (``opcost.errors``, ``opcost.records``); the device side is in
``device_bench``, the host side (adb, store, campaigns, modeler, CLI) in ``host``, and
model generation and the ``.tflite`` reader in ``models_zoo``.
"""
__version__ = "0.1.0"
