"""Every command the README and docs/ show still parses against the real parser, and the README's main job runs."""

import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make_image_folder

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = {p.stem for p in ROOT.glob("*.py")}
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def _blocks(page: Path) -> list[str]:
    """The page's fenced blocks that are not Python or drawings (shell commands, and what they printed)."""
    return [m.group(1) for m in FENCE.finditer(page.read_text()) if not m.group(0).startswith(("```python", "```text"))]


def _commands(page: Path):
    """(page, line, script, argv) of every toolkit command the page shows: ``python X.py ...``,
    ``python benchmarks/X.py ...`` and ``tl-X ...``, split at ``&&``, ``;``, pipes and redirections."""
    for block in _blocks(page):
        for line in block.splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:  # printed output with an apostrophe, not a command
                continue
            command, skip_next = [], False
            for word in [*words, "&&"]:
                if skip_next:  # the target of a redirection, not an argument
                    skip_next = False
                elif word in ("&&", ";", "|", "&", "||"):
                    if command:
                        yield from _toolkit(page, line, command)
                    command = []
                elif re.fullmatch(r"\d?>>?(&\d)?", word):
                    skip_next = not word.endswith(("&1", "&2"))
                elif not re.match(r"\d?>", word):
                    command.append(word)


def _toolkit(page, line, command):
    if command[0] == "python" and len(command) > 1 and command[1].endswith(".py"):
        script, argv = command[1], command[2:]
    elif command[0].startswith("tl-") and command[0][3:] in SCRIPTS:
        script, argv = command[0][3:] + ".py", command[1:]
    else:
        return
    yield page.relative_to(ROOT), line, script, [w for w in argv if w not in ("...", "…")]


def _parser(script: str):
    if script.startswith("benchmarks/"):
        sys.path.insert(0, str(ROOT / "benchmarks"))
        try:
            spec = importlib.util.spec_from_file_location(f"docs_{Path(script).stem}", ROOT / script)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(ROOT / "benchmarks"))
    else:
        assert Path(script).stem in SCRIPTS, f"{script} is not one of the toolkit's scripts"
        module = importlib.import_module(f"features.cli.{Path(script).stem}")
    return module.build_parser()


COMMANDS = [c for page in PAGES for c in _commands(page)]


def test_the_pages_show_commands():
    assert {str(page) for page, *_ in COMMANDS} >= {"README.md", "docs/backbones.md", "docs/heads.md"}
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("page,line,script,argv", COMMANDS, ids=[f"{c[0]}:{c[2]}:{i}" for i, c in
                                                                 enumerate(COMMANDS)])
def test_every_command_shown_parses_against_its_script(page, line, script, argv, capsys):
    assert (ROOT / script).is_file(), f"{page}: {line!r} names {script}, which is not there"
    parser = _parser(script)
    try:
        parser.parse_args(argv)
    except SystemExit as exc:  # --help exits 0; a flag the parser does not know exits 2
        assert exc.code == 0, f"{page}: {line!r}: {capsys.readouterr().err.strip()}"


def test_every_requirements_file_the_pages_install_exists():
    for page in PAGES:
        for block in _blocks(page):
            for name in re.findall(r"pip install (?:-q )?-r ([\w.-]+\.txt)", block):
                assert (ROOT / name).is_file(), f"{page.name}: pip install -r {name}"


def _first_command(page: Path) -> str:
    return next(line for block in _blocks(page) for line in block.splitlines() if line.startswith("pip install"))


@pytest.mark.slow
def test_the_readmes_main_job_runs_as_written(tmp_path):
    """The README's first command, on a small folder of photos in place of the shared flowers (which a clone
    need not have), from a folder of its own: the extraction, then the classifier on the cache it made."""
    first = _first_command(ROOT / "README.md")
    install, *jobs = [part.strip() for part in first.split("&&")]
    assert install == "pip install -r requirements.txt" and jobs, first
    photos = make_image_folder(tmp_path / "photos", per_class=12)
    printed = {}
    for job in jobs:
        argv = shlex.split(job.replace("../shared/datasets/flowers", str(photos)))
        assert argv[0] == "python" and argv[1] in {"extract.py", "classify.py"}, job
        done = subprocess.run([sys.executable, str(ROOT / argv[1]), *argv[2:]], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{job}: {done.stderr[-2000:]}"
        printed[argv[1]] = done.stdout
    assert "logreg on photos / efficientnet_lite0: test accuracy" in printed["classify.py"], printed
    # the fastest runtime on this machine, and its precision, said; a bf16 cache has its own name
    said = re.search(r"runtime (OpenVINO at bf16|ONNX Runtime at fp32) \(", printed["extract.py"])
    assert said, printed["extract.py"]
    name = "efficientnet_lite0-224-bf16.h5" if "bf16" in said.group(1) else "efficientnet_lite0-224.h5"
    assert list((tmp_path / "embeddings" / "photos").glob(name))
