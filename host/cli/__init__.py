"""The `opcost` command. Thin: parse arguments, call the library, print.

Each area registers its commands from its own module (devices/profile, campaign/export,
zoo/graph/slice, modeler) so that they can evolve independently.
"""
from __future__ import annotations

import click

from host.cli._common import setup_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-v info, -vv debug).")
@click.version_option(package_name="opcost")
def main(verbose: int) -> None:
    """Measure neural-network latency on phones and on this host, and predict it."""
    setup_logging(verbose)


def _register() -> None:
    from host.cli import (campaign_cmds, graph_cmds, measure_cmds, model_cmds, rules_cmds, signature_cmds,
                          transfer_cmds, zoo_cmds)

    for mod in (measure_cmds, campaign_cmds, zoo_cmds, graph_cmds, model_cmds, signature_cmds, transfer_cmds,
                rules_cmds):
        mod.register(main)


_register()
