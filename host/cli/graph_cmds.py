"""CLI commands: `opcost graph` (what is in a .tflite) and `opcost slice` (ops/blocks as
standalone models)."""
from __future__ import annotations

import click

from host.cli._common import echo_json, handle_errors


def _fmt_shape(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "-"


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:g}"


def _op_detail(op) -> str:
    o = op.options
    bits = []
    if op.kernel_h is not None:
        bits.append(f"k{op.kernel_h}x{op.kernel_w}")
    if "stride_h" in o:
        bits.append(f"s{o['stride_h']}x{o['stride_w']}")
    if o.get("dilation_h", 1) != 1 or o.get("dilation_w", 1) != 1:
        bits.append(f"d{o['dilation_h']}x{o['dilation_w']}")
    if op.groups and op.groups > 1:
        bits.append(f"g{op.groups}")
    if "padding" in o:
        bits.append(str(o["padding"]))
    act = o.get("fused_activation")
    if act and act != "NONE":
        bits.append(str(act))
    return " ".join(bits)


@click.command("graph")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object: summary, ops (and blocks).")
@click.option("--blocks", "show_blocks", is_flag=True,
              help="Also list the blocks (runs of ops between single-tensor cut points).")
@handle_errors
def graph_cmd(model: str, as_json: bool, show_blocks: bool) -> None:
    """Show the ops of MODEL (.tflite) with shapes, FLOPs, bytes and parameters."""
    from models_zoo.graph import read_graph

    g = read_graph(model)
    if as_json:
        doc = {"summary": g.summary(), "ops": [op.to_dict() for op in g.ops]}
        if show_blocks:
            doc["blocks"] = [b.to_dict() for b in g.blocks()]
        echo_json(doc)
        return
    s = g.summary()
    click.echo(f"{s['name']}: {s['n_ops']} ops, {s['n_subgraphs']} subgraph(s), "
               f"{_human(s['flops'])}FLOPs, {_human(s['macs'])}MACs, {_human(s['params'])} params, "
               f"weights {_human(s['weights_bytes'])}B")
    for io in ("inputs", "outputs"):
        click.echo(f"  {io}: " + ", ".join(f"{t['name']} {_fmt_shape(t['shape'])} {t['dtype']}"
                                          for t in s[io]))
    click.echo(f"{'sg':>2} {'#':>4} {'op':<22} {'in shape':<16} {'out shape':<16} {'FLOPs':>9} "
               f"{'params':>8} {'bytes in/out':>15}  details")
    for op in g.ops:
        ins = [sh for sh, t in zip(op.input_shapes, op.inputs)
               if t >= 0 and not g.subgraphs[op.subgraph].tensors[t].is_constant]
        in0 = _fmt_shape(ins[0]) if ins else "-"
        out0 = _fmt_shape(op.output_shapes[0]) if op.output_shapes else "-"
        click.echo(f"{op.subgraph:>2} {op.index:>4} {op.type[:22]:<22} {in0:<16} {out0:<16} "
                   f"{_human(op.flops):>9} {_human(op.params):>8} "
                   f"{_human(op.bytes_in) + '/' + _human(op.bytes_out):>15}  {_op_detail(op)}")
    click.echo("op counts: " + ", ".join(f"{k} {v}" for k, v in s["op_counts"].items()))
    if show_blocks:
        blocks = g.blocks()
        click.echo(f"{len(blocks)} blocks:")
        click.echo(f"{'#':>4} {'ops':<12} {'in':<16} {'out':<16} {'FLOPs':>9} {'params':>8} "
                   f"{'key':<16}  types")
        const_like = g.const_like_ops()  # weight DEQUANTIZE etc. are listed, not spanned
        for b in blocks:
            main = [i for i in b.ops if not const_like[i]] or list(b.ops)
            span = f"{main[0]}-{main[-1]}" if len(main) > 1 else str(main[0])
            tin = _fmt_shape(g.tensors[b.inputs[0]].shape) if len(b.inputs) == 1 else f"{len(b.inputs)} tensors"
            tout = _fmt_shape(g.tensors[b.outputs[0]].shape) if len(b.outputs) == 1 else f"{len(b.outputs)} tensors"
            click.echo(f"{b.index:>4} {span:<12} {tin:<16} {tout:<16} {_human(b.flops):>9} "
                       f"{_human(b.params):>8} {b.key:<16}  {' '.join(b.op_types)}")


@click.command("slice")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the sliced .tflite files (created if missing).")
@click.option("--ops/--no-ops", default=True, show_default=True, help="Write every op.")
@click.option("--blocks/--no-blocks", default=True, show_default=True, help="Write every block.")
@click.option("--unique", is_flag=True, help="Write only the first slice of each structure key.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per written slice.")
@handle_errors
def slice_cmd(model: str, out_dir: str, ops: bool, blocks: bool, unique: bool, as_json: bool) -> None:
    """Write the ops and/or blocks of MODEL as standalone .tflite models in --out."""
    from models_zoo.slicing import slice_all

    skipped: list = []
    written = slice_all(model, out_dir, ops=ops, blocks=blocks, unique=unique, skipped=skipped)
    for s in written:
        if as_json:
            echo_json({"kind": s.kind, "index": s.index, "path": s.path, "key": s.key})
        else:
            click.echo(f"{s.kind:<5} {s.index:>4} {s.key}  {s.path}")
    for kind, idx, reason in skipped:
        click.echo(f"skipped {kind} {idx}: {reason}", err=True)
    click.echo(f"wrote {len(written)} models to {out_dir}"
               + (f", skipped {len(skipped)}" if skipped else ""), err=True)


def register(main: click.Group) -> None:
    """Add this module's commands to the main group."""
    main.add_command(graph_cmd)
    main.add_command(slice_cmd)
