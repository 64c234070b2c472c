"""`/sdapi/v1/options` with A1111 v1.10.1's whole option set, and `/sdapi/v1/cmd-flags` with
its flags, the folders being the server's workspace."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from emaki.server import ServerSettings, create_app
from emaki.workspace import Workspace

FAST = {"steps": 2, "width": 64, "height": 64, "sampler_name": "Euler a", "seed": 3}
# A sample of A1111 v1.10.1's settings from every part of it (shared_options.py's sections, the
# prompt comments script, the built-in extensions), with their defaults.
A1111_DEFAULTS: dict[str, Any] = {
    "samples_save": True, "samples_format": "png", "save_images_replace_action": "Replace",
    "send_seed": True, "send_size": True, "jpeg_quality": 80, "img_downscale_threshold": 4.0,
    "quicksettings_list": ["sd_model_checkpoint"], "realesrgan_enabled_models": ["R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"],
    "upscaler_for_img2img": None, "sd_vae": "Automatic", "sd_vae_overrides_per_model_preferences": True,
    "hires_fix_refiner_pass": "second pass", "sd3_enable_t5": False, "sd_noise_schedule": "Default",
    "token_merging_ratio": 0.0, "s_churn": 0.0, "eta_ancestral": 1.0, "uni_pc_order": 3,
    "show_progress_every_n_steps": 10, "live_previews_image_format": "png", "interrupt_after_current": True,
    "enable_prompt_comments": True, "sd_lora": "None", "lora_preferred_name": "Alias from file",
    "lora_functional": False, "canvas_hotkey_zoom": "Alt", "extra_options_txt2img": [], "hypertile_max_tile_unet": 256,
    "SCUNET_tile": 256, "SWIN_tile": 192, "ldsr_steps": 100, "CLIP_stop_at_last_layers": 1, "eta_noise_seed_delta": 0,
}
# Settings checked by name or by the generation field they fill: changed to another valid value.
SPECIAL_VALUES: dict[str, Any] = {
    "CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337, "randn_source": "NV", "emphasis": "No norm",
    "sd_hypernetwork_strength": 0.5, "initial_noise_multiplier": 0.9, "inpainting_mask_weight": 0.5,
    "token_merging_ratio": 0.5, "token_merging_ratio_hr": 0.3, "token_merging_ratio_img2img": 0.4,
}
UNCHANGEABLE = {"sd_model_checkpoint", "sd_checkpoint_hash", "sd_vae", "sd_hypernetwork"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def client(home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings(workspace=Workspace(home), run_worker=False))) as test_client:
        yield test_client


def changed(key: str, value: Any) -> Any:
    """Another value of the same type as `value`."""
    if key in SPECIAL_VALUES:
        return SPECIAL_VALUES[key]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, list):
        return [*value, "x"]
    return "changed" if value is None else value + "x"


def test_options_are_a1111s_whole_set_with_its_defaults_and_the_servers_own_values(client: TestClient,
                                                                                    home: Path) -> None:
    options = client.get("/sdapi/v1/options").json()
    assert len(options) >= 320
    assert {key: options[key] for key in A1111_DEFAULTS} == A1111_DEFAULTS
    assert options["randn_source"] == "CPU"  # emaki's default: the same picture on every device
    outdirs = {key: value for key, value in options.items() if key.startswith("outdir_")}
    assert len(outdirs) == 9 and set(outdirs.values()) == {str(home / "outputs")}
    model = client.get("/sdapi/v1/sd-models").json()[0]
    assert options["sd_model_checkpoint"] == model["title"] and options["sd_checkpoint_hash"] == model["sha256"]


def test_every_setting_round_trips_and_persists_across_a_restart(home: Path) -> None:
    settings = ServerSettings(workspace=Workspace(home), run_worker=False)
    with TestClient(create_app(settings)) as first:
        before = first.get("/sdapi/v1/options").json()
        assert len(before) >= 320
        assert first.post("/sdapi/v1/options", json=before).status_code == 200
        assert first.get("/sdapi/v1/options").json() == before
        wanted = before | {key: changed(key, value) for key, value in before.items()
                           if key not in UNCHANGEABLE and not key.startswith("outdir_")}
        answer = first.post("/sdapi/v1/options", json=wanted)
        assert answer.status_code == 200, answer.text
        assert first.get("/sdapi/v1/options").json() == wanted
    with TestClient(create_app(settings)) as second:
        assert second.get("/sdapi/v1/options").json() == wanted


def test_settings_emaki_implements_are_applied(home: Path) -> None:
    with TestClient(create_app(ServerSettings(workspace=Workspace(home)))) as client:
        assert client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2,
                                                      "eta_noise_seed_delta": 31337}).status_code == 200
        answer = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl", **FAST})
        assert answer.status_code == 200, answer.text
        infotext = json.loads(answer.json()["info"])["infotexts"][0]
        assert "Clip skip: 2" in infotext and "ENSD: 31337" in infotext


@pytest.mark.parametrize("key, value, expected", [
    ("send_seed", "yes", "true or false"), ("send_seed", None, "true or false"),
    ("jpeg_quality", "90", "a number"), ("jpeg_quality", True, "a number"), ("img_downscale_threshold", "NaN", "a number"),
    ("samples_format", 5, "a string"), ("quicksettings_list", "sd_vae", "a list of strings"),
    ("quicksettings_list", [1, 2], "a list of strings"), ("upscaler_for_img2img", 3, "a string or null"),
    ("CLIP_stop_at_last_layers", 99, "12"), ("randn_source", "quantum", "CPU"),
])
def test_a_wrong_type_is_422_naming_the_key_and_nothing_is_applied(client: TestClient, key: str, value: Any,
                                                                  expected: str) -> None:
    body = json.dumps({"jpeg_quality": 95, key: value}) if key != "jpeg_quality" else json.dumps({key: value})
    answer = client.post("/sdapi/v1/options", content=body.replace('"NaN"', "NaN"),
                         headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert key in answer.json()["detail"] and expected in answer.json()["detail"]
    assert client.get("/sdapi/v1/options").json()["jpeg_quality"] == 80


def test_unknown_keys_are_422_naming_them_and_nothing_is_applied(client: TestClient) -> None:
    title = client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
    answer = client.post("/sdapi/v1/options", json={"jpeg_quality": 95, "sd_model_checkpoint": title,
                                                    "not_a_setting": 1, "sd_vae_as_default": True})
    assert answer.status_code == 422
    assert "not_a_setting" in answer.json()["detail"] and "sd_vae_as_default" in answer.json()["detail"]
    assert client.get("/sdapi/v1/options").json()["jpeg_quality"] == 80
    refused = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl", **FAST,
                                                     "override_settings": {"no_such_setting": 1}})
    assert refused.status_code == 422 and "no_such_setting" in refused.json()["detail"]
    assert client.get("/api/jobs").json() == []


def test_output_folders_are_the_workspaces(client: TestClient, home: Path) -> None:
    assert client.post("/sdapi/v1/options", json={"outdir_samples": "", "outdir_grids": str(home / "outputs")}
                       ).status_code == 200
    answer = client.post("/sdapi/v1/options", json={"outdir_txt2img_samples": "/tmp/elsewhere"})
    assert answer.status_code == 422 and "outdir_txt2img_samples" in answer.json()["detail"]
    assert str(home / "outputs") in answer.json()["detail"]


def test_a_client_setting_the_checkpoint_from_a_whole_options_dict(client: TestClient, home: Path,
                                                                   tiny_safetensors: Path) -> None:
    """webuiapi's habit: GET the options, change the checkpoint, POST them all back (with the
    old checkpoint's hash, which follows the checkpoint)."""
    (home / "models").mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_safetensors, home / "models" / "other.safetensors")
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    other = next(row for row in client.get("/sdapi/v1/sd-models").json() if row["model_name"] == "other")
    options = client.get("/sdapi/v1/options").json()
    assert client.post("/sdapi/v1/options", json=options | {"sd_model_checkpoint": "other"}).status_code == 200
    now = client.get("/sdapi/v1/options").json()
    assert (now["sd_model_checkpoint"], now["sd_checkpoint_hash"]) == (other["title"], other["sha256"])
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "missing"}).status_code == 400
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == other["title"]


A1111_FLAGS = {  # a sample of A1111 v1.10.1's `vars(cmd_opts)` with their defaults
    "f": False, "skip_torch_cuda_test": False, "no_half": False, "medvram": False, "lowvram": False,
    "xformers": False, "opt_sdp_attention": False, "use_cpu": [], "max_batch_count": 16, "sub_quad_q_chunk_size": 1024,
    "hide_ui_dir_config": False, "freeze_settings": False, "disable_safe_unpickle": False, "gradio_queue": True,
    "timeout_keep_alive": 30, "filenames_max_length": 128, "ngrok_options": {}, "disable_tls_verify": None,
    "no_hashing": False, "api_log": False, "cors_allow_origins": None, "webui_is_non_local": False,
}


def test_cmd_flags_are_a1111s_with_the_workspace_folders(tmp_path: Path) -> None:
    home, webui, extra = tmp_path / "home", tmp_path / "webui", tmp_path / "more-loras"
    webui.mkdir()
    workspace = Workspace(home, webui).with_folders("loras", [extra])
    with TestClient(create_app(ServerSettings(workspace=workspace, run_worker=False))) as client:
        flags = client.get("/sdapi/v1/cmd-flags").json()
    assert len(flags) >= 128
    assert {key: flags[key] for key in A1111_FLAGS} == A1111_FLAGS
    assert flags["data_dir"] == str(home) and flags["ckpt_dir"] == str(home / "models")
    assert flags["vae_dir"] == str(home / "models" / "VAE") and flags["embeddings_dir"] == str(home / "embeddings")
    assert flags["hypernetwork_dir"] == str(home / "hypernetworks") and flags["lora_dir"] == str(extra)
    assert flags["esrgan_models_path"] == flags["realesrgan_models_path"] == str(home / "upscalers")
    assert flags["ui_settings_file"] == str(home / "server-options.json")
    assert flags["styles_file"] == [str(home / "styles.csv"), str(webui / "styles.csv")]
    assert flags["a1111"] == str(webui) and flags["api"] is True and flags["listen"] is False


def test_cmd_flags_never_show_the_password(tmp_path: Path) -> None:
    settings = ServerSettings(workspace=Workspace(tmp_path), credentials={"alice": "s3cret-pass"}, run_worker=False)
    with TestClient(create_app(settings)) as client:
        answer = client.get("/sdapi/v1/cmd-flags", auth=("alice", "s3cret-pass"))
    assert answer.status_code == 200 and "s3cret-pass" not in answer.text
    assert answer.json()["api_auth"] is True
