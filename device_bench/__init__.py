"""What runs on or for a device: benchmark_model argv, output parsers, device-state
probes, on-device scripts, and the host-local runner."""
