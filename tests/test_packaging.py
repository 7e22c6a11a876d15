"""The package installs as a Python maintainer expects, and requirements*.txt say what pyproject.toml says."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lines(name: str) -> set[str]:
    """A requirements file's own requirements (comments and -r includes left out), spaces removed."""
    found = set()
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith(("-r", "-e")):
            found.add(re.sub(r"\s+", "", line))
    return found


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_requirements_files_say_what_pyproject_says():
    project = _project()
    extras = project["optional-dependencies"]
    assert _lines("requirements.txt") == set(project["dependencies"])
    assert _lines("requirements-distributed.txt") == set(extras["distributed"])
    assert _lines("requirements-export.txt") == set(extras["export"])
    assert _lines("requirements-hub.txt") == set(extras["hub"])
    assert _lines("requirements-dev.txt") == {r for r in extras["dev"] if not r.startswith(project["name"])}
    includes = [line.split()[:2] for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
                if line.startswith(("-r", "-e"))]
    assert includes == [["-r", "requirements.txt"], ["-r", "requirements-distributed.txt"],
                        ["-r", "requirements-export.txt"], ["-r", "requirements-hub.txt"],
                        ["-e", "."]]  # and the toolkit itself


def test_every_script_is_a_module_and_an_entry_point():
    project = _project()
    scripts = sorted(p.stem for p in ROOT.glob("*.py"))
    assert sorted(target.split(":")[0] for target in project["scripts"].values()) == scripts
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert sorted(setuptools["py-modules"]) == scripts


def test_an_editable_install_runs_the_entry_points(tmp_path):
    """``pip install -e .`` in a fresh virtual environment (its libraries seen from this one, so that
    nothing is downloaded), then ``tl-extract --help`` from anywhere."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    pip = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps",
                          "--no-build-isolation", "--disable-pip-version-check", "-e", str(ROOT)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    for script in ("tl-extract", "tl-classify"):
        done = subprocess.run([venv / "bin" / script, "--help"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
    code = "import features.cache, features.extract, features.heads, features.train, features.serve, features.results"
    done = subprocess.run([venv / "bin" / "python", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
