"""One table of cases per operator: CONV2D, MAX_POOL2D and AVG_POOL2D, used by every test file.

A case is an input shape and the operator's arguments, with an id (the test id) and tags. Each case
converts itself to the two forms the tests call: `kwargs()`, the keyword arguments of
torch.nn.functional (and lenet_ext.functional), and `op_args()`, the arguments of the raw operator
(torch.ops.lenet_ext.*: lists of two, and conv2d's padding as (top, bottom, left, right)).

A test that iterates a table runs a new case on every device, dtype and layout it covers. A test that
can afford only a few cases selects them by tag (TAGS says what each one means), never by position, and
by id where one case has a reason of its own.
"""

from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F

import lenet_ext.functional as LF

TAGS = {
    # subsets, for tests too slow to run the whole table
    "core": "small cases that between them vary every argument, for tests that repeat them under one more "
    "condition (no bias, no batch dimension)",
    "gradcheck": "small enough for float64 finite differences (gradcheck and gradgradcheck)",
    "opcheck": "torch.library.opcheck's samples (opcheck calls each operator many times)",
    # what a case is for
    "lenet": "LeNet's layers",
    "gemm": "a path of CUDA's implicit-GEMM conv kernel (others may take it too: csrc/cuda/conv2d.cu's use_direct)",
    # conv2d tags that each case gets from its shapes
    "depthwise": "one input channel per group",
    "pointwise": "a 1x1 kernel: a plain matrix product",
}


def _pair(v):
    return [int(v[0]), int(v[1])] if isinstance(v, (tuple, list)) else [int(v), int(v)]


@dataclass(frozen=True)
class _Case:
    id: str
    input: tuple  # (N, C, H, W), or (C, H, W) for an unbatched case
    tags: tuple = field(default=(), kw_only=True)
    note: str = field(default="", kw_only=True)  # why the case is here, where its id does not say

    def __post_init__(self):
        unknown = set(self.tags) - set(TAGS)
        if unknown:
            raise ValueError(f"case {self.id!r}: unknown tags {sorted(unknown)} (cases.TAGS lists the known ones)")

    def __str__(self):  # the test id: parametrize(..., ids=str)
        return self.id

    def shape(self, channels=None, batched=False):
        """The input's shape, with `channels` in place of the case's own channel count when given; `batched`
        adds a batch of one to an unbatched case, as the operators (4D only) need."""
        shape = list(self.input)
        if channels is not None:
            shape[-3] = channels
        if batched and len(shape) == 3:
            shape.insert(0, 1)
        return tuple(shape)


@dataclass(frozen=True)
class Conv2dCase(_Case):
    weight: tuple  # (O, C / groups, KH, KW)
    stride: int | tuple = 1
    # as torch.nn.functional takes it (an int, (h, w), "same" or "valid"), or (top, bottom, left, right)
    # where the two sides differ, which only the raw operator can express
    padding: int | tuple | str = 0
    dilation: int | tuple = 1
    groups: int = 1

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.padding, tuple) and len(self.padding) == 4:
            top, bottom, left, right = self.padding
            if top == bottom and left == right:
                raise ValueError(f"case {self.id!r}: write padding {self.padding} as ({top}, {left})")
        # tags that the shapes decide are added here, never written by hand
        derived = {
            "depthwise": 1 < self.groups == self.input[-3] and self.weight[1] == 1,
            "pointwise": tuple(self.weight[2:]) == (1, 1),
        }
        object.__setattr__(
            self, "tags", (*self.tags, *(t for t, holds in derived.items() if holds and t not in self.tags))
        )

    @classmethod
    def unnamed(cls, input, weight, **kwargs):
        """A case outside the table (a test's own shapes), its id written from its arguments."""
        id = f"x{input}-w{weight}-" + ",".join(f"{k}={v}" for k, v in kwargs.items())
        return cls(id, input, weight, **kwargs)

    @property
    def functional(self):
        """Whether torch.nn.functional.conv2d can express the padding."""
        return not (isinstance(self.padding, tuple) and len(self.padding) == 4)

    def kwargs(self):
        if not self.functional:
            raise ValueError(f"case {self.id!r}: padding {self.padding} has no torch.nn.functional form")
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def op_args(self):
        """(stride, (top, bottom, left, right) padding, dilation, groups), as conv2d_forward/backward take them."""
        dilation = _pair(self.dilation)
        if self.padding == "valid":
            padding = [0, 0, 0, 0]
        elif self.padding == "same":  # torch's rule: the odd one of an uneven total goes after
            totals = [d * (k - 1) for d, k in zip(dilation, self.weight[2:])]
            padding = [totals[0] // 2, totals[0] - totals[0] // 2, totals[1] // 2, totals[1] - totals[1] // 2]
        elif self.functional:
            h, w = _pair(self.padding)
            padding = [h, h, w, w]
        else:
            padding = list(self.padding)
        return _pair(self.stride), padding, dilation, self.groups

    def ours(self, x, w, b=None):
        """lenet_ext's conv2d: through lenet_ext.functional, or the raw operator where only it takes the padding."""
        if self.functional:
            return LF.conv2d(x, w, b, **self.kwargs())
        if x.dim() == 3:
            return torch.ops.lenet_ext.conv2d_forward(x[None], w, b, *self.op_args())[0]
        return torch.ops.lenet_ext.conv2d_forward(x, w, b, *self.op_args())

    def reference(self, x, w, b=None):
        """torch's conv2d for the case: the same call, or the input padded by hand where torch's conv2d does
        not take the padding."""
        if self.functional:
            return F.conv2d(x, w, b, **self.kwargs())
        return torch_conv2d(x, w, b, *self.op_args())


def torch_conv2d(x, w, b, stride, padding, dilation, groups):
    """torch's conv2d on the raw operator's arguments: padding (top, bottom, left, right) applied by F.pad."""
    top, bottom, left, right = padding
    return F.conv2d(F.pad(x, (left, right, top, bottom)), w, b, stride=stride, dilation=dilation, groups=groups)


@dataclass(frozen=True)
class _PoolCase(_Case):
    """A pooling case: its fields after the input are torch.nn.functional's arguments, named and ordered as
    there, which is also the operators' order."""

    def kwargs(self):
        own = {f.name for f in fields(_Case)}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in own}

    def op_args(self):
        """The arguments as the operators take them: window sizes as lists of two, stride None as the kernel."""
        args = self.kwargs()
        args["stride"] = args["kernel_size"] if args["stride"] is None else args["stride"]
        return tuple(_pair(v) if k in ("kernel_size", "stride", "padding", "dilation") else v for k, v in args.items())


@dataclass(frozen=True)
class MaxPool2dCase(_PoolCase):
    kernel_size: int | tuple
    stride: int | tuple | None = None
    padding: int | tuple = 0
    dilation: int | tuple = 1
    ceil_mode: bool = False


@dataclass(frozen=True)
class AvgPool2dCase(_PoolCase):
    kernel_size: int | tuple
    stride: int | tuple | None = None
    padding: int | tuple = 0
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None


class Table:
    """An operator's cases in order; iterate it, or pick by id (table["lenet"]) or by tag (table.tagged("opcheck"))."""

    def __init__(self, *cases):
        self._cases = {}
        for case in cases:
            if case.id in self._cases:
                raise ValueError(f"two cases have the id {case.id!r}")
            self._cases[case.id] = case

    def __iter__(self):
        return iter(self._cases.values())

    def __len__(self):
        return len(self._cases)

    def __getitem__(self, id):
        return self._cases[id]

    def tagged(self, tag):
        """The cases with `tag`, in order. A tag no case has is an error, not an empty selection."""
        chosen = [c for c in self if tag in c.tags]
        if not chosen:
            raise KeyError(f"no case is tagged {tag!r}")
        return chosen


# id, input (N, C, H, W), weight (O, C / groups, KH, KW), then torch's keyword arguments
C = Conv2dCase
# fmt: off
CONV2D = Table(
    C("basic", (2, 3, 8, 8), (4, 3, 3, 3), padding=1, tags=("core", "gradcheck")),
    C("rect-kernel", (2, 3, 9, 7), (5, 3, 5, 3), padding=(2, 1), tags=("core",)),
    C("strided", (1, 2, 4, 4), (3, 2, 3, 3), padding=1, stride=2, tags=("core",)),
    C("anisotropic-stride", (3, 1, 8, 8), (2, 1, 3, 5), padding=(0, 1), stride=(3, 4), tags=("core", "gradcheck")),
    C("grouped-dilated", (2, 4, 11, 10), (6, 2, 3, 2), groups=2, dilation=(2, 3), padding=(2, 1),
      tags=("core", "gradcheck")),
    C("depthwise", (2, 6, 9, 9), (6, 1, 3, 3), groups=6, padding=1, tags=("core", "opcheck"),
      note="on CUDA, the direct kernel with groups"),
    C("pointwise-16", (2, 16, 6, 5), (8, 16, 1, 1)),
    C("big-stride-and-padding", (1, 5, 10, 12), (7, 5, 7, 6), stride=(2, 3), padding=3, dilation=1),
    C("same-even-kernel", (2, 3, 8, 8), (4, 3, 4, 4), padding="same", tags=("gradcheck",),
      note="an even kernel: the padding differs between the two sides"),
    C("same-dilated", (2, 3, 9, 8), (4, 3, 3, 2), padding="same", dilation=(3, 1)),
    C("valid-strided-dilated", (2, 3, 9, 8), (4, 3, 3, 3), padding="valid", stride=3, dilation=2),
    C("empty-batch", (0, 3, 8, 8), (4, 3, 3, 3), padding=1, tags=("gradcheck",)),
    C("big-kernel", (2, 4, 7, 7), (4, 4, 7, 7), note="the kernel covers the whole input"),
    C("dilated-rect", (1, 3, 5, 5), (2, 3, 2, 2), padding=(1, 0), stride=(1, 2), dilation=(1, 2)),
    C("row-bands", (2, 16, 40, 40), (8, 16, 3, 3), padding=1, stride=(1, 2),
      note="CPU: large enough that one image's unrolled matrix is cut into bands of output rows"),
    C("pointwise-large-plane", (1, 64, 48, 48), (4, 64, 1, 1)),
    # CPU pixel tiles: LeNet's two layers (compact layout, a partial last tile, two channel blocks), and the
    # wide layout with several blocks, where some tiles start in a dropped column (found by a sweep).
    # On CUDA, LeNet's layers take the direct kernel.
    C("lenet-conv1", (4, 1, 28, 28), (6, 1, 5, 5), padding=2, tags=("lenet",)),
    C("lenet-conv2", (4, 6, 14, 14), (16, 6, 5, 5), tags=("lenet",)),
    C("pixel-tiles-wide", (1, 5, 30, 40), (12, 5, 3, 3), padding=1, dilation=(1, 2)),
    C("pixel-tiles-blocks", (1, 16, 20, 20), (40, 16, 3, 3), padding=1),
    # CUDA's kernel paths
    C("gemm-3x3", (2, 16, 12, 11), (72, 16, 3, 3), padding=1, tags=("gemm",), note="K % 4 == 0: float4 weight loads"),
    C("gemm-odd-k", (2, 7, 9, 10), (40, 7, 3, 3), padding=1, tags=("gemm",), note="odd K: scalar weight loads"),
    C("gemm-strided", (2, 8, 13, 12), (66, 8, 3, 5), stride=(2, 3), padding=(1, 0, 2, 1), dilation=(2, 1),
      tags=("gemm",)),
    C("gemm-groups", (2, 12, 9, 9), (96, 4, 3, 3), stride=(1, 2), padding=(1, 2, 0, 1), dilation=(1, 2), groups=3,
      tags=("gemm",)),
    C("direct-dilated", (3, 3, 10, 9), (5, 3, 3, 2), stride=(3, 2), padding=(2, 1, 0, 3), dilation=(2, 3),
      note="CUDA's direct kernel"),
    C("pointwise", (2, 40, 6, 5), (48, 40, 1, 1), tags=("gemm",)),
    # opcheck's samples
    C("grouped-asymmetric", (2, 4, 7, 6), (6, 2, 3, 2), stride=(2, 1), padding=(1, 2, 0, 1), dilation=(1, 2),
      groups=2, tags=("opcheck", "gradcheck")),
    C("pointwise-small", (1, 3, 5, 5), (4, 3, 1, 1), tags=("opcheck",)),
    # the valid call that the error tests (test_bad_inputs.py, test_conv2d.py) break: their cases name its sizes
    C("plain", (1, 2, 8, 8), (4, 2, 3, 3)),
)
# fmt: on

# id, input, then F.max_pool2d's arguments in order: kernel_size, stride, padding, dilation, ceil_mode
M = MaxPool2dCase
MAX_POOL2D = Table(
    M("lenet", (2, 3, 8, 8), 2, tags=("lenet",)),
    M("resnet-stem", (2, 3, 9, 11), 3, 2, 1, note="ResNet's stem pooling, odd sizes"),
    M("anisotropic", (1, 4, 10, 7), (3, 2), (2, 1), (1, 0), (1, 2), note="every argument differs between H and W"),
    M("dilated-ceil", (2, 2, 9, 9), 3, 2, 1, 2, True),
    M("stride-over-kernel", (1, 3, 6, 6), 2, 3, 1, 1, True, note="the last window starts in the input"),
    M("ceil-half-window", (1, 2, 5, 5), 2, 2, 0, 1, True),
    M("overlapping", (2, 5, 7, 7), 3, 1, 1, 1, note="stride 1: each input is in several windows"),
    M("unbatched", (3, 4, 7), 2, 1, 0, 1),
    M("empty-batch", (0, 3, 6, 6), 2),
    M("smallest", (1, 1, 1, 1), 1, 1, 0, 1),
    M("stride-3", (1, 2, 12, 13), 4, 3, 2, 1, True, note="the generic-stride kernel"),
    M("k2-odd", (2, 3, 11, 10), (2, 2), (2, 2), tags=("opcheck",), note="an odd height: the last row is dropped"),
    M("k3-s2-ceil", (2, 3, 11, 10), (3, 3), (2, 2), (1, 1), (1, 1), True, tags=("opcheck",)),
    M("dilated-anisotropic", (2, 3, 11, 10), (3, 2), (2, 1), (1, 0), (2, 3)),
    M("dilated-stride-over-kernel", (2, 3, 11, 10), (2, 3), (3, 2), (1, 1), (1, 2), True),
    M("k4-s1-p2", (2, 3, 11, 10), (4, 4), (1, 1), (2, 2), note="more outputs than inputs"),
    M("dilated-rows-ceil", (2, 3, 7, 8), (3, 2), (2, 1), (1, 1), (2, 1), True, tags=("opcheck",)),
    # rows and channel counts past a vector of every level (16 floats on AVX-512), odd, so that the vector
    # loops run and leave tails: stride 1 (shifted vectors), stride 2 and 3 (tap by tap), channels_last
    # blocks of four vectors, one vector and single channels
    M("wide-s1", (2, 37, 9, 45), 3, 1, 1, note="GoogLeNet's 3x3 s1 p1 on rows of 45"),
    M("wide-s1-dilated", (1, 70, 11, 50), 3, 1, 1, (2, 3), note="stride 1, dilated: taps 2 rows / 3 columns apart"),
    M("wide-s1-anisotropic", (1, 21, 13, 67), (2, 5), 1, (1, 2), 1, True),
    M("wide-s2-ceil", (2, 21, 12, 67), 3, 2, 1, 1, True, note="ResNet's 3x3 s2 p1 on an odd, wide row"),
    M("wide-k2-s2", (1, 70, 8, 66), 2, note="2x2 s2 on 70 channels: 64 in one block of four vectors, a tail"),
    M("wide-s3-dilated", (1, 37, 14, 71), 3, 3, 1, 2),
    M("wide-s2-dilated", (1, 9, 10, 75), 3, 2, 1, 2, note="column stride 2 in vectors, taps 2 apart: the row's end"),
    M("wide-s1x2", (1, 5, 9, 70), (2, 3), (1, 2), (1, 1), note="row stride 1, column stride 2"),
)

# id, input, then F.avg_pool2d's arguments in order: kernel_size, stride, padding, ceil_mode, count_include_pad,
# divisor_override
A = AvgPool2dCase
AVG_POOL2D = Table(
    A("lenet", (2, 3, 8, 8), 2, tags=("lenet",)),
    A("resnet-stem", (2, 3, 9, 11), 3, 2, 1),
    A("exclude-pad", (2, 3, 9, 11), 3, 2, 1, False, False),
    A("anisotropic-ceil", (1, 4, 10, 7), (3, 2), (2, 1), (1, 0), True, False),
    A(
        "ceil-past-padding",
        (1, 4, 10, 7),
        (3, 2),
        (2, 1),
        (1, 1),
        True,
        True,
        note="a ceil window hanging past the padding",
    ),
    A("divisor", (2, 2, 7, 7), 3, 1, 1, False, True, 5),
    A("negative-divisor", (1, 2, 6, 6), 2, 3, 1, True, False, -3),
    A("unbatched", (3, 5, 6), 2, 1, 0),
    A("empty-batch", (0, 3, 6, 6), 2),
    A("stride-3", (1, 2, 12, 13), 4, 3, 2, True, True),
    A("k2-odd", (2, 3, 11, 10), (2, 2), (2, 2), tags=("opcheck",), note="an odd height: the last row is dropped"),
    A("k3-s2-ceil", (2, 3, 11, 10), (3, 3), (2, 2), (1, 1), True, True),
    A("k3-s2-ceil-exclude-pad", (2, 3, 11, 10), (3, 3), (2, 2), (1, 1), True, False),
    A("divisor-anisotropic", (2, 3, 11, 10), (3, 2), (2, 3), (1, 1), False, False, 5),
    A("negative-divisor-ceil", (2, 3, 11, 10), (2, 3), (3, 1), (1, 0), True, True, -3),
    A("anisotropic-ceil-exclude-pad", (2, 3, 7, 8), (3, 2), (2, 1), (1, 1), True, False, tags=("opcheck",)),
    A("divisor-ceil", (2, 3, 7, 8), (3, 3), (1, 2), (1, 0), True, True, 5, tags=("opcheck",)),
    # past a vector of every level, odd sizes (see MAX_POOL2D's wide cases)
    A("wide-s1", (2, 37, 9, 45), 3, 1, 1, note="3x3 s1 p1: the separable sums on rows of 45"),
    A("wide-s1-exclude-pad", (1, 70, 10, 50), 3, 1, 1, False, False),
    A("wide-s1-anisotropic-divisor", (1, 21, 13, 67), (2, 5), 1, (1, 2), True, True, 7),
    A("s1-narrow", (2, 3, 6, 5), (3, 4), 1, (1, 2), False, False, note="stride 1, rows narrower than a vector"),
    A("wide-s1-no-pad", (1, 5, 9, 40), (2, 3), 1, 0, note="stride 1, no padding: every edge column inside"),
    A("wide-s2-ceil-exclude-pad", (2, 21, 11, 67), 3, 2, 1, True, False),
    A("wide-k2-s2", (1, 70, 8, 66), 2),
    A("wide-s3", (1, 37, 14, 71), 4, 3, 2, True, True),
    A("wide-s2-no-pad", (1, 5, 8, 80), 3, 2, 0, note="column stride 2 in vectors, no padding"),
    A("wide-s1x2-exclude-pad", (1, 5, 9, 70), (2, 3), (1, 2), (1, 1), True, False),
)
del C, M, A
