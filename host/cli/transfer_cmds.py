"""`opcost transfer select` (which of a set of .tflite files a new phone should measure
for a transfer) and `opcost adapt --from SOURCE.predictor`: a new phone's predictor
transferred from predictors of phones already modelled plus the new phone's few runs in
the store (the `adapt` command itself, shared with the signature path, is in
signature_cmds)."""
from __future__ import annotations

from typing import Optional, Sequence

import click

from host.cli._common import echo_json, handle_errors, interval_line

# Copies of host.modeler.service.TRANSFER_METHODS, host.modeler.transfer_select.SELECTIONS
# and host.modeler.transfer.INTERVAL_FROM (kept here so that the CLI modules import no
# pandas; a test checks they match).
METHODS = ("stack", "ratio", "pooled", "overhead_only")
SELECTIONS = ("coverage", "spread", "balanced", "doptimal", "random")
INTERVAL_FROM = ("auto", "sources", "target")


def adapt_transfer(source_paths: Sequence[str], store_path: Optional[str], serial: Optional[str], out_path: str,
                   method: Optional[str], max_networks: Optional[int], seed: int, models_dir: Optional[str],
                   as_json: bool, selection: Optional[str] = None, interval_from: Optional[str] = None) -> None:
    """Fit, save and report a transferred predictor (the library does the work)."""
    from opcost.errors import UsageError

    if store_path is None or serial is None:
        raise UsageError("--from needs --store (the new phone's runs) and --device SERIAL",
                         hint="e.g. `opcost adapt --from old.predictor --store runs.db --device SERIAL "
                              "--out new.predictor`")
    if selection is not None and max_networks is None:
        raise UsageError("--selection chooses among the new phone's networks with --max-networks N",
                         hint="add --max-networks N, or drop --selection to use every measured network")
    from host.modeler.service import transfer_from_store
    from host.store import Store

    with Store.open_reader(store_path) as store:
        summary = transfer_from_store(store, source_paths=list(source_paths), device=serial, method=method,
                                      models_dir=models_dir, max_networks=max_networks, seed=seed,
                                      selection=selection, interval_from=interval_from, out_path=out_path,
                                      store_label=store_path)
    if as_json:
        echo_json(summary)
        return
    srcs = ", ".join(str(o["device"]) for o in summary["transferred_from"])
    click.echo(f"wrote {out_path}: {summary['device']} ({summary['delegate']}) transferred from {srcs} with "
               f"{summary['n_target_networks']} measured network(s), {summary['n_kernels_measured']} measured "
               f"kernels; method {summary['method']}, overhead form {summary['overhead']}")
    line = interval_line(summary)
    if line:
        click.echo(line)
    sel = summary.get("target_selection")
    if sel:
        click.echo(f"used {summary['n_target_networks']} of the device's networks (selection {sel['selection']}, "
                   f"seed {sel['seed']}); `opcost evaluate --store {store_path} --predictor {out_path}` scores "
                   f"the others")


def register(main: click.Group) -> None:
    """Add the `transfer` group (select) to the main group."""

    @main.group("transfer")
    def transfer() -> None:
        """Transfer predictors of phones already modelled to a new phone (see also `opcost adapt --from`)."""

    @transfer.command("select")
    @click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
    @click.option("--from", "from_paths", type=click.Path(dir_okay=False), multiple=True, required=True,
                  help="Predictor file of a phone already modelled (`opcost fit`); repeatable.")
    @click.option("--k", "k", type=int, default=10, show_default=True, help="How many networks to choose.")
    @click.option("--selection", type=click.Choice(SELECTIONS), default=None,
                  help="How to choose  [default: coverage]")
    @click.option("--seed", type=int, default=0, show_default=True,
                  help="Seed (spread, balanced and random depend on it).")
    @click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
                  help="Also write the chosen files here, one per line.")
    @click.option("--json", "as_json", is_flag=True, help="Print the choice as JSON.")
    @handle_errors
    def select_cmd(models, from_paths, k, selection, seed, out_path, as_json) -> None:
        """Choose which K of the .tflite MODELS a new phone should measure (per op and end
        to end) before `opcost adapt --from`: from the source predictors' predictions
        and the models' structure only. Prints the chosen files, one per line, e.g.
        `opcost profile $(cat list.txt) --device NEW --binary bm --delegate gpu --op-profiling --store runs.db`."""
        from opcost.errors import UsageError
        from host.modeler.service import select_transfer_networks

        res = select_transfer_networks(list(from_paths), list(models), k, selection=selection, seed=seed)
        if out_path:
            try:
                with open(out_path, "w", encoding="utf-8") as f:
                    f.write("".join(p + "\n" for p in res["selected"]))
            except OSError as err:
                raise UsageError(f"cannot write {out_path}: {err.strerror}",
                                 hint="check that its folder exists (create it first) and is writable") from None
        if as_json:
            echo_json({**res, "out": out_path})
            return
        click.echo(f"chose {len(res['selected'])} of {res['n_candidates']} model(s) by {res['selection']} "
                   f"(seed {res['seed']}) for a transfer from "
                   + ", ".join(str(o["device"]) for o in res["sources"])
                   + (f"; written to {out_path}" if out_path else ""), err=True)
        for p in res["selected"]:
            click.echo(p)
