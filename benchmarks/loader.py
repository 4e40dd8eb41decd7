"""Data-only epoch time: recipe_kit.BatchLoader vs torchvision's DataLoader with PIL transforms.

Both run the same augmentations (pad-4 random crop, horizontal flip, normalization, random erasing
p=0.5) over all 60k Fashion-MNIST training images, side by side in one run, and nothing else.
Target: BatchLoader at least 20x faster on a 2-core CPU.

    .venv/bin/python benchmarks/loader.py [--threads 1] [--workers 0] [--repeats 2]

One torch thread by default for both: ops on a batch of 128 small images gain nothing from more,
and on a busy 2-core machine OpenMP threads spin-wait on each other (measured here: a uint8->float
cast of one batch took 14 ms with 2 threads under load, 0.04 ms with 1).
"""
import argparse
import time

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

import recipe_kit as rk

MEAN, STD = (0.2860,), (0.3530,)


class PILDataset(torch.utils.data.Dataset):
    """The textbook pipeline: one PIL image at a time through torchvision transforms."""

    def __init__(self, images, labels):
        self.images, self.labels = images[:, 0].numpy(), labels
        self.transform = T.Compose([T.RandomCrop(28, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(MEAN, STD), T.RandomErasing(p=0.5)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i], mode="L")), self.labels[i]


def epoch_seconds(loader):
    start = time.perf_counter()
    n = 0
    for x, y in loader:
        n += len(y)
    return time.perf_counter() - start, n


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per loader; the best is kept")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = rk.load_dataset("fashion-mnist", "train")
    ours = rk.BatchLoader(train.images, train.labels, batch_size=128, seed=0, mean=MEAN, std=STD,
                          augment=rk.Augment(crop_padding=4, flip=True, erase_p=0.5))
    theirs = torch.utils.data.DataLoader(PILDataset(train.images, train.labels), batch_size=128,
                                         shuffle=True, num_workers=args.workers)
    times = {"recipe_kit.BatchLoader": [], f"DataLoader+PIL (workers={args.workers})": []}
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        for (name, samples), loader in zip(times.items(), (ours, theirs)):
            seconds, n = epoch_seconds(loader)
            assert n == len(train), (name, n)
            samples.append(seconds)
    print(f"data-only epoch over {len(train)} images, {args.threads} torch threads, best of {args.repeats}:")
    best = {name: min(s) for name, s in times.items()}
    for name, seconds in best.items():
        print(f"  {name:34s} {seconds:7.2f} s  ({len(train) / seconds:10,.0f} images/s)")
    ours_s, theirs_s = best.values()
    print(f"ratio: BatchLoader is {theirs_s / ours_s:.1f}x faster (target: >= 20x)")


if __name__ == "__main__":
    main()
