"""Command line: `python -m recipe_kit fetch fashion-mnist [mnist cifar10]` loads, verifies and caches."""
import sys

from .data import DATA_DIR, SPECS, DataError, load_dataset


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] != "fetch" or any(n not in SPECS for n in argv[1:]):
        print(f"usage: python -m recipe_kit fetch NAME [NAME...]   (NAME: {', '.join(SPECS)})")
        return 2
    for name in argv[1:]:
        for split in ("train", "test"):
            try:
                data = load_dataset(name, split)
            except DataError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            cache = DATA_DIR / name / f"{split}.npz"
            where = f"cached in {cache.parent}" if cache.exists() else f"not cached ({DATA_DIR} is not writable)"
            print(f"{name}/{split}: {tuple(data.images.shape)} uint8, verified, {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
