"""Scoring shared by every method: one function, so heads and fine-tunes are comparable."""

from __future__ import annotations

import math

import numpy as np

# The figures of :func:`score` that go into every results-table row.
SUMMARY_KEYS = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss",
                "roc_auc")


COUNTS = ("epochs_run", "best_epoch", "n_test", "n_train")


def in_range(value, key: str) -> bool:
    """A figure a record may hold: a finite number; seconds from 0 to a year, counts and losses up to a billion,
    every other figure (accuracies, precisions) a share from 0 to 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return 0 <= value <= (3.2e7 if "seconds" in key else 1e9 if key in COUNTS or "loss" in key else 1)


def accuracy(y_true, proba) -> float:
    """The share of rows whose most probable class is the true one."""
    return float(np.mean(np.argmax(proba, axis=1) == np.asarray(y_true)))


def log_loss(y_true, proba) -> float:
    """The mean negative log probability of the true class (clipped at 1e-12): what ensembles are chosen by."""
    proba = np.asarray(proba)
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y_true)), y_true], 1e-12, 1))))


def score(y_true, proba, class_names) -> dict:
    """Metrics of predicted probabilities against true labels.

    Args:
        y_true: int labels (N,).
        proba: (N, C) class probabilities, columns in ``class_names`` order.
        class_names: the C class names.

    Returns:
        accuracy, balanced_accuracy, precision/recall/f1 (macro), log_loss, roc_auc
        (one-vs-rest macro for several classes; None where a class is absent from the
        test rows), per_class {name: precision, recall, f1, support}, confusion_matrix
        (rows true, columns predicted), n_test.
    """
    from sklearn import metrics as m

    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    proba = proba / proba.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 +- 1e-7
    labels = np.arange(len(class_names))
    y_pred = proba.argmax(axis=1)
    p, r, f, s = m.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    try:
        if len(class_names) == 2:
            auc = float(m.roc_auc_score(y_true, proba[:, 1]))
        else:
            auc = float(m.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels))
    except ValueError:  # a class missing from the test rows
        auc = None
    return {
        "accuracy": float(m.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(m.balanced_accuracy_score(y_true, y_pred)),
        "precision_macro": float(p.mean()),
        "recall_macro": float(r.mean()),
        "f1_macro": float(f.mean()),
        "log_loss": float(m.log_loss(y_true, proba, labels=labels)),
        "roc_auc": auc,
        "per_class": {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                             "support": int(s[i])} for i, name in enumerate(class_names)},
        "confusion_matrix": m.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n_test": int(len(y_true)),
    }


def summary_line(scores: dict) -> str:
    """The headline figures of :func:`score` as one phrase, as every script prints them."""
    return (f"test accuracy {scores['accuracy']:.4f}, macro precision {scores['precision_macro']:.4f}, "
            f"macro F1 {scores['f1_macro']:.4f} ({scores['n_test']} test images)")


def report_text(y_true, proba, class_names) -> str:
    """scikit-learn's per-class report, as text."""
    from sklearn.metrics import classification_report

    return classification_report(np.asarray(y_true), np.asarray(proba).argmax(axis=1),
                                 labels=np.arange(len(class_names)), target_names=list(class_names),
                                 digits=4, zero_division=0)
