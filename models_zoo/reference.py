"""Reference networks: real architectures from ``keras.applications`` with random
weights (``weights=None``, never downloaded), batch 1, float32 TFLite.

Each entry is built with ``include_top=True, classes=1000`` at its default input size and
a fixed batch dimension of 1 (``input_tensor=keras.Input(..., batch_size=1)``), so the
.tflite has fully static shapes. Some Keras models carry their input preprocessing inside
the graph (Rescaling / Normalization layers, ``include_preprocessing=True`` by default in
MobileNetV3, EfficientNetV2, ConvNeXt; always present in EfficientNet B*): defaults are
kept and ``preprocessing_in_graph`` records it, because those ops run on the device too.

The list holds only architectures that converted cleanly with TensorFlow 2.21 / Keras 3
(checked by building every entry once; see ``opcost zoo build all``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from opcost.errors import ZooError

GENERATOR = "keras.applications"
GENERATOR_VERSION = 1
MIN_INPUT_SIZE = 32
MAX_INPUT_SIZE = 1024

# name: (family, keras function, default input size, extra kwargs, preprocessing in graph,
#        minimum input size accepted by the Keras builder, description)
_SPECS: Dict[str, tuple] = {
    "mobilenet_v1": ("mobilenet", "MobileNet", 224, {}, False, 32,
                     "MobileNet v1, alpha 1.0 (Howard et al. 2017)"),
    "mobilenet_v1_050": ("mobilenet", "MobileNet", 224, {"alpha": 0.5}, False, 32,
                         "MobileNet v1, width multiplier 0.5"),
    "mobilenet_v2": ("mobilenet", "MobileNetV2", 224, {}, False, 32,
                     "MobileNetV2, alpha 1.0 (Sandler et al. 2018)"),
    "mobilenet_v2_035": ("mobilenet", "MobileNetV2", 224, {"alpha": 0.35}, False, 32,
                         "MobileNetV2, width multiplier 0.35"),
    "mobilenet_v3_small": ("mobilenet", "MobileNetV3Small", 224, {}, True, 32,
                           "MobileNetV3-Small (Howard et al. 2019), Rescaling layer in graph"),
    "mobilenet_v3_large": ("mobilenet", "MobileNetV3Large", 224, {}, True, 32,
                           "MobileNetV3-Large, Rescaling layer in graph"),
    "efficientnet_b0": ("efficientnet", "EfficientNetB0", 224, {}, True, 32,
                        "EfficientNet-B0 (Tan & Le 2019), Rescaling+Normalization in graph"),
    "efficientnet_b1": ("efficientnet", "EfficientNetB1", 240, {}, True, 32, "EfficientNet-B1"),
    "efficientnet_b2": ("efficientnet", "EfficientNetB2", 260, {}, True, 32, "EfficientNet-B2"),
    "efficientnet_b3": ("efficientnet", "EfficientNetB3", 300, {}, True, 32, "EfficientNet-B3"),
    "efficientnet_v2_b0": ("efficientnet_v2", "EfficientNetV2B0", 224, {}, True, 32,
                           "EfficientNetV2-B0 (Tan & Le 2021), Rescaling in graph"),
    "efficientnet_v2_b1": ("efficientnet_v2", "EfficientNetV2B1", 240, {}, True, 32, "EfficientNetV2-B1"),
    "efficientnet_v2_b2": ("efficientnet_v2", "EfficientNetV2B2", 260, {}, True, 32, "EfficientNetV2-B2"),
    "efficientnet_v2_b3": ("efficientnet_v2", "EfficientNetV2B3", 300, {}, True, 32, "EfficientNetV2-B3"),
    "efficientnet_v2_s": ("efficientnet_v2", "EfficientNetV2S", 384, {}, True, 32, "EfficientNetV2-S"),
    "resnet50": ("resnet", "ResNet50", 224, {}, False, 32, "ResNet-50 v1 (He et al. 2016)"),
    "resnet101": ("resnet", "ResNet101", 224, {}, False, 32, "ResNet-101 v1"),
    "resnet152": ("resnet", "ResNet152", 224, {}, False, 32, "ResNet-152 v1"),
    "resnet50_v2": ("resnet", "ResNet50V2", 224, {}, False, 32, "ResNet-50 v2 (pre-activation)"),
    "resnet101_v2": ("resnet", "ResNet101V2", 224, {}, False, 32, "ResNet-101 v2 (pre-activation)"),
    "densenet121": ("densenet", "DenseNet121", 224, {}, False, 32, "DenseNet-121 (Huang et al. 2017)"),
    "densenet169": ("densenet", "DenseNet169", 224, {}, False, 32, "DenseNet-169"),
    "nasnet_mobile": ("nasnet", "NASNetMobile", 224, {}, False, 32, "NASNet-A Mobile (Zoph et al. 2018)"),
    "inception_v3": ("inception", "InceptionV3", 299, {}, False, 75, "Inception v3 (Szegedy et al. 2016)"),
    "inception_resnet_v2": ("inception", "InceptionResNetV2", 299, {}, False, 75, "Inception-ResNet v2"),
    "xception": ("inception", "Xception", 299, {}, False, 71, "Xception (Chollet 2017)"),
    "vgg16": ("vgg", "VGG16", 224, {}, False, 32, "VGG-16 (Simonyan & Zisserman 2015)"),
    "vgg19": ("vgg", "VGG19", 224, {}, False, 32, "VGG-19"),
    "convnext_tiny": ("convnext", "ConvNeXtTiny", 224, {}, True, 32,
                      "ConvNeXt-Tiny (Liu et al. 2022), Normalization in graph"),
    "convnext_small": ("convnext", "ConvNeXtSmall", 224, {}, True, 32, "ConvNeXt-Small"),
}


def reference_names() -> List[str]:
    """All reference network names, in listing order."""
    return list(_SPECS)


def _lookup(name: str) -> tuple:
    key = str(name).strip().lower().replace("-", "_")
    if key in _SPECS:
        return key, _SPECS[key]
    for n, spec in _SPECS.items():  # also accept the Keras function name (unmodified)
        if spec[1].lower() == key and not spec[3]:
            return n, spec
    raise ZooError(f"unknown reference network {name!r}",
                   hint="valid names: " + ", ".join(_SPECS) + " (or `all`)")


def reference_params(name: str, input_size: Optional[int] = None) -> Dict[str, Any]:
    """Generator params of a reference network (what its cache key hashes)."""
    name, (family, fn, size, kwargs, pre, min_size, _desc) = _lookup(name)
    if input_size is None:
        input_size = size
    if isinstance(input_size, bool) or not isinstance(input_size, int) \
            or not max(min_size, MIN_INPUT_SIZE) <= input_size <= MAX_INPUT_SIZE:
        raise ZooError(f"input size {input_size!r} is not valid for {name}",
                       hint=f"use an integer between {max(min_size, MIN_INPUT_SIZE)} and {MAX_INPUT_SIZE}")
    return {"name": name, "keras_fn": fn, "input_size": input_size, "batch": 1,
            "include_top": True, "classes": 1000, "weights": None, "kwargs": dict(kwargs),
            "preprocessing_in_graph": pre}


def reference_key(name: str, input_size: Optional[int] = None) -> Dict[str, Any]:
    """Cache key of a reference network."""
    return {"generator": GENERATOR, "version": GENERATOR_VERSION,
            "params": reference_params(name, input_size)}


def list_reference() -> List[Dict[str, Any]]:
    """One dict per reference network: name, family, input_size, params (generator
    params), description, preprocessing_in_graph. No TensorFlow needed."""
    out = []
    for name, (family, fn, size, kwargs, pre, _min, desc) in _SPECS.items():
        out.append({"name": name, "family": family, "input_size": size,
                    "params": reference_params(name), "description": desc,
                    "keras_fn": fn, "preprocessing_in_graph": pre})
    return out


def _builder(params: Dict[str, Any]):
    def build():
        from models_zoo.convert import require_tf

        require_tf()
        import keras

        fn = getattr(keras.applications, params["keras_fn"], None)
        if fn is None:
            raise ZooError(f"keras.applications has no {params['keras_fn']} in this Keras version",
                           hint="upgrade Keras (" + "pip install -e .[zoo]" + ")")
        keras.utils.set_random_seed(0)  # random but reproducible weights
        s = params["input_size"]
        inp = keras.Input(shape=(s, s, 3), batch_size=1, name="input")
        try:
            return fn(input_tensor=inp, include_top=True, weights=None, classes=1000,
                      **params["kwargs"])
        except ValueError as err:
            raise ZooError(f"{params['name']} cannot be built at input {s}: {err}",
                           hint="use its default input size (see `opcost zoo list`)") from None
    return build


def build_reference(name: str, *, cache_dir: Optional[str] = None,
                    input_size: Optional[int] = None) -> Path:
    """Build (or fetch from cache) reference network ``name`` as a float32 .tflite with
    random weights, batch 1, at ``input_size`` (default: the network's own)."""
    from models_zoo.convert import convert_keras

    key = reference_key(name, input_size)
    return convert_keras(_builder(key["params"]), key=key, cache_dir=cache_dir)
