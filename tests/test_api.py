"""The Python API's parameters get the command line's checks: a value of the wrong kind is a ToolkitError that
names the parameter, never a TypeError or AttributeError from pathlib (hostile pass five, low)."""

import pytest

import features as tl
from helpers import make_image_folder


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return tl.load_source(data_dir=make_image_folder(tmp_path_factory.mktemp("api") / "pets", per_class=6))


CALLS = [
    ("read_cache(None)", lambda s: tl.read_cache(None), "path None: give the path of a feature cache"),
    ("read_cache(3)", lambda s: tl.read_cache(3), "path 3: give the path"),
    ("load_source(data_dir=3)", lambda s: tl.load_source(data_dir=3), "data_dir 3: give the path"),
    ("classify(3)", lambda s: tl.classify(3), "paths 3: give a path or a list of paths of feature caches"),
    ("classify([None])", lambda s: tl.classify([None]), "paths None: give the path"),
    ("predict(None)", lambda s: tl.predict(None, ["x.jpg"]), "path None: give the path of a run folder"),
    ("predict(inputs=3)", lambda s: tl.predict("run", 3), "inputs 3: give a path or a list of paths"),
    ("predict(a folder as a string)", lambda s: tl.predict("run", "no-such-folder"),
     "no-such-folder: no such file or folder"),  # one path, never its characters
    ("explain(inputs=3)", lambda s: tl.explain("run", 3), "inputs 3: give a path or a list of paths"),
    ("explain_top_losses(None)", lambda s: tl.explain_top_losses(None, "x.png"), "run_dir None: give the path"),
    ("export(3)", lambda s: tl.export(3, "onnx"), "run_dir 3: give the path of a run folder"),
    ("write_report(None)", lambda s: tl.write_report(None), "results_dir None: give the path"),
    ("read_results(None)", lambda s: tl.read_results(None), "results_dir None: give the path"),
    ("score_ensemble(None)", lambda s: tl.score_ensemble(None), "run_dirs None: give a path or a list of paths"),
    ("open_predictor(None)", lambda s: tl.open_predictor(None), "path None: give the path of a run folder"),
    ("audit(None)", lambda s: tl.audit(None), "features None: give the path of a feature cache"),
    ("audit(folds=1)", lambda s: tl.audit("c.h5", folds=1), "folds 1: must be a whole number of folds, at least 2"),
    ("audit(near=2)", lambda s: tl.audit("c.h5", near=2), "near 2: a cosine similarity; give a number in (0, 1]"),
    ("audit(near='x')", lambda s: tl.audit("c.h5", near="x"), "near 'x': a cosine similarity"),
    ("write_audit(None)", lambda s: tl.write_audit(None), "audit 'None': give what audit(...) returns"),
    ("extract(3, ...)", lambda s: tl.extract(3, "efficientnet_lite0"), "source '3': give the photos as load_source"),
    ("finetune(None, ...)", lambda s: tl.finetune(None, tl.TrainConfig()), "source 'None': give the photos"),
    ("extract(image_size=64.5)", lambda s: tl.extract(s, "efficientnet_lite0", image_size=64.5),
     "image_size 64.5: must be a whole number of pixels"),
    ("extract(image_size=True)", lambda s: tl.extract(s, "efficientnet_lite0", image_size=True),
     "image_size True: must be a whole number of pixels"),
]


@pytest.mark.parametrize("name,call,says", CALLS, ids=[c[0] for c in CALLS])
def test_a_parameter_of_the_wrong_kind_is_a_toolkit_error_naming_it(name, call, says, source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(tl.ToolkitError) as caught:
        call(source)
    assert says in str(caught.value)


def test_write_audit_top_is_bounded(tmp_path):
    from test_audit import planted

    from helpers import write_cache

    X, y, splits, _ = planted()
    found = tl.audit(write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"], splits=splits))
    for top in (-5, 0, 121, 2.5):
        with pytest.raises(tl.ToolkitError, match=f"top {top}: give a whole number of photos a sheet from 1 to 120"):
            tl.write_audit(found, tmp_path / "audits", top=top)
    assert not (tmp_path / "audits").exists() or not list((tmp_path / "audits").iterdir())
