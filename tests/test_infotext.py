"""Infotext writing and parsing as A1111 v1.10.1 does it (specs/FORMATS.md §5)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from emaki.infotext import build_infotext, parse_infotext, read_infotext
from emaki.engine.output import save_png
from emaki.params import GenerationParams

A1111_SAMPLE = (
    "masterpiece, best quality, 1girl, (silver hair:1.2), smile\n"
    "Negative prompt: lowres, bad anatomy\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, "
    "Size: 512x768, Model hash: 6569e224, Model: anything-v3, Clip skip: 2, ENSD: 31337, "
    'TI hashes: "easynegative: c74b4e810b03, bad-hands-5: aa7651be154c", Version: v1.10.1'
)


def test_parse_real_a1111_infotext():
    d = parse_infotext(A1111_SAMPLE)
    assert d["Prompt"] == "masterpiece, best quality, 1girl, (silver hair:1.2), smile"
    assert d["Negative prompt"] == "lowres, bad anatomy"
    assert d["Steps"] == "28" and d["Sampler"] == "DPM++ 2M" and d["Schedule type"] == "Karras"
    assert (d["Size-1"], d["Size-2"]) == ("512", "768")
    assert d["TI hashes"] == "easynegative: c74b4e810b03, bad-hands-5: aa7651be154c"
    assert d["Clip skip"] == "2" and d["ENSD"] == "31337" and d["Version"] == "v1.10.1"


def test_multiline_prompts_and_a_last_line_that_is_prompt():
    d = parse_infotext("line one\nline two\nNegative prompt: bad\nworse\nSteps: 5, Seed: 3, Size: 64x64")
    assert d["Prompt"] == "line one\nline two"
    assert d["Negative prompt"] == "bad\nworse"
    only_prompt = parse_infotext("a cat, sitting: on a mat")  # fewer than 3 params: all prompt
    assert only_prompt["Prompt"] == "a cat, sitting: on a mat"
    assert only_prompt["Clip skip"] == "1" and only_prompt["RNG"] == "GPU"


def test_values_with_commas_colons_and_newlines_round_trip():
    fields = {"Steps": 20, "Model": 'odd, "name": x', "Note": "two\nlines", "Seed": 5}
    text = build_infotext("p", "", fields)
    assert 'Model: "odd, \\"name\\": x"' in text
    d = parse_infotext(text)
    assert d["Model"] == 'odd, "name": x' and d["Note"] == "two\nlines"


def test_empty_negative_prompt_line_is_omitted():
    assert "Negative prompt" not in build_infotext("p", "", {"Steps": 1, "Seed": 1, "Size": "8x8"})


def test_params_round_trip_through_infotext():
    params = GenerationParams.create(prompt="1girl, (red hair:1.3)\nsecond line", negative_prompt="lowres, 3d",
                                     seed=42, steps=12, cfg_scale=6.5, width=64, height=96, clip_skip=2,
                                     sampler_name="DPM++ 2M", scheduler="Karras", eta_noise_seed_delta=31337,
                                     subseed=7, subseed_strength=0.25)
    from emaki.infotext_codec import ImageFacts, decode_infotext, encode_infotext

    facts = ImageFacts(42, 7, model_name="tiny", model_hash="0123456789", version="emaki 0.1.0")
    text = encode_infotext(params, facts)
    back = decode_infotext(text)
    for field in ("prompt", "negative_prompt", "seed", "steps", "cfg_scale", "width", "height", "clip_skip",
                  "sampler_name", "scheduler", "eta_noise_seed_delta", "subseed", "subseed_strength", "rng"):
        assert getattr(back, field) == getattr(params, field), field
    assert back.model == "tiny"
    assert "Model hash: 0123456789" in text and "Version: emaki" in text


def test_png_text_chunk_latin1_and_unicode(tmp_path):
    image = Image.new("RGB", (8, 8))
    plain = save_png(image, "a cat\nSteps: 1, Seed: 1, Size: 8x8", tmp_path, 1)
    japanese = save_png(image, "猫耳の少女\nSteps: 1, Seed: 2, Size: 8x8", tmp_path, 2)
    assert read_infotext(plain).startswith("a cat")
    assert read_infotext(japanese).startswith("猫耳の少女")
    assert b"tEXtparameters" in plain.read_bytes()
    assert b"iTXtparameters" in japanese.read_bytes()


def test_save_never_overwrites(tmp_path):
    image = Image.new("RGB", (8, 8))
    paths = [save_png(image, "x", tmp_path, 7) for _ in range(3)]
    assert [p.name for p in paths] == ["00000-7.png", "00001-7.png", "00002-7.png"]
    assert not list(tmp_path.glob("*.tmp"))


def test_jpeg_exif_user_comment(tmp_path):
    text = "a cat\nSteps: 20, Sampler: Euler a, Seed: 1, Size: 8x8"
    image = Image.new("RGB", (8, 8))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be")
    path = tmp_path / "a.jpg"
    image.save(path, exif=exif)
    assert read_infotext(path) == text


def test_novelai_image_is_read_as_a1111_does(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", "NovelAI")
    info.add_text("Description", "1girl, {{silver hair}}")
    info.add_text("Comment", json.dumps({"steps": 28, "sampler": "k_euler_ancestral", "scale": 11,
                                         "seed": 99, "width": 512, "height": 768, "uc": "lowres"}))
    path = tmp_path / "nai.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    d = parse_infotext(read_infotext(path))
    assert d["Prompt"] == "1girl, {{silver hair}}" and d["Negative prompt"] == "lowres"
    assert d["Sampler"] == "Euler a" and d["Seed"] == "99" and d["ENSD"] == "31337" and d["Clip skip"] == "2"


def test_image_without_parameters(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(path)
    assert read_infotext(path) is None


@pytest.mark.parametrize("bad", [{"width": 500}, {"seed": -2}, {"steps": 0}, {"seed": 2**32}])
def test_bad_params_name_the_field(bad):
    from emaki.errors import ParamsError

    with pytest.raises(ParamsError, match=next(iter(bad))):
        GenerationParams.create(**bad)
