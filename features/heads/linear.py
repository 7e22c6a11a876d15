"""A linear head as one linear map on the raw embeddings: what the export folds into a single graph
with its backbone (:func:`features.heads.registry.fold_head` picks a head's fold)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Linear:
    """A linear head's probabilities: ``members`` linear maps, their outputs averaged.

    Each member ``m`` computes ``z = x @ kernel[m] + bias[m]`` on the scaled embeddings, then
    "softmax" (``softmax(z)``) or "sigmoid" (``sigmoid(z)`` normalised to sum one; with one
    column, ``[1 - sigmoid(z), sigmoid(z)]``). The calibrated linear SVM has one member per
    calibration fold; the others have one.
    """

    kernel: np.ndarray  # (members, features, outputs)
    bias: np.ndarray  # (members, outputs)
    activation: str

    def fold_scaler(self, mean: np.ndarray, scale: np.ndarray) -> "Linear":
        """The same map on unscaled embeddings: ``(x - mean) / scale`` folded into the weights."""
        kernel = self.kernel / scale[None, :, None]
        bias = self.bias - np.einsum("d,mdk->mk", mean, kernel)
        return Linear(kernel, bias, self.activation)

    def predict_proba(self, X) -> np.ndarray:
        """The probabilities, in numpy (float64): the reference the exported graph is held to."""
        z = np.einsum("nd,mdk->mnk", np.asarray(X, np.float64), self.kernel) + self.bias[:, None, :]
        if self.activation == "softmax":
            e = np.exp(z - z.max(axis=-1, keepdims=True))
            p = e / e.sum(axis=-1, keepdims=True)
        else:
            s = 1.0 / (1.0 + np.exp(-z))
            p = np.concatenate([1 - s, s], axis=-1) if s.shape[-1] == 1 else s / s.sum(axis=-1, keepdims=True)
        return p.mean(axis=0)


def _member(coef, intercept, activation) -> Linear:
    return Linear(np.asarray(coef, np.float64).T[None], np.asarray(intercept, np.float64)[None], activation)


def fold_logreg(clf) -> Linear:
    return _member(clf.coef_, clf.intercept_, "softmax" if clf.coef_.shape[0] > 1 else "sigmoid")


def fold_sgd(clf) -> Linear:  # one-vs-rest logistic models, normalised (scikit-learn's _predict_proba_lr)
    return _member(clf.coef_, clf.intercept_, "sigmoid")


def fold_calibrated_linear_svm(clf) -> Linear:
    """Each calibration member: p_k = sigmoid(-(a_k f_k + b_k)) of the SVM's decision f_k."""
    kernels, biases = [], []
    for member in clf.calibrated_classifiers_:
        svm = member.estimator
        a = np.array([c.a_ for c in member.calibrators], np.float64)
        b = np.array([c.b_ for c in member.calibrators], np.float64)
        kernels.append(-(svm.coef_.T * a))
        biases.append(-(svm.intercept_ * a + b))
    return Linear(np.stack(kernels), np.stack(biases), "sigmoid")
