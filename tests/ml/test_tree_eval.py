"""ml.tree_eval predicts exactly what scikit-learn's own predictor does (to the bit)."""

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from ml import tree_eval


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    X[rng.random((n, 6)) < 0.08] = np.nan  # missing values in training: both directions learnt
    X[:, 5] = rng.integers(0, 4, size=n)  # a small-integer feature (categorical in one test)
    signal = np.nan_to_num(X[:, 0]) + 0.7 * np.nan_to_num(X[:, 1], nan=1.5) + 0.3 * X[:, 5]
    return X, signal + rng.normal(scale=0.8, size=n)


def _unseen(n: int, model=None) -> np.ndarray:
    X, _ = _data(n, seed=7)
    X[0] = np.nan  # a row missing everything
    X[1] = [np.inf, -np.inf, 0.0, -0.0, np.inf, 3.0]
    X[:, 4][X[:, 4] > 1] = np.nan  # NaN where training had few
    if model is not None:  # rows exactly at each split's threshold (x <= threshold goes left)
        splits = [
            (int(node["feature_idx"]), float(node["num_threshold"]))
            for it in model._predictors
            for p in it
            for node in p.nodes
            if not node["is_leaf"]
        ]
        for row, (feature, threshold) in zip(range(2, n), splits, strict=False):
            X[row, feature] = threshold
    return X


@pytest.fixture(scope="module")
def binary():
    X, s = _data(4000, seed=1)
    return HistGradientBoostingClassifier(max_iter=120, max_leaf_nodes=3, random_state=0).fit(X, s > 1)


@pytest.fixture(scope="module")
def three_class():
    X, s = _data(4000, seed=2)
    y = np.digitize(s, [0.0, 1.2])
    return HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=7, random_state=0).fit(X, y)


def test_the_risk_models_log_odds_are_identical_to_sklearns(binary):
    X = _unseen(3000, binary)
    ours = tree_eval.decision_function(binary, X)
    assert ours.shape == (3000,)
    assert np.array_equal(ours, binary.decision_function(X))
    assert np.isfinite(ours).all()


def test_the_bucket_models_probabilities_are_identical_to_sklearns(three_class):
    X = _unseen(3000, three_class)
    ours = tree_eval.predict_proba(three_class, X)
    assert np.array_equal(ours, three_class.predict_proba(X))
    # Not a constant: the classes really differ by row.
    assert len(np.unique(ours.argmax(axis=1))) == 3


def test_a_fortran_or_c_ordered_matrix_gives_the_same_values(binary):
    X = _unseen(500)
    assert np.array_equal(
        tree_eval.decision_function(binary, np.ascontiguousarray(X)),
        tree_eval.decision_function(binary, np.asfortranarray(X)),
    )


def test_native_categorical_splits_are_left_to_sklearn():
    X, s = _data(2000, seed=3)
    model = HistGradientBoostingClassifier(
        max_iter=30, max_leaf_nodes=3, categorical_features=[5], random_state=0
    ).fit(X, s > 1)
    assert any(p.nodes["is_categorical"].any() for it in model._predictors for p in it)
    X2 = _unseen(400)
    assert tree_eval._compile(model) is None
    assert np.array_equal(tree_eval.decision_function(model, X2), model.decision_function(X2))
