"""HistGradientBoosting's raw predictions for a whole chunk at once, tree by tree in numpy.

scikit-learn's predictor walks each row down each tree in C, one call per tree; for our
ensembles of very small trees (3 leaves for the risk, 7 for the bucket) over 55 features
that cost ~29 ns a row per tree, 44% of the predict stage at 1M partners. Here every split
is one vectorised comparison over the chunk's column, and a tree's value per row is a nest
of `np.where`: 2.2x less CPU for the risk model, 1.7x for the bucket model on a 10,000-row
chunk of the 1M world (bench/scale_bench.py), with the same results to the bit: the same
rule per split (NaN goes where the split sends missing values, otherwise `x <= threshold`
goes left) and the same additions in the same order (the baseline, then each tree's leaf
value, iteration by iteration), which `tests/ml/test_tree_eval.py` checks against sklearn.

It reads the fitted estimator's predictors (`_predictors`, `_baseline_prediction`,
`_loss`): scikit-learn is pinned in requirements.txt and the test compares both paths, so
an upgrade that changes them fails there. Categorical splits are left to scikit-learn
(our features are numeric; see `ml.churn_model`).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

# A tree as nested tuples: a leaf is its value (a float); a split is
# (feature, threshold, missing_go_left, left, right).
Tree = Any
_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tree(nodes: np.ndarray, i: int = 0) -> Tree:
    node = nodes[i]
    if node["is_leaf"]:
        return float(node["value"])
    return (
        int(node["feature_idx"]),
        float(node["num_threshold"]),
        bool(node["missing_go_to_left"]),
        _tree(nodes, int(node["left"])),
        _tree(nodes, int(node["right"])),
    )


def _compile(gbm) -> list[list[Tree]] | None:
    """Each iteration's trees (one per class column), or None when a split is categorical
    or the estimator lacks what this reads (then scikit-learn predicts)."""
    predictors = getattr(gbm, "_predictors", None)
    if predictors is None or getattr(gbm, "_preprocessor", None) is not None:
        return None
    if any(p.nodes["is_categorical"].any() for it in predictors for p in it):
        return None
    return [[_tree(p.nodes) for p in it] for it in predictors]


def _value(tree: Tree, cols: list[np.ndarray], nans: list[np.ndarray]):
    if type(tree) is float:
        return tree
    feature, threshold, missing_left, left, right = tree
    go_left = cols[feature] <= threshold  # False for NaN
    if missing_left:
        go_left |= nans[feature]
    return np.where(go_left, _value(left, cols, nans), _value(right, cols, nans))


def raw_predict(gbm, X: np.ndarray) -> np.ndarray:
    """`gbm._raw_predict(X)`: shape (n_rows, trees per iteration), identical values."""
    if gbm not in _compiled:
        _compiled[gbm] = _compile(gbm)
    iterations = _compiled[gbm]
    X = np.asarray(X, dtype=np.float64)
    if iterations is None or X.ndim != 2 or X.shape[1] != gbm.n_features_in_:
        return gbm._raw_predict(X)
    n = X.shape[0]
    raw = np.zeros((n, gbm.n_trees_per_iteration_), dtype=gbm._baseline_prediction.dtype, order="F")
    raw += gbm._baseline_prediction
    cols = [X[:, j] for j in range(X.shape[1])]
    nans = [np.isnan(c) for c in cols]
    for trees in iterations:
        for k, tree in enumerate(trees):
            raw[:, k] += _value(tree, cols, nans)
    return raw


def decision_function(gbm, X: np.ndarray) -> np.ndarray:
    """A binary classifier's raw log-odds, as `gbm.decision_function(X)`."""
    return raw_predict(gbm, X).ravel()


def predict_proba(gbm, X: np.ndarray) -> np.ndarray:
    """Class probabilities, as `gbm.predict_proba(X)`."""
    return gbm._loss.predict_proba(raw_predict(gbm, X))
