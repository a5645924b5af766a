"""Helpers shared by the CLI command modules: error handling, JSON output, logging."""
from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Any, Callable, Optional

import click

from opcost.errors import OpcostError

log = logging.getLogger("opcost")


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def handle_errors(fn: Callable) -> Callable:
    """Turn an OpcostError into a clear message on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OpcostError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; measurements already taken are in the store", err=True)
            sys.exit(130)

    return wrapper


def echo_json(obj: Any) -> None:
    """One JSON document per line on stdout."""
    click.echo(json.dumps(obj, default=_json_default, sort_keys=True))


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def interval_line(summary: dict) -> Optional[str]:
    """The line `fit` and `adapt --from` print about a new predictor's interval."""
    pct = summary.get("interval_pct")
    if not pct:
        return None
    if summary.get("interval_from") == "sources":
        devices = summary.get("interval_devices") or []
        origin = (f"from the same transfer simulated on {len(devices)} source device(s), {', '.join(devices)}: "
                  f"errors on {summary['interval_networks']} of their networks it was not fitted on")
    elif summary.get("interval_from") == "target":
        origin = f"from held-out errors of {summary['interval_networks']} of the new device's networks alone"
        if summary.get("interval_fallback"):
            origin += f"; not simulated on the source devices: {summary['interval_fallback']}"
    else:
        origin = f"from held-out errors of {summary['interval_networks']} training networks"
    return (f"{summary['interval_coverage'] * 100:.0f}% interval: {pct[0]:+.1f}% to {pct[1]:+.1f}% around each "
            f"prediction ({origin})")
