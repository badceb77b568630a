"""Makes `imagecorruptions` 1.1.2 run on the pinned scikit-image.

The package calls `skimage.filters.gaussian(..., multichannel=True)`; scikit-image
removed `multichannel` in favour of `channel_axis` (0.19 deprecated, later removed),
so glass blur raises TypeError there. `multichannel=True` meant "the last axis is
channels, do not blur across it", which is exactly `channel_axis=-1`: the patched
call computes what the old one did. Import this module before corrupting.
"""
import imagecorruptions.corruptions as _ref
from skimage.filters import gaussian as _gaussian


def _gaussian_compat(image, *args, multichannel=None, **kwargs):
    if multichannel is not None:
        kwargs.setdefault("channel_axis", -1 if multichannel else None)
    return _gaussian(image, *args, **kwargs)


_ref.gaussian = _gaussian_compat
