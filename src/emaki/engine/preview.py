"""Live previews: latents → RGB with a per-model linear map, no extra model and no VAE pass.

The map (4 latent channels + bias → 3 colours) is fitted once per model by least squares:
decode a few random latents with the model's own VAE and match each latent pixel to the
average colour of the image patch it becomes. A1111's "Approx cheap" uses fixed SD 1.x
coefficients; fitting instead works for any VAE, including the demo model's. When the user
supplies TAESD's decoder (A1111's "TAESD" preview), it draws the previews instead, every few steps.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from emaki.engine.taesd import TinyDecoder, decode_preview, find_tiny_decoder, load_tiny_decoder
from emaki.engine.vae import latent_scale
from emaki.models.components import SDComponents
from emaki.workspace import Workspace

if TYPE_CHECKING:
    from emaki.engine.run import GenerationProgress, ProgressCallback

# TAESD previews may take this share of the generation's time at most (drawn every step on a fast
# model, every few on a slow one).
DECODE_SHARE = 0.1


@torch.inference_mode()
def fit_latent_to_rgb(components: SDComponents, samples: int = 2, size: int = 8) -> torch.Tensor:
    """A (channels + 1) × 3 matrix taking scaled latents (plus a constant 1) to RGB in [-1, 1]."""
    vae = components.vae
    scale = latent_scale(vae)
    channels = components.config.latent_channels
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn((samples, channels, size, size), generator=gen)
    device = next(vae.parameters()).device
    pixels = vae.decode((latents / scale).to(device=device, dtype=vae.dtype)).sample.float().cpu()
    colours = F.adaptive_avg_pool2d(pixels, (size, size))  # one colour per latent pixel
    x = torch.cat([latents, torch.ones_like(latents[:, :1])], dim=1).permute(0, 2, 3, 1).reshape(-1, channels + 1)
    y = colours.permute(0, 2, 3, 1).reshape(-1, 3)
    return torch.linalg.lstsq(x, y).solution


def preview_image(latent: np.ndarray, matrix: np.ndarray, min_side: int = 128) -> Image.Image:
    """One latent (C×h×w) as a small RGB image, enlarged (nearest) to at least `min_side` pixels.

    Plain numpy on purpose: this runs in request threads, and a torch op there starts a second
    OpenMP thread team that, on two cores, halves the speed of the worker's generation for good
    (measured: 0.33 s → 0.55 s per 20-step demo image)."""
    channels = latent.shape[0]
    pixels = latent.transpose(1, 2, 0)[..., :, None] * matrix[None, None, :channels, :]
    rgb = (np.clip(pixels.sum(axis=2) + matrix[channels], -1, 1) + 1) * 127.5
    image = Image.fromarray(rgb.round().astype(np.uint8))
    factor = max(1, -(-min_side // min(image.size)))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class DecodedPreviews:
    """A progress callback that gives each step a `draw_preview` decoding its latent with TAESD.
    A drawing is due on the first and last step of a pass, and otherwise once the time since the
    last decode reaches 1/DECODE_SHARE times what that decode took; a callback that never draws
    (the CLI's) costs nothing. Drawn in the generation thread: torch in a request thread slows
    the generation (see `preview_image`)."""

    def __init__(self, progress: ProgressCallback, decoder: TinyDecoder) -> None:
        self.progress, self.decoder = progress, decoder
        self.due = 0.0  # perf_counter time from which the next decode may run

    def __call__(self, event: GenerationProgress) -> None:
        self.progress(replace(event, draw_preview=partial(self.draw, event)))

    def draw(self, event: GenerationProgress) -> Image.Image | None:
        now = time.perf_counter()
        if event.step not in (1, event.steps) and now < self.due:
            return None
        image = decode_preview(self.decoder, event.latent[0])
        self.due = now + (time.perf_counter() - now) / DECODE_SHARE
        return image


class Previewer:
    """Fitted maps, one per loaded model (keyed by the components object), and the user's TAESD
    decoder (`emaki.engine.taesd`), kept while its file is unchanged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._maps: dict[int, tuple[SDComponents, np.ndarray]] = {}
        self._decoder: tuple[Path, float, TinyDecoder] | None = None

    def decoded(self, progress: ProgressCallback, components: SDComponents, workspace: Workspace) -> ProgressCallback:
        """`progress` with TAESD previews when the workspace has a TAESD decoder for this model's
        latents (SD 1.x: 4 channels, 8× smaller than the image); `progress` itself otherwise."""
        path = find_tiny_decoder(workspace)
        if path is None or components.config.vae_scale_factor != 8:
            return progress
        stamp = path.stat().st_mtime
        if self._decoder is None or self._decoder[:2] != (path, stamp):
            self._decoder = (path, stamp, load_tiny_decoder(path))
        decoder = self._decoder[2]
        if decoder.latent_channels != components.config.latent_channels:
            return progress
        return DecodedPreviews(progress, decoder)

    def prepare(self, components: SDComponents) -> np.ndarray:
        """The model's map as a numpy array; fitted (with torch) on first use, in the caller's
        thread: the worker's."""
        key = id(components)
        with self._lock:
            found = self._maps.get(key)
        if found is not None and found[0] is components:
            return found[1]
        matrix = fit_latent_to_rgb(components).numpy()
        with self._lock:
            self._maps = {key: (components, matrix)}  # models are swapped, not kept side by side
        return matrix

