"""`/sdapi/v1/cmd-flags`: A1111 v1.10.1's command-line flags (`vars(cmd_opts)`) with their
defaults, the folders being the workspace's.

The table is read from the v1.10.1 tag (commit 82a973c0) of AUTOMATIC1111/stable-diffusion-webui:
every `add_argument` of `modules/cmd_args.py` and of the built-in extensions' `preload.py` (LDSR,
Lora, ScuNET, SwinIR) by its argparse `dest`, plus the two `shared_cmd_options.py` derives. A
default A1111 computes from its install folder is None here: `workspace_flags` fills the ones
emaki has a folder for; the rest (a GFPGAN checkout, localizations, ...) emaki does not use.
"""

from __future__ import annotations

from typing import Any

from emaki.prompts.styles import styles_files
from emaki.server.extras import face_restorers_folder
from emaki.server.options import OPTIONS_FILE
from emaki.workspace import Workspace

A1111_CMD_FLAGS: dict[str, Any] = {
    "f": False,
    "update_all_extensions": False,
    "skip_python_version_check": False,
    "skip_torch_cuda_test": False,
    "reinstall_xformers": False,
    "reinstall_torch": False,
    "update_check": False,
    "test_server": False,
    "log_startup": False,
    "skip_prepare_environment": False,
    "skip_install": False,
    "dump_sysinfo": False,
    "loglevel": None,
    "do_not_download_clip": False,
    "data_dir": None,
    "models_dir": None,
    "config": None,
    "ckpt": None,
    "ckpt_dir": None,
    "vae_dir": None,
    "gfpgan_dir": "./GFPGAN",
    "gfpgan_model": None,
    "no_half": False,
    "no_half_vae": False,
    "no_progressbar_hiding": False,
    "max_batch_count": 16,
    "embeddings_dir": None,
    "textual_inversion_templates_dir": None,
    "hypernetwork_dir": None,
    "localizations_dir": None,
    "allow_code": False,
    "medvram": False,
    "medvram_sdxl": False,
    "lowvram": False,
    "lowram": False,
    "always_batch_cond_uncond": False,
    "unload_gfpgan": False,
    "precision": "autocast",
    "upcast_sampling": False,
    "share": False,
    "ngrok": None,
    "ngrok_region": "",
    "ngrok_options": {},
    "enable_insecure_extension_access": False,
    "codeformer_models_path": None,
    "gfpgan_models_path": None,
    "esrgan_models_path": None,
    "bsrgan_models_path": None,
    "realesrgan_models_path": None,
    "dat_models_path": None,
    "clip_models_path": None,
    "xformers": False,
    "force_enable_xformers": False,
    "xformers_flash_attention": False,
    "deepdanbooru": False,
    "opt_split_attention": False,
    "opt_sub_quad_attention": False,
    "sub_quad_q_chunk_size": 1024,
    "sub_quad_kv_chunk_size": None,
    "sub_quad_chunk_threshold": None,
    "opt_split_attention_invokeai": False,
    "opt_split_attention_v1": False,
    "opt_sdp_attention": False,
    "opt_sdp_no_mem_attention": False,
    "disable_opt_split_attention": False,
    "disable_nan_check": False,
    "use_cpu": [],
    "use_ipex": False,
    "disable_model_loading_ram_optimization": False,
    "listen": False,
    "port": None,
    "show_negative_prompt": False,
    "ui_config_file": None,
    "hide_ui_dir_config": False,
    "freeze_settings": False,
    "freeze_settings_in_sections": None,
    "freeze_specific_settings": None,
    "ui_settings_file": None,
    "gradio_debug": False,
    "gradio_auth": None,
    "gradio_auth_path": None,
    "gradio_img2img_tool": None,
    "gradio_inpaint_tool": None,
    "gradio_allowed_path": None,
    "opt_channelslast": False,
    "styles_file": [],
    "autolaunch": False,
    "theme": None,
    "use_textbox_seed": False,
    "disable_console_progressbars": False,
    "enable_console_prompts": False,
    "vae_path": None,
    "disable_safe_unpickle": False,
    "api": False,
    "api_auth": None,
    "api_log": False,
    "nowebui": False,
    "ui_debug_mode": False,
    "device_id": None,
    "administrator": False,
    "cors_allow_origins": None,
    "cors_allow_origins_regex": None,
    "tls_keyfile": None,
    "tls_certfile": None,
    "disable_tls_verify": None,
    "server_name": None,
    "gradio_queue": True,
    "no_gradio_queue": False,
    "skip_version_check": False,
    "no_hashing": False,
    "no_download_sd_model": False,
    "subpath": None,
    "add_stop_route": False,
    "api_server_stop": False,
    "timeout_keep_alive": 30,
    "disable_all_extensions": False,
    "disable_extra_extensions": False,
    "skip_load_model_at_start": False,
    "unix_filenames_sanitization": False,
    "filenames_max_length": 128,
    "no_prompt_history": False,
    "ldsr_models_path": None,
    "lora_dir": None,
    "lyco_dir_backcompat": None,
    "scunet_models_path": None,
    "swinir_models_path": None,
    "webui_is_non_local": False,
    "disable_extension_access": False,
}


def workspace_flags(workspace: Workspace) -> dict[str, Any]:
    """The folder flags as this workspace sets them: the first folder of each kind is emaki's
    own (where new files go), as an A1111 flag names one folder."""
    def first(kind: Any) -> str:
        return str(workspace.folders(kind)[0])

    upscalers = first("upscalers")  # spandrel reads every architecture from the one folder
    face_restorers = str(face_restorers_folder(workspace))
    return {
        "data_dir": str(workspace.home),
        "models_dir": str(workspace.home / "models"),
        "ckpt_dir": first("checkpoints"),
        "vae_dir": first("vaes"),
        "embeddings_dir": first("embeddings"),
        "hypernetwork_dir": first("hypernetworks"),
        "lora_dir": first("loras"),
        "lyco_dir_backcompat": first("loras"),
        "esrgan_models_path": upscalers,
        "realesrgan_models_path": upscalers,
        "bsrgan_models_path": upscalers,
        "dat_models_path": upscalers,
        "swinir_models_path": upscalers,
        "scunet_models_path": upscalers,
        "codeformer_models_path": face_restorers,
        "gfpgan_models_path": face_restorers,
        "ui_settings_file": str(workspace.home / OPTIONS_FILE),
        "styles_file": [str(path) for path in styles_files(workspace)],
        "gradio_allowed_path": [str(workspace.home)],
    }


def a1111_cmd_flags(workspace: Workspace) -> dict[str, Any]:
    """Every A1111 flag with its default, the folders filled from `workspace`."""
    return A1111_CMD_FLAGS | workspace_flags(workspace)
