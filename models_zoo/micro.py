"""Micro-benchmarks: single-op models and small blocks, with configurations drawn from
the layer distribution of the reference networks.

``models_zoo/data/layer_distribution.json`` holds real layer configurations (input HxW,
channels, kernel, stride, expansion, ...) read once from the Keras reference models by
:func:`derive_layer_distribution`; sampling picks a real record and jitters it, snapping
to valid values (channels to multiples of 8, kernels to {1, 3, 5, 7}, strides to {1, 2},
HxW to sizes that occur in the reference networks).

Every configuration says which TFLite ops the converted model must contain
(``expected_ops``, op -> count); for single-op models that is exactly the one op.

Sampling is pure Python (no TensorFlow); building needs TensorFlow.
"""
from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from opcost.errors import ZooError
from models_zoo.sampling import check_count_seed, config_id, draw_distinct

GENERATOR_VERSION = 1
DATA_PATH = Path(__file__).with_name("data") / "layer_distribution.json"
KERNELS = (1, 3, 5, 7)
STRIDES = (1, 2)
OVERSAMPLE = 8  # candidates drawn per kept config when a score_fn is given

SINGLE_OPS = {
    # op name: TFLite builtin(s) the converted single-op model must consist of
    "conv2d": {"CONV_2D": 1},
    "depthwise_conv2d": {"DEPTHWISE_CONV_2D": 1},
    "dense": {"FULLY_CONNECTED": 1},
    "add": {"ADD": 1},
    "mul": {"MUL": 1},
    "concat": {"CONCATENATION": 1},
    "mean": {"MEAN": 1},
    "max_pool": {"MAX_POOL_2D": 1},
    "avg_pool": {"AVERAGE_POOL_2D": 1},
    "pad": {"PAD": 1},
    "reshape": {"RESHAPE": 1},
    "softmax": {"SOFTMAX": 1},
    "relu": {"RELU": 1},
    "relu6": {"RELU6": 1},
    "hard_swish": {"HARD_SWISH": 1},
    "sigmoid": {"LOGISTIC": 1},
    # ConvNeXt writes its depthwise 7x7 as a grouped Conv2D (groups == channels); TFLite
    # keeps it as a grouped CONV_2D, a different kernel from DEPTHWISE_CONV_2D.
    "grouped_conv2d": {"CONV_2D": 1},
    "gelu": {"GELU": 1},
}
BLOCKS = ("mbconv", "mbconv_se", "resnet_basic", "resnet_bottleneck", "nb201_cell")
OPS = tuple(SINGLE_OPS) + BLOCKS


def _hint_ops() -> str:
    return "valid ops: " + ", ".join(OPS) + " (or `all`)"


# ---------------------------------------------------------------- distribution data


def load_distribution(path: Optional[Path] = None) -> Dict[str, Any]:
    """The layer-distribution table (see the module docstring)."""
    p = Path(path) if path else DATA_PATH
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise ZooError(f"cannot read the layer distribution {p}: {err}",
                       hint="reinstall opcost, or regenerate it with "
                            "`python -m models_zoo.micro derive` (needs TensorFlow)") from None
    if "records" not in data or "common_hw" not in data:
        raise ZooError(f"{p} is not a layer distribution file", hint="regenerate it with `python -m models_zoo.micro derive`")
    return data


def _shape(t) -> tuple:
    return tuple(int(d) if d is not None else 1 for d in t.shape)


def derive_layer_distribution(names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Walk the layers of the Keras reference models (no conversion) and tabulate real
    layer configurations, deduplicated with occurrence counts. Needs TensorFlow."""
    from models_zoo.convert import require_tf, tf_version
    from models_zoo import reference

    require_tf()
    import keras
    from keras import layers as L

    names = list(names) if names else reference.reference_names()
    tables: Dict[str, Counter] = {k: Counter() for k in
                                  ("conv2d", "depthwise_conv2d", "dense", "pool", "feature_map",
                                   "add", "concat", "pad", "expansion", "se")}
    skipped_nonsquare = 0
    for name in names:
        params = reference.reference_params(name)
        model = reference._builder(params)()
        prev_conv = None  # last 1x1 conv (for expansion ratios)
        for layer in model.layers:
            try:
                ins = layer.input
                out = _shape(layer.output)
            except (AttributeError, ValueError):
                continue
            in_shapes = [_shape(t) for t in (ins if isinstance(ins, (list, tuple)) else [ins])]
            if not in_shapes:
                continue
            ish = in_shapes[0]
            if len(out) == 4:
                tables["feature_map"][(out[1], out[3])] += 1
            if isinstance(layer, L.DepthwiseConv2D):
                k = layer.kernel_size
                tables["depthwise_conv2d"][(ish[1], ish[3], k[0], layer.strides[0])] += 1
                if prev_conv and prev_conv[1] == ish[3] and prev_conv[0] != prev_conv[1]:
                    tables["expansion"][(prev_conv[0], round(prev_conv[1] / prev_conv[0], 2))] += 1
                prev_conv = None
            elif isinstance(layer, L.Conv2D):
                k, s, g = layer.kernel_size, layer.strides[0], layer.groups
                if k[0] != k[1]:
                    skipped_nonsquare += 1
                elif g > 1 and g == ish[3]:  # ConvNeXt writes depthwise as a grouped conv
                    tables["depthwise_conv2d"][(ish[1], ish[3], k[0], s)] += 1
                elif ish[1] == 1 and len(out) == 4 and out[1] == 1 and ish[3] > layer.filters:
                    tables["se"][(ish[3], round(layer.filters / ish[3], 3))] += 1
                elif ish[1] > 1:
                    tables["conv2d"][(ish[1], ish[3], layer.filters, k[0], s)] += 1
                prev_conv = (ish[3], layer.filters) if k[0] == 1 and ish[1] > 1 else None
            elif isinstance(layer, L.Dense):
                tables["dense"][(ish[-1], layer.units)] += 1
            elif isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
                kind = "max" if isinstance(layer, L.MaxPooling2D) else "avg"
                tables["pool"][(kind, ish[1], ish[3], layer.pool_size[0], layer.strides[0])] += 1
            elif isinstance(layer, L.Add) and len(out) == 4:
                tables["add"][(out[1], out[3])] += 1
            elif isinstance(layer, L.Concatenate) and len(out) == 4:
                tables["concat"][(out[1],) + tuple(s[3] for s in in_shapes)] += 1
            elif isinstance(layer, L.ZeroPadding2D):
                p = layer.padding
                tables["pad"][(ish[1], ish[3], p[0][0], p[0][1])] += 1
        keras.backend.clear_session()
    fields = {
        "conv2d": ("hw", "cin", "cout", "kernel", "stride"),
        "depthwise_conv2d": ("hw", "channels", "kernel", "stride"),
        "dense": ("cin", "cout"),
        "pool": ("kind", "hw", "channels", "pool", "stride"),
        "feature_map": ("hw", "channels"),
        "add": ("hw", "channels"),
        "concat": ("hw", "inputs"),
        "pad": ("hw", "channels", "pad_before", "pad_after"),
        "expansion": ("cin", "expansion"),
        "se": ("channels", "squeeze_ratio"),
    }
    records: Dict[str, List[Dict[str, Any]]] = {}
    for kind, counter in tables.items():
        rows = []
        for key, n in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0]))):
            if kind == "concat":
                row = {"hw": key[0], "inputs": list(key[1:])}
            else:
                row = dict(zip(fields[kind], key))
            row["n"] = n
            rows.append(row)
        records[kind] = rows
    hw_counts = Counter()
    for row in records["feature_map"]:
        hw_counts[row["hw"]] += row["n"]
    common_hw = sorted(h for h, n in hw_counts.items() if n >= 3 and h >= 2)
    return {
        "derived_by": "models_zoo.micro.derive_layer_distribution (python -m models_zoo.micro derive)",
        "how": ("built each Keras reference model (keras.applications, weights=None, batch 1, "
                "default input size) and read every layer's input/output shape and config; "
                "rows are unique configurations with occurrence counts n. 'expansion' = a 1x1 "
                "conv directly followed by a depthwise conv over its output (cout/cin); 'se' = "
                "a 1x1 conv on a 1x1 map that reduces channels; grouped convs with groups == "
                "channels count as depthwise; non-square kernels are counted in "
                "skipped_nonsquare_convs and not tabulated. common_hw = feature-map sizes "
                "seen at least 3 times."),
        "models": names,
        "tf_version": tf_version(),
        "keras_version": keras.__version__,
        "skipped_nonsquare_convs": skipped_nonsquare,
        "common_hw": common_hw,
        "records": records,
    }


# ---------------------------------------------------------------- sampling


def _weighted(rng: random.Random, rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    if not rows:
        raise ZooError("the layer distribution has no rows for this op",
                       hint="regenerate it with `python -m models_zoo.micro derive`")
    return rng.choices(rows, weights=[r.get("n", 1) for r in rows], k=1)[0]


def snap_channels(c: float) -> int:
    """Channels to a positive multiple of 8."""
    return max(8, int(round(c / 8.0)) * 8)


def snap_kernel(k: float) -> int:
    return min(KERNELS, key=lambda v: (abs(v - k), v))


def snap_hw(h: float, common_hw: Sequence[int]) -> int:
    """Nearest common feature-map size (in log space)."""
    h = max(h, 1.0)
    return min(common_hw, key=lambda v: (abs(math.log(v) - math.log(h)), v))


class _Jitter:
    def __init__(self, rng: random.Random, common_hw: Sequence[int], scale: float = 0.25):
        self.rng, self.common_hw, self.scale = rng, list(common_hw), scale

    def ch(self, c: int) -> int:
        if c < 8:  # e.g. the 3-channel RGB input of a stem conv: keep it
            return c
        return snap_channels(c * math.exp(self.rng.gauss(0.0, self.scale)))

    def hw(self, h: int) -> int:
        return snap_hw(h * math.exp(self.rng.gauss(0.0, self.scale)), self.common_hw)

    def kernel(self, k: int) -> int:
        return snap_kernel(k + self.rng.gauss(0.0, 0.8))

    def stride(self, s: int) -> int:
        s = 2 if s >= 2 else 1
        return (3 - s) if self.rng.random() < 0.1 else s


def _cap(hw: int, c: int, max_elems: int = 224 * 224 * 64) -> int:
    """Shrink HxW so one activation stays below ~3.2M floats (keeps files and runs sane)."""
    while hw > 7 and hw * hw * c > max_elems:
        hw //= 2
    return hw


def _sample_one(op: str, rng: random.Random, dist: Dict[str, Any]) -> Dict[str, Any]:
    R = dist["records"]
    j = _Jitter(rng, dist["common_hw"])
    cfg: Dict[str, Any] = {"op": op}
    if op == "conv2d":
        r = _weighted(rng, R["conv2d"])
        cin, cout = j.ch(r["cin"]), j.ch(r["cout"])
        cfg.update(hw=_cap(j.hw(r["hw"]), max(cin, cout)), cin=cin, cout=cout,
                   kernel=j.kernel(r["kernel"]), stride=j.stride(r["stride"]))
    elif op == "depthwise_conv2d":
        r = _weighted(rng, R["depthwise_conv2d"])
        c = j.ch(r["channels"])
        cfg.update(hw=_cap(j.hw(r["hw"]), c), channels=c, kernel=max(3, j.kernel(r["kernel"])),
                   stride=j.stride(r["stride"]))
    elif op == "dense":
        r = _weighted(rng, R["dense"])
        cfg.update(cin=j.ch(r["cin"]), cout=j.ch(r["cout"]))
    elif op == "grouped_conv2d":
        # Sizes from the depthwise table (it also holds the groups == channels convs, not
        # told apart); the kernel uniform over 3, 5, 7: runtimes switch algorithms with the
        # kernel size, and the table's kernels are nearly all 3x3 depthwise ones.
        r = _weighted(rng, R["depthwise_conv2d"])
        c = j.ch(r["channels"])
        cfg.update(hw=_cap(j.hw(r["hw"]), c), channels=c, groups=c, kernel=rng.choice((3, 5, 7)),
                   stride=j.stride(r["stride"]))
    elif op in ("add", "mul", "relu", "relu6", "hard_swish", "sigmoid", "gelu", "mean", "reshape"):
        r = _weighted(rng, R["add"] if op in ("add", "mul") else R["feature_map"])
        c = j.ch(r["channels"])
        cfg.update(hw=_cap(j.hw(r["hw"]), c), channels=c)
        if op == "mean":
            cfg["hw"] = max(cfg["hw"], 2)
    elif op == "concat":
        r = _weighted(rng, R["concat"])
        ins = [j.ch(c) for c in r["inputs"]][:4]
        cfg.update(hw=_cap(j.hw(r["hw"]), sum(ins)), inputs=ins)
    elif op in ("max_pool", "avg_pool"):
        kind = op.split("_")[0]
        rows = [x for x in R["pool"] if x["kind"] == kind] or R["pool"]
        r = _weighted(rng, rows)
        c = j.ch(r["channels"])
        pool = min(max(2, r["pool"] + rng.choice((-1, 0, 0, 1))), 3)
        cfg.update(hw=_cap(max(j.hw(r["hw"]), pool), c), channels=c, pool=pool,
                   stride=j.stride(r["stride"]), padding=rng.choice(("same", "valid")))
    elif op == "pad":
        r = _weighted(rng, R["pad"]) if R["pad"] else _weighted(rng, R["feature_map"])
        c = j.ch(r["channels"])
        cfg.update(hw=_cap(j.hw(r["hw"]), c), channels=c,
                   pad_before=int(r.get("pad_before", 1)), pad_after=int(r.get("pad_after", 1)))
    elif op == "softmax":
        r = _weighted(rng, R["dense"])
        cfg.update(units=j.ch(r["cout"]))
    elif op in ("mbconv", "mbconv_se"):
        r = _weighted(rng, R["depthwise_conv2d"])
        e = _weighted(rng, R["expansion"])["expansion"] if R["expansion"] else 6
        cin = snap_channels(j.ch(r["channels"] / max(e, 1)))
        stride = j.stride(r["stride"])
        cout = cin if stride == 1 and rng.random() < 0.5 else j.ch(cin * rng.choice((1.0, 1.5, 2.0)))
        expansion = min((1, 3, 4, 6), key=lambda v: abs(v - e))
        cfg.update(hw=_cap(j.hw(r["hw"]), cin * expansion), cin=cin, cout=cout,
                   kernel=max(3, j.kernel(r["kernel"])), stride=stride, expansion=expansion,
                   activation=rng.choice(("relu6", "hard_swish", "swish")))
        if op == "mbconv_se":
            # ratio of squeezed to expanded channels as found in real SE blocks
            sr = _weighted(rng, R["se"])["squeeze_ratio"] if R["se"] else 0.25
            cfg["se_channels"] = snap_channels(cin * expansion * sr)
    elif op in ("resnet_basic", "resnet_bottleneck"):
        r = _weighted(rng, R["add"])
        # ch() keeps sub-8 counts (RGB stems); a block's inner width must be a real one
        c = snap_channels(j.ch(r["channels"] / (4 if op == "resnet_bottleneck" else 1)))
        stride = rng.choice((1, 1, 1, 2))
        cin = c * (4 if op == "resnet_bottleneck" else 1)
        if stride == 2:  # the block halves HxW and (as in ResNets) doubles channels
            cin = snap_channels(cin / 2)
        cfg.update(hw=_cap(j.hw(r["hw"]) * stride, 4 * c), cin=cin, channels=c, stride=stride)
    elif op == "nb201_cell":
        from models_zoo import nb201

        stage = rng.randrange(3)
        index = rng.randrange(nb201.NUM_ARCHS)
        cfg.update(hw=(32, 16, 8)[stage], channels=(16, 32, 64)[stage], index=index,
                   arch=nb201.index_to_arch(index))
    else:  # pragma: no cover - guarded by _check_op
        raise ZooError(f"unknown micro op {op!r}", hint=_hint_ops())
    cfg["kind"] = "single" if op in SINGLE_OPS else "block"
    if op in SINGLE_OPS:
        cfg["expected_ops"] = dict(SINGLE_OPS[op])
    return cfg


def _check_op(op: str) -> str:
    if op not in OPS:
        raise ZooError(f"unknown micro op {op!r}", hint=_hint_ops())
    return op


def sample_configs(op: str, count: int, seed: int, *, score_fn: Optional[Callable] = None,
                   distribution: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """``count`` distinct seeded configurations of micro op ``op`` (no TensorFlow).

    With ``score_fn(list_of_configs) -> scores`` (higher = more uncertain), draws
    ``OVERSAMPLE`` times more candidates and keeps the ``count`` best-scoring."""
    _check_op(op)
    check_count_seed(count, seed)
    dist = distribution or load_distribution()
    rng = random.Random(f"micro:{op}:{seed}")
    want = count * (OVERSAMPLE if score_fn is not None else 1)
    out = draw_distinct(lambda: _sample_one(op, rng, dist), want, want * 50)
    if len(out) < count:
        raise ZooError(f"could only draw {len(out)} distinct {op} configurations, asked for {count}",
                       hint="lower --count")
    if score_fn is None:
        return out
    import numpy as np

    try:
        scores = np.asarray(score_fn(out), dtype=float).reshape(-1)
    except Exception as err:
        raise ZooError(f"score_fn failed on {len(out)} candidate configs: {err}",
                       hint="score_fn must map a list of config dicts to one number per config") from None
    if scores.shape[0] != len(out) or not np.all(np.isfinite(scores)):
        raise ZooError(f"score_fn returned {scores.shape[0]} scores (finite: {bool(np.all(np.isfinite(scores)))}) "
                       f"for {len(out)} configs", hint="return one finite score per config")
    order = np.argsort(-scores, kind="stable")[:count]
    return [out[i] for i in order]


# ---------------------------------------------------------------- building


def _act(layers, x, name: str):
    if name == "relu6":
        return layers.ReLU(6.0)(x)
    if name == "hard_swish":
        return layers.Activation("hard_swish")(x)
    return layers.Activation("swish")(x)


def keras_model(cfg: Dict[str, Any]):
    """The Keras model of one micro configuration (needs TensorFlow)."""
    from models_zoo.convert import require_tf

    require_tf()
    import keras
    from keras import layers

    keras.utils.set_random_seed(int(config_id(cfg), 16) % (2 ** 31))
    op = _check_op(cfg["op"])

    def inp4(c, name="input"):
        return keras.Input(shape=(cfg["hw"], cfg["hw"], c), batch_size=1, name=name)

    if op == "dense":
        i = keras.Input(shape=(cfg["cin"],), batch_size=1, name="input")
        return keras.Model(i, layers.Dense(cfg["cout"])(i))
    if op == "softmax":
        i = keras.Input(shape=(cfg["units"],), batch_size=1, name="input")
        return keras.Model(i, layers.Softmax()(i))
    if op in ("add", "mul"):
        a, b = inp4(cfg["channels"], "a"), inp4(cfg["channels"], "b")
        return keras.Model([a, b], (layers.Add() if op == "add" else layers.Multiply())([a, b]))
    if op == "concat":
        ins = [inp4(c, f"in{k}") for k, c in enumerate(cfg["inputs"])]
        return keras.Model(ins, layers.Concatenate(axis=-1)(ins))
    if op == "nb201_cell":
        from models_zoo import nb201

        i = inp4(cfg["channels"])
        return keras.Model(i, nb201.cell(layers, i, nb201.arch_to_ops(cfg["arch"]), cfg["channels"]))
    i = inp4(cfg.get("cin", cfg.get("channels")))
    if op == "conv2d":
        y = layers.Conv2D(cfg["cout"], cfg["kernel"], strides=cfg["stride"], padding="same")(i)
    elif op == "depthwise_conv2d":
        y = layers.DepthwiseConv2D(cfg["kernel"], strides=cfg["stride"], padding="same")(i)
    elif op == "grouped_conv2d":
        y = layers.Conv2D(cfg["channels"], cfg["kernel"], strides=cfg["stride"], padding="same",
                          groups=cfg["groups"])(i)
    elif op == "mean":
        y = layers.GlobalAveragePooling2D()(i)
    elif op == "max_pool":
        y = layers.MaxPooling2D(cfg["pool"], strides=cfg["stride"], padding=cfg["padding"])(i)
    elif op == "avg_pool":
        y = layers.AveragePooling2D(cfg["pool"], strides=cfg["stride"], padding=cfg["padding"])(i)
    elif op == "pad":
        y = layers.ZeroPadding2D(((cfg["pad_before"], cfg["pad_after"]),) * 2)(i)
    elif op == "reshape":
        y = layers.Reshape((cfg["hw"] * cfg["hw"], cfg["channels"]))(i)
    elif op == "relu":
        y = layers.ReLU()(i)
    elif op == "relu6":
        y = layers.ReLU(6.0)(i)
    elif op == "hard_swish":
        y = layers.Activation("hard_swish")(i)
    elif op == "sigmoid":
        y = layers.Activation("sigmoid")(i)
    elif op == "gelu":
        y = layers.Activation("gelu")(i)
    elif op in ("mbconv", "mbconv_se"):
        cin, cout, e, act = cfg["cin"], cfg["cout"], cfg["expansion"], cfg["activation"]
        mid = cin * e
        y = i
        if e != 1:
            y = _act(layers, layers.BatchNormalization()(layers.Conv2D(mid, 1, use_bias=False)(y)), act)
        y = layers.DepthwiseConv2D(cfg["kernel"], strides=cfg["stride"], padding="same", use_bias=False)(y)
        y = _act(layers, layers.BatchNormalization()(y), act)
        if op == "mbconv_se":
            s = layers.GlobalAveragePooling2D(keepdims=True)(y)
            s = layers.Conv2D(cfg["se_channels"], 1, activation="relu")(s)
            s = layers.Conv2D(mid, 1, activation="sigmoid")(s)
            y = layers.Multiply()([y, s])
        y = layers.BatchNormalization()(layers.Conv2D(cout, 1, use_bias=False)(y))
        if cfg["stride"] == 1 and cin == cout:
            y = layers.Add()([i, y])
    elif op in ("resnet_basic", "resnet_bottleneck"):
        c, s, cin = cfg["channels"], cfg["stride"], cfg["cin"]

        def cbn(x, ch, k, st=1):
            return layers.BatchNormalization()(layers.Conv2D(ch, k, strides=st, padding="same", use_bias=False)(x))

        if op == "resnet_basic":
            cout = c
            y = cbn(layers.ReLU()(cbn(i, c, 3, s)), c, 3)
        else:
            cout = 4 * c
            y = layers.ReLU()(cbn(i, c, 1))
            y = layers.ReLU()(cbn(y, c, 3, s))
            y = cbn(y, cout, 1)
        short = i if (s == 1 and cin == cout) else cbn(i, cout, 1, s)
        y = layers.ReLU()(layers.Add()([y, short]))
    else:  # pragma: no cover
        raise ZooError(f"unknown micro op {op!r}", hint=_hint_ops())
    return keras.Model(i, y)


def build_config(cfg: Dict[str, Any], *, cache_dir: Optional[str] = None) -> Path:
    """Build one micro configuration into a cached .tflite and check its ops: a
    single-op model must contain exactly ``expected_ops``."""
    from models_zoo.convert import convert_keras, read_sidecar

    key = {"generator": f"opcost.micro.{cfg.get('op')}", "version": GENERATOR_VERSION, "params": cfg}
    path = convert_keras(lambda: keras_model(cfg), key=key, cache_dir=cache_dir)
    want = cfg.get("expected_ops")
    if want:
        got = read_sidecar(path).get("op_counts")
        if got is not None and got != want:
            raise ZooError(f"micro model {cfg['op']} converted to ops {got}, expected exactly {want}",
                           hint=f"the converter rewrote this layer; config: {json.dumps(cfg, sort_keys=True)}")
    return path


def config_name(cfg: Dict[str, Any]) -> str:
    return f"micro_{cfg['op']}_{config_id(cfg)}"


def build_micro(op: str, count: int, seed: int, *, out_dir: Optional[str] = None,
                score_fn: Optional[Callable] = None, cache_dir: Optional[str] = None) -> List[Path]:
    """Sample and build ``count`` micro models of ``op``; cache paths, or copies in ``out_dir``."""
    from models_zoo.convert import export

    paths = []
    for cfg in sample_configs(op, count, seed, score_fn=score_fn):
        p = build_config(cfg, cache_dir=cache_dir)
        paths.append(export(p, out_dir, config_name(cfg)) if out_dir else p)
    return paths


def _main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m models_zoo.micro")
    ap.add_argument("command", choices=["derive"])
    ap.add_argument("--out", default=str(DATA_PATH))
    args = ap.parse_args(argv)
    data = derive_layer_distribution()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}: " + ", ".join(f"{k}={len(v)}" for k, v in data["records"].items()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
