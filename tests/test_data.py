"""The bundled digits and the IDX reader, on tiny IDX files written here (plain and gzipped)."""

import gzip
import struct

import pytest
import torch

from lenet_ext.data import BUNDLED_DIR, IdxError, load_digits, read_idx


def idx_bytes(dims, payload, type_code=0x08):
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(payload)


def write(path, data):
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_split(directory, prefix, images, labels, gz=True):
    """MNIST-style files for one split from a uint8 N×H×W tensor and a label list."""
    ext = ".gz" if gz else ""
    n, h, w = images.shape
    write(directory / f"{prefix}-images-idx3-ubyte{ext}", idx_bytes((n, h, w), images.flatten().tolist()))
    write(directory / f"{prefix}-labels-idx1-ubyte{ext}", idx_bytes((len(labels),), labels))


def tiny_digits(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8), [i % 10 for i in range(n)]


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_round_trip(tmp_path, gz):
    images, labels = tiny_digits(7)
    write_split(tmp_path, "train", images, labels, gz=gz)
    write_split(tmp_path, "t10k", images[:3], labels[:3], gz=gz)

    train = load_digits("train", tmp_path)
    assert train.images.shape == (7, 1, 28, 28) and train.images.dtype == torch.float32
    torch.testing.assert_close(train.images, images.unsqueeze(1).float() / 255)
    assert train.labels.tolist() == labels and train.labels.dtype == torch.int64
    assert len(load_digits("test", tmp_path)) == 3
    assert len(load_digits("train", tmp_path, limit=4)) == 4


def test_read_idx_keeps_dims_and_row_major_order(tmp_path):
    path = write(tmp_path / "x.idx", idx_bytes((2, 3), range(6)))
    assert read_idx(path).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_bundled_digits_are_the_fixed_stratified_split():
    train, test = load_digits("train"), load_digits("test")
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [400] * 10
    assert test.labels.bincount().tolist() == [100] * 10
    assert 0 <= float(train.images.min()) and float(train.images.max()) == 1.0
    # Held out means held out: no training image appears among the test images.
    train_rows = {bytes(r) for r in (train.images * 255).round().to(torch.uint8).flatten(1).tolist()}
    assert not any(bytes(r) in train_rows for r in (test.images * 255).round().to(torch.uint8).flatten(1).tolist())
    assert (BUNDLED_DIR / "README.md").read_text().count("CC BY-SA 3.0") == 1


CORRUPT = {
    "empty": (b"", "truncated: 0 bytes"),
    "bad magic": (b"\x01\x02\x08\x03" + bytes(12), "not an IDX file"),
    "float type": (idx_bytes((1,), b"\0\0\0\0", type_code=0x0D), "only unsigned bytes"),
    "short header": (bytes([0, 0, 8, 3]) + struct.pack(">I", 2), "truncated inside the header"),
    "short data": (idx_bytes((2, 28, 28), bytes(1563)), "truncated: a 2×28×28 array needs 1568 data bytes, found 1563"),
    "long data": (idx_bytes((2,), bytes(3)), "too long"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_file_errors_name_the_file_and_the_problem(tmp_path, case):
    data, problem = CORRUPT[case]
    path = write(tmp_path / "train-images-idx3-ubyte", data)
    with pytest.raises(IdxError, match=problem) as info:
        read_idx(path)
    assert str(info.value).startswith(str(path))


def test_damaged_gzip_is_reported(tmp_path):
    good = gzip.compress(idx_bytes((4, 28, 28), bytes(4 * 784)))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(IdxError, match=f"{path}: cannot be decompressed"):
        read_idx(path)


def test_missing_file_is_named(tmp_path):
    images, labels = tiny_digits(3)
    write_split(tmp_path, "train", images, labels)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        load_digits("train", tmp_path)


def test_mismatched_files_are_reported(tmp_path):
    images, labels = tiny_digits(5)
    write_split(tmp_path, "train", images, labels[:4])
    with pytest.raises(IdxError, match="train-labels-idx1-ubyte.gz: holds 4 labels but .* holds 5 images"):
        load_digits("train", tmp_path)

    write_split(tmp_path, "train", images, [0, 1, 2, 3, 12])
    with pytest.raises(IdxError, match=r"label 12 is outside 0\.\.9"):
        load_digits("train", tmp_path)

    write(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes((5, 784), bytes(5 * 784)))
    write_split(tmp_path, "t10k", images, labels)  # unaffected
    with pytest.raises(IdxError, match="train-images-idx3-ubyte.gz: expected N×rows×cols images, found 2"):
        load_digits("train", tmp_path)
    assert len(load_digits("test", tmp_path)) == 5


def test_unknown_split():
    with pytest.raises(ValueError, match="split must be one of"):
        load_digits("validation")
