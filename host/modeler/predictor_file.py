"""Predictor files: versioned, self-describing, portable across scikit-learn versions.

A predictor file is a zip archive:

- ``meta.json``: format name and version, what the predictor is for (device, delegate,
  runtime), a summary of its training data, the opcost / scikit-learn / Python versions
  that wrote it, and the estimator's class and parameters;
- ``estimator.pkl``: the fitted estimator (joblib pickle), used when the scikit-learn
  version matches the one that wrote it;
- ``training/<name>.parquet``: the tables the estimator was fitted on, passed to
  ``fit`` by keyword. When the running scikit-learn differs, the pickle is not trusted
  (peers that only pickle break here): the estimator is refitted from these tables with
  the saved parameters, which gives the same model up to floating-point summation order.
- ``arrays.npz`` (optional): plain arrays for estimators stored without pickle.
"""
from __future__ import annotations

import importlib
import io
import json
import logging
import platform
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from opcost.errors import PredictorError

log = logging.getLogger(__name__)

FORMAT = "opcost-predictor"
# The newest format this code reads. A file is written with the lowest version whose readers
# use all of it: 1 for everything, except 2 for signature-phone predictors with run-spread
# weighting or a boosted correction (a version-1 reader would drop those silently), and 3
# for a signature-phone predictor whose interval coverage is not the default 90% (older
# readers do not know that parameter; at 90% they read the file and just show no intervals).
FORMAT_VERSION = 3
# Only classes from these packages may be rebuilt from a predictor file.
_ALLOWED_MODULE_PREFIXES = ("host.modeler.",)


def _versions() -> Dict[str, str]:
    import sklearn

    import opcost

    return {
        "opcost": opcost.__version__,
        "sklearn": sklearn.__version__,
        "python": platform.python_version(),
    }


def save_predictor(
    path: str | Path,
    estimator: Any,
    *,
    meta: Dict[str, Any],
    training: Optional[Dict[str, Any]] = None,
    arrays: Optional[Dict[str, Any]] = None,
    pickle_estimator: bool = True,
    format_version: int = 1,
) -> Path:
    """Write ``estimator`` with its metadata and training tables to ``path`` (atomic);
    ``format_version``: the oldest reader version that understands all of it."""
    import joblib

    path = Path(path)
    cls = type(estimator)
    params = estimator.get_params(deep=False) if hasattr(estimator, "get_params") else {}
    header = {
        "format": FORMAT,
        "format_version": int(format_version),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(),
        "estimator_class": f"{cls.__module__}.{cls.__qualname__}",
        "estimator_params": _jsonable(params),
        "training_tables": sorted((training or {}).keys()),
        **meta,
    }
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.json", json.dumps(header, indent=2, sort_keys=True, default=str))
        if pickle_estimator:
            buf = io.BytesIO()
            joblib.dump(estimator, buf)
            zf.writestr("estimator.pkl", buf.getvalue())
        for name, table in (training or {}).items():
            buf = io.BytesIO()
            table.to_parquet(buf, index=False)
            zf.writestr(f"training/{name}.parquet", buf.getvalue())
        if arrays:
            import numpy as np

            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            zf.writestr("arrays.npz", buf.getvalue())
    tmp.replace(path)
    return path


def read_meta(path: str | Path) -> Dict[str, Any]:
    """The metadata of a predictor file, checked for format and version."""
    path = Path(path)
    if not path.is_file():
        raise PredictorError(f"predictor file {path} does not exist",
                             hint="create one with `opcost fit ... --out FILE` (a phone known by its signature: "
                                  "`opcost adapt --signature ... --out FILE`)")
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("meta.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as err:
        raise PredictorError(f"{path} is not an opcost predictor file ({err})",
                             hint="pass a file written by `opcost fit` or `opcost adapt`") from None
    if meta.get("format") != FORMAT:
        raise PredictorError(f"{path} is not an opcost predictor file (format {meta.get('format')!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise PredictorError(
            f"{path} was written by a newer opcost (predictor format {meta['format_version']}, "
            f"this opcost reads up to {FORMAT_VERSION})",
            hint=f"upgrade opcost to at least {meta.get('versions', {}).get('opcost', 'the writing version')}")
    return meta


def load_predictor(path: str | Path) -> Tuple[Any, Dict[str, Any]]:
    """Load ``(estimator, meta)``; refit from the embedded tables on a scikit-learn mismatch."""
    import joblib
    import sklearn

    path = Path(path)
    meta = read_meta(path)
    saved = meta.get("versions", {}).get("sklearn")
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        arrays = None
        if "arrays.npz" in names:
            import numpy as np

            with np.load(io.BytesIO(zf.read("arrays.npz")), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        if "estimator.pkl" in names and saved == sklearn.__version__:
            est = joblib.load(io.BytesIO(zf.read("estimator.pkl")))
            meta["loaded_by"] = "pickle"
            return est, meta
        cls = _resolve_class(meta.get("estimator_class", ""))
        if arrays is not None and hasattr(cls, "from_arrays"):
            est = cls.from_arrays(arrays, meta)
            meta["loaded_by"] = "arrays"
            return est, meta
        tables = _read_tables(zf, meta, path)
    if not tables:
        raise PredictorError(
            f"{path} was saved with scikit-learn {saved} and holds no training data to refit with "
            f"scikit-learn {sklearn.__version__}",
            hint=f"install scikit-learn=={saved} or refit the predictor")
    log.warning("predictor %s was saved with scikit-learn %s; refitting it with %s from its "
                "embedded training data", path, saved, sklearn.__version__)
    try:
        params = {**getattr(cls, "OLD_FILE_PARAMS", {}), **meta.get("estimator_params", {})}
        est = cls(**params).fit(**tables)
    except Exception as err:  # refit failures must say what to do, not trace back
        raise PredictorError(f"could not refit {path} with scikit-learn {sklearn.__version__}: {err}",
                             hint=f"install scikit-learn=={saved} or refit the predictor") from err
    meta["loaded_by"] = "refit"
    return est, meta


def load_training_tables(path: str | Path) -> Dict[str, Any]:
    """The training tables embedded in a predictor file (name -> DataFrame)."""
    path = Path(path)
    meta = read_meta(path)
    with zipfile.ZipFile(path) as zf:
        return _read_tables(zf, meta, path)


def _read_tables(zf: zipfile.ZipFile, meta: Dict[str, Any], path: Path) -> Dict[str, Any]:
    import pandas as pd

    names = set(zf.namelist())
    tables = {}
    for name in meta.get("training_tables", []):
        member = f"training/{name}.parquet"
        if member not in names:
            raise PredictorError(f"{path} lacks its training table {name!r}",
                                 hint="refit the predictor with `opcost fit`")
        tables[name] = pd.read_parquet(io.BytesIO(zf.read(member)))
    return tables


def _resolve_class(qualname: str):
    module, _, name = qualname.rpartition(".")
    if not module.startswith(_ALLOWED_MODULE_PREFIXES):
        raise PredictorError(f"predictor estimator class {qualname!r} is not an opcost class")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise PredictorError(f"predictor estimator class {qualname!r} is unknown to this opcost ({err})",
                             hint="upgrade opcost to the version that wrote the file") from None


def _jsonable(obj: Any) -> Any:
    try:
        json.dumps(obj)
        return obj
    except TypeError:
        if isinstance(obj, dict):
            return {k: _jsonable(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [_jsonable(v) for v in obj]
        return repr(obj)
