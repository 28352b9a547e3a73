import numpy as np
import pytest

from fer_lightning.errors import UserError
from fer_lightning.metrics import score
from stages.score_fusion import fuse_scores

# Row 1 is where the two rules disagree: max picks class 0 (0.6), mean picks class 1 (0.45).
P_FUSION = np.array([[0.6, 0.3, 0.1], [0.6, 0.4, 0.0], [0.1, 0.45, 0.45]])
P_CNN3 = np.array([[0.1, 0.8, 0.1], [0.0, 0.5, 0.5], [0.7, 0.1, 0.2]])


def test_max_score_fusion_is_elementwise_max_then_argmax():  # eqs. 10 and 12
    fused = fuse_scores([P_FUSION, P_CNN3], "max")
    np.testing.assert_allclose(fused, np.maximum(P_FUSION, P_CNN3))
    assert fused.argmax(1).tolist() == [1, 0, 0]


def test_mean_score_fusion_is_average_then_argmax():  # eqs. 11 and 13
    fused = fuse_scores([P_FUSION, P_CNN3], "mean")
    np.testing.assert_allclose(fused, (P_FUSION + P_CNN3) / 2)
    assert fused.argmax(1).tolist() == [1, 1, 0]


def test_unknown_method_is_a_user_error():
    with pytest.raises(UserError, match="unknown method 'median'"):
        fuse_scores([P_FUSION, P_CNN3], "median")


def test_score_matches_hand_computed_metrics():
    labels = np.array([0, 1, 1, 2])
    preds = np.array([0, 1, 2, 2])
    m = score(preds, labels, num_classes=3)
    assert m["acc"] == pytest.approx(0.75)
    # precision per class: 1, 1, 0.5; recall: 1, 0.5, 1
    assert m["precision"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["recall"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m["confusion"] == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_probe_fits_with_an_optional_pca_step(tmp_path):
    from stages.probe import _fit_and_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 400)
    x = rng.normal(size=(400, 20)).astype(np.float32)
    x[:, :7] += 8 * np.eye(7)[y]            # the class lives in 7 of 20 dimensions
    np.savez(tmp_path / "f.npz", train_features=x[:300], train_labels=y[:300],
             test_features=x[300:], test_labels=y[300:])
    spec = {"class_path": "sklearn.svm.LinearSVC", "init_args": {"C": 0.1}, "pca": 8}
    out = _fit_and_score(spec, "probe.svm", str(tmp_path / "f.npz"), "train", None)
    assert list(out) == ["test"] and out["test"]["acc"] > 0.9
    one = _fit_and_score({**spec, "pca": 1}, "probe.svm", str(tmp_path / "f.npz"), "train", None)
    assert one["test"]["acc"] < out["test"]["acc"]   # one component cannot separate 7 classes
