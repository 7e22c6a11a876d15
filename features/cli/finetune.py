"""Fine-tune a pretrained backbone end to end, or train the same network from scratch.

examples:
  python finetune.py --backbone vgg19 --unfreeze 10               # VGG19 on tf_flowers, as in the course
  python finetune.py --data-dir ../shared/datasets/flowers --unfreeze 20
  python finetune.py --dataset cats_vs_dogs --binary-output softmax
  python finetune.py --data-dir ../shared/datasets/flowers --unfreeze 0    # frozen base, head only
  python finetune.py --data-dir ../shared/datasets/flowers --weights none  # from scratch
  python finetune.py --data-dir ../shared/datasets/flowers --no-augment --cache-frozen

The model: backbone -> GlobalAveragePooling2D -> Dense(128, relu) -> Dropout(0.1) -> output.
Pretrained: the head trains first on the frozen base (--head-epochs, --head-lr), then the
last --unfreeze layers train at --lr (BatchNormalization stays frozen, the base runs in
inference mode). --weights none trains every layer from scratch at --scratch-lr. Early
stopping on validation loss (or accuracy, --monitor) keeps the best weights. The train/val/test
split is the one extract.py records for the same data flags, so the test images are the same.
Each run writes a folder under --out and appends one row to --out/results.jsonl.
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
    from features.train.config import TrainConfig

    p = argparse.ArgumentParser(prog=program("finetune.py"), description=__doc__, formatter_class=HelpFormatter)
    add_data_flags(p)
    groups = {name: p.add_argument_group(name) for name in ("model", "training", "scoring")}
    add_config_flags(p, TrainConfig, groups=groups, aliases={
        "--no-augment": ("augment", "none", "the same as --augment none: no random changes of the training images")})
    common.add_corrections_flag(groups["training"])
    out = p.add_argument_group("run")
    out.add_argument("--out", default="runs", metavar="DIR", help="outputs folder: run folders and results.jsonl")
    add_common_flags(p)
    return p


def _finetune_from_flags(args) -> None:
    from features.models.registry import resolve_backbone
    from features.train.config import TrainConfig, check_settings

    backbone = resolve_backbone(args.backbone, args.image_size, args.weights)  # flags first, then work
    config = check_settings(config_from_flags(args, TrainConfig, backbone=backbone.name,
                                              image_size=backbone.image_size))
    source, _ = load_data(args)
    from features.records.metrics import summary_line
    from features.train.run import finetune

    result = finetune(source, config, out_dir=args.out, verbose=0 if args.quiet else 1, corrections=args.corrections)
    best = (f"best epoch {result['best_epoch']} at {result['seconds_to_best']:.1f} s" if result["best_epoch"]
            else "no epoch had a finite validation loss")
    print(f"{result['method']} {result['backbone']} on {result['dataset']}: {summary_line(result['metrics'])}\n"
          f"  {result['epochs_run']} epochs, {result['unfrozen_what']} of the base trained, "
          f"{result['train_seconds']:.1f} s ({result['seconds_per_epoch']:.1f} s/epoch), {best}\n"
          f"  run folder {result['run_dir']}")
    if result.get("stopped_by_time"):
        print(f"  stopped by its time limit ({args.time_limit:g} s); the best epoch on validation so far kept")
    if result.get("corrections"):
        print(common.corrections_line(result["corrections"]))
    if args.distribute != "none":
        print(f"  {args.distribute}: {result['replicas']} replica(s) x batch {args.batch_size} = global batch "
              f"{result['global_batch_size']}")
    if args.json:
        print_json(result)


def main(argv=None) -> int:
    return common.main(build_parser, _finetune_from_flags, argv)


if __name__ == "__main__":
    sys.exit(main())
