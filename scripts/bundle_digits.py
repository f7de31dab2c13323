"""Rebuilds lenet_ext/data/ (the bundled digits) from shared/data/mnist_5k.csv.gz.

The CSV holds 5,000 MNIST digits, 500 per class, one row per image: 784 grey levels then the label.
They are shipped as gzipped IDX files, the format MNIST itself is published in, so that one reader
serves both the bundled set and ``--data-dir``. The split is fixed and stratified: with a seeded
shuffle, the first 400 images of each digit train and the other 100 are held out (4,000 / 1,000).
Gzip headers carry no timestamp, so rerunning this script reproduces the files byte for byte.

    python scripts/bundle_digits.py [CSV] [OUT_DIR]
"""

import csv
import gzip
import random
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = 20240601
TRAIN_PER_CLASS = 400


def write_idx_gz(path, dims, payload):
    # IDX header: two zero bytes, type code 0x08 (unsigned byte), number of dims, then each dim as a
    # big-endian uint32.
    header = bytes([0, 0, 0x08, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write(header + bytes(payload))


def main(csv_path=None, out_dir=None):
    csv_path = Path(csv_path or ROOT.parent / "shared/data/mnist_5k.csv.gz")
    out_dir = Path(out_dir or ROOT / "lenet_ext/data")
    by_class = {d: [] for d in range(10)}
    with gzip.open(csv_path, "rt") as f:
        for row in csv.reader(f):
            *pixels, label = (int(v) for v in row)
            assert len(pixels) == 784 and all(0 <= p <= 255 for p in pixels), "malformed row"
            by_class[label].append(bytes(pixels))

    rng = random.Random(SEED)
    splits = {"train": [], "t10k": []}
    for label, images in by_class.items():
        rng.shuffle(images)
        splits["train"] += [(img, label) for img in images[:TRAIN_PER_CLASS]]
        splits["t10k"] += [(img, label) for img in images[TRAIN_PER_CLASS:]]
    for name, items in splits.items():
        rng.shuffle(items)  # interleave the classes, as the published files do
        write_idx_gz(out_dir / f"{name}-images-idx3-ubyte.gz", (len(items), 28, 28), b"".join(i for i, _ in items))
        write_idx_gz(out_dir / f"{name}-labels-idx1-ubyte.gz", (len(items),), bytes(label for _, label in items))
        print(f"{name}: {len(items)} images -> {out_dir}")


if __name__ == "__main__":
    main(*sys.argv[1:])
