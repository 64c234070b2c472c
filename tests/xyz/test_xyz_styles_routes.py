"""The Styles axis and the axis listing over HTTP and the CLI (in-process, demo model, 64x64, 2
steps): A1111's X/Y/Z `script_args` with a styles dropdown and seed -1, axes emaki cannot run
refused by name, `GET /api/grid/axes` and `emaki grid --list-axes` with this workspace's choices."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import run_cli
from fastapi.testclient import TestClient

from emaki.server import ServerSettings, create_app

FAST = {"prompt": "1girl", "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler a", "seed": -1}
STYLES = 'name,prompt,negative_prompt\nframe,"masterpiece, {prompt}",lowres\ntag,anime,\n'
TXT2IMG_STYLES, TXT2IMG_SIGMA_CHURN = 30, 13  # A1111 v1.10.1's txt2img axis numbers


def script_args(x_type: int, x_values: str, x_dropdown: list[str]) -> list[Any]:
    """A1111 1.7-1.10.1's 18 `script_args` (X axis only, sub images included)."""
    return [x_type, x_values, x_dropdown, 0, "", [], 0, "", [], True, True, False, False, False, False, False, 0, False]


@pytest.fixture
def client() -> Iterator[TestClient]:
    (Path(os.environ["EMAKI_HOME"]) / "styles.csv").write_text(STYLES, encoding="utf-8")
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def test_a1111_styles_axis_from_the_dropdown_with_one_seed_for_the_grid(client: TestClient) -> None:
    body = {**FAST, "script_name": "X/Y/Z plot", "script_args": script_args(TXT2IMG_STYLES, "", ["frame", "tag"])}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    grid, frame, tag = json.loads(response.json()["info"])["infotexts"]
    assert "X Type: Styles, X Values: \"frame,tag\"" in grid
    assert frame.startswith("masterpiece, 1girl\nNegative prompt: lowres\n") and tag.startswith("1girl, anime\n")
    seeds = {text.split("Seed: ")[1].split(",")[0] for text in (grid, frame, tag)}
    assert len(seeds) == 1 and seeds != {"-1"}  # seed -1 drawn once for every cell


def test_axes_emaki_cannot_run_are_422_naming_them(client: TestClient) -> None:
    body = {**FAST, "script_name": "X/Y/Z plot", "script_args": script_args(TXT2IMG_SIGMA_CHURN, "0, 1", [])}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 422 and "Sigma Churn" in response.text, response.text
    unknown = {**body, "script_args": script_args(TXT2IMG_STYLES, "frame, nope", [])}
    unknown["script_args"][-1] = True  # csv_mode: the text box counts
    response = client.post("/sdapi/v1/txt2img", json=unknown)
    assert response.status_code == 422 and "no style named 'nope'" in response.text, response.text
    assert client.get("/api/jobs").json() == []


def test_grid_axes_lists_kinds_and_the_workspaces_choices(client: TestClient) -> None:
    rows = {row["name"]: row for row in client.get("/api/grid/axes").json()}
    assert rows["Styles"] == {"name": "Styles", "label": "Styles", "kind": "choice", "type": "str",
                              "aliases": ["Style"], "mode": "both", "choices": ["frame", "tag"]}
    assert rows["Steps"]["kind"] == "number" and "choices" not in rows["Steps"]
    assert rows["Checkpoint name"]["choices"] == ["emaki-demo.safetensors"]


def test_cli_lists_the_axes_with_their_choices(capsys) -> None:
    (Path(os.environ["EMAKI_HOME"]) / "styles.csv").write_text(STYLES, encoding="utf-8")
    code, printed, err = run_cli(capsys, "grid", "--list-axes")
    assert code == 0, err
    lines = printed.splitlines()
    assert "Styles (also Style) — choice: frame, tag" in lines
    assert "Steps — number" in lines and "Sigma Churn" not in printed
