"""The engine redesign changed no pixel and no infotext: every run recorded before it
(tests/engine/golden/, made by `golden_cases.py`'s parameters) is made again and compared."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from emaki.devices import DevicePolicy
from emaki.engine import Engine
from emaki.infotext import read_infotext
from emaki.params import GenerationParams
from emaki.workspace import Workspace
from golden_cases import CASES, GOLDEN_DIR, case_fields, make_networks


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    home = tmp_path_factory.mktemp("golden-home")
    embeddings, hypernetworks = make_networks(home)
    workspace = Workspace(home).with_folders("embeddings", [embeddings]).with_folders("hypernetworks", [hypernetworks])
    return Engine(workspace, DevicePolicy.choose("fp32", "cpu", threads=1))


@pytest.mark.parametrize("name", list(CASES))
def test_same_params_give_the_recorded_pixels_and_infotext(engine: Engine, name: str) -> None:
    result = engine.generate(GenerationParams.create(**case_fields(name)), save=False)
    recorded = sorted(GOLDEN_DIR.glob(f"{name}-*.png"))
    assert len(result.images) == len(recorded)
    for made, path in zip(result.images, recorded):
        assert made.infotext == read_infotext(path)
        with Image.open(path) as image:
            before = np.asarray(image.convert("RGB")).astype(np.int16)
        after = np.asarray(made.image).astype(np.int16)
        assert after.shape == before.shape
        # Bit-exact on the machine that recorded them; another CPU's float kernels may round
        # a channel by one.
        assert np.abs(after - before).max() <= 1, f"{name}: pixels differ from the recorded image"
