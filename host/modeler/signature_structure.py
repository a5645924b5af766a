"""Place networks never measured on the training devices into the signature model.

The signature model (:mod:`host.modeler.signature`) knows a network only by its latent
coordinates: an offset and ``r`` factors, learnt from its latencies on the training
devices. A new network (a NAS candidate, a user's model) has no such latencies, so its
coordinates are estimated from its structure in two steps:

1. **Additive estimate.** Each training device gets a non-negative linear cost model of
   whole-network latency over structural totals (FLOPs of convolutions and depthwise
   convolutions per feature-map size, element-wise FLOPs, activations moved, weights,
   layer count, a constant), fitted to its networks with relative-error weights. Summed
   over the new network's structure it gives the network's latency on every training
   device; a least-squares fit of those latencies against the training devices'
   coefficients gives the network's coordinates.
2. **Correction.** Extra-trees regression from the structure (log features) to the
   difference between the training networks' true coordinates and their additive
   estimates.

A new device's latency on the network then follows from the device's coefficients
(estimated from its signature latencies as usual). Measured on ganesan2020 by
``benchmarks/signature_unseen.py``.

Features are the per-network totals of :func:`host.modeler.data_ganesan2020.network_features`
(from a per-layer table in the ganesan2020 layout; ``models_zoo.ganesan2020.layer_table``
makes one from a ``.tflite``).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from opcost.errors import PredictorError, UsageError, short_list

log = logging.getLogger(__name__)

# Structural totals summed by the per-device additive model (names from
# data_ganesan2020.network_features); a constant column is appended.
ADDITIVE_FEATURES = (
    "mflops_conv_at112", "mflops_conv_at56", "mflops_conv_at28", "mflops_conv_at14", "mflops_conv_at7",
    "mflops_dwconv_at112", "mflops_dwconv_at56", "mflops_dwconv_at28", "mflops_dwconv_at14", "mflops_dwconv_at7",
    "mflops_add", "mflops_relu", "mflops_pool", "mact_total", "mparams", "n_layers",
)


def _nnls_relative(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares of ``a @ beta ~ y`` on relative errors (rows / y)."""
    from scipy.optimize import nnls

    scale = np.abs(a).max(axis=0) + 1e-12
    w = 1.0 / y
    beta, _ = nnls((a / scale) * w[:, None], y * w)
    return beta / scale


class StructureLatentMap:
    """Latent coordinates ``[offset, factors...]`` of networks from their structure.

    scikit-learn style: ``fit`` on the training devices' latencies, the training
    networks' features and coordinates, and the devices' coefficients; ``transform``
    gives coordinates for new networks. ``n_estimators``, ``min_samples_leaf``,
    ``random_state``: the extra-trees correction.
    """

    def __init__(self, n_estimators: int = 300, min_samples_leaf: int = 2, random_state: int = 0):
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    def fit(self, latency_ms, network_features, feature_names: Sequence[str], latents,
            device_coefs) -> "StructureLatentMap":
        """``latency_ms`` (devices x networks, ms); ``network_features`` (networks x
        features, named by ``feature_names``); ``latents`` (networks x (r+1)) the
        networks' offset and factors; ``device_coefs`` (devices x (r+1)) the devices'
        offset and factors."""
        y = np.asarray(latency_ms, dtype=float)
        feats = np.asarray(network_features, dtype=float)
        missing = [f for f in ADDITIVE_FEATURES if f not in feature_names]
        if missing:
            raise UsageError(f"network features lack {', '.join(missing)}",
                             hint="compute them with data_ganesan2020.network_features")
        if feats.shape != (y.shape[1], len(feature_names)):
            raise UsageError(f"network features have shape {feats.shape}, expected "
                             f"({y.shape[1]}, {len(feature_names)})")
        self.feature_names_ = [str(f) for f in feature_names]
        self.train_features_ = feats
        a = self._additive_design(feats)
        self.additive_betas_ = np.array([_nnls_relative(a, row) for row in y])
        self.device_coefs_ = np.asarray(device_coefs, dtype=float)
        latents = np.asarray(latents, dtype=float)
        self.correction_targets_ = latents - self._project(feats)
        self._fit_correction()
        return self

    def _additive_design(self, feats: np.ndarray) -> np.ndarray:
        cols = [self.feature_names_.index(f) for f in ADDITIVE_FEATURES]
        return np.hstack([np.maximum(feats[:, cols], 0.0), np.ones((len(feats), 1))])

    @staticmethod
    def _log_features(feats: np.ndarray) -> np.ndarray:
        return np.log1p(np.maximum(feats, 0.0))

    def _project(self, feats: np.ndarray) -> np.ndarray:
        """Coordinates (n, r+1) that best explain the additive latency estimates on the
        training devices."""
        est_ms = self.additive_betas_ @ self._additive_design(feats).T        # (devices, n)
        coefs = self.device_coefs_
        z = np.hstack([np.ones((len(coefs), 1)), coefs[:, 1:]])
        target = np.log(np.maximum(est_ms, 1e-3)) - coefs[:, :1]
        return np.linalg.lstsq(z, target, rcond=None)[0].T

    def _fit_correction(self) -> None:
        from sklearn.ensemble import ExtraTreesRegressor

        self.correction_ = ExtraTreesRegressor(
            n_estimators=self.n_estimators, min_samples_leaf=self.min_samples_leaf,
            random_state=self.random_state, n_jobs=1,
        ).fit(self._log_features(self.train_features_), self.correction_targets_)

    # --------------------------------------------------------------- prediction
    def _check(self, network_features) -> np.ndarray:
        if not hasattr(self, "additive_betas_"):
            raise PredictorError("the structure map is not fitted", hint="call fit() first")
        feats = np.atleast_2d(np.asarray(network_features, dtype=float))
        if feats.shape[1] != len(self.feature_names_):
            raise UsageError(f"got {feats.shape[1]} network features, the model uses {len(self.feature_names_)}")
        if not np.all(np.isfinite(feats)):
            raise UsageError("network features must be finite numbers")
        return feats

    def transform(self, network_features) -> np.ndarray:
        """Coordinates (n_networks, r+1) of networks with these features."""
        feats = self._check(network_features)
        if getattr(self, "correction_", None) is None:
            self._fit_correction()
        corr = self.correction_.predict(self._log_features(feats))
        return self._project(feats) + np.asarray(corr).reshape(len(feats), -1)

    def log_features(self, network_features=None) -> np.ndarray:
        """The features the map compares networks by (log1p), of ``network_features`` or,
        with None, of its training networks."""
        return self._log_features(self.train_features_ if network_features is None
                                  else self._check(network_features))

    def out_of_range(self, network_features, margin: float = 0.1) -> List[List[str]]:
        """Per network: the features outside the training networks' range (on a log
        scale, widened by ``margin`` of it): the prediction extrapolates in these."""
        feats = self._log_features(self._check(network_features))
        train = self._log_features(self.train_features_)
        fmin, fmax = train.min(axis=0), train.max(axis=0)
        span = fmax - fmin
        lo, hi = fmin - margin * span - 1e-9, fmax + margin * span + 1e-9
        return [[n for n, v, a, b in zip(self.feature_names_, row, lo, hi) if v < a or v > b] for row in feats]

    def same_as_training(self, network_features, rtol: float = 1e-6) -> List[Optional[int]]:
        """Per network: the index of a training network with the same features (the same
        layers, e.g. a zoo MobileNetV2 and ganesan2020's), else None."""
        feats = self._check(network_features)
        out: List[Optional[int]] = []
        for row in feats:
            hit = np.flatnonzero(np.all(np.isclose(self.train_features_, row, rtol=rtol, atol=1e-9), axis=1))
            out.append(int(hit[0]) if len(hit) else None)
        return out

    # ------------------------------------------------- state for predictor files
    _ARRAYS = ("train_features_", "additive_betas_", "device_coefs_", "correction_targets_")

    def to_state(self) -> tuple:
        """``(meta, arrays)``, no pickle: the correction is refitted from the arrays on load
        (deterministic; a fraction of a second)."""
        meta = {"params": {"n_estimators": self.n_estimators, "min_samples_leaf": self.min_samples_leaf,
                           "random_state": self.random_state},
                "feature_names_": list(self.feature_names_)}
        return meta, {name: np.asarray(getattr(self, name), dtype=float) for name in self._ARRAYS}

    @classmethod
    def from_state(cls, meta: dict, arrays: Dict[str, np.ndarray]) -> "StructureLatentMap":
        try:
            m = cls(**meta["params"])
            m.feature_names_ = list(meta["feature_names_"])
            for name in cls._ARRAYS:
                setattr(m, name, np.asarray(arrays[name], dtype=float))
        except (KeyError, TypeError) as err:
            raise PredictorError(f"predictor file is missing structure field {err}",
                                 hint="the file is damaged; create it again with `opcost adapt`") from None
        m.correction_ = None
        return m


# ------------------------------------------------------------- where structure comes from

def tflite_structure(path: str) -> Tuple[Dict[str, float], List[dict]]:
    """``(features, unsupported ops)`` of a ``.tflite``: the per-network totals of its
    layer table in the ganesan2020 layout (:func:`models_zoo.ganesan2020.layer_table`).
    Unsupported ops (e.g. HARD_SWISH) have no row: the caller should warn that their cost
    is not counted. UsageError if the file cannot be read as a TFLite graph or has no
    layer opcost can describe."""
    from host.modeler.data_ganesan2020 import network_features
    from models_zoo.ganesan2020 import layer_table
    from models_zoo.graph import read_graph
    from opcost.errors import OpcostError

    try:
        lt = layer_table(read_graph(path))
    except OpcostError as err:
        raise UsageError(f"cannot read the network structure of {path}: {err.message}",
                         hint=getattr(err, "hint", None) or "pass a .tflite model file") from None
    if len(lt.rows) == 0:
        raise UsageError(f"{path} has no convolution, pooling or element-wise layer opcost can describe",
                         hint="the signature model describes networks by their conv / depthwise / add / relu / "
                              "pool layers")
    return network_features(np.asarray(lt.rows, dtype=float)), list(lt.unsupported)


def _ganesan_features() -> Dict[str, Dict[str, float]]:
    """Network id -> features, from the ganesan2020 layer tables shipped in data/."""
    from host.modeler import data_ganesan2020 as g20

    return {name: g20.network_features(tab) for name, tab in g20.layer_tables().items()}


def store_structure(store, networks: Sequence[str]) -> Tuple[Optional[np.ndarray], List[str], List[str]]:
    """``(features (networks x features) or None, feature names, networks without
    structure)`` for the store's networks (by model name): networks imported from
    ganesan2020 take the dataset's layer tables, measured ones their ``.tflite`` (if the
    stored path is still readable)."""
    refs: Dict[str, list] = {}
    for ref in store.models():
        refs.setdefault(ref.name, []).append(ref)
    ganesan: Optional[Dict[str, Dict[str, float]]] = None
    rows: List[Optional[Dict[str, float]]] = []
    for name in networks:
        feats = None
        for ref in refs.get(name, []):
            if ref.source == "dataset:ganesan2020":
                if ganesan is None:
                    ganesan = _ganesan_features()
                feats = ganesan.get(name)
            elif ref.path and os.path.isfile(ref.path):
                try:
                    feats, _ = tflite_structure(ref.path)
                except UsageError as err:
                    log.info("no structure for %s: %s", name, err)
            if feats is not None:
                break
        rows.append(feats)
    missing = [n for n, r in zip(networks, rows) if r is None]
    if missing:
        return None, [], missing
    names = list(rows[0]) if rows else []
    return np.array([[r[k] for k in names] for r in rows], dtype=float), names, []


def attach_store_structure(matrix, store):
    """``matrix`` (a :class:`host.modeler.signature.LatencyMatrix` read from ``store``)
    with its networks' structure attached when every network has one; logged otherwise."""
    feats, names, missing = store_structure(store, matrix.networks)
    if feats is None:
        log.info("%d of the %d networks have no readable structure (%s): the predictor will predict only "
                 "networks measured on the training devices", len(missing), len(matrix.networks),
                 short_list(missing, 5))
        return matrix
    matrix.network_features, matrix.feature_names = feats, names
    return matrix


def structure_rows(paths: Sequence[str], feature_names: Sequence[str]) -> Tuple[np.ndarray, List[List[str]]]:
    """Feature rows (in ``feature_names`` order) of ``.tflite`` files, and per file the
    op types its layer table could not describe (their cost is not counted)."""
    rows, unsupported = [], []
    for p in paths:
        feats, uns = tflite_structure(p)
        rows.append([feats[n] for n in feature_names])
        unsupported.append(sorted({str(u.get("type")) for u in uns}))
    return np.array(rows, dtype=float), unsupported
