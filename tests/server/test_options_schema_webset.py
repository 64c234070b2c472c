"""`options_schema`: what the page's Settings editor is built from, checked against the settings
themselves (every key once, A1111's sections in A1111's order, types `check_option` accepts)."""

from __future__ import annotations

from emaki.server.a1111_options import A1111_OPTIONS, A1111_SECTIONS
from emaki.server.options import DEFAULTS, check_option, options_schema


def test_every_setting_is_described_once_in_order() -> None:
    schema = options_schema()
    assert [row["key"] for row in schema] == list(DEFAULTS)
    assert len(schema) == len(A1111_OPTIONS) + 1  # emaki's sd_hypernetwork_strength


def test_sections_start_at_known_keys_in_the_settings_order() -> None:
    keys = list(A1111_OPTIONS)
    starts = [keys.index(key) for key, _ in A1111_SECTIONS]  # ValueError: a key the settings lack
    assert starts == sorted(starts) and starts[0] == 0
    by_key = {row["key"]: row for row in options_schema()}
    assert by_key["CLIP_stop_at_last_layers"]["section"] == "Stable Diffusion"
    assert by_key["save_txt"]["section"] == "Infotext"
    assert by_key["outdir_samples"]["section"] == "Paths for saving"
    assert by_key["lora_functional"]["section"] == "Extra Networks"
    assert by_key["ldsr_cached"]["section"] == "Upscaling"
    assert by_key["sd_hypernetwork_strength"]["section"] == "emaki"


def test_types_choices_and_flags_match_what_the_server_accepts() -> None:
    by_key = {row["key"]: row for row in options_schema()}
    assert by_key["samples_save"]["type"] == "bool"
    assert by_key["jpeg_quality"]["type"] == "int"
    assert by_key["img_downscale_threshold"]["type"] == "float"
    assert by_key["quicksettings_list"]["type"] == "list"
    assert by_key["upscaler_for_img2img"]["type"] == "text-or-null"
    assert by_key["randn_source"]["choices"] == ["CPU", "GPU", "NV"]
    assert by_key["emphasis"]["choices"] == ["Original", "No norm", "Ignore", "None"]
    assert by_key["CLIP_stop_at_last_layers"]["applied"] and not by_key["samples_save"]["applied"]
    assert by_key["outdir_samples"]["readonly"] and by_key["sd_checkpoint_hash"]["readonly"]
    for row in by_key.values():
        if row["choices"]:
            for choice in row["choices"]:
                check_option(row["key"], choice)  # every choice offered is accepted
