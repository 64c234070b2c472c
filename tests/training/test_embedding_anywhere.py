"""An embedding trained with the default template works wherever the prompt puts its name.

The default template (`tags_filewords`) once put the name first in every training prompt. On the
demo model, whose text encoder is small and sensitive to position, a one-vector embedding of green
hair (training seed 0) then drew green hair for "<name>, 1girl" (40 of 40) and for "1girl, <name>"
no more often than without it (5 of 40). Now the name takes a random place among the tags. The run
is in bf16, as measured (`benchmarks/train.py quality --kinds known`); in fp32 a one-vector
embedding of this colour works only first in the prompt either way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emaki.demo import describe
from emaki.demo.datasets import write_hair_color_dataset
from emaki.devices import DevicePolicy
from emaki.engine import Engine
from emaki.errors import ParamsError
from emaki.params import GenerationParams
from emaki.training.params import TrainingParams
from emaki.workspace import Workspace


def test_an_embedding_of_green_hair_works_after_other_tags(tmp_path: Path) -> None:
    data = tmp_path / "green"
    write_hair_color_dataset(data, "green")
    engine = Engine(Workspace(tmp_path / "home"), DevicePolicy.choose("bf16", "cpu", threads=1))
    engine.train(TrainingParams.create(kind="embedding", name="mystery", data=str(data), steps=400,
                                       preview_every=0, save_every=0))

    def green(prompt: str) -> int:
        result = engine.generate(GenerationParams.create(prompt=prompt, seed=1000, batch_size=8), save=False)
        return sum(describe(image.image)["hair_color"] == "green" for image in result.images)

    assert green("1girl") <= 2
    assert green("1girl, solo, mystery") >= 6
    assert green("mystery, 1girl") >= 6


def test_the_hair_color_dataset_names_a_wrong_colour(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="hair_color: expected one of black, .*got 'teal'"):
        write_hair_color_dataset(tmp_path, "teal")
    assert not any(tmp_path.iterdir())
