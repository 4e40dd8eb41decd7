"""Is rk.MixedPrecision worth opting in to here? Training-step time of a course model, side by side.

    .venv/bin/python benchmarks/speedups.py [--model course|vgg] [--width 32] [--steps 20]

Runs the same steps (batch 256, AdamW) of the course CNN (or, with --model vgg, of notebook 6's
rk.vgg_cnn) in float32, float32 channels_last, bfloat16 autocast, and bfloat16 + channels_last
(= rk.MixedPrecision), interleaved round by round so that machine noise hits all four alike, and
prints seconds per 60k-image epoch and the speed-up over float32.
Measured on 2 cores of a Xeon with AMX (torch 2.14.1): 2.4-2.9x for MixedPrecision (course CNN,
width 32) and about 2.2x (--model vgg, width 16), varying from run to run with the machine's load.
On a CPU without AMX or AVX512-BF16 bfloat16 can be slower: rk.models.bf16_is_fast says which.
"""
import argparse
import time

import torch
import torch.nn as nn

import recipe_kit as rk


def variants(model, width):
    """name -> model, all with the same initial weights."""
    def fresh():
        torch.manual_seed(0)
        return rk.vgg_cnn(1, 10, width=width) if model == "vgg" else rk.course_cnn(1, 10, width=width)

    class Float32ChannelsLast(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model.to(memory_format=torch.channels_last)

        def forward(self, x):
            return self.model(x.contiguous(memory_format=torch.channels_last))

    class Bfloat16(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return self.model(x).float()

    return {"float32": fresh(), "float32 channels_last": Float32ChannelsLast(fresh()),
            "bfloat16": Bfloat16(fresh()), "bfloat16 channels_last (MixedPrecision)": rk.MixedPrecision(fresh())}


def time_steps(model, x, y, steps):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(steps):
        rk.train.default_train_step(model, (x, y), nn.CrossEntropyLoss(), optimizer)
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["course", "vgg"], default="course")
    parser.add_argument("--width", type=int, default=None, help="default: 32 (course), 16 (vgg)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    x, y = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
    width = args.width or (16 if args.model == "vgg" else 32)
    models = variants(args.model, width)
    for model in models.values():
        time_steps(model, x, y, 3)                                   # warm-up: oneDNN picks its kernels
    seconds = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            seconds[name].append(time_steps(model, x, y, args.steps))
    base = min(seconds["float32"])
    print(f"{args.model} CNN width {width}, batch 256, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"bf16_is_fast(cpu) = {rk.models.bf16_is_fast('cpu')}")
    for name, times in seconds.items():
        best = min(times)
        print(f"{name:42s} {best * 60000 / 256:6.1f} s per 60k-image epoch   speed-up {base / best:4.2f}x")


if __name__ == "__main__":
    main()
