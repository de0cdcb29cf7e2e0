"""The FCN-score's ceiling and floor for a label-map -> photo recipe, as rows beside the models.

- ceiling: the real target photos of the evaluation split scored as if a model had produced them
  (the paper's "ground truth" row: how well the segmenter itself recovers the labels);
- floor: the per-pixel mean of the training photos, given as the output for every input.

Usage (from the repository root):

    python tools/fcn_bounds.py recipes/facades_quick.toml --set data.root=datasets/facades \\
        [--weights runs/facades_segmenter] [--json out.json]

Both rows go through the same metrics (and the same preprocessing) as ``i2i eval``.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from i2i.assembly.build import build_dataset, build_metrics
from i2i.assembly.host import get_host
from i2i.assembly.recipe import load_recipe, resolve
from i2i.data.imaging import to_unit


def mean_training_photo(recipe, host) -> torch.Tensor:
    """Mean of the training targets at evaluation-time geometry (resized to the crop, no flips)."""
    size = recipe["data"].get("crop_size", 256)
    train = build_dataset(recipe, host, "train", preprocess="resize_and_crop", load_size=size, flip=False)
    total = None
    for i in range(len(train)):
        target = train[i]["B"].double()
        total = target if total is None else total + target
    return (total / len(train)).float()


def score(dataset, outputs, metrics) -> dict[str, float]:
    for metric in metrics.values():
        metric.reset()
    for i in range(len(dataset)):
        item = dataset[i]
        out, tgt, inp = (to_unit(t.unsqueeze(0)) for t in (outputs(item), item["B"], item["A"]))
        for metric in metrics.values():
            if metric.needs_input:
                metric.update(out, tgt, inputs=inp)
            else:
                metric.update(out, tgt)
    return {name: metric.compute() for name, metric in metrics.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--weights", default="", help="segmenter (default: the shipped one)")
    parser.add_argument("--json", default="", help="also write the rows to this file")
    args = parser.parse_args(argv)
    host = get_host()
    recipe = resolve(load_recipe(args.recipe, args.overrides), host, args.recipe)
    entries = ["l1", "psnr", "ssim"] + [
        {"name": n, "weights": args.weights} for n in ("fcn_pixel_acc", "fcn_class_acc", "fcn_iou")
    ]
    metrics = build_metrics(entries, host)
    test = build_dataset(recipe, host, recipe["eval"]["split"])
    mean = mean_training_photo(recipe, host)
    rows = {
        "real photos (ceiling)": score(test, lambda item: item["B"], metrics),
        "mean training photo (floor)": score(test, lambda item: mean, metrics),
    }
    names = list(metrics)
    print(f"{len(test)} images of the {recipe['eval']['split']!r} split")
    print(" | ".join(["row", *names]))
    for label, values in rows.items():
        print(" | ".join([label, *(f"{values[n]:.4f}" for n in names)]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"images": len(test), "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
