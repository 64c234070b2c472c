"""The policy sees every prompt field of a generation, on every surface: the engine, the CLI,
both HTTP APIs — including the negative prompt when CFG < 1 makes it draw the picture."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from emaki.engine.policy import ensure_params_allowed
from emaki.errors import PolicyViolation
from emaki.params import GenerationParams
from emaki.server import ServerSettings, create_app

LOW_CFG_NEGATIVE = {"prompt": "1girl, smile", "negative_prompt": "child, nude", "cfg_scale": 0.0}


@pytest.mark.parametrize("fields", [
    LOW_CFG_NEGATIVE,
    {**LOW_CFG_NEGATIVE, "cfg_scale": 0.5},
    {"prompt": "1girl", "hr_prompt": "loli, nude", "enable_hr": False},  # refused even when hires is off
    {"prompt": "1girl", "hr_negative_prompt": "child, nude", "cfg_scale": 0.5},
])
def test_engine_refuses(fields):
    with pytest.raises(PolicyViolation):
        ensure_params_allowed(GenerationParams.create(**fields))


def test_negative_prompt_still_steers_away_at_normal_cfg():
    ensure_params_allowed(GenerationParams.create(prompt="1girl, smile", negative_prompt="child, nude, loli"))


def test_cli_refuses_with_exit_code_3(tmp_path, capsys):
    from emaki.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["generate", "1girl, smile", "--negative", "child, nude", "--cfg", "0", "--out", str(tmp_path)])
    assert exited.value.code == 3 and not list(tmp_path.iterdir())
    assert "negative prompt" in capsys.readouterr().err


def test_both_http_apis_refuse_before_queueing():
    with TestClient(create_app(ServerSettings(run_worker=False))) as client:
        a1111 = client.post("/sdapi/v1/txt2img", json=LOW_CFG_NEGATIVE)
        native = client.post("/api/jobs", json={"prompt": "1girl", "hr_prompt": "loli, nude"})
        assert a1111.status_code == 400 and "PolicyViolation" in a1111.text
        assert native.status_code == 400, native.text
        assert client.get("/api/jobs").json() == []
