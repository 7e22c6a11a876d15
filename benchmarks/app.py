"""Benchmark: the web app's start-up and its seconds per photo in Try it, beside predict.py's for one photo; and the
screenshots of its three views that docs/app.md shows.

examples:
  python benchmarks/app.py --run runs/20261207-191845-flowers-efficientnet_lite0-logreg
  python benchmarks/app.py --run RUN --screenshots docs/img      # and the three views' screenshots

app.py is started on the run folder in a child process, as a user starts it; printed: the seconds until its page
answers, the seconds of the first photo tried (the network loaded, the heatmap's explainer built) and the median of
the next --photos, each through gradio_client as the page calls it (the heatmap drawn each time); then predict.py
on one photo in a child process, as a user runs it (its wall seconds: Python, TensorFlow's import and the network
included). With --screenshots, headless Chromium (Debian's chromium, driven by Playwright) opens each view on the
same app: a test photo tried, the mistakes with a confusion cell chosen, the audit's findings with a row chosen
(the audit is run from the page when the run's cache has none under --work).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from features.cli.common import HelpFormatter

ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--run", required=True, help="a run folder of classify.py on a folder of photos")
    p.add_argument("--photos", type=int, default=5, help="photos after the first, for the steady seconds")
    p.add_argument("--screenshots", metavar="DIR", help="write app-try.png, app-mistakes.png, app-review.png here")
    p.add_argument("--work", metavar="DIR", help="the app's corrections and audits (default: a temporary folder)")
    return p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"app.py ended: {proc.communicate()}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"app.py did not answer within {timeout} s")


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    from gradio_client import Client, handle_file

    from features.records.runs import RunFiles
    from features.serve.explain import photo_root

    run = Path(args.run).resolve()
    names, splits = RunFiles(run).read_probabilities()
    root = photo_root(run)
    photos = [str(Path(root) / i) for i in splits["test"][0][: args.photos + 1]]
    work = Path(args.work or tempfile.mkdtemp(prefix="app-bench-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), str(run), "--port", str(port), "--audits",
                             str(work / "audits"), "--corrections", str(work / "corrections.jsonl"), "-q"], cwd=work)
    try:
        _wait(url, proc)
        startup = time.perf_counter() - start
        client = Client(url, verbose=False)
        seconds = []
        for photo in photos:
            start = time.perf_counter()
            top, _, _ = client.predict(run=str(run), photo=handle_file(photo), api_name="/try_photo")
            seconds.append(time.perf_counter() - start)
        print(f"app.py on {run.name}: page answering after {startup:.2f} s")
        print(f"  Try it, the first photo: {seconds[0]:.2f} s (the network loaded, the explainer built); the next "
              f"{len(seconds) - 1}: median {statistics.median(seconds[1:]):.2f} s each (top classes and heatmap)")
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(ROOT / "predict.py"), str(run), photos[0], "-q"], cwd=work,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        assert done.returncode == 0, done.stderr
        print(f"  predict.py on one photo: {wall:.2f} s wall (a new process: Python, TensorFlow and the network "
              "loaded each time)")
        if args.screenshots:
            _screenshots(url, Path(args.screenshots), photos[0], client=client, run=run)
    finally:
        proc.terminate()
        proc.wait(60)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def _screenshots(url: str, folder: Path, photo: str, *, client, run: Path) -> None:
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    table, *_ = client.predict(run=str(run), kind="all", label="all", api_name="/run_audit")  # findings to show
    first = next(row[1] for row in table["data"] if row[0] == "label error")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(url, wait_until="networkidle")
        page.set_input_files("#photo input[type=file]", photo)
        page.wait_for_selector("#heatmap img", timeout=120_000)
        page.wait_for_function("document.querySelector('#info').innerText.includes('answered by')")
        page.screenshot(path=str(folder / "app-try.png"), full_page=True)
        page.get_by_role("tab", name="Mistakes").click()
        page.click("#show-mistakes")
        page.wait_for_selector("#wrong img", timeout=300_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(folder / "app-mistakes.png"), full_page=True)
        page.get_by_role("tab", name="Review").click()
        page.wait_for_function(f"document.querySelector('#findings').innerText.includes('{first}')",
                               timeout=120_000)
        page.locator("#findings").get_by_text(first, exact=True).first.click()
        page.wait_for_selector("#picture img", timeout=60_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(folder / "app-review.png"), full_page=True)
        browser.close()
    print(f"  screenshots: {', '.join(str(folder / n) for n in ('app-try.png', 'app-mistakes.png', 'app-review.png'))}")


if __name__ == "__main__":
    main()
