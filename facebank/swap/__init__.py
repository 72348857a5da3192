"""Face swappers: put a synthetic target's identity onto a real face of a photo.

Every swapper takes `swap(image, face, target) -> image` (RGB uint8 in, RGB uint8 of the same
shape out) and is found by name through `get_swapper`, as embedders are: `classical` (no model),
`onnx` (a local face-swap network with a declared contract), `blur` and `pixelate` (the
fallbacks), or any Python callable with that signature.
"""

from facebank.swap.base import Swapper, get_swapper, register_swapper, swapper_names

__all__ = ["Swapper", "get_swapper", "register_swapper", "swapper_names"]
