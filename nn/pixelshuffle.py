"""Rearranging channels and pixels: `pixel_shuffle`, `pixel_unshuffle`, `channel_shuffle`
and their modules, as reshapes and one permute each."""
from dtrain.autograd.registry import Sample, SampleMaker, register_composite
from dtrain.nn.module import Module


def _spatial(op, input):
    """(leading dims, C, H, W) of an input of at least 3 dims."""
    if input.dim() < 3:
        raise RuntimeError(f"{op} expects input to have at least 3 dimensions, but got input "
                           f"with {input.dim()} dimension(s)")
    *lead, c, h, w = input.shape
    return lead, c, h, w


def pixel_shuffle(input, upscale_factor):
    """(*, C r^2, H, W) -> (*, C, H r, W r) with r = upscale_factor (sub-pixel convolution)."""
    r = upscale_factor
    lead, c, h, w = _spatial("pixel_shuffle", input)
    if c % (r * r):
        raise RuntimeError(f"pixel_shuffle expects its input's 'channel' dimension to be "
                           f"divisible by the square of upscale_factor, but input.size(-3)={c} "
                           f"is not divisible by {r * r}")
    x = input.reshape(*lead, c // (r * r), r, r, h, w)
    n = len(lead)
    x = x.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    return x.reshape(*lead, c // (r * r), h * r, w * r)


def pixel_unshuffle(input, downscale_factor):
    """(*, C, H r, W r) -> (*, C r^2, H, W): the inverse of pixel_shuffle."""
    r = downscale_factor
    lead, c, h, w = _spatial("pixel_unshuffle", input)
    for name, dim, size in (("height", -2, h), ("width", -1, w)):
        if size % r:
            raise RuntimeError(f"pixel_unshuffle expects {name} to be divisible by "
                               f"downscale_factor, but input.size({dim})={size} is not "
                               f"divisible by {r}")
    x = input.reshape(*lead, c, h // r, r, w // r, r)
    n = len(lead)
    x = x.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
    return x.reshape(*lead, c * r * r, h // r, w // r)


def channel_shuffle(input, groups):
    """(N, C, *) with channels (g, C/g) reordered to (C/g, g) (ShuffleNet)."""
    if input.dim() < 3:
        raise RuntimeError(f"channel_shuffle expects input to have at least 3 dimensions, but "
                           f"got input with {input.dim()} dimension(s)")
    n, c, *rest = input.shape
    if groups <= 0 or c % groups:
        raise RuntimeError(f"Number of channels must be divisible by groups. Got {c} channels "
                           f"and {groups} groups.")
    x = input.reshape(n, groups, c // groups, *rest).transpose(1, 2)
    return x.reshape(input.shape)


def _shuffle_samples():
    s = SampleMaker("pixel_shuffle")
    return [Sample(lambda x: pixel_shuffle(x, 2), (s(2, 8, 2, 3),)),
            Sample(lambda x: pixel_unshuffle(x, 2), (s(3, 4, 2),)),
            Sample(lambda x: channel_shuffle(x, 3), (s(2, 6, 2),))]


register_composite("pixel_shuffle", _shuffle_samples)


class _Rearrange(Module):
    """A module `fn(input, value)` whose one argument is the attribute named `arg`."""

    fn = None
    arg = None

    def __init__(self, value):
        super().__init__()
        setattr(self, self.arg, value)

    def forward(self, input):
        return type(self).fn(input, getattr(self, self.arg))

    def extra_repr(self):
        return f"{self.arg}={getattr(self, self.arg)}"


class PixelShuffle(_Rearrange):
    fn, arg = staticmethod(pixel_shuffle), "upscale_factor"


class PixelUnshuffle(_Rearrange):
    fn, arg = staticmethod(pixel_unshuffle), "downscale_factor"


class ChannelShuffle(_Rearrange):
    fn, arg = staticmethod(channel_shuffle), "groups"
