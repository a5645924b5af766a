"""`opcost adapt --from SOURCE.predictor`: a new phone's predictor transferred from
predictors of phones already modelled plus the new phone's few runs in the store (the
`adapt` command itself, shared with the signature path, is in signature_cmds)."""
from __future__ import annotations

from typing import Optional, Sequence

import click

from host.cli._common import echo_json


def adapt_transfer(source_paths: Sequence[str], store_path: Optional[str], serial: Optional[str], out_path: str,
                   method: Optional[str], max_networks: Optional[int], seed: int, models_dir: Optional[str],
                   as_json: bool) -> None:
    """Fit, save and report a transferred predictor (the library does the work)."""
    from opcost.errors import UsageError

    if store_path is None or serial is None:
        raise UsageError("--from needs --store (the new phone's runs) and --device SERIAL",
                         hint="e.g. `opcost adapt --from old.predictor --store runs.db --device SERIAL "
                              "--out new.predictor`")
    from host.modeler.service import transfer_from_store
    from host.store import Store

    with Store.open(store_path, create=False) as store:
        summary = transfer_from_store(store, source_paths=list(source_paths), device=serial, method=method,
                                      models_dir=models_dir, max_networks=max_networks, seed=seed,
                                      out_path=out_path, store_label=store_path)
    if as_json:
        echo_json(summary)
        return
    srcs = ", ".join(str(o["device"]) for o in summary["transferred_from"])
    click.echo(f"wrote {out_path}: {serial} ({summary['delegate']}) transferred from {srcs} with "
               f"{summary['n_target_networks']} measured network(s), {summary['n_kernels_measured']} measured "
               f"kernels; method {summary['method']}, overhead form {summary['overhead']}")
    if summary.get("target_selection"):
        click.echo(f"used {summary['n_target_networks']} of the device's networks (seed "
                   f"{summary['target_selection']['seed']}); `opcost evaluate --store {store_path} "
                   f"--predictor {out_path}` scores the others")
