"""Vision-tower outputs kept per image, so a prompt runs the tower on its new images only.

A conversation that adds a picture resends its earlier ones, and an evaluation asks many
questions about one picture. mlx-vlm embeds a prompt's images together, each time. Its Qwen2-VL
and Qwen2.5-VL models take the tower's output from the caller instead
(``cached_image_features``), and their tower sees each image on its own (attention never
crosses images), so the output for a prompt is the outputs for its images, in order: each is
kept by the image's SHA-256, and only the images not kept go through the tower.

Qwen3-VL is left out: given ``cached_image_features`` mlx-vlm drops its deepstack features,
so the answer would not be the one a cold engine gives.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("mlxnb.engine")

FAMILIES = frozenset({"qwen2_vl", "qwen2_5_vl"})
"""Model types whose prompt embedding takes per-image tower outputs as a cold run makes them."""

MAX_BYTES = 64 * 2**20
"""Default bound of one model's kept outputs (a 1 000-token image of a 2 048-wide bf16 tower
output is 4 MB)."""


class ImageFeatures:
    """The vision tower's output per image digest, least recently used dropped first.

    Touched only by the worker thread (which owns MLX), so unlocked.

    Args:
        max_bytes: Most bytes kept (an output larger than that is not kept).
    """

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._entries: OrderedDict[str, Any] = OrderedDict()
        #: Why outputs are no longer kept (``None`` while they are): see :meth:`give_up`.
        self.failure: str | None = None

    def give_up(self, error: Exception) -> None:
        """Stop keeping outputs after running the tower image by image failed.

        The prompt is then embedded as mlx-vlm embeds it, all images at once, from now on: on
        the H200 (MLX 0.32.4) the per-image call failed to build its CUDA graph for
        Qwen2.5-VL, and whether mlx-vlm's own call works there was not measured.
        """
        self.failure = f"{type(error).__name__}: {error}"
        self._entries.clear()
        self.nbytes = 0
        log.warning("vision-tower outputs are no longer kept per image (%s)", self.failure)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str) -> Any | None:
        """The kept output for ``digest``, or ``None``."""
        features = self._entries.get(digest)
        if features is not None:
            self._entries.move_to_end(digest)
        return features

    def put(self, digest: str, features: Any) -> None:
        """Keep ``features`` (an evaluated MLX array) for ``digest``, within :attr:`max_bytes`."""
        if features.nbytes > self.max_bytes:
            return
        old = self._entries.pop(digest, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self._entries[digest] = features
        self.nbytes += features.nbytes
        while self.nbytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.nbytes -= dropped.nbytes


def tower_output(
    model: Any, pixel_values: Any, grids: Any, digests: Sequence[str], kept: ImageFeatures
) -> Any:
    """The vision tower's output for a prompt's images, running it on the images not kept.

    Args:
        model: The mlx-vlm model (of :data:`FAMILIES`).
        pixel_values: The processor's patches of every image, one image after another.
        grids: Each image's ``(t, h, w)`` patch grid (``image_grid_thw``).
        digests: Each image's SHA-256, in the same order.
        kept: The outputs kept so far; the new ones are added.

    Returns:
        The outputs of every image, concatenated in order (``tokens x width``).
    """
    import mlx.core as mx

    tower = model.vision_tower
    dtype = tower.patch_embed.proj.weight.dtype
    outputs = []
    start = 0
    for index, (digest, (t, h, w)) in enumerate(zip(digests, grids.tolist(), strict=True)):
        patches = int(t * h * w)
        features = kept.get(digest)
        if features is None:
            pixels = pixel_values[start : start + patches].astype(dtype)
            features = tower(pixels, grids[index : index + 1], output_hidden_states=False)
            mx.eval(features)
            kept.put(digest, features)
        outputs.append(features)
        start += patches
    return mx.concatenate(outputs) if len(outputs) > 1 else outputs[0]
