"""NAS search spaces with seeded samplers: ``mbv2-space`` and ``nb201``.

``mbv2-space`` is a MobileNetV2 / ProxylessNAS-style space at 224x224: stem conv 3x3/s2
(32 ch), a fixed MBConv (expansion 1, k3, 16 ch), six searchable stages with output
channels 24, 40, 80, 96, 192, 320 and strides 2, 2, 2, 1, 2, 1; stage depth in {2, 3, 4}
(last stage 1), per block kernel in {3, 5, 7} and expansion in {3, 4, 6}; a global width
multiplier in {0.75, 1.0, 1.25} (channels rounded to multiples of 8); head 1x1 conv to
1280 (scaled when the multiplier is above 1), global pool, 1000-way dense. BatchNorm
after every conv (folded by the converter), ReLU6.

``nb201`` is the NAS-Bench-201 cell space (see :mod:`models_zoo.nb201`).

Sampling is pure Python (no TensorFlow): the same (space, count, seed) gives the same
configurations, and the networks of one call are distinct.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, List, Optional

from opcost.errors import ZooError
from models_zoo import nb201
from models_zoo.sampling import check_count_seed, config_id, draw_distinct

SPACES = ("mbv2-space", "nb201")
GENERATOR_VERSION = 1

MBV2_STAGES = ((24, 2), (40, 2), (80, 2), (96, 1), (192, 2), (320, 1))
MBV2_DEPTHS = (2, 3, 4)
MBV2_KERNELS = (3, 5, 7)
MBV2_EXPANSIONS = (3, 4, 6)
MBV2_WIDTHS = (0.75, 1.0, 1.25)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor``, never below 90% of ``value``."""
    v = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return v + divisor if v < 0.9 * value else v


def _check_space(space: str) -> str:
    if space not in SPACES:
        raise ZooError(f"unknown NAS space {space!r}", hint="valid spaces: " + ", ".join(SPACES))
    return space


def _sample_mbv2(rng: random.Random, width_mult: Optional[float], input_size: int) -> Dict[str, Any]:
    w = rng.choice(MBV2_WIDTHS) if width_mult is None else width_mult
    stages = []
    for i, (c, stride) in enumerate(MBV2_STAGES):
        depth = 1 if i == len(MBV2_STAGES) - 1 else rng.choice(MBV2_DEPTHS)
        blocks = [{"kernel": rng.choice(MBV2_KERNELS), "expansion": rng.choice(MBV2_EXPANSIONS)}
                  for _ in range(depth)]
        stages.append({"out_channels": c, "stride": stride, "blocks": blocks})
    return {"space": "mbv2-space", "input_size": input_size, "width_mult": w, "batch": 1,
            "num_classes": 1000, "stages": stages}


def sample_configs(space: str, count: int, seed: int, *, width_mult: Optional[float] = None,
                   input_size: Optional[int] = None, channels: Optional[int] = None,
                   cells_per_stage: Optional[int] = None) -> List[Dict[str, Any]]:
    """``count`` distinct seeded configurations of ``space`` (no TensorFlow needed).

    Overrides shrink networks (e.g. for tests): ``width_mult``/``input_size`` for
    mbv2-space, ``channels``/``cells_per_stage``/``input_size`` for nb201."""
    _check_space(space)
    check_count_seed(count, seed)
    rng = random.Random(f"{space}:{seed}")
    if space == "nb201":
        if count > nb201.NUM_ARCHS:
            raise ZooError(f"nb201 has only {nb201.NUM_ARCHS} cells, asked for {count}",
                           hint=f"use --count <= {nb201.NUM_ARCHS}")
        kw = {k: v for k, v in (("channels", channels), ("cells_per_stage", cells_per_stage),
                                ("input_size", input_size)) if v is not None}
        return [nb201.nb201_params(i, **kw) for i in rng.sample(range(nb201.NUM_ARCHS), count)]
    if width_mult is not None and (isinstance(width_mult, bool) or not isinstance(width_mult, (int, float))
                                   or not 0.05 <= width_mult <= 4):
        raise ZooError(f"width_mult must be a number in [0.05, 4], got {width_mult!r}",
                       hint="choices in the space: " + ", ".join(map(str, MBV2_WIDTHS)))
    size = 224 if input_size is None else input_size
    if isinstance(size, bool) or not isinstance(size, int) or not 32 <= size <= 1024:
        raise ZooError(f"input_size must be an integer in [32, 1024], got {size!r}", hint="default is 224")
    out = draw_distinct(lambda: _sample_mbv2(rng, width_mult, size), count, count * 1000)
    if len(out) == count:
        return out
    raise ZooError(f"could not draw {count} distinct mbv2-space networks", hint="lower --count")


def _mbv2_keras(cfg: Dict[str, Any]):
    from models_zoo.convert import require_tf

    require_tf()
    import keras
    from keras import layers

    keras.utils.set_random_seed(int(config_id(cfg), 16) % (2 ** 31))
    w, s = cfg["width_mult"], cfg["input_size"]

    def conv_bn(x, c, k, stride=1, act=True):
        x = layers.Conv2D(c, k, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU(6.0)(x) if act else x

    def mbconv(x, c_out, k, stride, e):
        c_in = x.shape[-1]
        y = conv_bn(x, make_divisible(c_in * e), 1) if e != 1 else x
        y = layers.DepthwiseConv2D(k, strides=stride, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        y = layers.ReLU(6.0)(y)
        y = conv_bn(y, c_out, 1, act=False)
        return layers.Add()([x, y]) if stride == 1 and c_in == c_out else y

    inp = keras.Input(shape=(s, s, 3), batch_size=1, name="input")
    x = conv_bn(inp, make_divisible(32 * w), 3, stride=2)
    x = mbconv(x, make_divisible(16 * w), 3, 1, 1)
    for st in cfg["stages"]:
        c = make_divisible(st["out_channels"] * w)
        for b, blk in enumerate(st["blocks"]):
            x = mbconv(x, c, blk["kernel"], st["stride"] if b == 0 else 1, blk["expansion"])
    x = conv_bn(x, make_divisible(1280 * max(1.0, w)), 1)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(cfg["num_classes"])(x)
    return keras.Model(inp, out, name="mbv2_space_" + config_id(cfg))


def build_config(config: Dict[str, Any], *, cache_dir: Optional[str] = None) -> Path:
    """Build one sampled configuration (from :func:`sample_configs`) into a cached .tflite."""
    from models_zoo.convert import convert_keras

    space = _check_space(config.get("space") if isinstance(config, dict) else None)
    key = {"generator": f"opcost.nas.{space}", "version": GENERATOR_VERSION, "params": config}
    if space == "nb201":
        return convert_keras(lambda: nb201.keras_model(config), key=key, cache_dir=cache_dir)
    return convert_keras(lambda: _mbv2_keras(config), key=key, cache_dir=cache_dir)


def build_nb201(index: int, *, cache_dir: Optional[str] = None, channels: int = 16,
                cells_per_stage: int = 5, input_size: int = 32, num_classes: int = 10) -> Path:
    """Build NAS-Bench-201 cell ``index`` (0..15624) in the benchmark's macro skeleton."""
    params = nb201.nb201_params(index, channels=channels, cells_per_stage=cells_per_stage,
                                input_size=input_size, num_classes=num_classes)
    return build_config(params, cache_dir=cache_dir)


def config_name(config: Dict[str, Any]) -> str:
    """A readable file stem for a configuration."""
    if config.get("space") == "nb201":
        name = f"nb201_{config['index']:05d}"
        if (config["channels"], config["cells_per_stage"], config["input_size"]) != (16, 5, 32):
            name += f"_c{config['channels']}_n{config['cells_per_stage']}_{config['input_size']}px"
        return name
    return "mbv2space_" + config_id(config)


def sample(space: str, count: int, seed: int, *, out_dir: Optional[str] = None,
           cache_dir: Optional[str] = None, **overrides: Any) -> List[Path]:
    """Sample ``count`` distinct networks of ``space`` with ``seed`` and build them.
    Returns cache paths, or copies in ``out_dir`` when given. ``overrides`` as in
    :func:`sample_configs`."""
    from models_zoo.convert import export

    paths = []
    for cfg in sample_configs(space, count, seed, **overrides):
        p = build_config(cfg, cache_dir=cache_dir)
        paths.append(export(p, out_dir, config_name(cfg)) if out_dir else p)
    return paths
