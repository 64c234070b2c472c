"""`emaki serve --executor ray --compile`: each actor's engine compiles its UNet, with inductor's
cache in the worker's own workspace (the actor's body, built here without a cluster)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emaki.engine.speed.compile import compile_cache_dir
from emaki.jobs.ray_serve import ServeActor


@pytest.mark.parametrize("compile", [True, False])
def test_an_actor_compiles_when_the_server_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                compile: bool) -> None:
    monkeypatch.setenv("EMAKI_HOME", str(tmp_path / "worker-home"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    actor = ServeActor(1, "fp32", compile)
    assert actor.slot.engine.policy.compile is compile
    expected = str(compile_cache_dir(tmp_path / "worker-home")) if compile else None
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR") == expected


def test_the_server_passes_compile_to_its_actors(monkeypatch: pytest.MonkeyPatch) -> None:
    from emaki.jobs import ray_serve
    from emaki.server.app import ServerSettings, make_executor

    seen: dict[str, object] = {}
    monkeypatch.setattr(ray_serve.RayServeExecutor, "connect",
                        classmethod(lambda cls, address, local, **options: seen.update(options)))
    make_executor(ServerSettings(executor="ray", compile=True), engine=object())  # type: ignore[arg-type]
    assert seen["compile"] is True
