"""Makes `imagecorruptions` 1.1.2 run on the pinned scikit-image.

The package calls `skimage.filters.gaussian(..., multichannel=True)`; scikit-image
removed `multichannel` in favour of `channel_axis` (0.19 deprecated, later removed),
so glass blur raises TypeError there; fog uses `np.float_`, gone in numpy 2. `multichannel=True` meant "the last axis is
channels, do not blur across it", which is exactly `channel_axis=-1`: the patched
call computes what the old one did. Import this module before corrupting.
"""
import imagecorruptions.corruptions as _ref
import numpy as _np
from skimage.filters import gaussian as _gaussian

# Fog's plasma fractal allocates with `np.float_`, which numpy 2.0 removed; it
# was an alias of float64, so restoring the alias changes nothing it computes.
if not hasattr(_np, "float_"):
    _np.float_ = _np.float64


def _gaussian_compat(image, *args, multichannel=None, **kwargs):
    if multichannel is not None:
        kwargs.setdefault("channel_axis", -1 if multichannel else None)
    return _gaussian(image, *args, **kwargs)


_ref.gaussian = _gaussian_compat
