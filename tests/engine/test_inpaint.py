"""Inpainting (A1111 v1.10 semantics): on the demo model a masked region is redrawn and the rest
comes back pixel for pixel; the mask's blur, crop region and fill as A1111 computes them; the
infotext fields read back; a 9-channel inpainting checkpoint loads and gets its conditioning."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from engine_runner import engine_for, generate, runner_workspace
from PIL import Image
from safetensors.torch import save_file

from emaki.demo import describe
from emaki.demo.faces import HAIR_COLORS, FaceAttributes, draw_face
from emaki.engine.img2img import encode_pixels, image_pixels
from emaki.engine.inpaint import latent_mask
from emaki.engine.masking import blur_fill, blur_mask, crop_region, gaussian_kernel, widen_to_aspect
from emaki.errors import ParamsError
from emaki.infotext_codec import decode_infotext
from emaki.models.components import build_random_components
from emaki.models.configs import as_inpainting, tiny_config
from emaki.models.convert import components_to_ldm
from emaki.params import GenerationParams

PROMPT = "1girl, solo, long hair, blue hair, blue eyes, smile, white background"


def hair_mask(face: Image.Image) -> np.ndarray:
    """Where the red hair is drawn (True = repaint)."""
    pixels = np.asarray(face, dtype=np.int32)
    return np.abs(pixels - np.array(HAIR_COLORS["red"])).sum(-1) < 60


@pytest.fixture
def red_face(tmp_path):
    """A red-haired demo face and its hair mask, as files; and the mask as an array."""
    face = draw_face(FaceAttributes("red", "long hair", "blue", "smile", "white"))
    mask = hair_mask(face)
    face.save(tmp_path / "red.png")
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    return tmp_path / "red.png", tmp_path / "mask.png", mask


def inpaint(image, mask, **fields):
    params = GenerationParams.create(**({"prompt": PROMPT, "seed": 3, "steps": 20, "init_image": str(image),
                                         "mask": str(mask) if mask else None, "denoising_strength": 0.9} | fields))
    return generate(params, save=False)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("fields", [
    {"inpainting_fill": 1},  # original, whole picture
    {"inpainting_fill": 2, "denoising_strength": 1.0, "inpaint_full_res": True, "inpaint_full_res_padding": 8},
])
def test_inpainting_the_hair_blue_turns_it_blue_and_leaves_the_rest_identical(red_face, fields):
    image, mask_file, mask = red_face
    original = pixels(Image.open(image))
    result = inpaint(image, mask_file, mask_blur=0, batch_size=2, **fields)
    for made in result.images:
        assert describe(made.image)["hair_color"] == "blue"
        assert np.array_equal(pixels(made.image)[~mask], original[~mask])  # pixel for pixel
        assert np.abs(pixels(made.image)[mask].astype(int) - original[mask]).mean() > 40
    assert describe(Image.open(image))["hair_color"] == "red"


@pytest.mark.parametrize("fill, stays_red", [(0, False), (1, True), (2, False), (3, False)])
def test_masked_content_is_what_sampling_starts_from(red_face, fill, stays_red):
    image, mask_file, mask = red_face
    [made] = inpaint(image, mask_file, steps=10, mask_blur=0, inpainting_fill=fill, denoising_strength=0.3,
                     prompt=PROMPT.replace("blue hair, ", "")).images
    away_from_red = np.abs(pixels(made.image)[mask].astype(int) - HAIR_COLORS["red"]).sum(-1).mean()
    assert (away_from_red < 60) == stays_red, away_from_red  # a little noise: the start shows through


def test_every_model_call_is_blended_with_the_kept_init_latents(red_face):
    image, mask_file, _ = red_face
    latents: list[torch.Tensor] = []
    params = GenerationParams.create(prompt=PROMPT, seed=3, steps=6, sampler_name="Euler", init_image=str(image),
                                     mask=str(mask_file), mask_blur=0, denoising_strength=0.9)
    result = engine_for(runner_workspace()).generate(params, save=False,
                                                     progress=lambda event: latents.append(event.latent.clone()))
    init = encode_pixels(result.model.components.vae, image_pixels(Image.open(image)), torch.device("cpu"))
    kept = latent_mask(Image.open(mask_file), (16, 16), True)[0, 0] == 0
    # Euler with the kept part denoised to the init latents follows init + noise·sigma down to sigma 0.
    assert torch.allclose(latents[-1][0][:, kept], init[0][:, kept], atol=1e-3)
    assert not torch.allclose(latents[-1][0][:, ~kept], init[0][:, ~kept], atol=0.1)


@pytest.mark.parametrize("sampler", ["DDIM", "UniPC", "DPM++ 2M"])
def test_samplers_that_read_the_denoisers_sigmas_inpaint_too(red_face, sampler):
    image, mask_file, mask = red_face
    [made] = inpaint(image, mask_file, steps=4, mask_blur=0, sampler_name=sampler).images
    assert np.array_equal(pixels(made.image)[~mask], pixels(Image.open(image))[~mask])


def test_a_blurred_mask_keeps_every_pixel_beyond_the_blur(red_face):
    image, mask_file, mask = red_face
    [made] = inpaint(image, mask_file, steps=6).images  # mask_blur 4: 21 taps, 10 pixels each way
    grown = np.zeros_like(mask)
    for y, x in zip(*np.nonzero(mask)):
        grown[max(0, y - 10):y + 11, max(0, x - 10):x + 11] = True
    assert 0 < (~grown).sum() and np.array_equal(pixels(made.image)[~grown], pixels(Image.open(image))[~grown])


def test_the_init_images_transparency_is_the_mask(red_face, tmp_path):
    image, mask_file, mask = red_face
    see_through = Image.open(image).convert("RGBA")
    see_through.putalpha(Image.fromarray(np.where(mask, 0, 255).astype(np.uint8)))
    see_through.save(tmp_path / "transparent.png")
    flattened = tmp_path / "flat.png"  # what the init image is once its transparency is composited on white
    Image.alpha_composite(Image.new("RGBA", see_through.size, "white"), see_through).convert("RGB").save(flattened)
    by_alpha = inpaint(tmp_path / "transparent.png", None, steps=4).images[0]
    by_mask = inpaint(flattened, mask_file, steps=4).images[0]
    assert np.array_equal(pixels(by_alpha.image), pixels(by_mask.image))
    assert "Mask blur: 4" in by_alpha.infotext


def test_invert_repaints_what_the_mask_leaves_out(red_face, tmp_path):
    image, mask_file, mask = red_face
    Image.fromarray(np.where(mask, 0, 255).astype(np.uint8)).save(tmp_path / "rest.png")
    inverted = inpaint(image, tmp_path / "rest.png", inpainting_mask_invert=1, steps=4).images[0]
    assert np.array_equal(pixels(inverted.image), pixels(inpaint(image, mask_file, steps=4).images[0].image))
    assert "Mask mode: Inpaint not masked" in inverted.infotext


def test_an_empty_mask_falls_back_to_img2img_with_a_note(red_face, tmp_path, caplog):
    image, _, _ = red_face
    Image.new("L", (64, 64)).save(tmp_path / "empty.png")
    with caplog.at_level(logging.WARNING, logger="emaki.engine.inpaint"):
        empty = inpaint(image, tmp_path / "empty.png", steps=4, inpaint_full_res=True).images[0]
    assert "nothing to repaint" in caplog.text
    plain = inpaint(image, None, steps=4).images[0]
    assert np.array_equal(pixels(empty.image), pixels(plain.image)) and empty.infotext == plain.infotext


def test_only_masked_redraws_the_box_at_the_run_size_and_pastes_it_back(tmp_path):
    wide = Image.new("RGB", (160, 96), (170, 170, 170))
    wide.paste(draw_face(FaceAttributes("red", "short hair", "blue", "smile", "grey")), (80, 16))
    wide.save(tmp_path / "wide.png")
    mask = Image.new("L", wide.size)
    mask.paste(255, (100, 30, 120, 50))
    mask.save(tmp_path / "mask.png")
    result = inpaint(tmp_path / "wide.png", tmp_path / "mask.png", steps=4, width=64, height=64, mask_blur=0,
                     inpaint_full_res=True, inpaint_full_res_padding=8, denoising_strength=1.0)
    [made] = result.images
    assert made.image.size == (160, 96) and (result.params.width, result.params.height) == (64, 64)
    box = np.zeros((96, 160), dtype=bool)
    box[22:58, 92:128] = True  # the mask's box + 8 padding, already square
    assert np.array_equal(pixels(made.image)[~box], pixels(wide)[~box])
    assert not np.array_equal(pixels(made.image)[30:50, 100:120], pixels(wide)[30:50, 100:120])
    assert "Inpaint area: Only masked, Masked area padding: 8" in made.infotext


def test_inpainting_fields_are_written_as_a1111_and_read_back(red_face):
    image, mask_file, _ = red_face
    fields = {"mask_blur_x": 6, "mask_blur_y": 6, "inpainting_fill": 3, "inpaint_full_res": True,
              "inpaint_full_res_padding": 12, "inpainting_mask_invert": 1, "initial_noise_multiplier": 0.9}
    made = inpaint(image, mask_file, steps=2, **fields).images[0]
    assert ("Denoising strength: 0.9, RNG: CPU, Mask mode: Inpaint not masked, Mask blur: 6, Inpaint area: "
            "Only masked, Masked area padding: 12, Masked content: latent nothing, Noise multiplier: 0.9, Version"
            in made.infotext)
    back = decode_infotext(made.infotext)
    assert {k: getattr(back, k) for k in fields} == fields
    a1111 = decode_infotext("1girl\nSteps: 20, Sampler: Euler a, Seed: 1, Size: 512x512, Denoising strength: 0.75, "
                            "Conditional mask weight: 0.5, Mask blur: 4, Masked content: fill")
    assert (a1111.inpainting_mask_weight, a1111.mask_blur_x, a1111.inpainting_fill) == (0.5, 4, 0)
    assert not a1111.inpaint_full_res and a1111.inpaint_full_res_padding == 32  # A1111's web UI defaults
    with pytest.raises(ParamsError, match="Masked content"):
        decode_infotext("a\nSteps: 20, Seed: 1, Size: 64x64, Masked content: glitter")


def test_noise_multiplier_scales_the_img2img_noise(red_face):
    image, _, _ = red_face
    plain, scaled = inpaint(image, None, steps=4), inpaint(image, None, steps=4, initial_noise_multiplier=0.5)
    assert not np.array_equal(pixels(plain.images[0].image), pixels(scaled.images[0].image))
    assert "Noise multiplier: 0.5" in scaled.images[0].infotext and "Noise multiplier" not in plain.images[0].infotext


def test_mask_errors_name_the_field(red_face, tmp_path):
    image, mask_file, _ = red_face
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ParamsError, match="^mask: .*bad.png: not a readable image"):
        inpaint(image, tmp_path / "bad.png", steps=1)
    with pytest.raises(ParamsError, match="mask: .*init_image"):
        generate(GenerationParams.create(prompt="1girl", steps=1, mask=str(mask_file)), save=False)
    with pytest.raises(ParamsError, match="mask_blur"):
        GenerationParams.create(mask_blur=65)
    assert GenerationParams.create(mask_blur=7).model_dump()["mask_blur_y"] == 7


# --- the mask's arithmetic, as A1111 computes it ---

def test_mask_blur_uses_a1111s_kernel_size_per_axis():
    assert len(gaussian_kernel(4)) == 21 and len(gaussian_kernel(1.5)) == 9  # 2·int(2.5σ + 0.5) + 1
    dot = Image.new("L", (41, 41))
    dot.putpixel((20, 20), 255)
    across = np.asarray(blur_mask(dot, 2, 0)).astype(int)
    # 11 taps for sigma 2: the profile stops at 5 pixels (a full Gaussian would still give 1 at 6)
    assert np.array_equal(across[20, 15:26], np.rint(255 * gaussian_kernel(2))) and across.sum() == across[20].sum()
    assert across[20, 15] > 0 and across[20, 14] == 0
    both = np.asarray(blur_mask(dot, 2, 2)).astype(int)
    assert both.sum() > 0 and np.array_equal(both, both.T)  # x then y: symmetric for equal sigmas
    edge = Image.new("L", (10, 1), 255)
    assert np.asarray(blur_mask(edge, 3, 3)).min() == 255  # the border is mirrored, not black


def test_crop_region_is_widened_to_the_output_aspect_inside_the_image():
    mask = Image.new("L", (100, 60))
    assert crop_region(mask, 8) is None
    mask.paste(255, (2, 40, 10, 58))
    assert crop_region(mask, 4) == (0, 36, 14, 60)
    assert widen_to_aspect((0, 36, 14, 60), 64, 64, (100, 60)) == (0, 36, 24, 60)  # grown right off the edge
    assert widen_to_aspect((90, 0, 100, 10), 128, 64, (100, 60)) == (80, 0, 100, 10)
    assert widen_to_aspect((40, 20, 60, 22), 64, 64, (100, 60)) == (40, 11, 60, 31)  # about the middle


def test_fill_takes_colours_from_around_and_keeps_the_rest():
    image = Image.new("RGB", (64, 32), (200, 0, 0))
    image.paste((0, 0, 200), (32, 0, 64, 32))
    mask = Image.new("L", (64, 32))
    mask.paste(255, (24, 8, 40, 24))
    filled = pixels(blur_fill(image, mask)).astype(int)
    hole = filled[8:24, 24:40]
    assert hole.min() >= 0 and (hole[..., 0] + hole[..., 2]).min() > 120  # no black: red and blue bleed in
    assert hole[:, 0, 0].mean() > hole[:, -1, 0].mean() and hole[:, -1, 2].mean() > hole[:, 0, 2].mean()
    keep = np.asarray(mask) == 0
    assert np.array_equal(filled[keep], pixels(image)[keep])


# --- 9-channel inpainting checkpoints ---

@pytest.fixture(scope="module")
def inpainting_checkpoint(tmp_path_factory):
    """A tiny SD 1.5-inpainting-shaped checkpoint with no emaki metadata: sizes from the shapes."""
    parts = build_random_components(as_inpainting(tiny_config()), seed=1)
    state = components_to_ldm(parts.unet, parts.vae, parts.text_encoder, parts.config.unet, parts.config.vae)
    path = tmp_path_factory.mktemp("inpainting") / "tiny-inpainting.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def unet_inputs(model_path, params):
    """What the UNet's first convolution sees on each call of one generation."""
    engine = engine_for(runner_workspace())
    seen: list[torch.Tensor] = []
    unet = engine.load(str(model_path)).components.unet
    hook = unet.conv_in.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        result = engine.generate(params, save=False)
    finally:
        hook.remove()
    return result, seen


def test_a_9_channel_checkpoint_loads_and_txt2img_gets_a_blank_fully_masked_image(inpainting_checkpoint):
    params = GenerationParams.create(prompt="1girl", model=str(inpainting_checkpoint), steps=2, seed=1,
                                     width=32, height=32, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=1)
    result, seen = unet_inputs(inpainting_checkpoint, params)
    assert result.model.components.config.is_inpainting
    assert {tuple(x.shape[1:]) for x in seen} == {(9, 16, 16), (9, 24, 24)}  # both hires passes
    assert all(torch.equal(x[:, 4], torch.ones_like(x[:, 4])) for x in seen)
    assert "Conditional mask weight: 1, " in result.images[0].infotext


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_a_9_channel_model_gets_the_mask_and_the_masked_image(inpainting_checkpoint, tmp_path, weight):
    image = Image.new("RGB", (32, 32), (200, 40, 40))
    image.save(tmp_path / "init.png")
    mask = Image.new("L", (32, 32))
    mask.paste(255, (0, 0, 16, 32))
    mask.save(tmp_path / "mask.png")
    params = GenerationParams.create(prompt="1girl", model=str(inpainting_checkpoint), steps=2, seed=1,
                                     init_image=str(tmp_path / "init.png"), mask=str(tmp_path / "mask.png"),
                                     mask_blur=0, inpainting_mask_weight=weight)
    result, seen = unet_inputs(inpainting_checkpoint, params)
    latent_mask = torch.zeros(16, 16)
    latent_mask[:, :8] = 1  # the tiny VAE halves: the left half of the latents is repainted
    assert all(torch.equal(x[:, 4], latent_mask.expand_as(x[:, 4])) for x in seen)
    expected_in = image_pixels(image)
    if weight:
        expected_in[..., :16] = 0  # faded all the way: 0 (grey) in the VAE's [-1, 1] where masked
    expected = encode_pixels(result.model.components.vae, expected_in, torch.device("cpu"))
    assert all(torch.allclose(x[0, 5:], expected[0], atol=1e-4) for x in seen)
    assert f"Conditional mask weight: {weight:g}, " in result.images[0].infotext
