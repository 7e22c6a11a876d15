"""A local web app over the runs and the audit: try a photo, see a run's mistakes, review the photos.

examples:
  python app.py                        # the runs under runs/, the newest first; open the address it prints
  python app.py runs/2026-12-07-...    # these run folders only
  python app.py --port 8080 --corrections fixes.jsonl

Three views:
  Try it    drop, upload or paste a photo (or choose one of the run's test photos): its top classes, the
            heatmap of where the network looked, which run answered and how long it took
  Mistakes  the run's wrong test photos, highest loss first, with their heatmaps; the confusion matrix,
            whose cells show their photos
  Review    the audit of the run's cache (run from the page when there is none): likely label errors,
            copies and leaks, outliers; Keep, Relabel as or Remove each photo. Every decision is appended
            to --corrections at once (the photos themselves are never moved, edited or deleted);
            classify.py, finetune.py and audit.py apply it with --corrections FILE.
It listens on 127.0.0.1 (this machine only) unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import shutil

from features.cli import common
from features.cli.common import HelpFormatter, program


def build_parser() -> argparse.ArgumentParser:
    from features.webapp.serve import LOOPBACK, PORT

    p = argparse.ArgumentParser(prog=program("app.py"), description=__doc__, formatter_class=HelpFormatter)
    runs = p.add_argument_group("runs")
    runs.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                      help="run folders of classify.py, finetune.py or ensemble.py, or folders of them "
                           "(default: runs)")
    runs.add_argument("--corrections", default="corrections.jsonl", metavar="FILE",
                      help="where the Review view appends its decisions (made when missing)")
    runs.add_argument("--audits", default="audits", metavar="DIR",
                      help="where audits of the runs' caches are found, and written when the page runs one")
    runs.add_argument("--runtime", default="auto", choices=("auto", "tf", "onnx", "openvino"),
                      help="what runs a head's backbone (as predict.py's)")
    server = p.add_argument_group("server")
    server.add_argument("--host", default=LOOPBACK,
                        help="the address to listen on; anything but this machine's own prints a warning: "
                             "whoever reaches it can see the photos and write corrections")
    server.add_argument("--port", type=int, default=PORT, help="the port to listen on")
    output = p.add_argument_group("output")
    output.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    output.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _serve_from_flags(args) -> None:
    from features.webapp import make_app, serve
    from features.webapp.serve import check_host

    check_host(args.host)  # flags first, then work
    from features.cli import classify

    page, bench = make_app(args.run_dirs or None, corrections=args.corrections, audits_dir=args.audits,
                           runtime=args.runtime, flags=common.flag_renderer(classify.build_parser()))
    print(f"{len(bench.runs)} run(s); decisions go to {bench.corrections}", flush=True)
    _, url, _ = serve(page, bench, host=args.host, port=args.port, block=False)
    print(f"the app is at {url} (Ctrl-C stops it)", flush=True)
    try:
        page.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        page.close()
        shutil.rmtree(bench.pictures, ignore_errors=True)  # the pictures it drew


def main(argv=None) -> int:
    return common.main(build_parser, _serve_from_flags, argv)
