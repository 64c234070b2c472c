"""Token merging in the hires fix's second pass (A1111's `token_merging_ratio_hr`, falling back to
`token_merging_ratio`; infotext `Token merging ratio hr`) on every surface: the engine, the CLI,
the A1111 routes with their settings (and `token_merging_ratio_img2img`); the X/Y/Z axis is in test_tome.py."""

from __future__ import annotations

import base64
import io
import json

from cli_runner import run_cli
from engine_runner import generate
from PIL import Image
from test_tome import attention_tokens, params, unet

from emaki.infotext import parse_infotext, read_infotext
from emaki.infotext_codec import decode_infotext

HIRES = {"enable_hr": True, "hr_scale": 2.0, "denoising_strength": 0.5}


def first_block_tokens(**fields: object) -> tuple[list[int], dict[str, str]]:
    """The token counts the first full-resolution self-attention saw, call by call, and the infotext."""
    with attention_tokens(unet()) as seen:
        result = generate(params(**(HIRES | fields)), save=False)
    first = sorted(name for name in seen if name.startswith("down_blocks.0."))[0]
    return seen[first], parse_infotext(result.images[0].infotext)


def test_the_second_pass_merges_its_own_ratio_and_falls_back_to_the_first_passs():
    # demo model: 16x16 latent tokens in the first pass, 32x32 in the second; CFG batches (4 steps each)
    tokens, infotext = first_block_tokens(token_merging_ratio_hr=0.5)
    assert tokens == [256] * 4 + [512] * 4
    assert infotext["Token merging ratio hr"] == "0.5" and "Token merging ratio" not in infotext
    assert decode_infotext("1girl\nSteps: 4, Seed: 1, Size: 64x64, Token merging ratio hr: 0.5").token_merging_ratio_hr == 0.5

    tokens, infotext = first_block_tokens(token_merging_ratio=0.5)
    assert tokens == [128] * 4 + [512] * 4
    assert infotext["Token merging ratio"] == "0.5" and infotext["Token merging ratio hr"] == "0.5"  # as A1111 writes it

    tokens, infotext = first_block_tokens(token_merging_ratio=0.5, token_merging_ratio_hr=0.25)
    assert tokens == [128] * 4 + [768] * 4
    assert (infotext["Token merging ratio"], infotext["Token merging ratio hr"]) == ("0.5", "0.25")


def test_without_a_hires_fix_the_hires_ratio_does_nothing():
    with attention_tokens(unet()) as seen:
        result = generate(params(token_merging_ratio_hr=0.5), save=False)
    assert set(seen[sorted(n for n in seen if n.startswith("down_blocks.0."))[0]]) == {256}
    assert "Token merging ratio" not in result.images[0].infotext


def test_cli_flag(tmp_path, capsys):
    code, printed, err = run_cli(capsys, "generate", "1girl", "--steps", "2", "--seed", "5", "--hires",
                                 "--hr-token-merging", "0.3", "--out", str(tmp_path), "--precision", "fp32")
    assert code == 0, err
    assert parse_infotext(read_infotext(printed.strip()) or "")["Token merging ratio hr"] == "0.3"


def test_a1111_fields_and_settings():
    from fastapi.testclient import TestClient

    from emaki.server import ServerSettings, create_app

    fast = {"prompt": "1girl", "seed": 3, "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler"}
    hires = {"enable_hr": True, "hr_scale": 1.5, "denoising_strength": 0.5}
    with TestClient(create_app(ServerSettings())) as client:
        def infotext(route: str = "txt2img", **body: object) -> dict[str, str]:
            response = client.post(f"/sdapi/v1/{route}", json=fast | body)
            assert response.status_code == 200, response.text
            return parse_infotext(json.loads(response.json()["info"])["infotexts"][0])

        assert infotext(**hires, token_merging_ratio_hr=0.3)["Token merging ratio hr"] == "0.3"
        assert infotext(**hires, override_settings={"token_merging_ratio_hr": 0.2})["Token merging ratio hr"] == "0.2"
        # img2img takes `token_merging_ratio_img2img` when the request and its overrides set no ratio
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), "white").save(buffer, format="PNG")
        image = base64.b64encode(buffer.getvalue()).decode()
        img2img = {"init_images": [image], "denoising_strength": 0.5}
        settings = {"token_merging_ratio_img2img": 0.4}
        assert infotext("img2img", **img2img, override_settings=settings)["Token merging ratio"] == "0.4"
        assert infotext("img2img", **img2img, token_merging_ratio=0.6,
                        override_settings=settings)["Token merging ratio"] == "0.6"
        assert "Token merging ratio" not in infotext(override_settings=settings)  # not for txt2img
        refused = client.post("/sdapi/v1/options", json={"token_merging_ratio_img2img": 2})
        assert refused.status_code == 422 and "token_merging_ratio_img2img" in refused.text  # the ratio's rule

