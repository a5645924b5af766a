"""CLI commands of the modeler: dataset import, fit, predict, evaluate."""
from __future__ import annotations

import click

from host.cli._common import echo_json, handle_errors, interval_line
from opcost.errors import short_list

DEFAULT_STORE = "opcost_runs.db"


def register(main: click.Group) -> None:
    """Add this module's commands to the main group."""
    main.add_command(dataset)
    _register_modeling(main)


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


@dataset.command("latencies")
@click.argument("name", type=click.Choice(["ganesan2020"]))
@click.argument("device")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of the dataset (default: the copy shipped in data/NAME).")
@handle_errors
def dataset_latencies(name: str, device: str, data_dir: str | None) -> None:
    """Print one DEVICE's latencies in dataset NAME as CSV (network,latency_ms): the
    median of runs 2..30, as the benchmarks use. A file `opcost adapt --latencies` reads,
    to try the signature workflow with a dataset phone as the new phone."""
    from host.modeler import data_ganesan2020 as g20
    from opcost.errors import UsageError

    data = g20.load(data_dir or g20.default_data_dir())
    if device.startswith(name + "/"):   # a store's name for it
        device = device[len(name) + 1:]
    if device not in data.devices:
        raise UsageError(f"no device {device!r} in {name}", hint="devices: " + short_list(data.devices, 8))
    row = data.latency_ms[data.devices.index(device)]
    click.echo("network,latency_ms")
    for network, ms in zip(data.networks, row):
        click.echo(f"{network},{float(ms)!r}")


def _register_modeling(main: click.Group) -> None:
    main.add_command(fit)
    main.add_command(predict)
    main.add_command(evaluate)
    main.add_command(demo)


@click.command()
@click.option("--store", "store_path", default=DEFAULT_STORE, show_default=True, help="SQLite store with measurements.")
@click.option("--device", required=True, help="Device serial (or device model name) whose runs to fit on.")
@click.option("--delegate", default="xnnpack", show_default=True,
              type=click.Choice(["cpu", "xnnpack", "gpu", "nnapi"]))
@click.option("--threads", type=int, default=None, help="Only runs with this thread count (default: any).")
@click.option("--models-dir", type=click.Path(file_okay=False), default=None,
              help="Where to look for measured .tflite files whose stored path is gone.")
@click.option("--overhead", default="auto", show_default=True,
              type=click.Choice(["auto", "none", "scale", "dispatch", "linear"]),
              help="How the kernel sum becomes end-to-end latency.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Predictor file to write.")
@click.option("--no-blocks", is_flag=True,
              help="Kernels only, even when the runs have per-block times (default: use them).")
@click.option("--hold-out", "hold_out", multiple=True, metavar="PATTERN",
              help="Leave networks whose model name matches this shell pattern out of fitting, so "
                   "`opcost evaluate` scores them (e.g. 'mobilenet*'); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the training summary as JSON.")
@handle_errors
def fit(store_path, device, delegate, threads, models_dir, overhead, out_path, no_blocks, hold_out, as_json) -> None:
    """Fit a latency predictor for one device and delegate from the store's runs.

    When runs have per-block times (`profile --per-block`), the predictor also looks up
    measured blocks and fits block regressors."""
    from host.modeler.service import fit_from_store
    from host.store import Store

    with Store.open_reader(store_path) as store:
        summary = fit_from_store(store, device=device, delegate=delegate, threads=threads,
                                 models_dir=models_dir, overhead=overhead, out_path=out_path,
                                 blocks=False if no_blocks else None, hold_out=hold_out)
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"wrote {out_path}: {summary['n_networks']} networks, {summary['n_kernels_measured']} "
                   f"measured kernels, kernel types {', '.join(summary['kernel_types'])}; "
                   f"overhead form {summary['overhead']}")
        line = interval_line(summary)
        if line:
            click.echo(line)
        if summary["pooled_devices"]:
            pooled = summary["pooled_devices"]
            click.echo(f"pooled the runs of {len(pooled)} devices that are a {summary['device']}: "
                       f"{short_list(pooled)} (give a serial to fit one of them)")
        if summary["held_out_model_names"]:
            held = summary["held_out_model_names"]
            click.echo(f"held out {len(held)} network(s) for `opcost evaluate`: {short_list(held)}")
        if "blocks" in summary:
            b = summary["blocks"]
            click.echo(f"blocks: {b['n_keys_measured']} distinct measured blocks ({b['n_blocks_measured']} "
                       f"timed), block regressors for {len(b['kinds_with_regressor'])} kind(s)")


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--predictor", "predictor_path", required=True, type=click.Path(dir_okay=False))
@click.option("--per-op", is_flag=True, help="Also print each kernel's predicted time.")
@click.option("--per-block", is_flag=True,
              help="Also print each block's predicted time and its source (lookup, regressor, kernel_sum).")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per model on stdout.")
@handle_errors
def predict(models, predictor_path, per_op, per_block, as_json) -> None:
    """Predict the latency of .tflite MODELS with a predictor file."""
    from host.modeler.service import predict_files

    result = predict_files(predictor_path, list(models), per_op=per_op, per_block=per_block)
    for rec in result["networks"]:
        if as_json:
            echo_json(rec)
            continue
        flag = f"  ({rec['n_unknown_kernels']} kernel(s) of unknown type, predicted by the fallback)" \
            if rec["n_unknown_kernels"] else ""
        click.echo(f"{rec['model']}: {rec['pred_ms']:.3f} ms  [{rec['lo_ms']:.3f}, {rec['hi_ms']:.3f}]{flag}")
        if "blocks_by_source" in rec:
            src = rec["blocks_by_source"]
            click.echo(f"    blocks: {src['lookup']} measured (lookup), {src['regressor']} block regressor, "
                       f"{src['kernel_sum']} kernel sum; kernels only: {rec['kernel_only_pred_ms']:.3f} ms")
        for b in rec.get("blocks", []):
            click.echo(f"    block {b['block_index']:<3} {b['source']:<10} {b['pred_ms']:>9.4f} ms  "
                       f"(kernel sum {b['kernel_sum_ms']:.4f})  {b['kind'][:50]}")
        if rec.get("kernels"):
            # One row per kernel: the op that starts it, its kernel type (what the regressor
            # predicts), and the later ops the runtime fuses into it.
            click.echo(f"    {'OP':<6}{'OP TYPE':<20}{'KERNEL TYPE':<22}{'OPS FUSED INTO IT':<22}"
                       f"{'PREDICTED ms':>12}")
        for k in rec.get("kernels", []):
            mark = "  *unknown kernel type*" if k["unknown_type"] else ""
            click.echo(f"    {'#' + str(k['op_index']):<6}{k['op_type']:<20}{k['kernel_type']:<22}"
                       f"{k['fused_ops'] or '-':<22}{k['pred_ms']:>12.4f}{mark}")


def _num(value: float) -> str:
    """A metric to 3 decimals, or n/a (e.g. R^2 and Spearman of fewer than 2 networks)."""
    return "n/a" if value != value else f"{value:.3f}"


@click.command()
@click.option("--store", "store_path", default=DEFAULT_STORE, show_default=True)
@click.option("--predictor", "predictor_path", required=True, type=click.Path(dir_okay=False))
@click.option("--all", "include_training", is_flag=True,
              help="Score the training networks too (default: only networks not used in fitting).")
@click.option("--models-dir", type=click.Path(file_okay=False), default=None)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a measured-vs-predicted scatter plot (PNG).")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def evaluate(store_path, predictor_path, include_training, models_dir, plot_path, as_json) -> None:
    """Score a predictor on the store's measurements of its device and delegate:
    MAPE, RMSPE, share within +-5% / +-10%, R^2, Spearman, and how many measured
    latencies fall inside the predictor's 90% interval."""
    from host.modeler.service import evaluate_store
    from host.store import Store

    with Store.open_reader(store_path) as store:
        res = evaluate_store(store, predictor_path, include_training=include_training,
                             models_dir=models_dir, plot_path=plot_path)
    if as_json:
        echo_json(res)
        return
    m = res["metrics"]
    click.echo(f"{m['n']} networks ({res['which']}): MAPE {m['mape_pct']:.2f}%  RMSPE {m['rmspe_pct']:.2f}%  "
               f"within 5% {m['acc5_pct']:.1f}%  within 10% {m['acc10_pct']:.1f}%  "
               f"R^2 {_num(m['r2'])}  Spearman {_num(m['spearman'])}")
    click.echo(f"inside the predictor's {res['interval_coverage'] * 100:.0f}% interval: "
               f"{res['inside_interval_pct']:.1f}% of {m['n']} networks")
    if plot_path:
        click.echo(f"plot: {plot_path}")


@click.command()
@click.option("--out", "out_dir", default="opcost_demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the zoo, the store, the predictor and the plot.")
@click.option("--nas", "nas_count", default=8, show_default=True, help="mbv2-space NAS samples to train on.")
@click.option("--seed", default=1, show_default=True)
@click.option("--min-secs", default=0.5, show_default=True, help="Minimum measuring time per model.")
@click.option("--nice", type=int, default=None,
              help="Priority of the measuring process (e.g. -10 on a busy machine; needs root).")
@click.option("--cpu-mask", default=None, help="Pin measurements to these cores (hex), e.g. 2.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def demo(out_dir, nas_count, seed, min_secs, nice, cpu_mask, as_json) -> None:
    """Build a small zoo, measure it on this host, fit a predictor and print measured
    vs predicted latency of real reference networks that were not used for fitting."""
    from host.demo import DemoPlan, run_demo

    res = run_demo(DemoPlan(out_dir=out_dir, nas_count=nas_count, seed=seed, min_secs=min_secs,
                            nice=nice, cpu_mask=cpu_mask))
    if as_json:
        echo_json(res)
        return
    click.echo(f"Measured on this host ({res['device'].get('model')}), 1 thread, XNNPACK; "
               f"fitted on {res['n_training_networks']} networks (NAS samples + micro-benchmarks).")
    click.echo(f"{'reference network':<22}{'measured ms':>12}{'predicted ms':>14}{'error':>9}"
               f"{'FLOPs-baseline error':>22}")
    for r in res["networks"]:
        click.echo(f"{r['model']:<22}{r['measured_ms']:>12.2f}{r['pred_ms']:>14.2f}{r['err_pct']:>8.1f}%"
                   f"{r['flops_baseline_err_pct']:>21.1f}%")
    m, b = res["metrics"], res["flops_baseline_metrics"]
    click.echo(f"predictor: MAPE {m['mape_pct']:.1f}%, within 10%: {m['acc10_pct']:.0f}%   "
               f"FLOPs baseline: MAPE {b['mape_pct']:.1f}%")
    click.echo(f"store: {res['store']}\npredictor: {res['predictor']}\nplot: {res['plot']}")
    if res["failures"]:
        click.echo(f"{len(res['failures'])} model(s) failed to measure (see warnings above)")
    click.echo(f"took {res['elapsed_s']:.0f} s")
