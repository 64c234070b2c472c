"""No change of the engine changes a pixel or an infotext: every recorded run (tests/engine/golden/,
made by `golden_cases.py`'s parameters) is made again and compared."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from emaki.engine import Engine
from emaki.infotext import read_infotext
from emaki.params import GenerationParams
from golden_cases import CASES, GOLDEN_DIR, case_fields, golden_engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return golden_engine(tmp_path_factory.mktemp("golden-home"))


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
