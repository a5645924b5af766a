"""Latency models: op/kernel- and block-wise regressors summed into whole-network
predictions, cross-device signature sets, predictor files and dataset importers."""
