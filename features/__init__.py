"""Transfer learning on images, measured: the toolkit's Python API, the calls the scripts make.

    import features as tl

    source = tl.load_source(data_dir="../shared/datasets/flowers")     # or load_source("tf_flowers")
    extraction = tl.extract(source, "efficientnet_lite0")               # the cache, made or found
    frozen = tl.classify([extraction.path], "logreg", out_dir="runs")   # a head, scored once on test
    tuned = tl.finetune(source, tl.TrainConfig(unfreeze="20"), out_dir="runs")
    found = tl.predict(frozen["run_dir"], ["photos/"])                   # found.top_k(3): [(path, ranked)]
    paths, maps = tl.explain(frozen["run_dir"], ["photos/"])             # where the network looked (CAM)
    tl.explain_top_losses(frozen["run_dir"], "top_losses.png")           # its worst mistakes, with heatmaps
    tl.export(frozen["run_dir"], "onnx")
    tl.write_report("runs", "RESULTS.md")
    found = tl.audit(extraction.path)                                     # copies, leaks, label errors
    folder, summary = tl.write_audit(found, "audits")                     # its sheets and audit.json
    tl.app(["runs"]).launch()                                             # the web app (inline in a notebook)
    chosen = tl.best(source, time_limit=900)                             # the best model 15 minutes allow

Each name is imported when it is first used: ``import features`` loads no TensorFlow and no
scikit-learn. Errors raised here name the functions' parameters (``image_size 16: ...``); the
scripts in features/cli/ turn them into their flags. ``tl.tables``, ``tl.plots`` and ``tl.metrics``
are what the report and the notebook read the results table with.
"""

from __future__ import annotations

import importlib

# name -> "module:attribute" (or "module" for a module itself)
_API = {
    "load_source": "features.data:load_source",
    "extract": "features.extraction.run:extract",
    "ExtractSettings": "features.extraction.settings:ExtractSettings",
    "ExtractOptions": "features.extraction.settings:ExtractOptions",
    "read_cache": "features.cache:read_cache",
    "create_backbone": "features.models:create_backbone",
    "classify": "features.heads.classify:classify",
    "TrainConfig": "features.train.config:TrainConfig",
    "finetune": "features.train.run:finetune",
    "predict": "features.serve.predict:predict",
    "open_predictor": "features.serve.predict:open_predictor",
    "explain": "features.serve.explain:explain",
    "explain_top_losses": "features.serve.explain:explain_top_losses",
    "write_heatmaps": "features.serve.explain:write_heatmaps",
    "export": "features.serve.export:export",
    "score_ensemble": "features.reports.ensemble:score_ensemble",
    "write_report": "features.reports.report:write_report",
    "audit": "features.auditing:audit",
    "write_audit": "features.auditing:write_audit",
    "app": "features.webapp:app",
    "best": "features.budget:best",
    "dataset_section": "features.reports.report:dataset_section",
    "read_results": "features.records.runs:read_results",
    "quiet_tensorflow": "features.device:quiet_tensorflow",
    "ToolkitError": "features.errors:ToolkitError",
    "metrics": "features.records.metrics",
    "tables": "features.records.tables",
    "plots": "features.records.plots",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    try:
        target = _API[name]
    except KeyError:
        raise AttributeError(f"module 'features' has no attribute {name!r}") from None
    module, _, attribute = target.partition(":")
    value = importlib.import_module(module)
    if attribute:
        value = getattr(value, attribute)
    globals()[name] = value  # imported once (no API name is a subpackage's, which importing it would bind here)
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
