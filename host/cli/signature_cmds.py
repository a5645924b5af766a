"""CLI commands: `opcost signature select`, `opcost signature predict` and `opcost adapt`
(cross-device prediction from a device's latencies on a small signature set of networks).

Training devices come from an opcost store (`--store`: imported datasets and measured
phones alike) or from a public dataset folder (`--dataset/--data`)."""
from __future__ import annotations

import contextlib
import os

import click

from host.cli._common import echo_json, handle_errors, log
from host.cli.transfer_cmds import METHODS as TRANSFER_METHODS
from host.cli.transfer_cmds import INTERVAL_FROM as TRANSFER_INTERVAL_FROM
from host.cli.transfer_cmds import SELECTIONS as TRANSFER_SELECTIONS

DATASETS = ("ganesan2020",)
METHODS = ("auto", "mis", "sccs", "random", "pqr", "greedy")


def _load_dataset(dataset: str, data_dir):
    from host.modeler import data_ganesan2020 as g20

    return g20.load(data_dir or g20.default_data_dir())


def _read_text(path: str, what: str, expected: str) -> str:
    """The text of ``path``; a clear UsageError when it is missing or not UTF-8 text
    (``expected`` says what the file should be, for the hint)."""
    from opcost.errors import UsageError

    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as err:
        raise UsageError(f"cannot read {what} {path}: {err.strerror}", hint="check the path") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"{what} {path} is not a text file (byte {err.start} is not UTF-8)",
                         hint=f"pass {expected}") from None


def _open_store(path):
    """The store at ``path`` (must exist), or a null context for None."""
    if path is None:
        return contextlib.nullcontext(None)
    from host.store import Store

    return Store.open_reader(path)


def _predict_files(phone, paths):
    """Latency (ms) of .tflite files from their structure, their interval ([lo, hi] ms, or
    None), and per file what the prediction could not account for (logged as warnings too)."""
    from opcost.errors import PredictorError
    from host.modeler.signature_structure import structure_rows

    if not phone.knows_structure:
        raise PredictorError("this predictor cannot predict networks from their .tflite: it was made without the "
                             "training networks' structure",
                             hint="create it again with `opcost adapt` (the ganesan2020 dataset, or a store whose "
                                  "networks' .tflite files are readable), or pass network names it knows")
    structure = phone.model.structure_
    rows, unsupported = structure_rows(paths, structure.feature_names_)
    pred = phone.predict_structure(rows)
    bounds = phone.predict_structure_interval(rows)
    interval = {p: None if bounds is None else [float(v) for v in bounds[i]] for i, p in enumerate(paths)}
    notes = {}
    same = structure.same_as_training(rows)
    for i, (p, ops, far) in enumerate(zip(paths, unsupported, structure.out_of_range(rows))):
        notes[p] = {"unsupported_ops": ops, "outside_training_range": far, "same_layers_as": None}
        if same[i] is not None and not ops:
            # the same layers as a training network: its own latent coordinates beat the
            # structure estimate
            name = phone.networks[same[i]]
            notes[p]["same_layers_as"] = name
            pred[i] = phone.predict([name])[0]
            interval[p] = [float(v) for v in phone.predict_interval([name])[0]] if phone.has_interval else None
            log.info("%s has the same layers as the training network %s: predicted as that network", p, name)
            continue
        if ops:
            log.warning("%s: ops the structure description has no row for, their cost is not counted: %s",
                        p, ", ".join(ops))
        if far:
            log.warning("%s: outside the training networks' range in %s; the prediction extrapolates",
                        p, ", ".join(far))
    return dict(zip(paths, (float(v) for v in pred))), interval, notes


def _echo_check_warning(check) -> str:
    """Log the signature check's warning (if flagged) to stderr; return its summary line."""
    from host.modeler.signature import describe_check

    summary, warning = describe_check(check)
    if warning:
        log.warning("%s", warning)
    return summary


def register(main: click.Group) -> None:
    """Add `signature` (group: select, predict) and `adapt` to the main group."""

    @main.group("signature")
    def signature() -> None:
        """Choose the small set of networks that characterises a device; use its predictor."""

    @signature.command("select")
    @click.option("--k", "k", type=int, default=10, show_default=True, help="Number of signature networks.")
    @click.option("--method", type=click.Choice(METHODS), default="auto", show_default=True,
                  help="Selection method (mis/sccs as in Ganesan 2020).")
    @click.option("--store", "store_path", type=click.Path(dir_okay=False), default=None,
                  help="Training devices from this opcost store (devices that measured all candidate networks).")
    @click.option("--delegate", default=None, help="With --store: the runs' delegate  [default: cpu]")
    @click.option("--threads", type=int, default=None, help="With --store: the runs' threads  [default: 1]")
    @click.option("--exclude-device", "exclude", multiple=True, metavar="SERIAL",
                  help="Leave out these devices (shell patterns allowed, e.g. 'Pixel_4_*'; a store's "
                       "'ganesan2020/' prefix may be left out); repeatable. A pattern that matches no device "
                       "is an error.")
    @click.option("--dataset", type=click.Choice(DATASETS), default=None,
                  help="Training devices from a public dataset instead of a store  [default: ganesan2020]")
    @click.option("--data", "data_dir", type=click.Path(), default=None,
                  help="Folder of the dataset (default: the copy in data/).")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed for --method random.")
    @click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
                  help="Write the signature JSON here.")
    @click.option("--json", "as_json", is_flag=True, help="Print the signature as JSON.")
    @handle_errors
    def select_cmd(k, method, store_path, delegate, threads, exclude, dataset, data_dir, seed, out_path,
                   as_json) -> None:
        """Select K signature networks using the training devices only."""
        import json

        from opcost.errors import UsageError
        from host.modeler.signature import (LatencyMatrix, check_exclude_patterns, select_signature,
                                            signature_document, store_latency_matrix, strip_dataset_prefix)

        if store_path and (dataset or data_dir):
            raise UsageError("pass either --store or --dataset/--data, not both",
                             hint="--store reads the training devices from an opcost store")
        if not store_path and (delegate or threads is not None):
            raise UsageError("--delegate/--threads apply to --store only",
                             hint="the ganesan2020 dataset is single-threaded CPU runs")
        with _open_store(store_path) as store:
            if store is not None:
                data = store_latency_matrix(store, delegate=delegate or "cpu",
                                            threads=1 if threads is None else threads, exclude=exclude)
            else:
                full = LatencyMatrix.from_dataset(_load_dataset(dataset or "ganesan2020", data_dir))
                exclude = strip_dataset_prefix(exclude, dataset or "ganesan2020")
                check_exclude_patterns(full.devices, exclude)
                data = full.restrict(full.devices, exclude=exclude)
                if exclude:
                    data.source["excluded"] = list(exclude)
        report: dict = {}
        nets = select_signature(data.latency_ms, k, method, seed=seed, groups=data.phone_models,
                                networks=data.networks, report=report)
        doc = signature_document(nets, method, data.devices, data.summary(), chosen_method=report.get("chosen"))
        if out_path:
            try:
                with open(out_path, "w", encoding="utf-8") as f:
                    json.dump(doc, f, indent=1, sort_keys=True)
            except OSError as err:
                raise UsageError(f"cannot write {out_path}: {err.strerror}",
                                 hint="check that its folder exists (create it first) and is writable") from None
            log.info("wrote %s", out_path)
        if as_json:
            echo_json(doc)
        else:
            click.echo(f"signature ({doc['chosen_method']}, k={len(nets)}, {len(data.devices)} training devices, "
                       f"{len(data.networks)} networks): " + " ".join(nets))
            if data.left_out:
                click.echo(f"left out {len(data.left_out)} device(s) missing some networks: "
                           + ", ".join(sorted(data.left_out)))
            if out_path:
                click.echo(f"written to {out_path}")

    @signature.command("predict")
    @click.argument("networks", nargs=-1)
    @click.option("--predictor", "predictor_path", type=click.Path(dir_okay=False), required=True,
                  help="Predictor file from `opcost adapt`.")
    @click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
    @handle_errors
    def predict_cmd(networks, predictor_path, as_json) -> None:
        """Predicted latency (ms) of NETWORKS (default: every network the predictor knows),
        with a 90% interval from the errors of training phones whose signature fit alike.

        A NETWORK that is a .tflite file is predicted from its structure (its conv,
        depthwise, add, relu and pool layers), even if no training device measured it."""
        from host.modeler.signature import PhonePredictor

        phone = PhonePredictor.load(predictor_path)
        files = [n for n in networks if n.lower().endswith(".tflite") or os.path.isfile(n)]
        names = [n for n in networks if n not in files] or ([] if files else phone.networks)
        latency = dict(zip(names, (float(v) for v in phone.predict(names))))
        interval = {n: None for n in networks or names}
        if phone.has_interval:
            interval.update({n: [float(lo), float(hi)] for n, (lo, hi) in zip(names, phone.predict_interval(names))})
        elif names:
            log.info("this predictor file has no interval data (made before intervals); "
                     "run `opcost adapt` again to get them")
        how = {n: "measured" if n in phone.signature_networks else "predicted" for n in names}
        notes: dict = {}
        if files:
            latency_f, interval_f, notes = _predict_files(phone, files)
            latency.update(latency_f)
            interval.update(interval_f)
            how.update({p: f"same layers as {notes[p]['same_layers_as']}" if notes[p]["same_layers_as"]
                        else "from structure" for p in files})
            latency = {n: latency[n] for n in networks}  # in the order given
        check = phone.check()
        _echo_check_warning(check)
        if as_json:
            echo_json({"predictor": predictor_path, "device": phone.info.get("device"),
                       "delegate": phone.info.get("delegate"), "threads": phone.info.get("threads"),
                       "signature_check": check, "latency_ms": latency,
                       "interval_ms": interval, "interval_coverage": phone.model.interval if phone.has_interval else None,
                       "measured": [n for n in names if how[n] == "measured"],
                       "from_structure": {p: notes[p] for p in files}})
            return
        width = max(len(n) for n in latency)
        if phone.has_interval:
            head = f"{phone.model.interval:.0%} interval, ms"
            click.echo(f"{'network':<{width}}  {'latency':>13}  {head:^23}  source")
        for n, v in latency.items():
            iv = interval[n]
            shown = "" if not phone.has_interval else (
                f"  {iv[0]:10.2f} - {iv[1]:<10.2f}" if iv is not None and how[n] != "measured" else f"  {'':23}")
            click.echo(f"{n:<{width}}  {v:10.2f} ms{shown}  {how[n]}")

    @main.command("adapt")
    @click.option("--signature", "sig_path", type=click.Path(dir_okay=False), default=None,
                  help="Signature JSON from `opcost signature select`.")
    @click.option("--from", "from_paths", type=click.Path(dir_okay=False), multiple=True,
                  help="Instead of --signature: a predictor file of a phone already modelled (`opcost fit`; "
                       "repeatable); the new phone's per-op and end-to-end runs in --store correct it.")
    @click.option("--method", type=click.Choice(TRANSFER_METHODS), default=None,
                  help="With --from: how the sources are corrected  [default: stack]")
    @click.option("--max-networks", type=int, default=None,
                  help="With --from: use at most N of the new phone's networks (chosen by --selection from the "
                       "sources' predictions; `opcost evaluate` then scores the others).")
    @click.option("--selection", type=click.Choice(TRANSFER_SELECTIONS), default=None,
                  help="With --max-networks: how the N networks are chosen  [default: coverage]")
    @click.option("--seed", type=int, default=0, show_default=True, help="With --max-networks: which networks.")
    @click.option("--interval-from", type=click.Choice(TRANSFER_INTERVAL_FROM), default=None,
                  help="With --from: 90% interval from the same transfer simulated on the old phones (sources), "
                       "from leaving each new-phone network out (target), or sources where possible (auto)  "
                       "[default: auto]")
    @click.option("--models-dir", type=click.Path(file_okay=False), default=None,
                  help="With --from: where to look for measured .tflite files whose stored path is gone.")
    @click.option("--store", "store_path", type=click.Path(dir_okay=False), default=None,
                  help="Store with the new phone's runs and (for a store signature) the training devices "
                       "(default: the store named in the signature file).")
    @click.option("--device", "serial", default=None,
                  help="Serial of the new phone in the store; its signature latencies come from its runs.")
    @click.option("--latencies", "lat_path", type=click.Path(dir_okay=False), default=None,
                  help="Instead of --device: CSV network,latency_ms for every signature network.")
    @click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
                  help="Where to write the phone's predictor.")
    @click.option("--data", "data_dir", type=click.Path(), default=None,
                  help="Dataset folder for a dataset signature (default: the one named in the signature file).")
    @click.option("--boost/--no-boost", default=True, show_default=True,
                  help="With --signature: add the boosted correction when inner CV finds it helps (about 10 s "
                       "more).")
    @click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
    @handle_errors
    def adapt_cmd(sig_path, from_paths, method, max_networks, selection, seed, interval_from, models_dir,
                  store_path, serial, lat_path, out_path, data_dir, boost, as_json) -> None:
        """Build a latency predictor for a new phone: from its signature latencies
        (--signature), or transferred from predictors of phones already modelled plus the
        new phone's few per-op runs in the store (--from)."""
        import numpy as np

        from opcost.errors import UsageError

        if (sig_path is None) == (not from_paths):
            raise UsageError("pass either --signature FILE or --from SOURCE.predictor",
                             hint="e.g. `opcost adapt --store runs.db --device SERIAL --signature sig.json --out "
                                  "new.predictor` or `opcost adapt --from old.predictor --store runs.db --device "
                                  "SERIAL --out new.predictor`")
        if not from_paths and (selection is not None or max_networks is not None or method is not None
                               or interval_from is not None):
            raise UsageError("--method, --max-networks, --selection and --interval-from go with --from",
                             hint="a signature predictor uses exactly the signature's networks")
        if from_paths:
            from host.cli.transfer_cmds import adapt_transfer

            if lat_path is not None:
                raise UsageError("--latencies goes with --signature; --from reads the new phone's runs from --store")
            adapt_transfer(from_paths, store_path, serial, out_path, method, max_networks, seed, models_dir, as_json,
                           selection=selection, interval_from=interval_from)
            return
        from host.modeler.signature import (LatencyMatrix, adapt_phone, parse_latency_csv,
                                            parse_signature_document, store_device_latency_ms,
                                            store_latency_matrix)
        from host.modeler.signature_structure import attach_store_structure

        doc = parse_signature_document(
            _read_text(sig_path, "signature file", "the JSON file written by `opcost signature select --out`"),
            sig_path)
        if (serial is None) == (lat_path is None):
            raise UsageError("pass either --device SERIAL (latencies from the store's runs) or --latencies CSV",
                             hint="e.g. `opcost adapt --store runs.db --device SERIAL --signature sig.json "
                                  "--out new.predictor`")
        ds = doc.get("dataset") or {}
        source = ds.get("dataset", "ganesan2020")
        if source != "store" and source not in DATASETS:
            raise UsageError(f"{sig_path} names dataset {source!r}, which opcost cannot load yet")
        delegate, threads = ds.get("delegate", "cpu"), int(ds.get("threads", 1))
        if store_path is None and source == "store":
            store_path = ds.get("store")
        if source == "store" and store_path is None:
            raise UsageError(f"{sig_path} was selected on a store but names none; pass --store FILE")
        if serial is not None and store_path is None:
            raise UsageError("--device reads the phone's runs from a store; pass --store FILE",
                             hint="or pass its signature latencies with --latencies CSV")
        with _open_store(store_path) as store:
            if serial is not None:
                serial = store.resolve_device(serial, unique=True)
                if serial in doc["training_devices"]:
                    log.warning("%s was one of the signature's training devices; it is left out of the training "
                                "devices here (select with --exclude-device %s for a clean hold-out)", serial, serial)
                sig_lat, sig_spread = store_device_latency_ms(store, serial, doc["networks"], delegate=delegate,
                                                              threads=threads, with_spread=True)
            else:
                sig_spread = None
                text = _read_text(lat_path, "latency file",
                                  "a text CSV with one line <network>,<latency_ms> per signature network")
                sig_lat = parse_latency_csv(text, doc["networks"], lat_path)
            exclude = [serial] if serial is not None else []
            if source == "store":
                train_devices = [d for d in doc["training_devices"] if d not in exclude]
                train = attach_store_structure(
                    store_latency_matrix(store, delegate=delegate, threads=threads, devices=train_devices,
                                         networks=ds.get("networks")), store)
            else:
                full = LatencyMatrix.from_dataset(_load_dataset(source, data_dir or ds.get("data_dir")))
                train = full.restrict(doc["training_devices"], exclude=exclude)
                if len(train.devices) < 3:
                    raise UsageError(f"only {len(train.devices)} of the signature's training devices are in "
                                     f"{full.source.get('data_dir')}",
                                     hint="pass --data with the dataset the signature was selected on")
        info = {"method": doc.get("chosen_method", doc.get("method")), "selection_method": doc.get("method"),
                "device": serial, "delegate": delegate, "threads": threads, "signature_file": sig_path,
                "signature_source": f"store {store_path}" if serial is not None else f"csv {lat_path}"}
        click.echo(f"fitting the signature model on {len(train.devices)} training device runs"
                   + (" (with the boosted correction: about 10-20 s)" if boost else "") + " ...", err=True)
        phone = adapt_phone(train, doc["networks"], sig_lat, info, signature_spread=sig_spread,
                            boost="auto" if boost else "off")
        phone.save(out_path)
        pred = phone.predict()
        model = phone.model
        check = phone.check()
        interval_pct = [round(float(v - 1) * 100, 1) for v in model.interval_factors(sig_lat, sig_spread)[0]]
        structure_pct = ([round(float(v - 1) * 100, 1) for v in model.interval_factors(sig_lat, sig_spread, True)[0]]
                         if model.structure_interval_residuals_ is not None else None)
        summary = _echo_check_warning(check)
        if as_json:
            echo_json({"predictor": out_path, "device": serial, "rank": model.rank_,
                       "predicts_from_structure": phone.knows_structure,
                       "n_neighbors": model.n_neighbors_, "training_devices": len(model.devices_),
                       "spread_weight": model.spread_weight_,
                       "boost_shrink": model.boost_.shrink if model.boost_ is not None else 0.0,
                       "signature_run_spread": phone.signature_spread is not None,
                       "signature_check": check, "interval_coverage": model.interval,
                       "interval_pct": interval_pct, "structure_interval_pct": structure_pct,
                       "latency_ms": {n: float(v) for n, v in zip(phone.networks, pred)}})
        else:
            click.echo(f"predictor for {len(pred)} networks written to {out_path} "
                       f"(rank {model.rank_}, {model.n_neighbors_} neighbours, "
                       f"{len(model.devices_)} training devices); predicted {np.min(pred):.1f}-{np.max(pred):.1f} ms")
            click.echo(f"{model.interval:.0%} interval: {interval_pct[0]:+.1f}% to {interval_pct[1]:+.1f}% around "
                       "a typical network's prediction" + (f" ({structure_pct[0]:+.1f}% to {structure_pct[1]:+.1f}% "
                                                           "for a .tflite predicted from its structure)"
                                                           if structure_pct else "")
                       + "; from the errors of training phones whose signature fit as well as this one's, "
                         "wider for networks whose errors spread more across phones")
            if phone.signature_spread is None:
                click.echo("the signature latencies have no run spread (CSV): all signature values count the same")
            elif model.spread_weight_:
                click.echo(f"signature values weighted by their runs' spread (weight {model.spread_weight_:g})")
            if model.boost_ is not None:
                click.echo(f"boosted correction on (inner CV applies {model.boost_.shrink:g} of it; "
                           "networks known by name, not .tflite files)")
            click.echo("other networks: " + ("predicted from their .tflite (`opcost signature predict --predictor "
                                             f"{out_path} net.tflite`)" if phone.knows_structure else
                                             "not predictable (the training networks' structure is unknown)"))
            click.echo(summary)
