"""Integration: real photos of ../shared/datasets through extract.py with real ImageNet weights.

Skips where the folder is absent (a user's clone has none).
"""


import numpy as np
import pytest

from features import cache as store
from features.cli import extract
from helpers import last_json


@pytest.mark.slow
@pytest.mark.parametrize("dataset,per_class,classes,floor", [("flowers", 16, 5, 0.65),
                                                              ("cats_vs_dogs", 12, 2, 0.85)])
def test_lite0_embeddings_of_real_photos_separate_the_classes(dataset, per_class, classes, floor,
                                                              shared_datasets, tmp_path, capsys):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    code = extract.main(["--data-dir", str(shared_datasets / dataset), "--max-per-class", str(per_class),
                         "--out", str(tmp_path), "--json", "-q"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = last_json(out)
    assert result["images"] == per_class * classes and result["skipped"] == 0
    cache = store.read_cache(result["cache"], verify=True)
    assert cache.attrs["dataset"] == dataset and len(cache.class_names) == classes
    assert set(cache.class_names) >= {"cat", "dog"} or "daisy" in cache.class_names
    # Frozen ImageNet features of real photos make the classes nearly linearly separable.
    acc = cross_val_score(LogisticRegression(max_iter=2000), cache.embeddings, cache.labels,
                          cv=4).mean()
    assert acc > floor, acc  # chance is 1 / classes
    assert np.isfinite(cache.embeddings).all()
