"""The app made and served: the workbench over the run folders, the page, and Gradio launched with nothing more
reachable than the app needs.

Served: the page, the photos of the runs' data folders (the run's test photos, the audit's findings), the
pictures the app draws (heatmaps) and what a user uploads (Gradio's own cache). Everything else is refused:
Gradio serves only ``allowed_paths`` and its cache, and the app gives it no wider folder. Uploads are bounded
(:data:`ALLOWED_UPLOAD`) and read by the toolkit's guarded decoder. Analytics are off: no request leaves the
machine.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .. import validate
from ..errors import UsageError
from .workbench import Workbench, list_runs

log = logging.getLogger(__name__)

ALLOWED_UPLOAD = "25mb"  # a photo; Gradio refuses a larger upload before the app sees it
LOOPBACK = "127.0.0.1"
PORT = 7860  # Gradio's own default


@dataclass(frozen=True)
class App:
    """The app: its page (a ``gr.Blocks``) and the workbench behind it. :meth:`launch` serves it as ``app.py``
    does (in a notebook, inline)."""

    page: object
    bench: Workbench

    def launch(self, *, host: str = LOOPBACK, port: int | None = None, block: bool = False):
        return serve(self.page, self.bench, host=host, port=port, block=block)

    def close(self) -> None:
        """Stop serving; the pictures the app drew go with it."""
        import shutil

        self.page.close()
        shutil.rmtree(self.bench.pictures, ignore_errors=True)


def app(run_dirs=None, *, corrections="corrections.jsonl", audits_dir="audits", runtime: str = "auto") -> App:
    """The app over ``run_dirs`` (``tl.app``): ``tl.app().launch()`` serves it, inline in a notebook."""
    page, bench = make_app(run_dirs, corrections=corrections, audits_dir=audits_dir, runtime=runtime)
    return App(page, bench)


def make_app(run_dirs=None, *, corrections="corrections.jsonl", audits_dir="audits", runtime: str = "auto",
             flags=None):
    """The app's page and its workbench: ``(page, workbench)``; :func:`serve` serves it as ``app.py`` does.
    ``flags``: as :class:`~.workbench.Workbench`'s.

    Args:
        run_dirs: run folders, or folders of them (default: ``runs``), the newest first in the run picker.
        corrections: the corrections file the Review view appends its decisions to.
        audits_dir: where audits are found, and written when the Review view runs one.

    Raises:
        UsageError: a path given is not one, or Gradio is not installed.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no request out
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own requests to itself, one INFO line each
    paths = validate.paths(run_dirs if run_dirs is not None else ["runs"], "run_dirs", "run folders")
    corrections = validate.path(corrections, "corrections", "a corrections file")
    if corrections.exists() and not corrections.is_file():
        raise UsageError(f"{{corrections}} {corrections}: not a regular file; give a corrections file")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError("the app needs Gradio: pip install -r requirements-app.txt") from None
    from .page import build_page

    bench = Workbench(list_runs(paths), corrections=corrections,
                      audits_dir=validate.path(audits_dir, "audits_dir", "a folder"), runtime=runtime, flags=flags)
    return build_page(bench), bench


def allowed_paths(bench: Workbench) -> list[str]:
    """What Gradio may serve besides its own cache: each run's photo folder and the app's pictures."""
    folders = {str(bench.pictures)}
    for run in bench.runs:
        try:
            root = bench.photo_root(run)
        except Exception:  # noqa: BLE001 - a run whose folder cannot be read serves nothing
            root = None
        if root:
            folders.add(str(Path(root).resolve()))
    return sorted(folders)


def check_host(host: str) -> bool:
    """Whether ``host`` listens beyond this machine (a warning is due); refuses what is no host name or address."""
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        raise UsageError(f"{{host}} {host!r}: give an address to listen on (127.0.0.1, the default, or 0.0.0.0)")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name: whatever it resolves to may be reachable


def serve(page, bench: Workbench, *, host: str = LOOPBACK, port: int | None = PORT, block: bool = True):
    """Serve the page on ``host:port`` (``port`` None: the first free one from Gradio's 7860); returns Gradio's
    (app, local URL, share URL) when not ``block``."""
    port = None if port is None else validate.whole(port, "port", low=1, high=65535)
    if check_host(host):
        log.warning("listening on %s: anyone who can reach this address can see the photos and write "
                    "corrections to %s", host, bench.corrections)
    try:
        return page.launch(server_name=host, server_port=port, allowed_paths=allowed_paths(bench),
                           max_file_size=ALLOWED_UPLOAD, prevent_thread_lock=not block, quiet=True, show_error=False,
                           inbrowser=False, share=False, footer_links=[])
    except OSError as exc:  # the port taken, or an address this machine does not have
        raise UsageError(f"{{port}} {port}: cannot listen on {host}:{port} ({str(exc).strip()[:200]}); give "
                         "another {port}, or stop what listens there") from None
