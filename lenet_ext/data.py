"""The digits LeNet trains on: the bundled MNIST subset, or any MNIST-style IDX files.

The bundled set (``lenet_ext/data``, see its README) is 4,000 training and 1,000 held-out MNIST digits,
stored as gzipped IDX files, so the same reader serves it and ``--data-dir``, which takes the files as
published for MNIST and Fashion-MNIST::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

IDX layout: two zero bytes, a type code (0x08 = unsigned byte, the only one MNIST uses), the number of
dimensions, each dimension as a big-endian uint32, then the values in row-major order.
"""

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["BUNDLED_DIR", "Digits", "IdxError", "load_digits", "read_idx"]

BUNDLED_DIR = Path(__file__).resolve().parent / "data"
SPLITS = {"train": "train", "test": "t10k"}
NUM_CLASSES = 10
_UBYTE = 0x08


class IdxError(ValueError):
    """An IDX file that cannot be read; the message names the file and what is wrong with it."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path = path


def read_idx(path):
    """The contents of one IDX file (gzipped when its name ends in ``.gz``) as a uint8 tensor."""
    path = Path(path)
    raw = path.read_bytes()  # a missing or unreadable file raises OSError, which names the path
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # gzip raises all three for damaged archives
            raise IdxError(path, f"cannot be decompressed ({e})") from e

    if len(raw) < 4:
        raise IdxError(path, f"truncated: {len(raw)} bytes, shorter than the 4-byte IDX magic number")
    zero0, zero1, type_code, ndim = raw[:4]
    if zero0 or zero1 or ndim == 0:
        raise IdxError(path, f"not an IDX file (magic number {raw[:4].hex()}, expected 0000 08 0n)")
    if type_code != _UBYTE:
        raise IdxError(path, f"holds IDX type 0x{type_code:02x}; only unsigned bytes (0x08) are supported")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(path, f"truncated inside the header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = 1
    for d in dims:
        expected *= d
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "too long"
        shape = "×".join(map(str, dims))
        raise IdxError(path, f"{what}: a {shape} array needs {expected} data bytes, found {found}")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(dims)


def _find(directory, stem):
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory / stem}[.gz]: no such file (expected MNIST-style IDX files in {directory})")


@dataclass
class Digits:
    """One split: ``images`` float32 N×1×28×28 scaled to [0, 1], ``labels`` int64 N."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self):
        return len(self.labels)

    def to(self, device):
        return Digits(self.images.to(device), self.labels.to(device))


def load_digits(split, data_dir=None, limit=None):
    """The ``"train"`` or ``"test"`` split from ``data_dir`` (default: the bundled digits).

    ``limit`` keeps the first N digits, for quick runs.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    directory = Path(data_dir) if data_dir is not None else BUNDLED_DIR
    prefix = SPLITS[split]
    images_path = _find(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)

    if images.dim() != 3:
        raise IdxError(images_path, f"expected N×rows×cols images, found {images.dim()} dimensions")
    if labels.dim() != 1:
        raise IdxError(labels_path, f"expected a vector of labels, found {labels.dim()} dimensions")
    if len(images) != len(labels):
        raise IdxError(labels_path, f"holds {len(labels)} labels but {images_path.name} holds {len(images)} images")
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise IdxError(labels_path, f"label {int(labels.max())} is outside 0..{NUM_CLASSES - 1}")

    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return Digits(images.unsqueeze(1).float().div_(255), labels.long())
