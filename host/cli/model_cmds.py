"""CLI commands of the modeler: dataset import, fit, predict, evaluate."""
from __future__ import annotations

import click

from host.cli._common import echo_json, handle_errors

DEFAULT_STORE = "opcost_runs.db"


def register(main: click.Group) -> None:
    """Add this module's commands to the main group."""
    main.add_command(dataset)


@click.group()
def dataset() -> None:
    """Real public phone measurements (li2024, ganesan2020) into the store."""


@dataset.command("import")
@click.argument("name", type=click.Choice(["ganesan2020", "li2024"]))
@click.argument("path", required=False, type=click.Path(file_okay=False))
@click.option("--store", "store_path", default=DEFAULT_STORE, show_default=True, help="SQLite store to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@handle_errors
def dataset_import(name: str, path: str | None, store_path: str, as_json: bool) -> None:
    """Import dataset NAME from PATH (default: the copy shipped in data/NAME).

    Re-importing replaces the earlier import of the same dataset."""
    from host.modeler.importers import default_data_dir, import_dataset
    from host.store import Store

    path = path or default_data_dir(name)
    with Store.open(store_path) as store:
        counts = import_dataset(name, path, store,
                                progress=lambda n: click.echo(f"  {n} runs imported ...", err=True))
    if as_json:
        echo_json({"dataset": name, "path": path, "store": store_path, **counts})
    else:
        click.echo(f"imported {counts['runs']} runs and {counts['ops']} op rows of {name} from {path} "
                   f"into {store_path} (replaced {counts['replaced_runs']} earlier runs)")
