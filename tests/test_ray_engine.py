"""extract.py --engine ray: the same cache as the local engine, through faults, on a local Ray cluster."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from features import cache as store
from features.cli import extract
from features.errors import DatasetUnavailableError
from helpers import last_json, make_image_folder, paused_extraction

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--image-size", "48", "--batch-size", "4", "--precision", "fp32"]  # child drivers: as this process


@pytest.fixture(scope="module", autouse=True)
def cluster(tmp_path_factory):
    """One local Ray for the module: 2 logical CPUs, so the pool's single actor takes one of them."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("data") / "photos", per_class=60)
    (root / "cat" / "broken.jpg").write_text("<html>not a photo</html>")
    return root


@pytest.fixture(scope="module")
def local(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    # TensorFlow in this process; the actors run the converted network on ONNX Runtime (the default on CPUs)
    assert extract.main(["--data-dir", str(photos), "--out", str(out), "-q", "--runtime", "tf", *ARGS]) == 0
    return store.read_cache(next(out.glob("**/*.h5")))


def local_actor_pids() -> list[int]:
    """Process ids of this machine's embedding actors (Ray names them ``MapWorker(...)``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"MapWorker" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _same(cache, local):
    assert cache.ids.tolist() == local.ids.tolist()
    assert np.array_equal(cache.labels, local.labels) and np.array_equal(cache.splits, local.splits)
    assert np.array_equal(cache.index, local.index)
    np.testing.assert_allclose(cache.embeddings, local.embeddings, atol=1e-4)
    assert [(s.id, s.kind) for s in cache.skipped] == [(s.id, s.kind) for s in local.skipped]


@pytest.mark.slow
def test_the_ray_engine_writes_the_local_engines_cache(photos, local, tmp_path, capsys):
    assert extract.main(["--data-dir", str(photos), "--out", str(tmp_path), "--engine", "ray", "--json", "-q",
                         *ARGS]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["engine"] == "ray" and result["skipped_by_kind"] == {"not an image": 1}
    assert result["runtime"] == "onnx" and local.attrs["runtime"] == "tf"
    cache = store.read_cache(result["cache"])
    _same(cache, local)
    assert cache.attrs["engine"] == "ray" and cache.attrs["runtime"] == "onnx"
    assert not list(tmp_path.glob("**/*.parts")) and not list(tmp_path.glob("**/*.lock"))


@pytest.mark.slow
def test_the_actors_run_openvino_at_fp32_or_bf16_as_the_local_engine_does(photos, local, tmp_path, capsys, request):
    argv = ["--data-dir", str(photos), "--engine", "ray", "--runtime", "openvino", "--json", "-q", *ARGS[:-2]]
    assert extract.main([*argv, "--out", str(tmp_path / "a"), "--precision", "fp32"]) == 0
    result = last_json(capsys.readouterr().out)
    assert (result["runtime"], result["precision"]) == ("openvino", "fp32")
    _same(store.read_cache(result["cache"]), local)
    request.getfixturevalue("native_bf16")  # bf16 where the CPU has it natively
    assert extract.main([*argv, "--out", str(tmp_path / "b"), "--precision", "bf16"]) == 0
    on_ray = store.read_cache(last_json(capsys.readouterr().out)["cache"])
    assert extract.main(["--data-dir", str(photos), "--out", str(tmp_path / "c"), "--runtime", "openvino", "--json",
                         "-q", *ARGS[:-2], "--precision", "bf16"]) == 0
    here = store.read_cache(last_json(capsys.readouterr().out)["cache"])
    assert on_ray.attrs["precision"] == here.attrs["precision"] == "bf16" and str(on_ray.path).endswith("-bf16.h5")
    assert np.array_equal(on_ray.index, here.index)
    np.testing.assert_allclose(on_ray.embeddings, here.embeddings, atol=1e-2 * np.abs(here.embeddings).max())


@pytest.mark.slow
def test_an_actor_killed_mid_run_is_restarted_and_the_cache_is_whole(photos, local, tmp_path, monkeypatch):
    """The actors are killed at the run's first checkpoint, while it has rows left to embed."""
    killed = []
    real = store.Checkpoints.write

    def write_then_kill_the_actors(self, *args, **kwargs):
        real(self, *args, **kwargs)
        if not killed:
            for pid in local_actor_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    monkeypatch.setattr(store.Checkpoints, "write", write_then_kill_the_actors)
    from features.data import load_folder
    from features.extraction.run import extract as run_extract

    result = run_extract(load_folder(photos), "efficientnet_lite0", image_size=48, batch_size=4, out_dir=tmp_path,
                         engine="ray", progress=False, checkpoint_batches=1)
    assert killed, "no actor process was found to kill"
    _same(store.read_cache(result.path), local)


@pytest.mark.slow
def test_a_killed_driver_resumes_on_the_same_command(photos, local, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--data-dir", str(photos), "--out", str(out), "--engine", "ray", "-q", *ARGS]
    with paused_extraction(argv, tmp_path) as proc:  # stopped at its first checkpoint, rows still to embed
        proc.kill()
    assert not list(out.glob("**/*.h5"))
    assert extract.main([*argv, "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    assert 0 < result["resumed_rows"] < result["images"]
    _same(store.read_cache(result["cache"]), local)


@pytest.mark.slow
def test_a_path_a_worker_cannot_read_is_named_with_its_node(tmp_path):
    import socket

    from features.data import load_folder
    from features.extraction.run import extract as run_extract

    root = make_image_folder(tmp_path / "photos", per_class=3)
    source = load_folder(root)
    gone = Path(source.paths()[2])
    gone.unlink()  # listed here, absent where the worker looks: a path not on a shared mount
    with pytest.raises(DatasetUnavailableError) as err:
        run_extract(source, "efficientnet_lite0", image_size=48, out_dir=tmp_path / "emb", engine="ray",
                    progress=False)
    assert str(gone) in str(err.value) and socket.gethostname() in str(err.value)
    assert "shared mount" in str(err.value)


@pytest.mark.slow
def test_an_address_where_no_cluster_answers_fails_in_seconds(photos, tmp_path):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "extract.py", "--data-dir", str(photos), "--out", str(tmp_path),
                           "--engine", "ray", "--ray-address", "127.0.0.1:1", "-q", *ARGS],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and time.monotonic() - start < 60
    assert "--ray-address 127.0.0.1:1: no Ray cluster answers there" in proc.stderr
    assert "ray start --head" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_without_ray_installed_the_message_names_the_install(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is not installed
    code = extract.main(["--data-dir", str(photos), "--out", str(tmp_path), "--engine", "ray", "-q", *ARGS])
    err = capsys.readouterr().err
    assert code == 2 and "pip install -r requirements-distributed.txt" in err and "--engine ray" in err


def test_the_pool_never_takes_every_cpu_and_puts_one_actor_on_each_gpu():
    from features.extraction.ray_cluster import plan

    two = plan({"CPU": 2.0}, [{"Alive": True, "Resources": {"CPU": 2.0}}])
    assert two["actors"] == 1 and two["num_cpus"] == 1.0 and two["threads"] == 2 and not two["num_gpus"]
    nodes = [{"Alive": True, "Resources": {"CPU": 16.0}}] * 3
    assert plan({"CPU": 48.0}, nodes)["actors"] == 3
    gpus = plan({"CPU": 16.0, "GPU": 4.0}, nodes[:1])
    assert gpus["actors"] == 4 and gpus["num_gpus"] == 1


def test_a_ray_that_cannot_start_or_join_says_so_in_one_message(monkeypatch):
    from features.extraction.ray_cluster import connect

    def refuse(*args, **kwargs):
        raise RuntimeError("Failed to start the GCS server\nmore detail")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(DatasetUnavailableError, match=r"could not start a local Ray \(Failed to start the GCS"):
        connect(None, temp_dir="/tmp/ray-test")
    with pytest.raises(DatasetUnavailableError, match="ray_address auto: cannot join a Ray cluster"):
        connect("auto")


@pytest.mark.slow
def test_the_ray_engines_actors_build_the_same_hub_preset(tmp_path, capsys):
    """A KerasHub preset folder (tiny, randomly initialised, saved with save_to_preset): each actor loads it
    by its name and embeds what the local engine embeds."""
    keras_hub = pytest.importorskip("keras_hub")
    preset = tmp_path / "vit"
    preset.mkdir()
    keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=16, hidden_dim=16, mlp_dim=32, num_layers=1,
                                 num_heads=1).save_to_preset(str(preset))
    keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=1 / 255).save_to_preset(str(preset))
    photos = make_image_folder(tmp_path / "photos", per_class=4)
    caches = {}
    for engine in ("local", "ray"):
        assert extract.main(["--data-dir", str(photos), "--backbone", f"hub:{preset}", "--engine", engine, "--out",
                             str(tmp_path / engine), "--batch-size", "4", "--json", "-q"]) == 0
        caches[engine] = store.read_cache(last_json(capsys.readouterr().out)["cache"])
    _same(caches["ray"], caches["local"])
