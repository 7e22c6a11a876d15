"""The local web app over the runs and the audit: try a photo, see a run's mistakes, review the photos.

* :mod:`.workbench`: what the views show and do, as plain values (runs, a photo tried, mistakes, findings,
  decisions), testable without a page.
* :mod:`.page`: the Gradio page of three views over a workbench.
* :mod:`.serve`: the app made (:func:`app`, ``tl.app``) and served safely: 127.0.0.1 by default, only the
  runs' photos and its own pictures served, uploads bounded, Gradio's analytics off.

Gradio is imported only when a page is made.
"""

from .serve import ALLOWED_UPLOAD, App, app, make_app, serve

__all__ = ["ALLOWED_UPLOAD", "App", "app", "make_app", "serve"]
