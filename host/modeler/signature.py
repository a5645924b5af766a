"""Cross-device latency prediction from a device "signature set".

A device is described by its measured latencies on ``k`` signature networks; a model
trained on other devices' full latency rows predicts the latency of every other network
on that device (Ganesan et al., IISWC 2020).

Selection methods (all use the training devices' latency matrix only):

- ``random``: k networks uniformly at random (seeded).
- ``mis``: mutual-information-based selection as in the paper: each network's latencies
  over devices are binned into quantile levels; networks are added greedily so that the
  joint entropy of the set's level patterns is largest (the new network adds the most
  information not already in the set).
- ``sccs``: Spearman-correlation-based selection as in the paper: Spearman rho between
  networks over devices; repeatedly take the network with most others above a threshold
  (0.98), drop it and those it covers.
- ``pqr``: ours. QR with column pivoting on the top right singular vectors of the
  centred log-latency matrix: the k networks that best span the device-variation space.
- ``greedy``: ours. Forward selection of the network that most lowers the grouped
  inner cross-validated error of the low-rank model on training devices.
- ``auto``: ours. Scores pqr, mis and sccs by nested grouped CV on the training devices
  (each selects on inner-training devices only) and uses the best.

Model (:class:`SignatureLatencyModel`): log latency = device offset + network offset +
device factors . network factors (rank r, from an SVD of the training devices). A new
device's offset and factors are the MAP estimate given its k signature log-latencies,
with the training devices' factor distribution as the prior (so r may exceed k without
over-fitting) and each network weighted by its own residual variance on the training
devices (noisy networks count for less). Optionally a nearest-neighbour correction adds the average out-of-fold
residual of the training devices whose signature profile is closest (devices sharing a
SoC deviate from the low-rank model in the same way). A consistency check
(:meth:`SignatureLatencyModel.check_signature`) flags a new device whose signature
latencies fit the model much worse than the training devices' do.

Training data (:class:`LatencyMatrix`) comes from an opcost store
(:func:`store_latency_matrix`: the devices that measured every candidate network, networks
identified by model name, median_ms else mean_ms) or from a public dataset. A new phone's
signature latencies come from its store runs (:func:`store_device_latency_ms`) or a CSV.
:class:`PhonePredictor` is saved as an ``opcost-predictor`` file of kind
``signature-phone`` (host/modeler/predictor_file.py), without pickle.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from opcost.errors import PredictorError, UsageError, short_list

log = logging.getLogger(__name__)

SELECTION_METHODS = ("mis", "sccs", "random", "pqr", "greedy", "auto")

_RANK_GRID = (2, 3, 5, 8)
_NEIGHBOR_GRID = (0, 3, 5, 10)
_HUBER_SIGMAS = 2.0     # fixed up front, standard robust-regression range
_WINSOR_SIGMAS = 3.0
_NET_VAR_FLOOR = 0.25   # no network's noise variance below a quarter of the median one
# How much a signature value with unusually spread-out repeated runs counts less: its noise
# variance is multiplied by exp(beta * z), z = robust z-score of its log run spread against
# the training devices' on the same network, clipped to [0, _SPREAD_Z_MAX]. beta by inner CV.
_SPREAD_BETA_GRID = (0.0, 0.25, 0.5, 1.0)
_SPREAD_Z_MAX = 4.0
_SPREAD_FLOOR = 1e-4    # relative spreads below this (e.g. a single run) count as this
# A new phone's signature is flagged when its fit residual is more than this many times
# the median training phone's (out of fold). A quantile was tried first: the residuals
# have a heavy tail (a few phones at 30-40%), so the 90% quantile moved 3x between splits.
_CHECK_TIMES_MEDIAN = 2.0
# predict_interval: the interval comes from at least this many training devices' errors
_INTERVAL_MIN_DEVICES = 10
_DEFAULT_INTERVAL = 0.9
# Per-network interval scale: a network's MAD of out-of-fold errors over the pooled MAD, in
# log shrunk toward 1 as if this many devices had the pooled spread (few training devices).
_INTERVAL_SCALE_SHRINK_DEVICES = 10
_STRUCTURE_INTERVAL_FOLDS = 5   # network folds for the errors of predictions from structure
# A network predicted from structure gets the mean log error spread of the training networks
# nearest it in the structure map's log-feature space, widened with their distance (10: of 3, 5,
# 10, 20, the highest 5th percentile of the training networks' own per-network coverage)
_STRUCTURE_SCALE_NEIGHBORS = 10
# ... a feature more than this many training-network std away counts as this far (a feature
# all training networks share, e.g. no pooling, would otherwise make the bounds infinite)
_STRUCTURE_DISTANCE_CLIP_SD = 3.0
_STRUCTURE_PREFIX = "structure."   # predictor-file array names of the structure map
_BOOST_PREFIX = "boost."           # ... and of the boosted correction


# ----------------------------------------------------------------------------- helpers

def _log_matrix(latency_ms) -> np.ndarray:
    m = np.asarray(latency_ms, dtype=float)
    if m.ndim != 2 or m.shape[0] < 2 or m.shape[1] < 2:
        raise UsageError(f"latency matrix must be 2-D (devices x networks) with >= 2 of each, got shape {m.shape}",
                         hint="pass one row per training device and one column per network")
    if not np.all(np.isfinite(m)) or np.any(m <= 0):
        raise UsageError("latency matrix has missing, non-finite or non-positive values",
                         hint="every training device needs a latency > 0 ms for every network")
    return np.log(m)


def _group_folds(n_devices: int, groups: Optional[Sequence], n_folds: int) -> np.ndarray:
    """Fold index per device; devices of the same group (phone model) share a fold."""
    if groups is None:
        groups = np.arange(n_devices)
    groups = np.asarray(groups)
    if len(groups) != n_devices:
        raise UsageError(f"groups has {len(groups)} entries for {n_devices} devices")
    uniq = list(dict.fromkeys(groups.tolist()))
    n_folds = max(2, min(n_folds, len(uniq)))
    fold_of = {g: i % n_folds for i, g in enumerate(uniq)}
    return np.array([fold_of[g] for g in groups.tolist()])


def _as_indices(signature: Sequence, networks: Optional[Sequence[str]], n: int) -> List[int]:
    idx: List[int] = []
    names = list(networks) if networks is not None else None
    for s in signature:
        if isinstance(s, (int, np.integer)):
            i = int(s)
        elif names is not None and s in names:
            i = names.index(s)
        else:
            raise UsageError(f"signature network {s!r} is not one of the model's networks",
                             hint="use the network names written by `opcost signature select`")
        if not 0 <= i < n:
            raise UsageError(f"signature network index {i} is out of range 0..{n - 1}")
        idx.append(i)
    if len(set(idx)) != len(idx):
        raise UsageError("signature lists a network twice", hint="each signature network must be distinct")
    return idx


# ------------------------------------------------------------------- low-rank core

class _LowRank:
    """Fitted low-rank log-latency model with a Gaussian prior on device coefficients."""

    def __init__(self, net_offset, factors, coef_mean, coef_cov, noise_var, net_var=None):
        self.net_offset = net_offset      # (n_net,)
        self.factors = factors            # (r, n_net)
        self.coef_mean = coef_mean        # (r+1,) device [offset, factors]
        self.coef_cov = coef_cov          # (r+1, r+1)
        self.noise_var = noise_var        # float, log-space residual variance
        # (n_net,) residual variance per network (None: noise_var for all). Some networks
        # are much noisier than others (e.g. the first ones of a session, measured while
        # the phone was still ramping up); their signature latencies count for less.
        self.net_var = net_var

    @classmethod
    def fit(cls, log_lat: np.ndarray, rank: int, robust: bool = False) -> "_LowRank":
        """SVD fit. ``robust``: entries more than 3 robust sigmas off the fit (a run
        disturbed by throttling or a core migration) are pulled to 3 sigmas, twice."""
        lr = cls._fit_plain(log_lat, rank)
        if robust:
            work = log_lat
            for _ in range(2):
                fitted = lr._fitted(log_lat)
                res = log_lat - fitted
                scale = 1.4826 * float(np.median(np.abs(res))) + 1e-12
                work = fitted + np.clip(res, -_WINSOR_SIGMAS * scale, _WINSOR_SIGMAS * scale)
                lr = cls._fit_plain(work, rank)
        return lr

    def _fitted(self, log_lat: np.ndarray) -> np.ndarray:
        all_nets = list(range(log_lat.shape[1]))
        w = self.coefficients(all_nets, log_lat, robust=False)
        return self.net_offset + w[:, :1] + w[:, 1:] @ self.factors

    @classmethod
    def _fit_plain(cls, log_lat: np.ndarray, rank: int) -> "_LowRank":
        dev_off = log_lat.mean(axis=1, keepdims=True)
        net_off = (log_lat - dev_off).mean(axis=0)
        resid = log_lat - dev_off - net_off
        u, s, vt = np.linalg.svd(resid, full_matrices=False)
        r = int(max(0, min(rank, len(s) - 1, log_lat.shape[0] - 2)))
        factors = vt[:r]
        coefs = np.hstack([dev_off, u[:, :r] * s[:r]])
        rest = resid - (u[:, :r] * s[:r]) @ factors
        noise_var = float(max(np.mean(rest ** 2), 1e-8))
        per_net = np.mean(rest ** 2, axis=0)
        per_net = np.maximum(per_net, _NET_VAR_FLOOR * np.median(per_net)) + 1e-12
        net_var = per_net * (noise_var / float(np.mean(per_net)))
        cov = np.atleast_2d(np.cov(coefs.T)) + 1e-8 * np.eye(r + 1)
        return cls(net_off, factors, coefs.mean(axis=0), cov, noise_var, net_var)

    def coefficients(self, sig: Sequence[int], sig_log: np.ndarray, robust: bool = False,
                     var_mult: Optional[np.ndarray] = None) -> np.ndarray:
        """MAP device coefficients (n_dev, r+1) from signature log-latencies (n_dev, k).
        ``robust``: Huber weights (2 sigma), so one disturbed signature run does not
        drag the whole prediction. ``var_mult`` (n_dev, k): per-value noise variance
        multipliers (see :func:`_spread_var_mult`)."""
        sig = list(sig)
        x = np.hstack([np.ones((len(sig), 1)), self.factors[:, sig].T])
        prec = np.linalg.inv(self.coef_cov)
        t = np.atleast_2d(sig_log) - self.net_offset[sig]
        var0 = np.full(len(sig), self.noise_var) if self.net_var is None else np.asarray(self.net_var)[sig]
        if not robust and var_mult is None:
            a = (x.T / var0) @ x + prec
            rhs = t @ (x / var0[:, None]) + prec @ self.coef_mean
            return np.linalg.solve(a, rhs.T).T
        out = np.empty((len(t), x.shape[1]))
        for i, ti in enumerate(t):
            var = var0 if var_mult is None else var0 * var_mult[i]
            sd = np.sqrt(var)
            wts = np.ones(len(sig))
            for _ in range(5 if robust else 1):
                a = (x.T * (wts / var)) @ x + prec
                w = np.linalg.solve(a, (x.T * (wts / var)) @ ti + prec @ self.coef_mean)
                z = np.abs(ti - x @ w) / sd
                wts = np.where(z <= _HUBER_SIGMAS, 1.0, _HUBER_SIGMAS / np.maximum(z, 1e-12))
            out[i] = w
        return out

    def predict_log(self, sig: Sequence[int], sig_log: np.ndarray, robust: bool = False,
                    var_mult: Optional[np.ndarray] = None) -> np.ndarray:
        w = self.coefficients(sig, sig_log, robust, var_mult)
        return self.net_offset + w[:, :1] + w[:, 1:] @ self.factors


def _spread_reference(log_spread: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per network: median and scaled MAD of the devices' log run spread (NaN ignored)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # an all-NaN column stays NaN
        center = np.nanmedian(log_spread, axis=0)
        scale = 1.4826 * np.nanmedian(np.abs(log_spread - center), axis=0) + 1e-9
    return center, scale


def _spread_var_mult(beta: float, center, scale, log_spread: np.ndarray) -> Optional[np.ndarray]:
    """Noise variance multipliers exp(beta * clip(z, 0, max)) of signature values from
    their log run spread; unknown spreads (NaN) get 1. None when beta is 0."""
    if not beta:
        return None
    z = np.nan_to_num((np.atleast_2d(log_spread) - center) / scale, nan=0.0)
    return np.exp(beta * np.clip(z, 0.0, _SPREAD_Z_MAX))


def _check_spread(spread: np.ndarray) -> None:
    if np.any(spread[np.isfinite(spread)] < 0):
        raise UsageError("run spreads (std / mean of repeated runs) must be >= 0")


def _log_spread(spread) -> np.ndarray:
    return np.log(np.maximum(np.asarray(spread, dtype=float), _SPREAD_FLOOR))


def _oof_residuals(log_lat, sig, rank, folds, robust=False, log_spread=None, beta=0.0) -> np.ndarray:
    """Out-of-fold residuals (log) of the low-rank model given the signature; with
    ``log_spread`` (devices x networks) and ``beta``, signature values are weighted by
    their run spread relative to the fold's training devices."""
    res = np.zeros_like(log_lat)
    for f in np.unique(folds):
        te = folds == f
        lr = _LowRank.fit(log_lat[~te], rank, robust)
        mult = None
        if beta and log_spread is not None:
            center, scale = _spread_reference(log_spread[~te][:, sig])
            mult = _spread_var_mult(beta, center, scale, log_spread[te][:, sig])
        res[te] = log_lat[te] - lr.predict_log(sig, log_lat[te][:, sig], robust, mult)
    return res


def _signature_rms(sig, sig_log: np.ndarray, pred_log: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(per-device RMS of the signature fit's log residuals, the residuals (n_dev, k)),
    from the model's log predictions of all networks ``pred_log``."""
    res = np.atleast_2d(sig_log) - pred_log[:, list(sig)]
    return np.sqrt(np.mean(res ** 2, axis=1)), res


def _signature_check_stats(log_lat: np.ndarray, oof_residuals: np.ndarray, sig) -> Tuple[np.ndarray, np.ndarray]:
    """Per training device, from its out-of-fold log residuals: the signature fit's
    residual RMS and the mean |relative error| of the other networks (low-rank part only)."""
    mask = np.ones(log_lat.shape[1], bool)
    mask[list(sig)] = False
    rms, _ = _signature_rms(sig, log_lat[:, sig], log_lat - oof_residuals)
    return rms, np.mean(np.abs(np.expm1(-oof_residuals[:, mask])), axis=1)


def _log_spread_ratio(residuals: np.ndarray) -> np.ndarray:
    """Per network: log of the MAD of its log residuals over the pooled MAD (NaN for a
    network without residuals, e.g. a signature network)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN columns
        per_net = np.nanmedian(np.abs(residuals), axis=0)
        pooled = float(np.nanmedian(np.abs(residuals))) if np.isfinite(residuals).any() else 0.0
    if not pooled > 1e-12:   # no errors to compare: every network alike
        return np.where(np.isfinite(per_net), 0.0, np.nan)
    return np.log(np.maximum(per_net, 1e-3 * pooled) / pooled)


def _network_scale(residuals: np.ndarray) -> np.ndarray:
    """Per network: the MAD of its log residuals (devices x networks, NaN ignored) over
    the pooled MAD, shrunk toward 1 in log (:data:`_INTERVAL_SCALE_SHRINK_DEVICES`); 1 for
    a network without residuals."""
    n = np.isfinite(residuals).sum(axis=0)
    log_ratio = np.nan_to_num(_log_spread_ratio(residuals), nan=0.0)
    return np.exp(log_ratio * n / (n + _INTERVAL_SCALE_SHRINK_DEVICES))


def _network_scaled_residuals(residuals: np.ndarray, groups) -> Tuple[np.ndarray, np.ndarray]:
    """(per-network scale from all devices, residuals divided by it): each phone model's
    row divided by the scale from the other phone models' residuals (dividing by a scale
    its own residuals shaped made the bounds too narrow on new phones: 89.5% at 90%)."""
    scale = _network_scale(residuals)
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    if len(uniq) < 2:
        return scale, residuals / scale
    scaled = np.empty_like(residuals)
    for grp in uniq:
        rows = groups == grp
        scaled[rows] = residuals[rows] / _network_scale(residuals[~rows])
    return scale, scaled


def _structure_log_scales(train_log_feats: np.ndarray, train_log_spread: np.ndarray,
                          query_log_feats: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Log interval scales of networks from their structure: (training networks', each
    left out of its own neighbours; the query networks'). A network's log scale is the mean
    log spread of the :data:`_STRUCTURE_SCALE_NEIGHBORS` training networks (with a spread)
    nearest it, plus ``b0 + b1 * log(their mean distance)``, b from the training networks
    (b1 >= 0: a network further from all training networks never gets narrower bounds).
    Distance: RMS over log features standardised by the training networks' std, each
    clipped at :data:`_STRUCTURE_DISTANCE_CLIP_SD`."""
    ok = np.isfinite(train_log_spread)
    n_query = 0 if query_log_feats is None else len(query_log_feats)
    if ok.sum() < 2:
        return np.zeros(len(train_log_feats)), np.zeros(n_query)
    train, spread = train_log_feats[ok], train_log_spread[ok]
    sd = train.std(axis=0) + 1e-9
    m = min(_STRUCTURE_SCALE_NEIGHBORS, len(train) - 1)

    def near(query, exclude_self):
        z = np.minimum(np.abs(query[:, None, :] - train[None]) / sd, _STRUCTURE_DISTANCE_CLIP_SD)
        dist = np.sqrt(np.mean(z ** 2, axis=2))
        if exclude_self:
            np.fill_diagonal(dist, np.inf)
        idx = np.argsort(dist, axis=1, kind="stable")[:, :m]
        return spread[idx].mean(axis=1), np.log(np.take_along_axis(dist, idx, axis=1).mean(axis=1) + 1e-9)

    knn, log_dist = near(train, True)
    b1 = np.polyfit(log_dist, spread - knn, 1)[0] if np.ptp(log_dist) > 0 else 0.0
    b1 = max(float(b1), 0.0)
    b0 = float(np.mean(spread - knn - b1 * log_dist))
    train_scale = np.zeros(len(train_log_feats))
    train_scale[ok] = knn + b0 + b1 * log_dist
    if query_log_feats is None:
        return train_scale, np.zeros(0)
    q_knn, q_dist = near(query_log_feats, False)
    return train_scale, q_knn + b0 + b1 * q_dist


def _profile(sig_log: np.ndarray) -> np.ndarray:
    return sig_log - sig_log.mean(axis=-1, keepdims=True)


def _knn_correction(sig_profiles, residuals, train_groups, query_profiles, n_neighbors,
                    exclude_groups=None) -> np.ndarray:
    out = np.zeros((len(query_profiles), residuals.shape[1]))
    if n_neighbors <= 0:
        return out
    for i, q in enumerate(query_profiles):
        dist = np.sqrt(np.mean((sig_profiles - q) ** 2, axis=1))
        if exclude_groups is not None:
            dist = np.where(train_groups == exclude_groups[i], np.inf, dist)
        order = np.argsort(dist, kind="stable")[:n_neighbors]
        order = order[np.isfinite(dist[order])]
        if len(order):
            out[i] = residuals[order].mean(axis=0)
    return out


def _cv_errors(res, log_lat, sig, neighbor_grid=(0,), groups=None) -> Dict[int, float]:
    """Grouped inner-CV mean |log error| on non-signature networks (about MAPE) from the
    out-of-fold residuals ``res``, for each number of neighbours in ``neighbor_grid``."""
    g = np.asarray(groups) if groups is not None else np.arange(len(log_lat))
    prof = _profile(log_lat[:, sig])
    mask = np.ones(log_lat.shape[1], bool)
    mask[list(sig)] = False
    out = {}
    for nn in neighbor_grid:
        r = res - _knn_correction(prof, res, g, prof, nn, exclude_groups=g) if nn > 0 else res
        out[nn] = float(np.mean(np.abs(r[:, mask])))
    return out


# ------------------------------------------------------------------------ selection

def _select_random(log_lat, k, seed) -> List[int]:
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(log_lat.shape[1], size=k, replace=False))


def _entropy(codes: np.ndarray) -> float:
    """Entropy (nats) of a vector of integer pattern codes (one per device)."""
    counts = np.unique(codes, return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _joint_codes(codes: np.ndarray, levels: np.ndarray, n_levels: int) -> np.ndarray:
    """Codes of (set pattern, new level), relabelled to 0..m-1 so they never overflow."""
    return np.unique(codes * n_levels + levels, return_inverse=True)[1].ravel()


def _select_mis(log_lat, k, n_levels: int = 4) -> List[int]:
    n_dev, n_net = log_lat.shape
    levels = np.empty((n_net, n_dev), dtype=np.int64)
    for j in range(n_net):
        edges = np.quantile(log_lat[:, j], np.linspace(0, 1, n_levels + 1)[1:-1])
        levels[j] = np.searchsorted(edges, log_lat[:, j], side="right")
    h1 = np.array([_entropy(levels[j]) for j in range(n_net)])
    # pairwise mutual information, used to start and to break ties
    mi = np.zeros((n_net, n_net))
    for a in range(n_net):
        pair = levels[a][None, :] * n_levels + levels[a + 1:]
        for off, codes in enumerate(pair, start=a + 1):
            mi[a, off] = mi[off, a] = h1[a] + h1[off] - _entropy(codes)
    chosen = [int(np.argmax(mi.sum(axis=1)))]  # the most representative network first
    codes = _joint_codes(np.zeros(n_dev, dtype=np.int64), levels[chosen[0]], n_levels)
    while len(chosen) < k:
        best = None
        for j in range(n_net):
            if j in chosen:
                continue
            key = (round(_entropy(codes * n_levels + levels[j]), 9), -mi[j, chosen].sum(), -j)
            if best is None or key > best[0]:
                best = (key, j)
        chosen.append(best[1])
        codes = _joint_codes(codes, levels[best[1]], n_levels)
    return chosen


def _select_sccs(log_lat, k, threshold: float = 0.98) -> List[int]:
    from scipy.stats import spearmanr

    n_net = log_lat.shape[1]
    rho = np.asarray(spearmanr(log_lat).statistic) if n_net > 2 else np.corrcoef(log_lat.T)
    rho = np.nan_to_num(rho, nan=0.0)
    remaining = list(range(n_net))
    chosen: List[int] = []
    while len(chosen) < k and remaining:
        sub = rho[np.ix_(remaining, remaining)] > threshold
        pick = remaining[int(np.argmax(sub.sum(axis=1)))]
        chosen.append(pick)
        remaining = [j for j in remaining if j != pick and rho[j, pick] <= threshold]
    while len(chosen) < k:  # everything covered: add the least correlated with the set
        rest = [j for j in range(n_net) if j not in chosen]
        chosen.append(min(rest, key=lambda j: (rho[j, chosen].max(), j)))
    return chosen


def _select_pqr(log_lat, k) -> List[int]:
    from scipy.linalg import qr

    resid = log_lat - log_lat.mean(axis=1, keepdims=True)
    resid = resid - resid.mean(axis=0)
    _, _, vt = np.linalg.svd(resid, full_matrices=False)
    basis = vt[: max(1, min(k, vt.shape[0]))]
    _, _, piv = qr(basis, pivoting=True, mode="economic")
    chosen = [int(i) for i in piv[: basis.shape[0]]]
    if len(chosen) < k:  # fewer components than k: fill by largest leftover variance
        var = resid.var(axis=0)
        chosen += [int(j) for j in np.argsort(-var) if j not in chosen][: k - len(chosen)]
    return chosen


def _select_greedy(log_lat, k, groups, rank, n_folds=5, start: Optional[List[int]] = None) -> List[int]:
    folds = _group_folds(len(log_lat), groups, n_folds)
    fold_models = {}
    for f in np.unique(folds):
        fold_models[f] = _LowRank.fit(log_lat[folds != f], rank)
    chosen = list(start or [])
    n_net = log_lat.shape[1]
    while len(chosen) < k:
        best = None
        for j in range(n_net):
            if j in chosen:
                continue
            s = chosen + [j]
            err = 0.0
            for f, lr in fold_models.items():
                te = folds == f
                err += float(np.abs(log_lat[te] - lr.predict_log(s, log_lat[te][:, s])).sum())
            if best is None or err < best[0]:
                best = (err, j)
        chosen.append(best[1])
    return chosen


def _select_auto(log_lat, k, groups, rank, report) -> List[int]:
    """Nested grouped CV: each candidate method selects on the inner-training devices
    only and is scored on the inner-held-out ones; the winner then selects on all.
    (greedy is left out: it is slow and its choice is tuned to the folds it sees.)"""
    pickers = {"pqr": lambda m: _select_pqr(m, k), "mis": lambda m: _select_mis(m, k),
               "sccs": lambda m: _select_sccs(m, k)}
    folds = _group_folds(len(log_lat), groups, 5)
    errs: Dict[str, float] = {name: 0.0 for name in pickers}
    count = 0
    for f in np.unique(folds):
        te = folds == f
        count += int(te.sum())
        for name, pick in pickers.items():
            sig = pick(log_lat[~te])
            lr = _LowRank.fit(log_lat[~te], rank, True)
            res = log_lat[te] - lr.predict_log(sig, log_lat[te][:, sig], True)
            mask = np.ones(log_lat.shape[1], bool)
            mask[sig] = False
            errs[name] += float(np.abs(res[:, mask]).mean(axis=1).sum())
    scores = {name: e / count for name, e in errs.items()}
    best = min(scores, key=lambda m: (scores[m], m))
    if report is not None:
        report.update({"inner_cv_mean_abs_log_error": scores, "chosen": best})
    return pickers[best](log_lat)


def select_signature(latency_ms_train, k: int, method: str = "auto", *, seed: int = 0,
                     groups: Optional[Sequence] = None, networks: Optional[Sequence[str]] = None,
                     rank: int = 5, report: Optional[dict] = None) -> List:
    """Choose ``k`` signature networks from the training devices' latency matrix
    (devices x networks, ms). Returns network names if ``networks`` is given, else column
    indices. ``groups`` (phone model per row) keeps runs of one phone in one inner-CV
    fold. ``report``, if a dict, receives the inner-CV error of each candidate (auto).
    """
    if method not in SELECTION_METHODS:
        raise UsageError(f"unknown signature selection method {method!r}",
                         hint=f"use one of: {', '.join(SELECTION_METHODS)}")
    log_lat = _log_matrix(latency_ms_train)
    n_net = log_lat.shape[1]
    if networks is not None and len(networks) != n_net:
        raise UsageError(f"{len(networks)} network names for a matrix with {n_net} columns")
    if not isinstance(k, (int, np.integer)) or not 1 <= k < n_net:
        raise UsageError(f"k must be between 1 and {n_net - 1} (networks - 1), got {k!r}",
                         hint="the signature is a small subset; the paper uses k = 10")
    if method == "random":
        idx = _select_random(log_lat, k, seed)
    elif method == "mis":
        idx = _select_mis(log_lat, k)
    elif method == "sccs":
        idx = _select_sccs(log_lat, k)
    elif method == "pqr":
        idx = _select_pqr(log_lat, k)
    elif method == "greedy":
        idx = _select_greedy(log_lat, k, groups, rank)
    else:
        idx = _select_auto(log_lat, k, groups, rank, report)
    return [networks[i] for i in idx] if networks is not None else [int(i) for i in idx]


# ---------------------------------------------------------------------------- model

class SignatureLatencyModel:
    """Predict a device's latency on all networks from its signature latencies.

    ``rank``: number of latent device/network factors (``"auto"``: grouped inner CV on
    the training devices over {2, 3, 5, 8}). ``n_neighbors``: how many training devices
    with the closest signature profile contribute their out-of-fold residual (0 turns the
    correction off; ``"auto"``: inner CV over {0, 3, 5, 10}). ``robust``: winsorised SVD
    fit and Huber-weighted signature fit. ``n_folds``: inner CV folds. ``spread_weight``:
    how much less a signature value counts when its repeated runs were unusually spread
    out (0 turns this off; ``"auto"``: inner CV over {0, 0.25, 0.5, 1}); used only when
    ``fit`` gets the runs' spread. ``boost``: ``"auto"`` adds a LightGBM correction of the
    prediction (:mod:`host.modeler.signature_boost`) when inner CV finds it helps; it
    applies to networks known by name, not to :meth:`predict_structure`. ``"off"``: none.
    ``interval``: central coverage of :meth:`predict_interval`.
    """

    def __init__(self, rank: Union[int, str] = "auto", n_neighbors: Union[int, str] = "auto",
                 robust: bool = True, n_folds: int = 5, spread_weight: Union[float, str] = "auto",
                 boost: str = "off", interval: float = _DEFAULT_INTERVAL):
        self.rank = rank
        self.n_neighbors = n_neighbors
        self.robust = robust
        self.n_folds = n_folds
        self.spread_weight = spread_weight
        self.boost = boost
        self.interval = interval

    def fit(self, latency_ms, signature: Sequence, *, networks: Optional[Sequence[str]] = None,
            groups: Optional[Sequence] = None, devices: Optional[Sequence[str]] = None,
            network_features=None, feature_names: Optional[Sequence[str]] = None,
            run_spread=None) -> "SignatureLatencyModel":
        """Fit on training devices' full latency rows (devices x networks, ms).

        ``network_features`` (networks x features, named by ``feature_names``; see
        :mod:`host.modeler.signature_structure`) also lets the model predict networks
        the training devices never measured (:meth:`predict_structure`). ``run_spread``
        (devices x networks, NaN where unknown): relative spread (std / mean) of each
        measurement's repeated runs, as ``benchmark_model`` reports them."""
        if self.boost not in ("auto", "off"):
            raise UsageError(f"boost must be 'auto' or 'off', not {self.boost!r}")
        if not 0 < self.interval < 1:
            raise UsageError(f"interval must be a coverage between 0 and 1, not {self.interval!r}")
        log_lat = _log_matrix(latency_ms)
        n_dev, n_net = log_lat.shape
        if networks is not None and len(networks) != n_net:
            raise UsageError(f"{len(networks)} network names for a matrix with {n_net} columns")
        sig = _as_indices(signature, networks, n_net)
        if not sig:
            raise UsageError("the signature is empty", hint="select one with `opcost signature select`")
        g = np.asarray(groups) if groups is not None else np.arange(n_dev)
        folds = _group_folds(n_dev, g, self.n_folds)

        log_spread = self._training_log_spread(run_spread, log_lat.shape, sig)
        ranks = _RANK_GRID if self.rank == "auto" else (int(self.rank),)
        neighbors = _NEIGHBOR_GRID if self.n_neighbors == "auto" else (int(self.n_neighbors),)
        if log_spread is None:
            betas = (0.0,)
        else:
            betas = _SPREAD_BETA_GRID if self.spread_weight == "auto" else (float(self.spread_weight),)
        scores: Dict[str, float] = {}
        residuals: Dict[Tuple[int, float], np.ndarray] = {}   # out of fold, per (rank, spread weight)
        best = None
        for r in ranks:
            for beta in betas:
                if len(ranks) * len(neighbors) * len(betas) == 1:
                    errs = {neighbors[0]: float("nan")}
                else:
                    residuals[r, beta] = _oof_residuals(log_lat, sig, r, folds, self.robust, log_spread, beta)
                    errs = _cv_errors(residuals[r, beta], log_lat, sig, neighbors, g)
                for nn, err in errs.items():
                    key = f"rank={r},n_neighbors={nn}" + (f",spread_weight={beta:g}" if log_spread is not None else "")
                    scores[key] = err
                    if best is None or err < best[0]:
                        best = (err, r, nn, beta)
        _, r, nn, beta = best
        lr = _LowRank.fit(log_lat, r, self.robust)
        self.rank_ = int(lr.factors.shape[0])
        self.n_neighbors_ = int(nn)
        self.spread_weight_ = float(beta)
        self.spread_center_, self.spread_scale_ = (_spread_reference(log_spread[:, sig]) if beta
                                                   else (None, None))
        self.cv_scores_ = scores
        self.signature_ = list(sig)
        self.networks_ = list(networks) if networks is not None else [str(i) for i in range(n_net)]
        self.devices_ = list(devices) if devices is not None else [str(i) for i in range(n_dev)]
        self.net_offset_ = lr.net_offset
        self.factors_ = lr.factors
        self.coef_mean_ = lr.coef_mean
        self.coef_cov_ = lr.coef_cov
        self.noise_var_ = lr.noise_var
        self.net_var_ = lr.net_var
        self.train_profiles_ = _profile(log_lat[:, sig])
        oof_residuals = residuals.get((r, beta))
        if oof_residuals is None:   # nothing to choose: no inner CV ran
            oof_residuals = _oof_residuals(log_lat, sig, r, folds, self.robust, log_spread, beta)
        prof = _profile(log_lat[:, sig])
        knn_oof = (_knn_correction(prof, oof_residuals, g, prof, nn, exclude_groups=g) if nn > 0
                   else np.zeros_like(oof_residuals))
        final_oof = oof_residuals - knn_oof
        self.boost_, self.boost_net_features_, self.boost_scores_ = None, None, {}
        if self.boost == "auto":
            final_oof = final_oof - self._fit_boost(log_lat, sig, lr, oof_residuals, knn_oof, prof, folds, g,
                                                    network_features)
        final_oof[:, sig] = np.nan
        self.interval_residuals_ = final_oof
        self.interval_net_scale_, self.interval_scaled_residuals_ = _network_scaled_residuals(final_oof, g)
        keep_residuals = nn > 0 or self.boost_ is not None
        self.train_residuals_ = oof_residuals if keep_residuals else np.zeros((0, n_net))
        if not keep_residuals:
            self.train_profiles_ = np.zeros((0, len(sig)))
        rms, err = _signature_check_stats(log_lat, oof_residuals, sig)
        self.check_rms_train_ = rms
        self.check_error_train_ = err
        self.structure_ = self.structure_interval_residuals_ = self.structure_net_log_spread_ = None
        if network_features is not None:
            from host.modeler.signature_structure import StructureLatentMap

            if feature_names is None:
                raise UsageError("network_features need their feature_names")
            device_coefs = lr.coefficients(list(range(n_net)), log_lat)
            latents = np.vstack([lr.net_offset, lr.factors]).T
            self.structure_ = StructureLatentMap().fit(np.exp(log_lat), network_features, feature_names,
                                                       latents, device_coefs)
            self.structure_interval_residuals_ = self._structure_oof_residuals(
                log_lat, sig, lr, oof_residuals, np.asarray(network_features, dtype=float), feature_names,
                latents, device_coefs)
            if self.structure_interval_residuals_ is not None:
                self.structure_net_log_spread_ = _log_spread_ratio(self.structure_interval_residuals_)
        return self

    def _structure_oof_residuals(self, log_lat, sig, lr: _LowRank, oof_residuals, feats, feature_names, latents,
                                 device_coefs) -> Optional[np.ndarray]:
        """The training devices' log errors on networks predicted from structure alone:
        each fold of non-signature networks is left out of the structure map, and its
        coordinates' error, seen through each device's signature coefficients, is added
        to the device's out-of-fold residual. None with too few networks to split."""
        from host.modeler.signature_structure import StructureLatentMap

        others = np.setdiff1d(np.arange(log_lat.shape[1]), sig)
        if len(others) < 2 * _STRUCTURE_INTERVAL_FOLDS:
            return None
        coefs = lr.coefficients(sig, log_lat[:, sig], bool(self.robust))
        out = np.full_like(log_lat, np.nan)
        shuffled = np.random.default_rng(0).permutation(others)
        for held in np.array_split(shuffled, _STRUCTURE_INTERVAL_FOLDS):
            keep = np.setdiff1d(np.arange(log_lat.shape[1]), held)
            m = StructureLatentMap().fit(np.exp(log_lat[:, keep]), feats[keep], feature_names, latents[keep],
                                         device_coefs)
            miss = latents[held] - m.transform(feats[held])                        # (n_held, r+1)
            out[:, held] = oof_residuals[:, held] + miss[:, 0][None, :] + coefs[:, 1:] @ miss[:, 1:].T
        return out

    def _fit_boost(self, log_lat, sig, lr: _LowRank, residuals, chosen, prof, folds, groups,
                   network_features) -> np.ndarray:
        """Inner-CV choice and fit of the boosted correction on the training devices'
        out-of-fold residuals after the neighbour correction ``chosen`` (``prof``: their
        signature profiles), non-signature networks. Returns the correction out of fold
        (devices x networks, 0 where none)."""
        from host.modeler import signature_boost as sb

        near = _knn_correction(prof, residuals, groups, prof, sb.N_NEIGHBORS_FEATURE, exclude_groups=groups)
        net_feats = sb.network_features_log(network_features)
        X = sb.cell_features(lr.net_offset, lr.factors, lr.coefficients(sig, log_lat[:, sig], bool(self.robust)),
                             sig, log_lat[:, sig], log_lat - residuals, near, net_feats)
        mask = np.ones(log_lat.shape[1], bool)
        mask[list(sig)] = False
        shrink, text, scores, oof = sb.choose_and_fit(X[:, mask].reshape(-1, X.shape[2]),
                                                      (residuals - chosen)[:, mask].ravel(),
                                                      np.repeat(folds, int(mask.sum())))
        self.boost_scores_ = scores
        if text is not None:
            self.boost_ = sb.BoostedCorrection(text, shrink, X.shape[2])
            self.boost_net_features_ = net_feats
        correction = np.zeros_like(residuals)
        correction[:, mask] = oof.reshape(len(residuals), -1)
        return correction

    def _boost_correction(self, lr: _LowRank, sig_log: np.ndarray, base_log: np.ndarray) -> np.ndarray:
        from host.modeler import signature_boost as sb

        near = _knn_correction(self.train_profiles_, self.train_residuals_, None, _profile(sig_log),
                               sb.N_NEIGHBORS_FEATURE)
        X = sb.cell_features(lr.net_offset, lr.factors, lr.coefficients(self.signature_, sig_log, bool(self.robust)),
                             self.signature_, sig_log, base_log, near, self.boost_net_features_)
        return self.boost_.predict(X)

    def _training_log_spread(self, run_spread, shape, sig) -> Optional[np.ndarray]:
        """Log run spread (devices x networks), or None when not given, turned off or
        unknown on every signature network."""
        if run_spread is None or self.spread_weight == 0:
            return None
        spread = np.asarray(run_spread, dtype=float)
        if spread.shape != shape:
            raise UsageError(f"run_spread has shape {spread.shape}, the latencies {shape}")
        _check_spread(spread)
        if not np.isfinite(spread[:, sig]).any():
            return None
        return _log_spread(spread)

    def _var_mult(self, signature_spread, n_devices: int) -> Optional[np.ndarray]:
        """Noise variance multipliers of a new device's signature values from their run
        spread (None: no weighting, e.g. spreads not measured or weighting off)."""
        beta = getattr(self, "spread_weight_", 0.0)
        if signature_spread is None or not beta:
            return None
        spread = np.atleast_2d(np.asarray(signature_spread, dtype=float))
        if spread.shape != (n_devices, len(self.signature_)):
            raise UsageError(f"got run spreads of shape {spread.shape} for {n_devices} device(s) with "
                             f"{len(self.signature_)} signature networks")
        _check_spread(spread)
        return _spread_var_mult(beta, self.spread_center_, self.spread_scale_, _log_spread(spread))

    def _lowrank(self) -> _LowRank:
        return _LowRank(self.net_offset_, self.factors_, self.coef_mean_, self.coef_cov_, self.noise_var_,
                        getattr(self, "net_var_", None))

    def _check_fitted(self) -> None:
        if not hasattr(self, "factors_"):
            raise PredictorError("the signature model is not fitted", hint="call fit() or load a predictor file")

    @property
    def signature_networks(self) -> List[str]:
        self._check_fitted()
        return [self.networks_[i] for i in self.signature_]

    def _signature_log(self, signature_latency_ms) -> np.ndarray:
        """Log signature latencies as (n_devices, k); UsageError when the count is wrong
        or a latency is not a finite positive number."""
        s = np.atleast_2d(np.asarray(signature_latency_ms, dtype=float))
        k = len(self.signature_)
        if s.shape[1] != k:
            raise UsageError(f"got {s.shape[1]} signature latencies, the model needs {k} "
                             f"({', '.join(self.signature_networks)})")
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise UsageError("signature latencies must be finite and > 0 ms")
        return np.log(s)

    def predict(self, signature_latency_ms, networks: Optional[Sequence[str]] = None,
                signature_spread=None) -> np.ndarray:
        """Latencies (ms) of ``networks`` (default: all) for each new device, given its
        signature latencies in ``signature_networks`` order: shape (k,) or (n_devices, k).
        ``signature_spread`` (same shape, optional): the relative spread (std / mean) of
        each signature measurement's repeated runs; noisier values then count less."""
        self._check_fitted()
        single = np.ndim(signature_latency_ms) == 1
        sig_log = self._signature_log(signature_latency_ms)
        lr = self._lowrank()
        base = lr.predict_log(self.signature_, sig_log, bool(self.robust),
                              self._var_mult(signature_spread, len(sig_log)))
        pred = base
        if self.n_neighbors_ > 0:
            pred = pred + _knn_correction(self.train_profiles_, self.train_residuals_, None,
                                          _profile(sig_log), self.n_neighbors_)
        if getattr(self, "boost_", None) is not None:
            pred = pred + self._boost_correction(lr, sig_log, base)
        out = np.exp(pred)
        if networks is not None:
            out = out[:, self._network_columns(networks)]
        return out[0] if single else out

    def _network_columns(self, networks: Sequence[str]) -> List[int]:
        cols = []
        for n in networks:
            if n not in self.networks_:
                raise UsageError(f"network {n!r} is not known to this predictor",
                                 hint="the signature model predicts only networks measured on the training devices")
            cols.append(self.networks_.index(n))
        return cols

    def predict_interval(self, signature_latency_ms, networks: Optional[Sequence[str]] = None,
                         signature_spread=None) -> np.ndarray:
        """Lower and upper latency bounds (ms), shape ``predict(...).shape + (2,)``, with
        central coverage ``interval``: the quantiles of the out-of-fold errors (all stages)
        of the training devices whose signature fit residual is closest to the new
        device's (a quarter of them, at least 10), around :meth:`predict`. A phone whose
        signature fits badly gets the wider errors of training phones like it; a network
        whose errors spread more across the training phones gets its factors raised to
        its ``interval_net_scale_`` (errors measured in units of that spread)."""
        single = np.ndim(signature_latency_ms) == 1
        pred = np.atleast_2d(self.predict(signature_latency_ms, networks, signature_spread))
        factors = self.interval_factors(signature_latency_ms, signature_spread)[:, None, :]
        scale = getattr(self, "interval_net_scale_", None)
        if scale is not None:   # absent in files from before per-network intervals
            cols = self._network_columns(networks) if networks is not None else slice(None)
            factors = factors ** np.asarray(scale)[cols][None, :, None]
        out = pred[..., None] * factors
        return out[0] if single else out

    def interval_factors(self, signature_latency_ms, signature_spread=None, structure: bool = False) -> np.ndarray:
        """(n_devices, 2) factors that give each new device's interval bounds when they
        multiply a prediction: the ``interval`` quantiles of the out-of-fold log errors of
        the training devices whose signature fit residual is closest to the new device's.
        With ``interval_net_scale_``, the errors are in units of each network's spread, so
        these are the factors of a network of pooled spread (:meth:`predict_interval`
        raises them to the network's scale). ``structure``: of predictions from structure
        (:meth:`predict_structure`) instead of by name."""
        return self._interval_factors(signature_latency_ms, signature_spread, structure,
                                      self._structure_scales()[0] if structure else None)

    def _structure_scales(self, network_features=None) -> Tuple[Optional[np.ndarray], np.ndarray]:
        """Log interval scales from structure (:func:`_structure_log_scales`): the training
        networks' (None for a file from before them) and those of ``network_features``."""
        log_spread = getattr(self, "structure_net_log_spread_", None)
        if log_spread is None:
            return None, np.zeros(0 if network_features is None else len(np.atleast_2d(network_features)))
        m = self.structure_
        return _structure_log_scales(m.log_features(), log_spread,
                                     None if network_features is None else m.log_features(network_features))

    def _interval_factors(self, signature_latency_ms, signature_spread, structure: bool,
                          structure_train_log_scale: Optional[np.ndarray]) -> np.ndarray:
        self._check_fitted()
        if structure:
            residuals = getattr(self, "structure_interval_residuals_", None)
            if residuals is not None and structure_train_log_scale is not None:
                residuals = residuals / np.exp(structure_train_log_scale)
        else:
            residuals = getattr(self, "interval_residuals_", None)
            scaled = getattr(self, "interval_scaled_residuals_", None)
            if residuals is not None and scaled is not None:
                residuals = scaled
        if residuals is None:
            what = "networks predicted from their structure" if structure else "its predictions"
            few = 2 * _STRUCTURE_INTERVAL_FOLDS
            why = (f"saved before intervals, or fitted on fewer than {few} non-signature networks" if structure
                   else "saved before intervals")
            hint = ("create the predictor again with `opcost adapt`"
                    + (f" from training devices that measured at least {few} networks besides the signature"
                       if structure else "") + " to get intervals")
            raise PredictorError(f"this signature model has no interval data for {what} ({why})", hint=hint)
        rms, _ = self._signature_fit(self._signature_log(signature_latency_ms), signature_spread)
        train = np.log(np.maximum(self.check_rms_train_, 1e-12))
        n_near = min(len(train), max(_INTERVAL_MIN_DEVICES, int(np.ceil(len(train) / 4))))
        tail = (1 - self.interval) / 2
        out = np.empty((len(rms), 2))
        for i, r in enumerate(rms):
            near = np.argsort(np.abs(train - np.log(max(r, 1e-12))), kind="stable")[:n_near]
            res = residuals[near]
            out[i] = np.exp(np.quantile(res[np.isfinite(res)], [tail, 1 - tail]))
        return out

    def _signature_fit(self, sig_log: np.ndarray, signature_spread=None) -> Tuple[np.ndarray, np.ndarray]:
        """Per new device: (RMS of its signature fit's log residuals, the residuals)."""
        pred = self._lowrank().predict_log(self.signature_, sig_log, bool(self.robust),
                                           self._var_mult(signature_spread, len(sig_log)))
        return _signature_rms(self.signature_, sig_log, pred)

    def predict_structure(self, signature_latency_ms, network_features, signature_spread=None) -> np.ndarray:
        """Latencies (ms), shape (n_devices, n_networks), of networks given by their
        structure (features in ``structure_.feature_names_`` order) rather than by name,
        for devices with these signature latencies (and optionally run spreads, as in
        :meth:`predict`). PredictorError if the model was fitted without network features."""
        self._check_fitted()
        if getattr(self, "structure_", None) is None:
            raise PredictorError("this signature model was made without the training networks' structure, so it "
                                 "predicts only networks measured on its training devices",
                                 hint="create the predictor again with `opcost adapt` from the ganesan2020 "
                                      "dataset or a store whose networks' .tflite files are readable")
        sig_log = self._signature_log(signature_latency_ms)
        coords = self.structure_.transform(network_features)             # (n_net, r+1)
        w = self._lowrank().coefficients(self.signature_, sig_log, bool(self.robust),
                                         self._var_mult(signature_spread, len(sig_log)))
        return np.exp(coords[:, 0][None, :] + w[:, :1] + w[:, 1:] @ coords[:, 1:].T)

    def predict_structure_interval(self, signature_latency_ms, network_features, signature_spread=None) -> np.ndarray:
        """Bounds (ms), shape (n_devices, n_networks, 2), around :meth:`predict_structure`
        with central coverage ``interval``: as :meth:`predict_interval`, from the training
        devices' errors on networks left out of the structure map (5 folds) at fit time. A
        network's factors are raised to its scale: the error spread of the training
        networks most like it in structure, more the further it is from them."""
        pred = self.predict_structure(signature_latency_ms, network_features, signature_spread)
        train_scale, log_scale = self._structure_scales(network_features)
        factors = self._interval_factors(signature_latency_ms, signature_spread, True, train_scale)
        factors = np.broadcast_to(factors[:, None, :], pred.shape + (2,))
        if train_scale is not None:   # absent in files from before per-network intervals
            factors = factors ** np.exp(log_scale)[None, :, None]
        return pred[..., None] * factors

    def check_signature(self, signature_latency_ms, signature_spread=None) -> List[dict]:
        """How well each new device's signature latencies fit the model, one dict per
        device: ``residual_rms`` (log ratio), ``limit`` (twice the median training phone's,
        out of fold; log ratio), both also in percent (``residual_rms_pct``,
        ``limit_pct``), ``consistent``, ``typical_error_pct`` (median error of training
        phones on the same side of the limit, out of fold) and ``residual_pct`` per
        signature network (measured vs. expected from the others). A flagged signature
        usually means the phone changed state while it was measured (throttling, a core
        migration, a background task), and its predictions are much less reliable."""
        self._check_fitted()
        if getattr(self, "check_rms_train_", None) is None:
            raise PredictorError("this signature model was saved without its consistency data",
                                 hint="create the predictor again with `opcost adapt` to get the check")
        sig_log = self._signature_log(signature_latency_ms)
        rms, res = self._signature_fit(sig_log, signature_spread)
        limit = float(_CHECK_TIMES_MEDIAN * np.median(self.check_rms_train_))
        ok_train = self.check_rms_train_ <= limit
        out = []
        for i in range(len(sig_log)):
            ok = bool(rms[i] <= limit)
            same = self.check_error_train_[ok_train == ok]
            out.append({
                "residual_rms": float(rms[i]), "limit": limit, "consistent": ok,
                "residual_rms_pct": float(np.expm1(rms[i]) * 100), "limit_pct": float(np.expm1(limit) * 100),
                "typical_error_pct": float(np.median(same) * 100) if len(same) else float("nan"),
                "residual_pct": {n: float(np.expm1(r) * 100) for n, r in zip(self.signature_networks, res[i])},
            })
        return out

    # -- state for predictor files: JSON-able scalars + plain float arrays, no pickle
    _ARRAYS = ("net_offset_", "factors_", "coef_mean_", "coef_cov_", "train_profiles_", "train_residuals_")
    # absent in files from before per-network noise, the check, ..., intervals and per-network intervals
    _OPTIONAL_ARRAYS = ("net_var_", "check_rms_train_", "check_error_train_", "spread_center_", "spread_scale_",
                        "boost_net_features_", "interval_residuals_", "structure_interval_residuals_",
                        "interval_net_scale_", "interval_scaled_residuals_", "structure_net_log_spread_")
    _STATE = ("rank_", "n_neighbors_", "noise_var_", "signature_", "networks_", "devices_", "cv_scores_")

    def to_state(self) -> Tuple[dict, Dict[str, np.ndarray]]:
        """``(meta, arrays)``: the fitted model as JSON-able values and float arrays."""
        self._check_fitted()
        meta = {
            "params": {"rank": self.rank, "n_neighbors": self.n_neighbors, "robust": self.robust,
                       "n_folds": self.n_folds, "spread_weight": self.spread_weight, "boost": self.boost,
                       # left out at the default, so that earlier opcost versions still read the file
                       **({} if self.interval == _DEFAULT_INTERVAL else {"interval": self.interval})},
            "rank_": self.rank_, "n_neighbors_": self.n_neighbors_, "noise_var_": float(self.noise_var_),
            "spread_weight_": float(getattr(self, "spread_weight_", 0.0)),
            "signature_": [int(i) for i in self.signature_], "networks_": list(self.networks_),
            "devices_": list(self.devices_),
            "cv_scores_": {key: (None if v != v else v) for key, v in self.cv_scores_.items()},  # NaN -> null
        }
        arrays = {name: np.asarray(getattr(self, name), dtype=float) for name in self._ARRAYS}
        arrays.update({name: np.asarray(getattr(self, name), dtype=float) for name in self._OPTIONAL_ARRAYS
                       if getattr(self, name, None) is not None})
        if getattr(self, "boost_", None) is not None:
            b_meta, b_arrays = self.boost_.to_state()
            meta["boost_"] = b_meta
            arrays.update({_BOOST_PREFIX + k: v for k, v in b_arrays.items()})
        if getattr(self, "structure_", None) is not None:
            s_meta, s_arrays = self.structure_.to_state()
            meta["structure"] = s_meta
            arrays.update({_STRUCTURE_PREFIX + k: v for k, v in s_arrays.items()})
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict, arrays: Dict[str, np.ndarray]) -> "SignatureLatencyModel":
        try:
            m = cls(**meta["params"])
            for key in cls._STATE:
                setattr(m, key, meta[key])
            for name in cls._ARRAYS:
                setattr(m, name, np.asarray(arrays[name], dtype=float))
            for name in cls._OPTIONAL_ARRAYS:
                setattr(m, name, np.asarray(arrays[name], dtype=float) if name in arrays else None)
        except (KeyError, TypeError) as err:
            raise PredictorError(f"predictor file is missing model field {err}",
                                 hint="the file is damaged; create it again with `opcost adapt`") from None
        m.cv_scores_ = {key: (float("nan") if v is None else v) for key, v in m.cv_scores_.items()}
        m.spread_weight_ = float(meta.get("spread_weight_", 0.0))   # absent before spread weighting
        if m.spread_weight_ and (m.spread_center_ is None or m.spread_scale_ is None):
            raise PredictorError("predictor file is missing the signature run-spread reference",
                                 hint="the file is damaged; create it again with `opcost adapt`")
        m.boost_ = None
        if meta.get("boost_") is not None:   # absent in files from before the boosted correction
            from host.modeler.signature_boost import BoostedCorrection

            m.boost_ = BoostedCorrection.from_state(meta["boost_"], {k[len(_BOOST_PREFIX):]: v for k, v in arrays.items()
                                                                     if k.startswith(_BOOST_PREFIX)})
        m.structure_ = None
        if meta.get("structure") is not None:   # absent in files from before structure prediction
            from host.modeler.signature_structure import StructureLatentMap

            m.structure_ = StructureLatentMap.from_state(
                meta["structure"], {k[len(_STRUCTURE_PREFIX):]: v for k, v in arrays.items()
                                    if k.startswith(_STRUCTURE_PREFIX)})
        return m


def opcost_version() -> str:
    import opcost

    return opcost.__version__


PHONE_PREDICTOR_KIND = "signature-phone"
# meta keys written by predictor_file itself, never taken from ``info``
_HEADER_KEYS = ("format", "format_version", "created_at", "versions", "estimator_class", "estimator_params",
                "training_tables", "loaded_by")


class PhonePredictor:
    """A cross-device model adapted to one phone by its measured signature latencies.

    ``info`` describes how it was made (method, training devices, data summary, the new
    device's serial, delegate, threads...); it is written to the predictor file's meta.
    ``signature_spread``: relative spread (std / mean) of each signature measurement's
    repeated runs, when known (NaN for an unknown one).
    """

    def __init__(self, model: SignatureLatencyModel, signature_latency_ms, info: Optional[dict] = None,
                 signature_spread=None):
        self.model = model
        self.signature_latency_ms = np.asarray(signature_latency_ms, dtype=float)
        self.info = dict(info or {})
        self.signature_spread = None if signature_spread is None else np.asarray(signature_spread, dtype=float)

    @property
    def networks(self) -> List[str]:
        return list(self.model.networks_)

    @property
    def signature_networks(self) -> List[str]:
        return self.model.signature_networks

    def predict(self, networks: Optional[Sequence[str]] = None) -> np.ndarray:
        """Predicted latency (ms) of ``networks`` (default: all known networks); the
        signature networks get their measured values."""
        pred = self.model.predict(self.signature_latency_ms, signature_spread=self.signature_spread)
        for i, ms in zip(self.model.signature_, self.signature_latency_ms):
            pred[i] = ms
        return pred if networks is None else pred[self._columns(networks)]

    def _columns(self, networks: Sequence[str]) -> List[int]:
        names = self.model.networks_
        missing = [n for n in networks if n not in names]
        if missing:
            raise UsageError(f"network(s) not known to this predictor: {short_list(missing)}",
                             hint="it predicts only the networks measured on its training devices; "
                                  "`opcost signature predict --predictor FILE` lists them all")
        return [names.index(n) for n in networks]

    @property
    def has_interval(self) -> bool:
        """Whether :meth:`predict_interval` works (files from before intervals lack their data)."""
        return getattr(self.model, "interval_residuals_", None) is not None

    def predict_interval(self, networks: Optional[Sequence[str]] = None) -> np.ndarray:
        """``(n, 2)`` lower/upper bounds (ms) of :meth:`predict`'s networks, with central
        coverage ``model.interval``; a signature network's bounds are its measured value."""
        iv = self.model.predict_interval(self.signature_latency_ms, signature_spread=self.signature_spread)
        for i, ms in zip(self.model.signature_, self.signature_latency_ms):
            iv[i] = ms
        return iv if networks is None else iv[self._columns(networks)]

    def predict_structure(self, network_features) -> np.ndarray:
        """Predicted latency (ms) of networks given by their structure (rows of features
        in ``model.structure_.feature_names_`` order), not measured on any training device."""
        return self.model.predict_structure(self.signature_latency_ms, network_features,
                                            signature_spread=self.signature_spread)[0]

    def predict_structure_interval(self, network_features) -> Optional[np.ndarray]:
        """``(n, 2)`` bounds (ms) around :meth:`predict_structure`; None for a predictor
        file from before these intervals."""
        if getattr(self.model, "structure_interval_residuals_", None) is None:
            return None
        return self.model.predict_structure_interval(self.signature_latency_ms, network_features,
                                                     signature_spread=self.signature_spread)[0]

    @property
    def knows_structure(self) -> bool:
        """Whether :meth:`predict_structure` works (the model kept its networks' structure)."""
        return getattr(self.model, "structure_", None) is not None

    def check(self) -> Optional[dict]:
        """The signature consistency check (see ``SignatureLatencyModel.check_signature``);
        None for a predictor saved before the check existed."""
        if getattr(self.model, "check_rms_train_", None) is None:
            return None
        return self.model.check_signature(self.signature_latency_ms, signature_spread=self.signature_spread)[0]

    # -- predictor files (host/modeler/predictor_file.py), stored without pickle
    def meta(self) -> dict:
        """The predictor file's meta: kind, method, k, training devices, data summary, ..."""
        model_state, _ = self.model.to_state()
        info = {k: v for k, v in self.info.items() if k not in _HEADER_KEYS}
        return {
            **info,
            "kind": PHONE_PREDICTOR_KIND,
            "method": info.get("method"),
            "k": len(self.model.signature_),
            "signature_networks": self.signature_networks,
            "signature_latency_ms": {n: float(v) for n, v in zip(self.signature_networks, self.signature_latency_ms)},
            "signature_run_spread_pct": (None if self.signature_spread is None else
                                         {n: (None if not np.isfinite(v) else round(float(v) * 100, 3))
                                          for n, v in zip(self.signature_networks, self.signature_spread)}),
            "training_devices": list(self.model.devices_),
            "signature_check": self.check(),
            "data": info.get("data", {"n_device_runs": len(self.model.devices_),
                                      "n_networks": len(self.model.networks_)}),
            "info": info,
            "model": model_state,
        }

    def save(self, path: str) -> str:
        """Write a predictor file (``opcost-predictor`` format, kind ``signature-phone``)."""
        from host.modeler.predictor_file import save_predictor

        _, arrays = self.model.to_state()
        arrays["signature_latency_ms"] = self.signature_latency_ms
        if self.signature_spread is not None:
            arrays["signature_spread"] = self.signature_spread
        try:
            # readers of format 1 would ignore the spread weighting and the boosted correction;
            # those of format 2 do not know a non-default interval coverage
            version = 2 if (getattr(self.model, "boost_", None) is not None
                            or getattr(self.model, "spread_weight_", 0.0)) else 1
            meta = self.meta()
            if "interval" in meta["model"]["params"]:
                version = 3
            return str(save_predictor(path, self, meta=meta, arrays=arrays, pickle_estimator=False,
                                      format_version=version))
        except OSError as err:
            raise PredictorError(f"cannot write predictor file {path}: {err.strerror or err}",
                                 hint="check that the folder is writable") from None

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray], meta: dict) -> "PhonePredictor":
        """Rebuild from a predictor file's arrays and meta (called by ``load_predictor``)."""
        _check_kind(meta, "the predictor file")
        if "model" not in meta or "signature_latency_ms" not in arrays:
            raise PredictorError("the signature-phone predictor file lacks its model",
                                 hint="the file is damaged; create it again with `opcost adapt`")
        model = SignatureLatencyModel.from_state(meta["model"], arrays)
        return cls(model, arrays["signature_latency_ms"], meta.get("info") or {},
                   signature_spread=arrays.get("signature_spread"))

    @classmethod
    def load(cls, path: str) -> "PhonePredictor":
        """Read a file written by :meth:`save`; PredictorError if it is of another kind."""
        from host.modeler.predictor_file import load_predictor, read_meta

        _check_kind(read_meta(path), str(path))
        est, _ = load_predictor(path)
        if not isinstance(est, cls):
            raise PredictorError(f"{path} does not hold a signature-phone predictor",
                                 hint="create one with `opcost adapt`")
        return est


def describe_check(check: Optional[dict], n_worst: int = 3) -> Tuple[str, Optional[str]]:
    """(one-line summary, warning text or None) of a signature check from
    ``PhonePredictor.check()``."""
    if check is None:
        return "signature check: not available (predictor made by an older opcost)", None
    rms_pct = math.expm1(check["residual_rms"]) * 100
    limit_pct = math.expm1(check["limit"]) * 100
    typical = check["typical_error_pct"]
    if check["consistent"]:
        return (f"signature check: consistent (fit residual {rms_pct:.1f}%, limit {limit_pct:.1f}%; "
                f"training phones like this were predicted to a median {typical:.1f}%)"), None
    worst = sorted(check["residual_pct"].items(), key=lambda kv: -abs(kv[1]))[:n_worst]
    shown = ", ".join(f"{n} {v:+.0f}%" for n, v in worst)
    summary = f"signature check: FLAGGED (fit residual {rms_pct:.1f}%, limit {limit_pct:.1f}%)"
    warning = (f"the signature latencies do not fit the model well (residual {rms_pct:.1f}% against a "
               f"limit of {limit_pct:.1f}%); furthest from what the others imply: {shown}. The phone "
               f"probably changed state while it was measured (throttling, a core migration, background "
               f"work); training phones flagged like this were predicted to a median {typical:.1f}% only. "
               "Re-measure the signature networks with the phone cool and idle, "
               "then run `opcost adapt` again.")
    return summary, warning


def _check_kind(meta: dict, source: str) -> None:
    kind = meta.get("kind")
    if kind != PHONE_PREDICTOR_KIND:
        raise PredictorError(
            f"{source} is a {kind or 'different'} predictor, not a {PHONE_PREDICTOR_KIND} predictor",
            hint="signature-phone predictors are made by `opcost adapt`; a network-latency predictor "
                 "(`opcost fit`) is used with `opcost predict MODEL.tflite --predictor FILE`")


class SignatureGBMModel:
    """The paper's kind of model: one gradient-boosted regressor over (network structure,
    device signature latencies) -> log latency, trained on all training devices x
    networks. Unlike the low-rank model it can score networks never measured, given
    their structural features."""

    def __init__(self, n_estimators: int = 400, learning_rate: float = 0.05, num_leaves: int = 31,
                 random_state: int = 0, n_jobs: int = 1):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.random_state = random_state
        self.n_jobs = n_jobs

    @staticmethod
    def _rows(net_feats: np.ndarray, sig_log: np.ndarray) -> np.ndarray:
        n = len(net_feats)
        blocks = []
        for s in np.atleast_2d(sig_log):
            dev = np.tile(np.concatenate([s - s.mean(), [s.mean()]]), (n, 1))
            blocks.append(np.hstack([net_feats, dev]))
        return np.vstack(blocks)

    def fit(self, latency_ms, signature: Sequence[int], network_features) -> "SignatureGBMModel":
        import lightgbm as lgb

        log_lat = _log_matrix(latency_ms)
        feats = np.log1p(np.maximum(np.asarray(network_features, dtype=float), 0.0))
        if feats.shape[0] != log_lat.shape[1]:
            raise UsageError(f"{feats.shape[0]} feature rows for {log_lat.shape[1]} networks")
        sig = _as_indices(signature, None, log_lat.shape[1])
        x = self._rows(feats, log_lat[:, sig])
        self.signature_ = sig
        self.regressor_ = lgb.LGBMRegressor(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate, num_leaves=self.num_leaves,
            subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=self.random_state,
            n_jobs=self.n_jobs, verbose=-1).fit(x, log_lat.ravel())
        return self

    def predict(self, signature_latency_ms, network_features) -> np.ndarray:
        """Latencies (ms), shape (n_devices, n_networks), of the networks described by
        ``network_features`` on devices with these signature latencies."""
        if not hasattr(self, "regressor_"):
            raise PredictorError("the GBM signature model is not fitted", hint="call fit() first")
        s = np.atleast_2d(np.asarray(signature_latency_ms, dtype=float))
        feats = np.log1p(np.maximum(np.asarray(network_features, dtype=float), 0.0))
        pred = self.regressor_.predict(self._rows(feats, np.log(s)))
        return np.exp(pred).reshape(len(s), len(feats))


# ------------------------------------------------------------ signature / latency files

SIGNATURE_FORMAT = "opcost-signature"


def signature_document(networks: Sequence[str], method: str, training_devices: Sequence[str],
                       dataset: dict, chosen_method: Optional[str] = None) -> dict:
    """The JSON written by `opcost signature select`."""
    return {"format": SIGNATURE_FORMAT, "format_version": 1, "opcost_version": opcost_version(),
            "method": method, "chosen_method": chosen_method or method, "k": len(networks),
            "networks": list(networks), "training_devices": list(training_devices), "dataset": dataset}


def parse_signature_document(text: str, source: str = "<signature>") -> dict:
    """Validate a signature JSON document; UsageError says what is wrong."""
    hint = "create it with `opcost signature select --out sig.json`"
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise UsageError(f"{source} is not JSON ({err})", hint=hint) from None
    if not isinstance(doc, dict) or doc.get("format") != SIGNATURE_FORMAT:
        raise UsageError(f"{source} is not an opcost signature file", hint=hint)
    nets = doc.get("networks")
    if not isinstance(nets, list) or not nets or not all(isinstance(n, str) for n in nets):
        raise UsageError(f"{source} has no list of signature networks", hint=hint)
    if not isinstance(doc.get("training_devices"), list) or not doc["training_devices"]:
        raise UsageError(f"{source} lists no training devices", hint=hint)
    return doc


def parse_latency_csv(text: str, signature_networks: Sequence[str], source: str = "<latencies>") -> np.ndarray:
    """A phone's measured signature latencies from CSV lines ``network,latency_ms``
    (optional header; other networks are ignored) -> array in signature order (ms)."""
    hint = "write one line per signature network: <network>,<latency_ms> (e.g. rand057,12.3)"
    seen: Dict[str, float] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        cells = [c.strip() for c in line.split(",")]
        if not line.strip() or cells[0].startswith("#"):
            continue
        if len(cells) < 2:
            raise UsageError(f"{source}: line {lineno} has no latency: {line.strip()[:60]!r}", hint=hint)
        try:
            value = float(cells[1])
        except ValueError:
            # a header line never names a signature network
            if cells[0] not in signature_networks and (lineno == 1 or not seen):
                continue
            raise UsageError(f"{source}: line {lineno}: the latency of {cells[0]}, {cells[1]!r}, is not a number",
                             hint=hint) from None
        if not np.isfinite(value) or value <= 0:
            raise UsageError(f"{source}: line {lineno}: latency of {cells[0]} must be > 0 ms, got {cells[1]}",
                             hint=hint)
        if cells[0] in seen:
            raise UsageError(f"{source}: network {cells[0]} is listed twice (again on line {lineno})", hint=hint)
        seen[cells[0]] = value
    if not seen:
        raise UsageError(f"{source} holds no latencies" + ("" if text.strip() else " (the file is empty)"),
                         hint=hint + "; `opcost dataset latencies ganesan2020 DEVICE` prints such a file")
    missing = [n for n in signature_networks if n not in seen]
    if missing:
        raise UsageError(f"{source}: no latency for signature network(s) {', '.join(missing)}",
                         hint="measure every network of the signature on the new phone; " + hint)
    return np.array([seen[n] for n in signature_networks], dtype=float)


# ------------------------------------------------------------------ training data

STORE_STATISTIC = "median_ms (mean_ms where a run has no median); median over repeated runs"


@dataclass
class LatencyMatrix:
    """Training devices' latencies: ``latency_ms[i, j]`` of device ``devices[i]`` (phone
    model ``phone_models[i]``) on network ``networks[j]``. ``left_out``: devices that were
    not used, with the networks they miss."""

    latency_ms: np.ndarray
    devices: List[str]
    phone_models: List[str]
    networks: List[str]
    source: Dict[str, object] = field(default_factory=dict)
    left_out: Dict[str, List[str]] = field(default_factory=dict)
    # structure of each network (networks x features, named by feature_names), when known:
    # lets the signature model predict networks no training device measured
    network_features: Optional[np.ndarray] = None
    feature_names: Optional[List[str]] = None
    # relative spread (std / mean) of each measurement's repeated runs, NaN where unknown
    run_spread: Optional[np.ndarray] = None

    @classmethod
    def from_dataset(cls, data) -> "LatencyMatrix":
        """From a loaded public dataset (e.g. ``data_ganesan2020.load``)."""
        return cls(np.asarray(data.latency_ms, dtype=float), list(data.devices), list(data.phone_models),
                   list(data.networks), dict(data.summary(), data_dir=data.source_dir),
                   network_features=np.asarray(data.network_features, dtype=float),
                   feature_names=list(data.feature_names), run_spread=getattr(data, "run_spread", None))

    def summary(self) -> Dict[str, object]:
        return {
            **self.source,
            "n_device_runs": len(self.devices),
            "n_phone_models": len(set(self.phone_models)),
            "n_networks": len(self.networks),
            "latency_ms_range": [float(self.latency_ms.min()), float(self.latency_ms.max())],
        }

    def restrict(self, devices: Sequence[str], exclude: Sequence[str] = ()) -> "LatencyMatrix":
        """Only the rows of ``devices`` (order kept), without those matching the shell
        patterns in ``exclude``."""
        wanted = set(devices)
        rows = [i for i, d in enumerate(self.devices) if d in wanted and not _matches(d, exclude)]
        return LatencyMatrix(self.latency_ms[rows], [self.devices[i] for i in rows],
                             [self.phone_models[i] for i in rows], list(self.networks), dict(self.source),
                             dict(self.left_out), self.network_features, self.feature_names,
                             None if self.run_spread is None else self.run_spread[rows])


def _pattern_matches(serial: str, pattern: str) -> bool:
    """Shell-pattern match of a device name; a pattern without a dataset prefix also
    matches a store's prefixed name (``Pixel_4_*`` matches ``ganesan2020/Pixel_4_0``).
    A dataset's own names have no prefix: strip it from patterns first
    (:func:`strip_dataset_prefix`)."""
    if fnmatch.fnmatchcase(serial, pattern):
        return True
    s_prefix, _, s_name = serial.rpartition("/")
    return bool(s_prefix) and "/" not in pattern and fnmatch.fnmatchcase(s_name, pattern)


def strip_dataset_prefix(patterns: Sequence[str], dataset: str) -> List[str]:
    """Patterns for a dataset's own device names: ``ganesan2020/Pixel_4_*`` -> ``Pixel_4_*``
    (patterns with another prefix are kept, so they match nothing and are reported)."""
    return [p[len(dataset) + 1:] if p.startswith(dataset + "/") else p for p in patterns]


def _matches(serial: str, patterns: Sequence[str]) -> bool:
    return any(_pattern_matches(serial, p) for p in patterns)


def check_exclude_patterns(devices: Sequence[str], patterns: Sequence[str]) -> None:
    """UsageError naming any pattern that matches none of ``devices`` (a device meant to
    be held out would otherwise stay in training unnoticed)."""
    unmatched = [p for p in patterns if not any(_pattern_matches(d, p) for d in devices)]
    if unmatched:
        raise UsageError(f"--exclude-device {', '.join(repr(p) for p in unmatched)} matches none of the "
                         f"{len(devices)} devices", hint=f"device names look like: {short_list(sorted(devices), 5)}")


def _latency_frame(store, **filters):
    """The store's runs with one ``latency_ms`` column (median_ms, else mean_ms) and
    ``run_spread`` (std_ms / mean_ms, NaN when the run has no std)."""
    import pandas as pd

    df = store.runs_df(**filters)
    if df.empty:
        return df.assign(latency_ms=pd.Series(dtype=float), run_spread=pd.Series(dtype=float))
    med = pd.to_numeric(df["median_ms"], errors="coerce")
    mean = pd.to_numeric(df["mean_ms"], errors="coerce")
    std = pd.to_numeric(df["std_ms"], errors="coerce")
    value = med.where(med > 0).fillna(mean.where(mean > 0))
    spread = (std / mean.where(mean > 0)).where(std >= 0)
    return df.assign(latency_ms=value, run_spread=spread).dropna(subset=["latency_ms", "model_name"])


def store_latency_matrix(store, *, delegate: str = "cpu", threads: int = 1,
                         devices: Optional[Sequence[str]] = None, exclude: Sequence[str] = (),
                         networks: Optional[Sequence[str]] = None,
                         min_device_fraction: float = 0.5) -> LatencyMatrix:
    """The device x network latency matrix of the store's runs with ``delegate``/``threads``.

    Networks are identified by model name. The candidate networks are ``networks`` if
    given, else those measured on at least ``min_device_fraction`` of the devices (so one
    phone with an extra model does not shrink the matrix). Devices that miss any candidate
    network are left out (logged, and listed in ``left_out``). ``devices`` limits the
    devices read; ``exclude`` drops serials matching these shell patterns (e.g. a new
    phone, or ``ganesan2020/Pixel_4_*``; UsageError if one matches no device). Several runs of one (device, network): median.
    """
    df = _latency_frame(store, delegate=delegate, threads=int(threads),
                        device=list(devices) if devices is not None else None)
    where = f"delegate {delegate}, threads {threads}"
    if exclude and len(df):
        check_exclude_patterns(sorted(set(df["device_serial"])), exclude)
        df = df[~df["device_serial"].map(lambda s: _matches(s, exclude))]
    if df.empty:
        raise PredictorError(
            f"the store {store.path} has no runs with {where}"
            + (f" outside the excluded devices ({', '.join(exclude)})" if exclude else "")
            + (f" for the {len(devices)} requested device(s)" if devices is not None else ""),
            hint="import phone data (`opcost dataset import ganesan2020 --store FILE`) or measure phones with "
                 f"`opcost profile ... --delegate {delegate} --threads {threads} --store FILE`")
    table = df.groupby(["device_serial", "model_name"])["latency_ms"].median().unstack("model_name")
    if devices is not None:
        table = table.reindex([d for d in devices if not _matches(d, exclude)])
    if networks is None:
        counts = table.notna().sum(axis=0)
        need = max(1, math.ceil(min_device_fraction * len(table)))
        cand = sorted(str(n) for n in counts.index[counts >= need])
        rare = int((counts < need).sum())
        if rare:
            log.info("ignoring %d network(s) measured on fewer than %d of the %d devices", rare, need, len(table))
    else:
        cand = list(networks)
        unknown = [n for n in cand if n not in table.columns]
        if unknown:
            raise PredictorError(f"network(s) with no runs ({where}) in the store {store.path}: "
                                 f"{short_list(unknown)}",
                                 hint="use the store the signature was selected on")
    sub = table.reindex(columns=cand)
    complete = sub.notna().all(axis=1)
    left_out = {str(d): [n for n in cand if not np.isfinite(sub.at[d, n])] for d in sub.index[~complete]}
    if left_out:
        log.warning("left out %d device(s) that have not measured all %d networks (%s): %s",
                    len(left_out), len(cand), where,
                    short_list([f"{d} (missing {len(m)})" for d, m in left_out.items()]))
    keep = sub[complete]
    if len(keep) < 3 or len(cand) < 2:
        raise PredictorError(
            f"only {len(keep)} device(s) of the store {store.path} have measured all {len(cand)} networks "
            f"({where}); need at least 3 devices and 2 networks",
            hint="measure the same networks on more phones, import a dataset, or pick the --delegate/--threads "
                 "the store has runs for")
    first = df.drop_duplicates("device_serial").set_index("device_serial")["device_model"]
    serials = [str(d) for d in keep.index]
    models = [m if isinstance(m, str) and m else d for d, m in ((d, first.get(d)) for d in serials)]
    source = {"dataset": "store", "store": os.path.abspath(str(store.path)), "delegate": delegate,
              "threads": int(threads),
              "statistic": STORE_STATISTIC, "networks": cand, "excluded": list(exclude),
              "left_out_devices": sorted(left_out)}
    spread = (df.groupby(["device_serial", "model_name"])["run_spread"].median().unstack("model_name")
              .reindex(index=keep.index, columns=cand).to_numpy(dtype=float))
    return LatencyMatrix(keep.to_numpy(dtype=float), serials, models, cand, source, left_out,
                         run_spread=spread if np.isfinite(spread).any() else None)


def store_device_latency_ms(store, serial: str, networks: Sequence[str], *, delegate: str = "cpu",
                            threads: int = 1, with_spread: bool = False):
    """Latencies (ms) of ``networks`` measured on device ``serial`` (matched by model
    name; median over repeated runs). PredictorError lists the networks not measured yet.
    ``with_spread``: return (latencies, run spreads), spreads NaN where unknown."""
    df = _latency_frame(store, device=serial)
    if df.empty:
        known = [d.serial for d in store.devices()]
        raise PredictorError(f"device {serial!r} has no runs in the store {store.path}", serial=serial,
                             hint=f"measure it with `opcost profile ... --device {serial} --store {store.path}`"
                                  + (f"; devices in the store: {short_list(known, 8)}" if known else ""))
    df = df[(df["delegate"] == delegate) & (df["threads"] == int(threads))]
    have = df.groupby("model_name")["latency_ms"].median()
    missing = [n for n in networks if n not in have.index]
    if missing:
        files = " ".join(f"{n}.tflite" for n in missing)
        raise PredictorError(
            f"device {serial} has not measured {len(missing)} of the {len(networks)} signature networks "
            f"(delegate {delegate}, threads {threads}): {', '.join(missing)}",
            serial=serial,
            hint=f"measure them on the phone: `opcost profile {files} --device {serial} --binary BENCHMARK_MODEL "
                 f"--delegate {delegate} --threads {threads} --store {store.path}` (runs are matched by model "
                 "name, the .tflite file stem), or pass their latencies with --latencies CSV")
    lat = np.array([float(have[n]) for n in networks], dtype=float)
    if not with_spread:
        return lat
    spread = df.groupby("model_name")["run_spread"].median()
    return lat, np.array([float(spread.get(n, np.nan)) for n in networks], dtype=float)


def adapt_phone(train: LatencyMatrix, signature_networks: Sequence[str], signature_latency_ms,
                info: Optional[dict] = None, signature_spread=None, **model_params) -> PhonePredictor:
    """Fit the cross-device model on ``train`` and adapt it to a phone with these
    signature latencies (ms, in ``signature_networks`` order) and, when known, their runs'
    relative spread (std / mean); noisier signature values then count less. The boosted
    correction is on unless ``boost="off"`` is passed."""
    unknown = [n for n in signature_networks if n not in train.networks]
    if unknown:
        raise PredictorError(f"signature network(s) not in the training data: {', '.join(unknown)}",
                             hint="train on the data the signature was selected on")
    model_params.setdefault("boost", "auto")
    has_spread = signature_spread is not None and bool(np.isfinite(np.asarray(signature_spread, float)).any())
    if not has_spread:
        # the phone's values cannot be weighted, so rank and neighbours are chosen without weighting
        log.info("the signature latencies come without their runs' spread: all signature values count the same")
    model = SignatureLatencyModel(**model_params).fit(train.latency_ms, list(signature_networks),
                                                      networks=train.networks, groups=train.phone_models,
                                                      devices=train.devices,
                                                      network_features=train.network_features,
                                                      feature_names=train.feature_names,
                                                      run_spread=train.run_spread if has_spread else None)
    meta = {**(info or {}), "training_devices": model.devices_, "data": train.summary(), "rank": model.rank_,
            "n_neighbors": model.n_neighbors_, "spread_weight": model.spread_weight_,
            "boost_shrink": model.boost_.shrink if model.boost_ is not None else 0.0}
    return PhonePredictor(model, signature_latency_ms, meta, signature_spread=signature_spread)
