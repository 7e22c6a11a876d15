"""The course notebook executes headless, end to end, on a tiny folder (any cell error fails)."""

from pathlib import Path

import pytest

from helpers import make_image_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_notebook_runs_and_answers_from_measured_numbers(tmp_path):
    papermill = pytest.importorskip("papermill")
    import nbformat

    data = make_image_folder(tmp_path / "cats_vs_dogs", per_class=10)
    notebook = ROOT / "transfer_learning.ipynb"
    committed = nbformat.read(notebook, as_version=4)
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")  # clean diffs
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(notebook), str(out), cwd=str(ROOT), kernel_name="python3", progress_bar=False,
        parameters={"DATA_DIR": str(data), "IMAGE_SIZE": 32, "HEAD_EPOCHS": 1, "FINETUNE_EPOCHS": 1,
                    "SCRATCH_EPOCHS": 1, "UNFREEZE": "5", "SMALL_CNN_EPOCHS": 2, "SMALL_CNN_PATIENCE": 1,
                    "BATCH_SIZE": 4, "OUT": str(tmp_path / "runs"),
                    "EMBEDDINGS": str(tmp_path / "emb"), "CATS_DOGS_RESULTS": str(tmp_path / "runs"),
                    "COURSE_RESULTS": str(tmp_path / "runs"), "BEST_RESULTS": [str(tmp_path / "runs")]})
    executed = nbformat.read(out, as_version=4)
    text = "\n".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("text", ""))
                     for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Chosen on validation accuracy" in text and "whose macro precision on the" in text
    assert "Against the course's small CNN from scratch, which plateaued at validation accuracy" in text
    assert "training from pretrained weights was" in text and "x a fine-tuning epoch" in text
    assert "Cats vs Dogs: best test accuracy" in text
    assert "test images misclassified" in text  # the grid of mistakes is empty when there are none
    assert "test photos wrong; the classes most confused" in text  # the top losses, with heatmaps where any
    assert "**The audit**" in text and "test photos have a copy in train or val" in text
    images = sum("image/png" in o.get("data", {}) for c in executed.cells for o in c.get("outputs", []))
    assert images >= 6  # samples, time to accuracy, accuracy vs time, validation curves, confusion, embedding map
    assert "No course benchmark in" in text  # the notebook's own runs hold no learning curve
    assert "No best.py search in" in text  # ... and no best.py search
    assert list((tmp_path / "runs").glob("embedding_map_*.png"))
