"""Host side: adb transport, devices, store, campaigns, the modeler and the CLI."""
