"""Small training sets drawn by `emaki.demo.faces`, for trying training on the demo model.

Each holds faces with one concept the demo model never saw — cat ears, or the sepia style — and
captions (`.txt` beside each image) that describe everything *except* that concept, as a user's
dataset for a new concept would:

    python -m emaki.demo.datasets cat_ears ./cat_ears      # 12 faces with cat ears
    python -m emaki.demo.datasets sepia ./sepia --count 12
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from emaki.demo.faces import HAIR_COLORS, FaceAttributes, caption, draw_face, random_attributes
from emaki.errors import ParamsError
from emaki.files import atomic_write

CONCEPTS = ("cat_ears", "sepia")


def write_concept_dataset(folder: Path, concept: str, *, count: int = 12, seed: int = 0) -> list[Path]:
    """`count` 64×64 faces showing `concept` as `<folder>/<nn>.png` + `<nn>.txt`; returns the images."""
    if concept not in CONCEPTS:
        raise ParamsError(f"concept: expected one of {', '.join(CONCEPTS)}, got {concept!r}")

    def showing_the_concept(plain: FaceAttributes) -> tuple[FaceAttributes, str]:
        if concept == "cat_ears":
            shown = replace(plain, cat_ears=True, accessory=None if plain.accessory == "hat" else plain.accessory)
            return shown, caption(replace(plain, accessory=shown.accessory))
        return replace(plain, style="sepia"), caption(plain)

    return _write_faces(folder, count, seed, showing_the_concept)


def write_hair_color_dataset(folder: Path, hair_color: str, *, count: int = 12, seed: int = 0) -> list[Path]:
    """`count` faces with `hair_color` hair, captioned without it: a concept the demo model can draw,
    to check that an embedding finds one (`benchmarks/train.py quality --kinds known`)."""
    if hair_color not in HAIR_COLORS:
        raise ParamsError(f"hair_color: expected one of {', '.join(HAIR_COLORS)}, got {hair_color!r}")

    def with_the_hair(plain: FaceAttributes) -> tuple[FaceAttributes, str]:
        face = replace(plain, hair_color=hair_color)
        return face, ", ".join(tag for tag in caption(face).split(", ") if tag != f"{hair_color} hair")

    return _write_faces(folder, count, seed, with_the_hair)


def _write_faces(folder: Path, count: int, seed: int,
                 shown: Callable[[FaceAttributes], tuple[FaceAttributes, str]]) -> list[Path]:
    """`count` random faces (seeded by `seed`), each as `shown` turns it into a face and its
    caption: `<folder>/<nn>.png` and `<nn>.txt`, each written atomically; returns the images."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(count):
        face, text = shown(random_attributes(rng))
        image_path = folder / f"{index:02d}.png"
        with atomic_write(image_path) as tmp:
            draw_face(face).save(tmp, format="PNG")
        with atomic_write(folder / f"{index:02d}.txt") as tmp:
            tmp.write_text(text, encoding="utf-8")
        written.append(image_path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a small demo training set of one new concept.")
    parser.add_argument("concept", choices=CONCEPTS)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_concept_dataset(args.folder, args.concept, count=args.count, seed=args.seed)
    print(f"wrote {len(paths)} images with captions to {args.folder}")


if __name__ == "__main__":
    main()
