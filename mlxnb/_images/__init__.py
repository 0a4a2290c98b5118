"""Images in, for vision models: every kind of input brought to one checked, hashed value.

Every door hands images over in its own shape: the HTTP API as OpenAI content parts (data URLs,
and ``http(s)`` URLs when the user turns them on), Python code as notebook objects (Pillow
images, numpy arrays, matplotlib figures, paths, raw bytes). The package splits the work:

- :mod:`~mlxnb._images.policy`: :class:`ImageLimits`, :class:`ImagePolicy` and the address
  guard (:func:`is_public_address`): what one request may bring and read;
- :mod:`~mlxnb._images.value`: the checked :class:`Image` value (bytes, hash, decodes,
  thumbnails);
- :mod:`~mlxnb._images.load`: :func:`load_image` and :func:`load_images`, any input → ``Image``;
- :mod:`~mlxnb._images.content`: :func:`split_content`, :func:`user_message` and
  :func:`no_vision_error`, images in OpenAI-style messages;
- :mod:`~mlxnb._images.remote`: :func:`fetch_remote`, downloads pinned to public addresses.

The package is a leaf: no MLX, and nothing of mlxnb's but :mod:`mlxnb.errors`. Pillow is
imported on first use, so importing it costs nothing.
"""

from mlxnb._images.content import no_vision_error, split_content, user_message
from mlxnb._images.load import load_image, load_images
from mlxnb._images.policy import (
    DEFAULT_LIMITS,
    HTTP_POLICY,
    PYTHON_POLICY,
    ImageLimits,
    ImagePolicy,
    IPAddress,
    is_public_address,
)
from mlxnb._images.remote import fetch_remote
from mlxnb._images.value import Image

__all__ = [
    "DEFAULT_LIMITS",
    "HTTP_POLICY",
    "PYTHON_POLICY",
    "IPAddress",
    "Image",
    "ImageLimits",
    "ImagePolicy",
    "fetch_remote",
    "is_public_address",
    "load_image",
    "load_images",
    "no_vision_error",
    "split_content",
    "user_message",
]
