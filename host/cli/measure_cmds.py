"""CLI commands: ``opcost devices`` and ``opcost profile``."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import click

from host.cli._common import echo_json, handle_errors
from opcost.records import DELEGATES


def register(main: click.Group) -> None:
    """Add this module's commands to the main group."""
    main.add_command(devices_cmd)
    main.add_command(profile_cmd)


def _clusters_text(clusters: List[dict]) -> str:
    parts = []
    for c in clusters:
        khz = c.get("max_khz")
        ghz = f"{khz / 1e6:.2f}" if khz else "?"
        parts.append(f"{len(c.get('cpus', []))}x{ghz}")
    return "+".join(parts) + " GHz" if parts else "-"


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per device on stdout.")
@handle_errors
def devices_cmd(as_json: bool) -> None:
    """List Android devices known to the adb server (ADB_SERVER_HOST/ADB_SERVER_PORT)."""
    from host.adb import AdbTransport
    from host.devices import list_devices

    transport = AdbTransport()
    infos = list_devices(transport)
    if not infos:
        host, port = transport.address
        click.echo(f"no Android device is connected to the adb server at {host}:{port}; plug a phone in, "
                   "enable USB debugging and accept the prompt. `--device local` measures this host.", err=True)
        return
    if as_json:
        for info in infos:
            echo_json(info)
        return
    rows = [("SERIAL", "STATE", "MODEL", "SOC", "ABI", "SDK", "CPU CLUSTERS")]
    for i in infos:
        rows.append((i.serial, str(i.extra.get("state", "")), i.model or "-", i.soc or "-", i.abi or "-",
                     str(i.sdk) if i.sdk is not None else "-", _clusters_text(i.cpu_clusters)))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    for i in infos:
        if i.extra.get("error"):
            click.echo(f"note: {i.serial}: {i.extra['error']}", err=True)


def _fmt(v: Optional[float], digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


NAME_WIDTH_MAX = 48  # the MODEL column grows to this; longer names are cut in the middle


def _cut_middle(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters: start and end kept, "…" in between (the
    end is what tells sliced parts such as ``..._block000`` / ``..._block001`` apart)."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


def _table_names(names: List[str]) -> dict:
    """Name -> how the table shows it: as wide as the longest name up to NAME_WIDTH_MAX,
    cut in the middle beyond that, and never cut so that two names look the same."""
    width = max([len("MODEL")] + [min(len(n), NAME_WIDTH_MAX) for n in names])
    shown = {n: _cut_middle(n, width) for n in names}
    if len(set(shown.values())) < len(shown):
        shown = {n: n for n in names}
    return shown


@click.command("profile")
@click.argument("models", nargs=-1, required=True)
@click.option("--device", "serial", required=True, help="adb serial of a phone, or 'local' for this host.")
@click.option("--binary", type=str, default=None, help="benchmark_model for the device's ABI (Android: required).")
@click.option("--delegate", type=click.Choice(DELEGATES), default="xnnpack", show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--cpu-mask", default=None, help="Hex CPU affinity mask, e.g. f0 for cores 4-7.")
@click.option("--runs", type=int, default=50, show_default=True)
@click.option("--warmup", type=int, default=1, show_default=True)
@click.option("--min-secs", type=float, default=1.0, show_default=True)
@click.option("--max-secs", type=float, default=150.0, show_default=True)
@click.option("--timeout-s", type=float, default=600.0, show_default=True, help="Hard wall-clock limit per run.")
@click.option("--op-profiling", is_flag=True, help="benchmark_model's per-op profiling tables.")
@click.option("--per-op", is_flag=True, help="Local device: time every op sliced into its own model.")
@click.option("--per-block", is_flag=True,
              help="Local device: time every block (single-tensor cut points) sliced into its own model; "
                   "stored with the block's structural key.")
@click.option("--thermal-max-c", type=float, default=None, help="Android: wait until the phone is this cool.")
@click.option("--nice", type=click.IntRange(-20, 19), default=None,
              help="Local device: priority (nice value, -20..19) of the measuring process. On a shared "
                   "machine `--cpu-mask 2 --nice -10` gives stable host timings; negative values need root.")
@click.option("--store", "store_path", default="opcost_runs.db", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON record per model on stdout.")
@handle_errors
def profile_cmd(models, serial, binary, delegate, threads, cpu_mask, runs, warmup, min_secs, max_secs,
                timeout_s, op_profiling, per_op, per_block, thermal_max_c, nice, store_path, as_json) -> None:
    """Measure MODEL(s) on one device; each measurement is committed to the store at once."""
    from device_bench.parsers import run_notes
    from host.devices import open_device
    from host.store import Store
    from opcost.errors import AdbError, BinaryError, DeviceDisconnected, OpcostError, StoreError, UsageError
    from opcost.records import RunSpec

    spec = RunSpec(delegate=delegate, threads=threads, cpu_mask=cpu_mask, warmup_runs=warmup, num_runs=runs,
                   min_secs=min_secs, max_secs=max_secs, op_profiling=op_profiling, timeout_s=timeout_s)
    local = serial == "local"
    if per_op and not local:
        raise UsageError("--per-op works only with --device local",
                         hint="on a phone use --op-profiling for per-op times")
    if per_block and not local:
        # Android runs stay op-level: benchmark_model's op profiles, no block slicing on phones.
        raise UsageError("--per-block works only with --device local",
                         hint="on a phone use --op-profiling; block times are measured on the host only")
    if thermal_max_c is not None and local:
        raise UsageError("--thermal-max-c works only with an Android device")
    if nice is not None and not local:
        raise UsageError("--nice works only with --device local",
                         hint="on a phone, pin the run with --cpu-mask and keep the phone idle")
    if binary is not None and not os.path.isfile(binary):
        raise BinaryError(f"--binary {binary}: no such file")
    if not local and binary is None:
        raise BinaryError(f"--binary is required to measure on Android device {serial}")
    kw = {"nice": nice} if local else {"thermal_max_c": thermal_max_c}
    device = open_device(serial, binary_path=binary, **kw)
    device.check_spec(spec)  # settings wrong for this device fail once, before any model
    measure_kw = {"per_op": True} if per_op else {}
    if per_block:
        measure_kw["per_block"] = True

    failed: List[str] = []
    shown = _table_names([os.path.splitext(os.path.basename(p))[0] for p in models])
    width = max(len(v) for v in shown.values())
    header_done = as_json  # the table header goes out with the first result, not when all fail

    def stop(n: int, why: str, err: OpcostError, path: str) -> None:
        rest = list(models[n:])
        if not rest:
            return
        click.echo(f"stopping: {why}; not measured: {', '.join(rest)}", err=True)
        failed.extend(rest)
        if as_json:
            for p in rest:
                echo_json({"model_path": p, "device": serial, "error": "NotMeasured",
                           "message": f"not measured: {why} (after {type(err).__name__} on {path})",
                           "hint": err.hint})

    def show(m, name: str, path: str, run_id) -> None:
        nonlocal header_done
        if as_json:
            echo_json(dict(m.to_dict(), run_id=run_id, model_path=path))
            return
        if not header_done:
            click.echo(f"{'MODEL':<{width}} {'MEAN ms':>10} {'STD ms':>8} {'MIN ms':>10} {'INIT ms':>9} "
                       f"{'PEAK MB':>8}  RUN")
            header_done = True
        e, o = m.output.e2e, m.output
        peak = o.peak_mem_mb if o.peak_mem_mb is not None else o.overall_mem_mb
        click.echo(f"{shown[name]:<{width}} {_fmt(e.mean_ms):>10} {_fmt(e.std_ms):>8} {_fmt(e.min_ms):>10} "
                   f"{_fmt(e.init_ms, 1):>9} {_fmt(peak, 1):>8}  {run_id if run_id is not None else '-'}")
        for b in o.blocks:
            click.echo(f"    block {b.index:<3} {b.key}  {_fmt(b.avg_ms, 4):>9} ms  "
                       f"{'+'.join(b.op_types)[:60]}")

    with Store.open(store_path) as store:
        for n, path in enumerate(models, 1):
            name = os.path.splitext(os.path.basename(path))[0]
            click.echo(f"[{n}/{len(models)}] {name} on {serial} ({spec.delegate}, {spec.threads} thread(s))",
                       err=True)
            try:
                m = device.measure(path, spec, model_name=name, **measure_kw)
            except OpcostError as err:
                failed.append(path)
                click.echo(f"error: {path}: {err}", err=True)
                if as_json:
                    echo_json({"model_path": path, "device": serial, **err.to_dict()})
                # A lost device or a binary it cannot run fails every later model the same way.
                if isinstance(err, (DeviceDisconnected, AdbError, BinaryError)):
                    stop(n, "the binary cannot run there" if isinstance(err, BinaryError) else "the device is gone",
                         err, path)
                    break
                continue
            for note in run_notes(m.output, spec.delegate, spec.op_profiling):
                click.echo(f"note: {name}: {note}", err=True)
            try:
                run_id = store.add_measurement(m)
            except StoreError as err:
                # The run happened but could not be stored: print it (nothing else keeps it), stop.
                failed.append(path)
                click.echo(f"error: {path}: measured but not stored: {err}", err=True)
                show(m, name, path, None)
                stop(n, "the store cannot be written", err, path)
                break
            show(m, name, path, run_id)
    if failed:
        if len(failed) == len(models):
            what = "the model" if len(models) == 1 else f"all {len(models)} models"
            click.echo(f"{what} failed (see the errors above); nothing was measured", err=True)
        else:
            click.echo(f"{len(failed)} of {len(models)} model(s) failed (see the errors above); the others are "
                       f"stored in {store_path}", err=True)
        sys.exit(1)

