"""Turn the results table into RESULTS.md and its plots.

examples:
  python report.py                              # runs/results.jsonl -> RESULTS.md, results/*.png
  python report.py --note "Data: my own photos."

Only the table is read (the newest row of each dataset, backbone, size, method and head),
so every figure in the report is one a run measured.
"""

from __future__ import annotations

import argparse
import sys

from features.cli import common
from features.cli.common import HelpFormatter, add_common_flags, program


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=program("report.py"), description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--results", default="runs", metavar="DIR", help="outputs folder holding results.jsonl")
    p.add_argument("--out", default="RESULTS.md", help="the report to write")
    p.add_argument("--plots-dir", default="results", metavar="DIR", help="where the PNG plots go")
    p.add_argument("--note", default="", help="a sentence about the data, printed under the heading")
    p.add_argument("--map", default="tsne", choices=("tsne", "pca", "umap", "none"),
                   help="the 2-D map of each dataset's test embeddings (the mistakes of the frozen-features head "
                        "chosen on validation circled): t-SNE, PCA, UMAP (pip install umap-learn) or none")
    p.add_argument("--no-heatmaps", action="store_true",
                   help="show each dataset's top losses as its run drew them, without drawing where the network "
                        "looked (no network is built)")
    add_common_flags(p)
    return p


def _report_from_flags(args) -> None:
    from features.reports.report import write_report

    path = write_report(args.results, args.out, plots_dir=args.plots_dir, source_note=args.note, map_method=args.map,
                        heatmaps=not args.no_heatmaps)
    print(f"wrote {path} and its plots in {args.plots_dir}/")


def main(argv=None) -> int:
    return common.main(build_parser, _report_from_flags, argv)


if __name__ == "__main__":
    sys.exit(main())
