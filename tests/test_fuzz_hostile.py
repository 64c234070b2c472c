"""Issue 16's fuzz test: malformed files at every loader, malformed bodies at every route.

Files: a seeded corpus (tests/hostile_fuzz.py) runs in a child process, bounded in time, and its
peak memory is read back: every file is loaded or refused with one line naming it; nothing else.
Bodies: each field of a valid request is replaced, one at a time, by a hostile value (huge and
negative numbers, NaN, wrong types, deep nesting, long strings); the answer is never a 5xx and the
server stays healthy.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from emaki.server import ServerSettings, create_app

FUZZ_SCRIPT = Path(__file__).with_name("hostile_fuzz.py")
MEMORY_BOUND_MIB = 2048


def test_every_malformed_file_is_loaded_or_refused_in_one_line_naming_it(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(FUZZ_SCRIPT), str(tmp_path / "files")], check=False,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    summary, results = rows[-1], rows[:-1]
    assert summary.get("summary") and len(results) > 300
    faults = [r for r in results if r["result"] == "crashed"
              or (r["result"] == "refused" and ("\n" in r["message"].strip() or r["file"] not in r["message"]))]
    assert not faults, "\n".join(f"{r['file']} via {r['loader']}: {r['message'][:200]}" for r in faults)
    assert summary["peak_rss_mib"] < MEMORY_BOUND_MIB, summary


HOSTILE_VALUES: list[Any] = [10**40, -(10**40), -1, 1e308, "NaN", "Infinity", "", "x" * 100_000, None, True,
                             [], {}, [[[[[]]]]], {"a": {"b": {"c": {}}}}, 2**63, 0.0001]

VALID_BODIES: dict[str, dict[str, Any]] = {
    "/sdapi/v1/txt2img": {"prompt": "1girl", "steps": 2, "width": 64, "height": 64, "seed": 1,
                          "sampler_name": "Euler a", "cfg_scale": 7, "batch_size": 1, "n_iter": 1, "eta": 0.0,
                          "s_noise": 1.0, "denoising_strength": 0.5, "enable_hr": False, "hr_scale": 2,
                          "seed_resize_from_w": 0, "seed_resize_from_h": 0, "subseed": 1, "subseed_strength": 0,
                          "negative_prompt": "", "restore_faces": False, "tiling": False},
    "/api/jobs": {"prompt": "1girl", "steps": 2, "width": 64, "height": 64, "seed": 1, "cfg_scale": 7},
    "/sdapi/v1/options": {"eta_noise_seed_delta": 0, "CLIP_stop_at_last_layers": 1, "samples_save": True},
    "/api/tokens": {"prompt": "1girl, red hair", "steps": 20},
    "/sdapi/v1/png-info": {"image": ""},
    "/sdapi/v1/create/embedding": {"name": "fuzzed", "num_vectors_per_token": 1, "init_text": "*"},
}


def _raw_json(body: dict[str, Any]) -> str:
    # "NaN"/"Infinity" are sent as the bare JSON extensions Python's json accepts, as a careless client would.
    text = json.dumps(body)
    for word in ("NaN", "Infinity"):
        text = text.replace(f'"{word}"', word)
    return text


def _fuzzed_bodies(rng: random.Random) -> Iterator[tuple[str, str, str]]:
    for route, valid in VALID_BODIES.items():
        for field in valid:
            for value in rng.sample(HOSTILE_VALUES, 5):
                yield route, f"{field}={str(value)[:20]}", _raw_json(valid | {field: value})
        yield route, "not an object", "[1, 2, 3]"
        yield route, "deep nesting", "[" * 5000 + "]" * 5000
        yield route, "broken json", '{"prompt": '


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("EMAKI_HOME", str(tmp_path / "home"))
    with TestClient(create_app(ServerSettings()), raise_server_exceptions=False) as test_client:
        yield test_client


def test_no_malformed_body_gets_a_server_error_and_the_server_stays_healthy(client: TestClient) -> None:
    failures = []
    for route, what, body in _fuzzed_bodies(random.Random(16)):
        response = client.post(route, content=body, headers={"content-type": "application/json"})
        if response.status_code >= 500:
            failures.append(f"{route} {what}: {response.status_code} {response.text[:160]}")
    assert not failures, "\n".join(failures)
    assert client.get("/api/health").json()["status"] == "ok"
    assert client.post("/sdapi/v1/txt2img", json=VALID_BODIES["/sdapi/v1/txt2img"]).status_code == 200
