"""CLI commands: `opcost signature select` and `opcost adapt` (cross-device prediction
from a device's latencies on a small signature set of networks)."""
from __future__ import annotations

import click

from host.cli._common import echo_json, handle_errors, log

DATASETS = ("ganesan2020",)


def _load_dataset(dataset: str, data_dir):
    from host.modeler import data_ganesan2020 as g20

    return g20.load(data_dir or g20.default_data_dir())


def _read_text(path: str, what: str) -> str:
    from opcost.errors import UsageError

    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as err:
        raise UsageError(f"cannot read {what} {path}: {err.strerror}", hint="check the path") from None


def register(main: click.Group) -> None:
    """Add `signature` (group) and `adapt` to the main group."""

    @main.group("signature")
    def signature() -> None:
        """Choose the small set of networks that characterises a device."""

    @signature.command("select")
    @click.option("--k", "k", type=int, default=10, show_default=True, help="Number of signature networks.")
    @click.option("--method", type=click.Choice(["auto", "mis", "sccs", "random", "pqr", "greedy"]),
                  default="auto", show_default=True, help="Selection method (mis/sccs as in Ganesan 2020).")
    @click.option("--dataset", type=click.Choice(DATASETS), default="ganesan2020", show_default=True,
                  help="Training devices' latencies.")
    @click.option("--data", "data_dir", type=click.Path(), default=None,
                  help="Folder of the dataset (default: the copy in data/).")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed for --method random.")
    @click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Write the signature JSON here.")
    @click.option("--json", "as_json", is_flag=True, help="Print the signature as JSON.")
    @handle_errors
    def select_cmd(k, method, dataset, data_dir, seed, out_path, as_json) -> None:
        """Select K signature networks using the training devices only."""
        import json

        from host.modeler.signature import select_signature, signature_document

        data = _load_dataset(dataset, data_dir)
        report: dict = {}
        nets = select_signature(data.latency_ms, k, method, seed=seed, groups=data.phone_models,
                                networks=data.networks, report=report)
        doc = signature_document(nets, method, data.devices, dict(data.summary(), data_dir=data.source_dir),
                                 chosen_method=report.get("chosen"))
        if out_path:
            try:
                with open(out_path, "w", encoding="utf-8") as f:
                    json.dump(doc, f, indent=1, sort_keys=True)
            except OSError as err:
                from opcost.errors import UsageError

                raise UsageError(f"cannot write {out_path}: {err.strerror}", hint="check the folder") from None
            log.info("wrote %s", out_path)
        if as_json:
            echo_json(doc)
        else:
            click.echo(f"signature ({doc['chosen_method']}, k={len(nets)}, {len(data.devices)} training device runs): "
                       + " ".join(nets))
            if out_path:
                click.echo(f"written to {out_path}")

    @main.command("adapt")
    @click.option("--signature", "sig_path", type=click.Path(dir_okay=False), required=True,
                  help="Signature JSON from `opcost signature select`.")
    @click.option("--latencies", "lat_path", type=click.Path(dir_okay=False), required=True,
                  help="CSV of the new phone: network,latency_ms for every signature network.")
    @click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
                  help="Where to write the phone's predictor.")
    @click.option("--data", "data_dir", type=click.Path(), default=None,
                  help="Dataset folder (default: the one named in the signature file).")
    @click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
    @handle_errors
    def adapt_cmd(sig_path, lat_path, out_path, data_dir, as_json) -> None:
        """Build a latency predictor for a new phone from its signature latencies."""
        import numpy as np

        from opcost.errors import UsageError
        from host.modeler.signature import (PhonePredictor, SignatureLatencyModel, parse_latency_csv,
                                            parse_signature_document)

        doc = parse_signature_document(_read_text(sig_path, "signature file"), sig_path)
        sig_lat = parse_latency_csv(_read_text(lat_path, "latency file"), doc["networks"], lat_path)
        ds = doc.get("dataset") or {}
        if ds.get("dataset", "ganesan2020") not in DATASETS:
            raise UsageError(f"{sig_path} names dataset {ds.get('dataset')!r}, which opcost cannot load yet")
        data = _load_dataset("ganesan2020", data_dir or ds.get("data_dir"))
        rows = [i for i, d in enumerate(data.devices) if d in set(doc["training_devices"])]
        if len(rows) < 3:
            raise UsageError(f"only {len(rows)} of the signature's training devices are in {data.source_dir}",
                             hint="pass --data with the dataset the signature was selected on")
        unknown = [n for n in doc["networks"] if n not in data.networks]
        if unknown:
            raise UsageError(f"signature networks not in the dataset: {', '.join(unknown)}",
                             hint="pass --data with the dataset the signature was selected on")
        groups = [data.phone_models[i] for i in rows]
        model = SignatureLatencyModel().fit(data.latency_ms[rows], doc["networks"], networks=data.networks,
                                            groups=groups, devices=[data.devices[i] for i in rows])
        info = {"method": doc.get("chosen_method", doc.get("method")), "k": len(doc["networks"]),
                "training_devices": model.devices_, "data": data.summary(), "signature_file": sig_path,
                "latencies_file": lat_path, "rank": model.rank_, "n_neighbors": model.n_neighbors_}
        phone = PhonePredictor(model, sig_lat, info)
        phone.save(out_path)
        pred = phone.predict()
        if as_json:
            echo_json({"predictor": out_path, "rank": model.rank_, "n_neighbors": model.n_neighbors_,
                       "latency_ms": {n: float(v) for n, v in zip(phone.networks, pred)}})
        else:
            click.echo(f"predictor for {len(pred)} networks written to {out_path} "
                       f"(rank {model.rank_}, {model.n_neighbors_} neighbours, "
                       f"{len(rows)} training device runs); predicted {np.min(pred):.1f}-{np.max(pred):.1f} ms")
