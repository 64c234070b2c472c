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
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(count):
        plain = random_attributes(rng)
        if concept == "cat_ears":
            shown = replace(plain, cat_ears=True, accessory=None if plain.accessory == "hat" else plain.accessory)
            plain = replace(plain, accessory=shown.accessory)
        else:
            shown = replace(plain, style="sepia")
        written.append(_write_face(folder, index, shown, caption(plain)))
    return written


def write_hair_color_dataset(folder: Path, hair_color: str, *, count: int = 12, seed: int = 0) -> list[Path]:
    """`count` faces with `hair_color` hair, captioned without it: a concept the demo model can draw,
    to check that an embedding finds one (`benchmarks/train.py quality --kinds known`)."""
    if hair_color not in HAIR_COLORS:
        raise ParamsError(f"hair_color: expected one of {', '.join(HAIR_COLORS)}, got {hair_color!r}")
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(count):
        face = replace(random_attributes(rng), hair_color=hair_color)
        words = [tag for tag in caption(face).split(", ") if tag != f"{hair_color} hair"]
        written.append(_write_face(folder, index, face, ", ".join(words)))
    return written


def _write_face(folder: Path, index: int, face: FaceAttributes, text: str) -> Path:
    """`<folder>/<nn>.png` showing `face` and `<nn>.txt` holding `text`, each written atomically."""
    image_path = folder / f"{index:02d}.png"
    with atomic_write(image_path) as tmp:
        draw_face(face).save(tmp, format="PNG")
    with atomic_write(folder / f"{index:02d}.txt") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return image_path


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
