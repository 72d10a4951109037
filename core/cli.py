"""Argument parsing for ``python -m core``; each command is a thin caller of the library."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core import data


def _data_dir(value: str | None) -> Path:
    chosen = Path(value) if value else data.default_data_dir()
    if chosen is None:
        raise SystemExit(f"no data folder: pass --data DIR or set ${data.DATA_ENV}")
    return chosen


def cmd_train(args) -> int:
    from core.train import TrainConfig, train

    train(TrainConfig(arch=args.arch, data_dir=_data_dir(args.data), name=args.name, epochs=args.epochs,
                      batch_size=args.batch_size, learning_rate=args.lr, size=args.size, seed=args.seed,
                      weights=args.weights, max_train_images=args.max_train_images,
                      models_dir=Path(args.models_dir) if args.models_dir else None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a zoo architecture and write its model and card")
    train.add_argument("--arch", required=True)
    train.add_argument("--data", help="data folder in Kaggle layout (default: $CXR_DATA_DIR or ../shared/data)")
    train.add_argument("--name", help="model name (default: the architecture's)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float, help="initial learning rate")
    train.add_argument("--size", type=int, help="input size in pixels")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--weights", default="none", help="'none' (from scratch), 'imagenet' or a weights file")
    train.add_argument("--max-train-images", type=int, help="subsample the training split (quick runs)")
    train.add_argument("--models-dir", help="where to write the model (default: models/)")
    train.set_defaults(run=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
