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
    assert _lines("requirements-app.txt") == set(extras["app"])
    assert _lines("requirements-dev.txt") == {r for r in extras["dev"] if not r.startswith(project["name"])}
    includes = [line.split()[:2] for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
                if line.startswith(("-r", "-e"))]
    assert includes == [["-r", "requirements.txt"], ["-r", "requirements-distributed.txt"],
                        ["-r", "requirements-export.txt"], ["-r", "requirements-hub.txt"],
                        ["-r", "requirements-app.txt"], ["-e", "."]]  # and the toolkit itself


def test_every_script_is_a_face_over_the_package_and_an_entry_point():
    """The top-level scripts only call features/cli/; the installed commands call the same functions."""
    project = _project()
    scripts = sorted(p.stem for p in ROOT.glob("*.py"))
    assert sorted(project["scripts"]) == [f"tl-{s}" for s in scripts]
    for name in scripts:
        assert project["scripts"][f"tl-{name}"] == f"features.cli.{name}:main"
        code = [line for line in (ROOT / f"{name}.py").read_text().split('"""')[2].splitlines() if line.strip()]
        assert code == ["import sys", f"from features.cli.{name} import main", 'if __name__ == "__main__":',
                        "    sys.exit(main())"], name
    tomllib = pytest.importorskip("tomllib")
    assert "py-modules" not in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"].get("setuptools", {})


def _fresh_venv(where: Path) -> Path:
    """A virtual environment of its own, without pip or setuptools (so none older than the build needs is
    found first), that sees this environment's libraries through a .pth file: nothing is downloaded."""
    import site
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    (Path(purelib) / "outer.pth").write_text("\n".join(sorted(ours)) + "\n")
    return python


def _pip_install(python: Path, *args: str) -> None:
    """This environment's pip, installing into ``python``'s environment, building with what is installed."""
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                           "--no-build-isolation", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def _runs_the_commands(venv: Path, cwd: Path) -> None:
    for script in ("tl-extract", "tl-classify"):
        done = subprocess.run([venv / "bin" / script, "--help"], cwd=cwd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
    code = ("import features, features.cache, features.extraction, features.heads, features.train, features.serve, "
            "features.records, features.reports; print(features.__file__)")
    done = subprocess.run([venv / "bin" / "python", "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_pip_install_puts_only_the_package_in_site_packages(tmp_path):
    """``pip install .``: site-packages holds ``features`` and its dist-info, no top-level module beside them,
    and the installed ``tl-extract --help`` works from any folder."""
    import shutil

    source = tmp_path / "source"  # a copy: setuptools builds in the source folder (build/), not in the checkout
    shutil.copytree(ROOT / "features", source / "features", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    python = _fresh_venv(tmp_path / "venv")
    site_packages = Path(next((tmp_path / "venv" / "lib").glob("python*/site-packages")))
    before = {p.name for p in site_packages.iterdir()}
    _pip_install(python, str(source))
    added = {p.name for p in site_packages.iterdir()} - before
    assert {n for n in added if not n.endswith(".dist-info")} == {"features"}, added
    assert len([n for n in added if n.endswith(".dist-info")]) == 1, added
    where = _runs_the_commands(tmp_path / "venv", tmp_path)
    assert where.startswith(str(site_packages)), where  # the installed copy, not the checkout


def test_an_editable_install_runs_the_entry_points(tmp_path):
    """``pip install -e .`` builds with the setuptools requirements-dev.txt installs (no ``wheel`` needed)."""
    python = _fresh_venv(tmp_path / "venv")
    _pip_install(python, "-e", str(ROOT))
    assert _runs_the_commands(tmp_path / "venv", tmp_path) == str(ROOT / "features" / "__init__.py")
