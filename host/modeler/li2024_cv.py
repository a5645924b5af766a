"""The li2024 GPU cross-validation splits shared by the GPU benchmarks
(``benchmarks/gpu_ops_to_e2e.py``, ``benchmarks/nnmeter_side_by_side.py``): 5-fold,
grouped by network, fixed seed, so every method is scored on the same held-out networks.
The tables come from ``data_li2024.gpu_tables``.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import pandas as pd

SEED = 0
N_FOLDS = 5


def cv_frame(structure: pd.DataFrame, times: pd.DataFrame,
             e2e: pd.Series) -> Tuple[np.ndarray, pd.DataFrame, pd.Series]:
    """(networks with both structure and an end-to-end time, sorted; their ops with the
    device's ``times`` merged in on network/op_index, RangeIndex; end-to-end ms of those
    networks in that order). ``e2e``: end-to-end ms indexed by network."""
    nets = np.array(sorted(set(e2e.index) & set(structure["network"])))
    ops = structure[structure["network"].isin(nets)].copy()
    ops = ops.merge(times, on=["network", "op_index"], how="left")
    ops.index = pd.RangeIndex(len(ops))
    return nets, ops, e2e.loc[nets]


def network_folds(nets: Sequence, n_folds: int = N_FOLDS, seed: int = SEED) -> List[Tuple[np.ndarray, np.ndarray]]:
    """(train positions, test positions) into ``nets`` per fold: k-fold grouped by
    network, shuffled with a fixed seed."""
    from sklearn.model_selection import GroupKFold

    nets = np.asarray(nets)
    gkf = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(gkf.split(nets, groups=nets))
