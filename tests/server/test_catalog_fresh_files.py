"""A checkpoint written after the server listed its folders is listed and found: a job that wrote
one makes the listing stale before anyone can see it done (`JobStore.before_finish`), a walk of the
folders that began before the file was made is not kept as the listing, and a file a user copies
in is found by name."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from emaki.jobs.store import JobStore
from emaki.server import ServerSettings, create_app
from emaki.server import catalog as catalog_module
from emaki.server.catalog import Catalog
from emaki.workspace import Workspace


def test_a_checkpoint_newer_than_the_listing_is_found_by_name(tiny_safetensors: Path) -> None:
    with TestClient(create_app(ServerSettings())) as client:
        listed = [m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()]
        assert "fresh" not in listed
        folder = Path(os.environ["EMAKI_HOME"]) / "models"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_safetensors, folder / "fresh.safetensors")

        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "fresh"}).status_code == 200
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("fresh.safetensors [")
        missing = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "stale"})
        assert missing.status_code == 400 and "no checkpoint 'stale'" in missing.text
        assert "fresh.safetensors" in missing.text  # the listing named in the error is the new one



def test_the_store_calls_before_finish_while_the_job_still_runs(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "server.db")
    seen: list[tuple[str, str]] = []
    store.before_finish.append(lambda job_id: seen.append(("before", store.get(job_id).status)))
    store.on_finish.append(lambda job_id: seen.append(("after", store.get(job_id).status)))
    job = store.submit({"prompt": "1girl"}, kind="merge")
    assert store.claim_next(timeout=1).id == job.id
    store.finish(job.id, "done", result={"path": "mix.safetensors"})
    assert seen == [("before", "running"), ("after", "done")]
    store.close()


def test_a_walk_that_began_before_a_file_was_made_is_not_kept(tiny_safetensors: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = Workspace(tmp_path / "home")
    folder = workspace.home / "models"
    folder.mkdir(parents=True)
    shutil.copyfile(tiny_safetensors, folder / "old.safetensors")
    catalog = Catalog(workspace)
    walk = catalog_module.take_inventory

    def walk_then_a_merge_ends(*args: object, **kwargs: object) -> object:
        """The folders walked, then a job writes its file into them and ends (as `before_finish`
        runs the server's `invalidate`) before the walk's result is stored."""
        inventory = walk(*args, **kwargs)
        if not (folder / "mix.safetensors").exists():
            shutil.copyfile(tiny_safetensors, folder / "mix.safetensors")
            catalog.invalidate()
        return inventory

    def listed() -> list[str]:
        return sorted(e.model_name for e in catalog.checkpoints() if e.model_name != "emaki-demo")

    monkeypatch.setattr(catalog_module, "take_inventory", walk_then_a_merge_ends)
    assert listed() == ["old"]  # the walk as it was
    assert listed() == ["mix", "old"]  # not kept: walked again
