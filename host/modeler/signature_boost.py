"""A boosted correction on top of the signature model's low-rank + neighbour prediction.

LightGBM learns the training phones' out-of-fold log residual of a (phone, network) pair
from what is known at prediction time: the phone's signature (profile, fit residuals, its
coefficients), the network (its low-rank offset and factors, and its structure when the
model has it) and the pair (the low-rank prediction, the mean residual of the 10 closest
training phones). Which of a few fixed parameter sets, and how much of the correction to
apply (0 = none), is chosen by grouped CV over the training phones. The booster is kept
as LightGBM's text model, so predictor files stay free of pickle.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from opcost.errors import PredictorError

N_NEIGHBORS_FEATURE = 10
PARAM_GRID = (
    {"num_leaves": 7, "n_estimators": 300, "learning_rate": 0.03, "min_child_samples": 40},
    {"num_leaves": 15, "n_estimators": 300, "learning_rate": 0.03, "min_child_samples": 40},
    {"num_leaves": 7, "n_estimators": 800, "learning_rate": 0.03, "min_child_samples": 40},
)
SHRINK_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
_FIXED = {"objective": "l1", "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.7,
          "reg_lambda": 1.0, "n_jobs": 1, "verbose": -1, "deterministic": True}


def cell_features(net_offset: np.ndarray, factors: np.ndarray, coefs: np.ndarray, sig: Sequence[int],
                  sig_log: np.ndarray, pred_log: np.ndarray, neighbour_log: np.ndarray,
                  net_features: Optional[np.ndarray]) -> np.ndarray:
    """Features (n_devices, n_networks, F) of every (device, network) pair.

    ``coefs`` (n_devices, r+1): the devices' low-rank coefficients; ``pred_log``: the
    low-rank log prediction of every network; ``neighbour_log``: the neighbour correction;
    ``net_features`` (n_networks, G) or None."""
    sig = list(sig)
    sig_log = np.atleast_2d(sig_log)
    n_dev, n_net = pred_log.shape
    sig_res = sig_log - pred_log[:, sig]
    profile = sig_log - sig_log.mean(axis=1, keepdims=True)
    rms = np.sqrt(np.mean(sig_res ** 2, axis=1, keepdims=True))
    phone = np.hstack([profile, sig_res, coefs, rms])
    net = [net_offset[:, None], factors.T]
    if net_features is not None:
        net.insert(0, net_features)
    net = np.hstack(net)
    return np.concatenate([np.repeat(phone[:, None, :], n_net, axis=1), np.repeat(net[None], n_dev, axis=0),
                           pred_log[:, :, None], neighbour_log[:, :, None]], axis=2)


def network_features_log(network_features) -> Optional[np.ndarray]:
    """log1p of the structural features (all are counts or sizes >= 0), or None."""
    if network_features is None:
        return None
    return np.log1p(np.maximum(np.asarray(network_features, dtype=float), 0.0))


def _regressor(params: Dict, random_state: int):
    import lightgbm as lgb

    return lgb.LGBMRegressor(random_state=random_state, **_FIXED, **params)


def choose_and_fit(X: np.ndarray, y: np.ndarray, row_folds: np.ndarray,
                   random_state: int = 0) -> Tuple[float, Optional[str], Dict[str, float], np.ndarray]:
    """Grouped CV over PARAM_GRID x SHRINK_GRID on rows (X, y, fold of each row's device).
    Returns (shrink, LightGBM text model or None when shrink is 0, CV mean |log error|
    per choice, the chosen correction out of fold per row: zeros when shrink is 0)."""
    scores: Dict[str, float] = {}
    best = (float(np.mean(np.abs(y))), 0.0, None)
    scores["shrink=0"] = best[0]
    cv_preds = []
    for i, params in enumerate(PARAM_GRID):
        cv_pred = np.zeros_like(y)
        for f in np.unique(row_folds):
            te = row_folds == f
            cv_pred[te] = _regressor(params, random_state).fit(X[~te], y[~te]).predict(X[te])
        cv_preds.append(cv_pred)
        for s in SHRINK_GRID[1:]:
            err = float(np.mean(np.abs(y - s * cv_pred)))
            scores[f"params={i},shrink={s:g}"] = err
            if err < best[0]:
                best = (err, s, i)
    _, shrink, idx = best
    if idx is None:
        return 0.0, None, scores, np.zeros_like(y)
    model = _regressor(PARAM_GRID[idx], random_state).fit(X, y)
    return float(shrink), model.booster_.model_to_string(), scores, shrink * cv_preds[idx]


class BoostedCorrection:
    """A fitted correction: LightGBM text model + how much of it to apply."""

    def __init__(self, model_text: str, shrink: float, n_features: int):
        self.model_text = model_text
        self.shrink = shrink
        self.n_features = n_features
        self._booster = None

    def _model(self):
        if self._booster is None:
            import lightgbm as lgb

            try:
                self._booster = lgb.Booster(model_str=self.model_text)
            except Exception as err:  # LightGBM raises its own LightGBMError on a bad model
                raise PredictorError(f"the predictor's boosted correction cannot be read by LightGBM "
                                     f"{lgb.__version__}: {err}",
                                     hint="create the predictor again with `opcost adapt`") from None
        return self._booster

    def predict(self, X: np.ndarray) -> np.ndarray:
        """shrink x the booster's prediction, shape X.shape[:2]."""
        if X.shape[-1] != self.n_features:
            raise PredictorError(f"the boosted correction expects {self.n_features} features, got {X.shape[-1]}",
                                 hint="the file is damaged; create it again with `opcost adapt`")
        flat = self._model().predict(X.reshape(-1, X.shape[-1]))
        return self.shrink * flat.reshape(X.shape[:2])

    def to_state(self) -> Tuple[dict, Dict[str, np.ndarray]]:
        import lightgbm as lgb

        return ({"shrink": self.shrink, "n_features": self.n_features, "lightgbm": lgb.__version__},
                {"model_text": np.frombuffer(self.model_text.encode("utf-8"), dtype=np.uint8)})

    @classmethod
    def from_state(cls, meta: dict, arrays: Dict[str, np.ndarray]) -> "BoostedCorrection":
        try:
            text = np.asarray(arrays["model_text"], dtype=np.uint8).tobytes().decode("utf-8")
            return cls(text, float(meta["shrink"]), int(meta["n_features"]))
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as err:
            raise PredictorError(f"predictor file has a damaged boosted correction ({err})",
                                 hint="create it again with `opcost adapt`") from None

