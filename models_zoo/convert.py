"""Keras -> TFLite (float32, or int8 dynamic-range weights) conversion with a
content-addressed cache.

A converted file lives at ``<cache_dir>/<sha256>.tflite`` where the hash is taken over
(generator name, generator version, params, TensorFlow version); a JSON sidecar
``<sha256>.json`` next to it records those inputs plus the file's sha256, size, op counts
and conversion time. A cache hit returns the path without importing TensorFlow, so the
model may be given as a zero-argument builder that is only called on a miss.

TensorFlow is imported only inside functions; importing this module does not need it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

from opcost.errors import ZooError

log = logging.getLogger("opcost.zoo")

ZOO_INSTALL = 'pip install -e ".[zoo]"'
ZOO_HINT = f"install the zoo extra: {ZOO_INSTALL} (in the opcost checkout), then run the command again"
TFLITE_MAGIC = b"TFL3"


def default_cache_dir() -> Path:
    """``$OPCOST_CACHE_DIR`` or ``~/.cache/opcost/zoo``."""
    env = os.environ.get("OPCOST_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "opcost" / "zoo"


def tf_version() -> str:
    """Installed TensorFlow version, read from package metadata (no TF import)."""
    from importlib import metadata

    for dist in ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-macos"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "none"


def _check_key(key: Dict[str, Any]) -> Dict[str, Any]:
    if not isinstance(key, dict) or "generator" not in key or "params" not in key:
        raise ZooError(f"bad cache key {key!r}",
                       hint="pass key={'generator': NAME, 'version': N, 'params': {...}}")
    return {"generator": str(key["generator"]), "version": key.get("version", 1),
            "params": key["params"]}


def cache_hash(key: Dict[str, Any]) -> str:
    """sha256 over (generator, version, params, TF version) as canonical JSON."""
    k = _check_key(key)
    blob = json.dumps({**k, "tf_version": tf_version()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_paths(key: Dict[str, Any], cache_dir: Optional[Union[str, Path]] = None):
    """(tflite_path, sidecar_path) for ``key`` (whether or not they exist)."""
    d = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    h = cache_hash(key)
    return d / f"{h}.tflite", d / f"{h}.json"


def cached_path(key: Dict[str, Any], cache_dir: Optional[Union[str, Path]] = None) -> Optional[Path]:
    """The cached .tflite for ``key`` if it and its sidecar exist, else None."""
    path, side = cache_paths(key, cache_dir)
    return path if path.is_file() and side.is_file() else None


def read_sidecar(path: Union[str, Path]) -> Dict[str, Any]:
    """The JSON sidecar of a cached .tflite (empty dict if missing/unreadable)."""
    side = Path(path).with_suffix(".json")
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError):
        return {}


class TensorFlowMissing(ZooError):
    """TensorFlow (the ``zoo`` extra) is not installed: no model can be generated."""

    default_hint = ZOO_HINT


def require_tf():
    """Import TensorFlow or raise TensorFlowMissing with the install hint."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf  # noqa: F401
        import keras  # noqa: F401
    except ImportError as err:
        raise TensorFlowMissing(f"TensorFlow is needed to generate models and is not installed ({err})") from None
    return tf


def op_counts(model_bytes: bytes) -> Dict[str, int]:
    """Builtin op name -> count in a .tflite flatbuffer (via the TFLite interpreter, no
    delegates applied, so the counts are the file's own ops)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interp = Interpreter(model_content=model_bytes,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (ValueError, RuntimeError) as err:
        raise ZooError(f"converted model cannot be loaded by the TFLite interpreter: {err}",
                       hint="report the generator params shown in the sidecar") from None
    return dict(Counter(d["op_name"] for d in interp._get_ops_details()))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; others on the machine may read the zoo
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


QUANTIZE_MODES = ("none", "dynamic")


def check_quantize(quantize: Optional[str], default: str = "none") -> str:
    """``quantize`` (``default`` for None) if it is one of QUANTIZE_MODES, else ZooError."""
    q = default if quantize is None else quantize
    if q not in QUANTIZE_MODES:
        raise ZooError(f"unknown quantization {quantize!r}", hint="use one of: " + ", ".join(QUANTIZE_MODES))
    return q


def _to_tflite(model: Any, quantize: Optional[str] = None) -> bytes:
    q = check_quantize(quantize)
    tf = require_tf()
    # Keras 3 export prints "Saved artifact at ..." and every captured TensorSpec on
    # stdout; keep stdout for results and show that chatter only when debugging.
    sink = sys.stderr if log.isEnabledFor(logging.DEBUG) else open(os.devnull, "w")
    with sink if sink is not sys.stderr else contextlib.nullcontext(), contextlib.redirect_stdout(sink):
        try:
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            if q == "dynamic":
                # int8 dynamic-range weights: Optimize.DEFAULT without a representative
                # dataset (activations stay float32; tiny weight tensors stay float32)
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            else:
                converter.optimizations = []  # float32, no quantization
            return converter.convert()
        except Exception as err:  # converter raises many unrelated types
            raise ZooError(f"TFLite conversion failed: {type(err).__name__}: {str(err)[-600:]}",
                           hint="this architecture/configuration does not convert with "
                                f"TensorFlow {tf_version()}; pick another") from None


def convert_keras(model: Union[Any, Callable[[], Any]], *, key: Dict[str, Any],
                  cache_dir: Optional[Union[str, Path]] = None, quantize: Optional[str] = None) -> Path:
    """Convert a Keras model to .tflite via ``TFLiteConverter.from_keras_model`` and cache
    it by ``key``; ``model`` may be a zero-argument builder (called on a miss only).
    Returns the cached path; a hit does not import TensorFlow.

    ``quantize``: None / ``"none"`` for float32 (the default), ``"dynamic"`` for int8
    dynamic-range weights (``tf.lite.Optimize.DEFAULT``, no representative dataset). A
    quantized conversion must say so in its key (``key["params"]["quantize"]``), so the
    float32 and the quantized file of one network never share a cache entry."""
    q = check_quantize(quantize)
    if q != "none" and (not isinstance(key, dict) or not isinstance(key.get("params"), dict)
                        or key["params"].get("quantize") != q):
        raise ZooError(f"quantize={q!r} needs key['params']['quantize'] == {q!r}",
                       hint="put the quantization mode into the generator params of the cache key")
    path, side = cache_paths(key, cache_dir)
    if path.is_file() and side.is_file():
        log.debug("zoo cache hit %s", path)
        return path
    t0 = time.perf_counter()
    if callable(model) and not hasattr(model, "layers"):
        require_tf()
        import keras

        # fresh layer-name counters: the same builder then gives a byte-identical file
        keras.backend.clear_session()
        model = model()
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    data = _to_tflite(model, q)
    convert_s = time.perf_counter() - t1
    if data[4:8] != TFLITE_MAGIC:
        raise ZooError("converter returned something that is not a TFLite flatbuffer",
                       hint=f"check the TensorFlow installation ({ZOO_INSTALL})")
    counts = op_counts(data)
    try:
        num_params = int(model.count_params())
    except Exception:  # pragma: no cover - not a Keras model
        num_params = None
    k = _check_key(key)
    meta = {**k, "tf_version": tf_version(), "sha256": hashlib.sha256(data).hexdigest(),
            "size_bytes": len(data), "op_counts": counts, "num_ops": sum(counts.values()),
            "num_params": num_params, "quantize": q, "build_s": round(build_s, 3),
            "convert_s": round(convert_s, 3), "created_at": time.time()}
    try:
        _atomic_write(path, data)
        _atomic_write(side, (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
    except OSError as err:
        raise ZooError(f"cannot write to the zoo cache {path.parent}: {err}",
                       hint="set OPCOST_CACHE_DIR to a writable directory or pass --cache-dir") from None
    log.info("converted %s in %.1fs -> %s", k["generator"], convert_s, path)
    return path


def export(path: Union[str, Path], out_dir: Union[str, Path], name: str) -> Path:
    """Copy a cached .tflite into ``out_dir`` as ``<name>.tflite`` (skipped when an
    identical file is already there)."""
    import shutil

    src, d = Path(path), Path(out_dir).expanduser()
    dst = d / f"{name}.tflite"
    try:
        d.mkdir(parents=True, exist_ok=True)
        if not (dst.is_file() and dst.stat().st_size == src.stat().st_size
                and dst.read_bytes() == src.read_bytes()):
            tmp = dst.with_name(dst.name + ".tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
    except OSError as err:
        raise ZooError(f"cannot write {dst}: {err}", hint="pass a writable --out directory") from None
    return dst


MANIFEST_NAME = "manifest.json"


def manifest_entry(name: str, path: Union[str, Path], *, cached: Union[str, Path],
                   source: str) -> Dict[str, Any]:
    """One manifest row: name, path, sha256, size, params, op counts, source."""
    side = read_sidecar(cached)
    sha = side.get("sha256")
    if not sha:
        from opcost.records import sha256_file

        sha = sha256_file(str(path))
    return {"name": name, "path": str(Path(path).resolve()), "sha256": sha,
            "size_bytes": Path(path).stat().st_size, "params": side.get("params"),
            "generator": side.get("generator"), "source": source,
            "num_ops": side.get("num_ops"), "op_counts": side.get("op_counts"),
            "tf_version": side.get("tf_version")}


def write_manifest(out_dir: Union[str, Path], entries: list) -> Path:
    """Merge ``entries`` (by name) into ``<out_dir>/manifest.json``, written atomically."""
    path = Path(out_dir).expanduser() / MANIFEST_NAME
    old: Dict[str, Any] = {}
    if path.is_file():
        try:
            old = {e["name"]: e for e in json.loads(path.read_text()).get("models", [])}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            log.warning("replacing unreadable manifest %s", path)
    for e in entries:
        old[e["name"]] = e
    doc = {"format": "opcost-zoo-manifest", "version": 1,
           "models": [old[k] for k in sorted(old)]}
    try:
        _atomic_write(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    except OSError as err:
        raise ZooError(f"cannot write {path}: {err}", hint="pass a writable --out directory") from None
    return path


def build_and_export(jobs: list, out_dir: Union[str, Path], *, progress: bool = True,
                     keep_going: bool = True) -> Dict[str, Any]:
    """Run ``jobs`` = [(name, source, build_fn() -> cached path)], copy each result into
    ``out_dir``, write the manifest. Returns {"models": entries, "errors": [...],
    "manifest": path}. With ``keep_going`` a failing job is recorded and skipped.
    Without TensorFlow the first job that needs it stops the run with one
    TensorFlowMissing; jobs served by the conversion cache before it are exported and in
    the manifest, and the message says so."""
    from tqdm import tqdm

    entries, errors = [], []
    bar = tqdm(jobs, desc="zoo", unit="model", disable=not progress, file=sys.stderr)
    for name, source, build in bar:
        bar.set_postfix_str(name)
        try:
            cached = build()
            dst = export(cached, out_dir, name)
            entries.append(manifest_entry(name, dst, cached=cached, source=source))
        except TensorFlowMissing as err:
            bar.close()
            manifest = write_manifest(out_dir, entries) if entries else None
            done = (f"{len(entries)} of {len(jobs)} model(s) came from the conversion cache and are listed in "
                    f"{manifest}; the other {len(jobs) - len(entries)} were not built") if entries else \
                "nothing was built"
            raise TensorFlowMissing(f"{err.message}; {done}") from None
        except ZooError as err:
            if not keep_going:
                raise
            log.warning("%s failed: %s", name, err.message)
            errors.append({"name": name, "error": err.message})
    manifest = write_manifest(out_dir, entries) if entries else None
    return {"models": entries, "errors": errors, "manifest": str(manifest) if manifest else None}
