"""Output-size math, mirrored once from ``csrc/shape.h`` for the fake kernels and argument checks.

One spatial dimension of a sliding window: input length ``n``, padding ``p0`` before and ``p1`` after,
kernel ``k``, stride ``s``, dilation ``d``::

    out = floor((n + p0 + p1 - d*(k-1) - 1) / s) + 1

which, with symmetric padding ``p`` and no dilation, is the d2l formula ``floor((n + 2p - k + s) / s)``.
With ``ceil_mode`` (pooling only) the division rounds up, and a last window that would start in the
right padding is dropped.
"""

# Largest single size argument the kernels accept; mirrors kMaxWindowArg in csrc/shape.h.
MAX_WINDOW_ARG = 1 << 40


def window_output_size(n, p0, p1, k, s, d=1, ceil_mode=False):
    span = n + p0 + p1 - d * (k - 1) - 1
    out = (-((-span) // s) if ceil_mode else span // s) + 1
    if ceil_mode and out > 0 and (out - 1) * s >= n + p0:
        out -= 1
    return out


def conv2d_output_size(input_size, kernel_size, stride, padding, dilation):
    """Output (H, W) of conv2d for an (H, W) input; ``padding`` is (top, bottom, left, right)."""
    return [
        window_output_size(input_size[i], padding[2 * i], padding[2 * i + 1], kernel_size[i], stride[i], dilation[i])
        for i in range(2)
    ]


def pool2d_output_size(input_size, kernel_size, stride, padding, dilation, ceil_mode):
    """Output (H, W) of max/avg pooling for an (H, W) input; ``padding`` is symmetric (h, w)."""
    return [
        window_output_size(input_size[i], padding[i], padding[i], kernel_size[i], stride[i], dilation[i], ceil_mode)
        for i in range(2)
    ]
