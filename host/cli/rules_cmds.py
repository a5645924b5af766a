"""CLI command: `opcost rules check` (fusion rules against single-op vs pair timings)."""
from __future__ import annotations

import os

import click

from host.cli._common import echo_json, handle_errors


@click.group("rules")
def rules_group() -> None:
    """Kernel fusion rules (host/modeler/rules/<runtime>.yaml)."""


@rules_group.command("check")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--runtime", type=click.Choice(["xnnpack", "cpu", "gpu"]), default="xnnpack", show_default=True,
              help="Rule set to check; measured with the delegate of the same name.")
@click.option("--device", "serial", default="local", show_default=True,
              help="adb serial of a phone, or 'local' for this host.")
@click.option("--binary", default=None, help="benchmark_model for the device's ABI (Android: required).")
@click.option("--per-kind", type=int, default=2, show_default=True,
              help="Pairs per producer->consumer kind (largest consumer tensors first).")
@click.option("--rounds", type=int, default=5, show_default=True,
              help="Rounds of P, C, P+C timed alternately (host: in one process, median share).")
@click.option("--cpu-mask", default=None, help="Hex CPU affinity mask, e.g. 2 for core 1.")
@click.option("--nice", type=click.IntRange(-20, 19), default=None,
              help="Local device: priority of the measuring process (negative values need root).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: cases and per-kind verdicts.")
@handle_errors
def check_cmd(models, runtime, serial, binary, per_kind, rounds, cpu_mask, nice, as_json) -> None:
    """Time producer P, consumer C and the pair P+C, sliced from MODELS, and say per
    pair kind whether the runtime fuses C into P (pair costs about P) and whether the
    rule file says the same. Exit 1 when a conclusive kind disagrees."""
    from host.devices import open_device
    from host.modeler.fusion_check import agreement, check_rules, find_pairs
    from opcost.errors import BinaryError, UsageError
    from opcost.records import RunSpec

    if per_kind < 1 or rounds < 1:
        raise UsageError("--per-kind and --rounds must be >= 1")
    missing = [m for m in models if not os.path.isfile(m)]
    if missing:
        raise UsageError(f"no such model file: {missing[0]}",
                         hint="pass paths of .tflite files, e.g. from `opcost zoo build`; benchmarks/fusion_check.py "
                              "builds the synthetic pair models into ~/.cache/opcost/synthetic_pairs/")
    local = serial == "local"
    if binary is not None and not os.path.isfile(binary):
        raise BinaryError(f"--binary {binary}: no such file")
    if not local and binary is None:
        raise BinaryError(f"--binary is required to measure on Android device {serial}")
    device = open_device(serial, binary_path=binary, **({"nice": nice} if local else {}))
    cases = find_pairs(list(models), per_kind=per_kind)
    click.echo(f"{len(cases)} pairs of {len({c.kind for c in cases})} kinds from {len(models)} model(s); "
               f"runtime {runtime} on {serial}", err=True)
    spec = RunSpec(delegate=runtime, threads=1, cpu_mask=cpu_mask, num_runs=30, min_secs=0.3, warmup_runs=3,
                   report_peak_memory=False)
    result = check_rules(device, runtime, cases, spec=spec, rounds=rounds,
                         progress=lambda msg: click.echo(msg, err=True))
    agree, total = agreement(result)
    result["agree"], result["kinds_checked"] = agree, total
    if as_json:
        echo_json(result)
    else:
        click.echo(f"{'PAIR KIND':<36} {'N':>2} {'SHARE':>6}  {'MEASURED':<9} {'RULES':<9} AGREE")
        for kind, k in result["kinds"].items():
            if k["n"] == 0:
                click.echo(f"{kind:<36} {0:>2} {'-':>6}  (no conclusive case)")
                continue
            if k["agree"] is None:
                click.echo(f"{kind:<36} {k['n']:>2} {k['median_extra_cost_share']:>6.2f}  "
                           f"(ambiguous: share between 0.3 and 0.7)")
                continue
            click.echo(f"{kind:<36} {k['n']:>2} {k['median_extra_cost_share']:>6.2f}  "
                       f"{'fused' if k['measured_fused'] else 'separate':<9} "
                       f"{'fused' if k['rules_fused'] else 'separate':<9} {'yes' if k['agree'] else 'NO'}")
        click.echo(f"rules agree with measurements on {agree} of {total} conclusive pair kinds")
    if agree < total:
        raise SystemExit(1)


def register(main: click.Group) -> None:
    main.add_command(rules_group)
