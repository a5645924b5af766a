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

from typing import Dict, List, Sequence

import numpy as np

from opcost.errors import PredictorError, UsageError

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
        self.feature_min_ = feats.min(axis=0)
        self.feature_max_ = feats.max(axis=0)
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

    def out_of_range(self, network_features, margin: float = 0.1) -> List[List[str]]:
        """Per network: the features outside the training networks' range (widened by
        ``margin`` of it): the prediction extrapolates in these."""
        feats = self._check(network_features)
        span = self.feature_max_ - self.feature_min_
        lo, hi = self.feature_min_ - margin * span, self.feature_max_ + margin * span
        return [[n for n, v, a, b in zip(self.feature_names_, row, lo, hi) if v < a or v > b] for row in feats]

    # ------------------------------------------------- state for predictor files
    _ARRAYS = ("train_features_", "additive_betas_", "device_coefs_", "correction_targets_",
               "feature_min_", "feature_max_")

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
