"""CLI commands: `opcost zoo list|build|sample|micro` (models_zoo)."""
from __future__ import annotations

from typing import Optional, Tuple

import click

from host.cli._common import echo_json, handle_errors
from models_zoo.convert import QUANTIZE_MODES

_CACHE_OPT = click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                          help="Conversion cache (default $OPCOST_CACHE_DIR or ~/.cache/opcost/zoo).")


def _finish(result: dict, as_json: bool) -> None:
    from opcost.errors import ZooError

    if as_json:
        echo_json(result)
    else:
        for e in result["models"]:
            click.echo(f"{e['name']}\t{e['num_ops'] if e['num_ops'] is not None else '-'} ops\t{e['path']}")
        if result["manifest"]:
            click.echo(f"manifest: {result['manifest']}", err=True)
    if result["errors"]:
        names = ", ".join(e["name"] for e in result["errors"])
        built = (f"the other {len(result['models'])} were built and are listed in {result['manifest']}"
                 if result["models"] else "nothing was built")
        raise ZooError(f"{len(result['errors'])} model(s) failed: {names}; {built}",
                       hint="see the warning for each failed model above")


def register(main: click.Group) -> None:
    """Add this module's commands to the main group."""

    @main.group("zoo")
    def zoo() -> None:
        """Reference networks, NAS samples and micro-benchmarks as .tflite files."""

    @zoo.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @_CACHE_OPT
    @handle_errors
    def zoo_list(as_json: bool, cache_dir: Optional[str]) -> None:
        """Reference networks (op counts when already built), NAS spaces, micro ops."""
        from models_zoo import micro, nas, reference
        from models_zoo.convert import cached_path, read_sidecar

        rows = []
        for r in reference.list_reference():
            p = cached_path(reference.reference_key(r["name"]), cache_dir)
            side = read_sidecar(p) if p else {}
            rows.append({**r, "cached_path": str(p) if p else None, "num_ops": side.get("num_ops"),
                         "num_params": side.get("num_params"), "size_bytes": side.get("size_bytes")})
        from models_zoo import ganesan2020

        gan = ganesan2020.list_rows(cache_dir)
        doc = {"reference": rows, "nas_spaces": list(nas.SPACES), "micro_ops": list(micro.OPS),
               "ganesan2020": gan}
        if as_json:
            echo_json(doc)
            return
        click.echo(f"{'family':<16}{'name':<22}{'input':>6}{'ops':>6}{'MB':>8}  description")
        for r in rows:
            ops = str(r["num_ops"]) if r["num_ops"] is not None else "-"
            mb = f"{r['size_bytes'] / 1e6:.1f}" if r["size_bytes"] else "-"
            click.echo(f"{r['family']:<16}{r['name']:<22}{r['input_size']:>6}{ops:>6}{mb:>8}  {r['description']}")
        built = sum(r["num_ops"] is not None for r in gan)
        click.echo(f"\nganesan2020: {len(gan)} networks from the dataset's layer tables ({built} built), int8 "
                   f"dynamic-range weights, 224x224: ganesan2020/rand000..rand099, ganesan2020/pub100..pub117")
        click.echo(f"\nNAS spaces: {', '.join(nas.SPACES)}")
        click.echo(f"micro ops:  {', '.join(micro.OPS)}")

    @zoo.command("build")
    @click.argument("names", nargs=-1)
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
    @click.option("--signature", "sig_path", type=click.Path(dir_okay=False), default=None,
                  help="Also build the networks of this signature (JSON from `opcost signature select`), "
                       "for measuring them on a new phone.")
    @click.option("--input-size", type=int, default=None, help="Override the input size (HxW).")
    @click.option("--quantize", type=click.Choice(QUANTIZE_MODES), default=None,
                  help="ganesan2020/ networks: int8 dynamic-range weights (default, the regime of the dataset; "
                       "file NAME.tflite) or float32 (none; file NAME_float32.tflite).")
    @click.option("--json", "as_json", is_flag=True, help="Print the manifest entries as JSON.")
    @_CACHE_OPT
    @handle_errors
    def zoo_build(names: Tuple[str, ...], out_dir: str, sig_path: Optional[str], input_size: Optional[int],
                  quantize: Optional[str], as_json: bool, cache_dir: Optional[str]) -> None:
        """Build reference networks NAME... (or `all`) and ganesan2020/NAME networks
        (or ganesan2020/all) into DIR."""
        from models_zoo import ganesan2020, reference
        from models_zoo.convert import build_and_export
        from opcost.errors import UsageError, ZooError

        if sig_path:
            names = tuple(names) + tuple(ganesan2020.signature_names(sig_path))
        if not names:
            raise UsageError("nothing to build", hint="name networks (e.g. mobilenet_v2 ganesan2020/rand051) or "
                                                      "pass --signature sig.json")
        gan, names = ganesan2020.split_names(names)
        jobs = ganesan2020.zoo_jobs(gan, quantize=quantize, input_size=input_size, cache_dir=cache_dir)
        if names and quantize == "dynamic":
            raise ZooError("--quantize dynamic applies to ganesan2020/ networks only",
                           hint="reference networks are built as float32; drop --quantize or build them separately")
        wanted = reference.reference_names() if "all" in names else list(names)
        for n in wanted:
            try:
                params = reference.reference_params(n, input_size)  # validates before any work
            except ZooError as err:
                if err.message.startswith("unknown reference network"):
                    raise ZooError(err.message, hint=f"{err.hint}; {ganesan2020.VALID_NAMES_HINT}") from None
                raise
            stem = params["name"] + (f"_{input_size}" if input_size else "")
            jobs.append((stem, "zoo:reference",
                         lambda n=params["name"]: reference.build_reference(
                             n, cache_dir=cache_dir, input_size=input_size)))
        _finish(build_and_export(jobs, out_dir), as_json)

    @zoo.command("sample")
    @click.argument("space", type=click.Choice(["mbv2-space", "nb201"]))
    @click.option("--count", type=int, default=10, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
    @click.option("--width-mult", type=float, default=None, help="mbv2-space: fix the width multiplier.")
    @click.option("--input-size", type=int, default=None, help="Override the input size.")
    @click.option("--json", "as_json", is_flag=True)
    @_CACHE_OPT
    @handle_errors
    def zoo_sample(space: str, count: int, seed: int, out_dir: str, width_mult: Optional[float],
                   input_size: Optional[int], as_json: bool, cache_dir: Optional[str]) -> None:
        """Sample COUNT distinct networks of a NAS space with SEED into DIR."""
        from models_zoo import nas
        from models_zoo.convert import build_and_export

        over = {"input_size": input_size}
        if space == "mbv2-space":
            over["width_mult"] = width_mult
        cfgs = nas.sample_configs(space, count, seed, **over)
        jobs = [(nas.config_name(c), f"zoo:{space}",
                 lambda c=c: nas.build_config(c, cache_dir=cache_dir)) for c in cfgs]
        _finish(build_and_export(jobs, out_dir), as_json)

    @zoo.command("micro")
    @click.argument("op")
    @click.option("--count", type=int, default=10, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
    @click.option("--json", "as_json", is_flag=True)
    @_CACHE_OPT
    @handle_errors
    def zoo_micro(op: str, count: int, seed: int, out_dir: str, as_json: bool,
                  cache_dir: Optional[str]) -> None:
        """Single-op / block micro-benchmarks of OP (or `all`) into DIR."""
        from models_zoo import micro
        from models_zoo.convert import build_and_export

        ops = list(micro.OPS) if op == "all" else [op]
        jobs = []
        for o in ops:
            for c in micro.sample_configs(o, count, seed):
                jobs.append((micro.config_name(c), f"zoo:micro:{o}",
                             lambda c=c: micro.build_config(c, cache_dir=cache_dir)))
        _finish(build_and_export(jobs, out_dir), as_json)
