"""The decoder of TAESD, the Tiny AutoEncoder for Stable Diffusion (madebyollin/taesd): a
small convolutional net taking SD 1.x latents (as the UNet sees them) to RGB in [0, 1] — a
sharper live preview than the linear map for a fraction of the VAE's cost. Only its weights
are the user's to supply (A1111 keeps them as `models/VAE-approx/taesd_decoder.pth`).

Layout (the weight files' keys are the indices of one `nn.Sequential`):

    clamp: 3·tanh(z/3) → conv 3×3 (C→64) → ReLU
    3 × [3 blocks → upsample ×2 (nearest) → conv 3×3 without bias]      (×8 in all)
    1 block → conv 3×3 (64→3)
    block(x) = ReLU(conv3(ReLU(conv2(ReLU(conv1(x))))) + x)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from emaki.errors import ModelLoadError
from emaki.models.safe_load import load_tensors
from emaki.workspace import Workspace

WIDTH = 64  # channels inside the decoder
FILE_NAMES = ("taesd_decoder.safetensors", "taesd_decoder.pth")  # the SD 1.x decoder, as madebyollin names it
APPROX_FOLDER = "VAE-approx"  # A1111's folder for preview decoders, beside models/VAE


def _conv(channels_in: int, channels_out: int, *, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft-clamps latents to ±3 (the range TAESD was trained on)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z / 3) * 3


class TinyBlock(nn.Module):
    """Three 3×3 convolutions with a residual connection (`conv.0`, `conv.2`, `conv.4` in the files)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
                                  _conv(channels, channels))
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + x)


class TinyDecoder(nn.Sequential):
    """TAESD's decoder: (B, C, h, w) latents → (B, 3, 8h, 8w) RGB in about [0, 1]."""

    def __init__(self, latent_channels: int = 4) -> None:
        layers: list[nn.Module] = [Clamp(), _conv(latent_channels, WIDTH), nn.ReLU()]
        for _ in range(3):
            layers += [TinyBlock(WIDTH), TinyBlock(WIDTH), TinyBlock(WIDTH), nn.Upsample(scale_factor=2),
                       _conv(WIDTH, WIDTH, bias=False)]
        layers += [TinyBlock(WIDTH), _conv(WIDTH, 3)]
        super().__init__(*layers)
        self.latent_channels = latent_channels


def decoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The decoder's tensors under `TinyDecoder`'s keys, from madebyollin's files (keys `1.weight`,
    ...), A1111's wrapped ones (`decoder.1.weight`) or diffusers' `AutoencoderTiny` (its
    `decoder.layers.N` is our N + 1: it clamps in code, not as a layer)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("decoder.layers."):
            index, rest = key.removeprefix("decoder.layers.").split(".", 1)
            out[f"{int(index) + 1}.{rest}"] = value
        elif key.startswith("decoder."):
            out[key.removeprefix("decoder.")] = value
        elif key[:1].isdigit():
            out[key] = value
    return out


def load_tiny_decoder(path: Path) -> TinyDecoder:
    """A TAESD decoder from a safetensors file, or a pickle through the restricted loader;
    `ModelLoadError` naming the file when its tensors are not a TAESD decoder's."""
    data, _ = load_tensors(path)
    state = decoder_state({k: v for k, v in data.items() if isinstance(v, torch.Tensor)})
    first = state.get("1.weight")
    if first is None or first.ndim != 4:
        raise ModelLoadError(f"{path}: not a TAESD decoder (expected a '1.weight' convolution from the latents)")
    decoder = TinyDecoder(latent_channels=first.shape[1])
    try:
        decoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = str(e).strip().splitlines()[-1].strip()
        raise ModelLoadError(f"{path}: not a TAESD decoder ({detail})") from None
    return decoder.eval().requires_grad_(False)


def find_tiny_decoder(workspace: Workspace) -> Path | None:
    """The user's TAESD decoder: `taesd_decoder.safetensors` or `.pth` in a VAE folder or in the
    `VAE-approx` folder beside it (A1111's place), emaki's own folders first."""
    for folder in workspace.folders("vaes"):
        for place in (folder.parent / APPROX_FOLDER, folder):
            for name in FILE_NAMES:
                if (place / name).is_file():
                    return place / name
    return None


@torch.inference_mode()
def decode_preview(decoder: TinyDecoder, latent: torch.Tensor) -> Image.Image:
    """One latent (C×h×w, as the UNet sees it) as an RGB image of 8h×8w pixels."""
    weight = next(decoder.parameters())
    rgb = decoder(latent[None].to(device=weight.device, dtype=weight.dtype))[0]
    pixels = (rgb.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(pixels))
