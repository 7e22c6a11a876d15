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
stopping on validation loss (or accuracy, --monitor) keeps the best weights. The train/val/test split is the one
extract.py records for the same data flags, so the test images are the same.
Each run writes a folder under --out and appends one row to --out/results.jsonl.
"""

from __future__ import annotations

import argparse
import sys

from features import cli
from features.cli import HelpFormatter, add_common_flags, add_data_flags, load_data, print_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="finetune.py", description=__doc__, formatter_class=HelpFormatter)
    add_data_flags(p)
    model = p.add_argument_group("model")
    model.add_argument("--backbone", default="efficientnet_lite0", help="registry name; see extract.py --list-backbones")
    model.add_argument("--weights", default="imagenet", help="'imagenet', 'none' (from scratch) or PATH of a weights file")
    model.add_argument("--image-size", type=int, metavar="PX", help="input size (default: the backbone's own)")
    model.add_argument("--unfreeze", default="20", metavar="N",
                       help="train the last N layers of the base (0: head only on a frozen base; 'all')")
    model.add_argument("--binary-output", choices=("sigmoid", "softmax"),
                       help="two classes only: one sigmoid neuron (default) or two softmax neurons")
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=10, help="epochs of the main phase (early stopping may end it)")
    train.add_argument("--head-epochs", type=int, default=3, help="epochs of the head alone before unfreezing")
    train.add_argument("--lr", type=float, default=1e-5, help="Adam learning rate while fine-tuning")
    train.add_argument("--head-lr", type=float, default=1e-3, help="Adam learning rate of the head phase")
    train.add_argument("--scratch-lr", type=float, default=1e-3, help="Adam learning rate from scratch")
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--patience", type=int, default=3,
                       help="epochs without a better --monitor figure before stopping")
    train.add_argument("--monitor", default="val_loss", choices=("val_loss", "val_accuracy"),
                       help="what early stopping and the kept weights go by: the validation loss, or the validation "
                            "accuracy (ties to the lower loss; for networks from scratch, whose loss swings early)")
    train.add_argument("--no-augment", dest="augment", action="store_false",
                       help="no random changes of the training images (--augment is ignored)")
    train.add_argument("--cache-frozen", action="store_true",
                       help="run the frozen layers once and train the rest on their cached activations "
                            "(in memory, or on disk under the run folder when they do not fit): same "
                            "result, several times faster per epoch. Applies to a pretrained base "
                            "with --no-augment and --unfreeze below 'all'")
    train.add_argument("--augment", dest="augmentation", default="standard", choices=("standard", "strong"),
                       help="standard: random flip, rotation and zoom; strong: random flip and Keras' RandAugment "
                            "(two random operations of strength 0.3 per image)")
    train.add_argument("--label-smoothing", type=float, default=0.0, metavar="S",
                       help="train towards 1 - S on the true class and S spread over all classes (e.g. 0.1)")
    train.add_argument("--train-per-class", type=int, metavar="K",
                       help="train on a seeded sample of at most K training images per class; validation and "
                            "test images stay the same (learning curves)")
    train.add_argument("--precision", default="float32", choices=("float32", "mixed"),
                       help="mixed: float16 on a GPU, bfloat16 on a CPU; outputs stay float32")
    train.add_argument("--schedule", default="constant", choices=("constant", "cosine"),
                       help="learning rate over the main phase (fine-tuning, or from scratch): constant, or a "
                            "cosine decay towards 0")
    train.add_argument("--warmup-epochs", type=int, default=0, metavar="N",
                       help="the main phase's learning rate rises linearly over its first N epochs")
    train.add_argument("--weight-decay", type=float, default=0.0, metavar="W",
                       help="above 0: AdamW with this decoupled weight decay (e.g. 0.0001) instead of Adam")
    train.add_argument("--distribute", default="none", choices=("none", "mirrored"),
                       help="mirrored: one replica per GPU of this machine (tf.distribute.MirroredStrategy), "
                            "each taking --batch-size images a step")
    score = p.add_argument_group("scoring")
    score.add_argument("--tta", default="none", choices=("none", "flip"),
                       help="flip: score each validation and test image on the mean of its and its mirror's "
                            "probabilities")
    out = p.add_argument_group("run")
    out.add_argument("--out", default="runs", metavar="DIR", help="outputs folder: run folders and results.jsonl")
    add_common_flags(p)
    return p


def _body(args) -> None:
    from features.backbones import resolve_backbone
    from features.train_config import TrainConfig, check_settings

    backbone = resolve_backbone(args.backbone, args.image_size, args.weights)  # flags first, then work
    config = check_settings(TrainConfig(
        backbone=backbone.name, weights=args.weights, image_size=backbone.image_size, unfreeze=args.unfreeze,
        binary_output=args.binary_output, epochs=args.epochs, head_epochs=args.head_epochs, lr=args.lr,
        head_lr=args.head_lr, scratch_lr=args.scratch_lr, batch_size=args.batch_size, patience=args.patience,
        augment=args.augment, cache_frozen=args.cache_frozen, precision=args.precision,
        distribute=args.distribute, schedule=args.schedule, warmup_epochs=args.warmup_epochs,
        weight_decay=args.weight_decay, augmentation=args.augmentation, label_smoothing=args.label_smoothing,
        tta=args.tta, train_per_class=args.train_per_class, monitor=args.monitor, seed=args.seed))
    source, _ = load_data(args)
    from features.finetuning import finetune
    from features.metrics import summary_line

    result = finetune(source, config, out_dir=args.out, verbose=0 if args.quiet else 1)
    best = (f"best epoch {result['best_epoch']} at {result['seconds_to_best']:.1f} s" if result["best_epoch"]
            else "no epoch had a finite validation loss")
    print(f"{result['method']} {result['backbone']} on {result['dataset']}: {summary_line(result['metrics'])}\n"
          f"  {result['epochs_run']} epochs, {result['unfrozen_layers']} base layers trained, "
          f"{result['train_seconds']:.1f} s ({result['seconds_per_epoch']:.1f} s/epoch), {best}\n"
          f"  run folder {result['run_dir']}")
    if args.distribute != "none":
        print(f"  {args.distribute}: {result['replicas']} replica(s) x batch {args.batch_size} = global batch "
              f"{result['global_batch_size']}")
    if args.json:
        print_json(result)


def main(argv=None) -> int:
    return cli.main(build_parser, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
