"""The training set of an embedding or a hypernetwork, with A1111 v1.10's dataset semantics.

Images: every PNG/JPEG/WebP directly in one folder, EXIF-rotated, RGB, resized to the training
size (or, with `varsize`, center-cropped to multiples of 8), as `pixels = rgb / 127.5 - 1`.
Caption (`[filewords]`): `<stem>.txt` beside the image, else the file stem without leading
numbers, optionally filtered by `filename_regex`. Each step's prompt is a random template line
with `[name]` → the trained token and `[filewords]` → the caption, its comma-separated tags
optionally dropped (`tag_drop_out`) and shuffled. Latents are encoded once (`LatentCache`);
batches never mix image sizes (`batch_order`).

kohya's additions: `N_name` subfolders (their images used N times per epoch, `repeats` times for
those directly in the folder) and aspect-ratio buckets (`buckets`: each image fitted to the
bucket nearest its aspect ratio, `emaki.training.buckets`).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from emaki.errors import ParamsError
from emaki.safe_regex import bounded_regex
from emaki.training.buckets import bucket_resolutions, check_buckets, fit_to_bucket, nearest_bucket
from emaki.training.params import MAX_REPEATS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
LATENT_SAMPLING_METHODS = ("once", "deterministic", "random")
_REPEAT_FOLDER = re.compile(r"^(\d+)_(.*)$")  # kohya's "10_sepia": 10 repeats of class "sepia"
# A1111's re_numbers_at_start: the "00012-" an image saved by a UI starts with.
_NUMBERS_AT_START = re.compile(r"^[-\d]+\s*")
# Pillow's ways of saying "this is not an image it can read".
_UNREADABLE = (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError)

log = logging.getLogger("emaki.training")


@dataclass(frozen=True, eq=False)
class TrainingImage:
    """One training image, ready for the VAE (compared by identity: it holds tensors)."""

    path: Path
    pixels: torch.Tensor  # float32 [3, H, W] in [-1, 1] (RGB)
    weight: torch.Tensor | None  # float32 [H, W] alpha in [0, 1] (with use_weight), else None
    filewords: str  # the caption ([filewords])
    repeats: int = 1  # times it is used per epoch (kohya's `N_name` folders, `repeats`)


def load_images(
    folder: Path,
    *,
    size: tuple[int, int] | None,
    varsize: bool,
    use_weight: bool,
    filename_regex: str = "",
    filename_join: str = " ",
    buckets: tuple[int, int, int] | None = None,
    repeats: int = 1,
) -> list[TrainingImage]:
    """The images directly in `folder`, by name, used `repeats` times per epoch, then those of
    its kohya-style `N_name` subfolders, used N times (their caption without a `.txt`: `name`);
    `size` is (W, H), unused with `varsize`; with `buckets` (min, max, step) it is the largest
    area and each image is fitted to its aspect-ratio bucket (`emaki.training.buckets`).
    Unreadable images are skipped (and logged); a folder with none readable is an error."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ParamsError(f"{folder}: the training data folder {what}")
    if not varsize:
        if size is None:
            raise ParamsError("size: the training width and height are needed unless varsize is on")
        if size[0] < 8 or size[1] < 8 or size[0] % 8 or size[1] % 8:
            raise ParamsError(f"size: width and height must be multiples of 8, got {size[0]}x{size[1]}")
    _filename_pattern(filename_regex)  # a bad regex fails even when every caption is a .txt
    bucket_sizes = sorted(bucket_resolutions(size, *check_buckets(buckets))) if buckets and size else None
    images: list[TrainingImage] = []
    unreadable: list[str] = []
    for path, times, class_caption in image_files(folder, repeats):
        try:
            with Image.open(path) as opened:
                image = ImageOps.exif_transpose(opened)
                image.load()
        except _UNREADABLE as e:
            log.warning("%s: skipped, not a readable image (%s)", path, e)
            unreadable.append(path.name)
            continue
        alpha = image.convert("RGBA").getchannel("A") if use_weight and image.has_transparency_data else None
        rgb = image.convert("RGB")
        if bucket_sizes is not None:
            bucket = nearest_bucket(rgb.size, bucket_sizes)
            rgb = fit_to_bucket(rgb, bucket)
            alpha = fit_to_bucket(alpha, bucket) if alpha is not None else None
        elif not varsize:
            assert size is not None
            rgb = rgb.resize(size, Image.Resampling.BICUBIC)
            alpha = alpha.resize(size, Image.Resampling.BICUBIC) if alpha is not None else None
        else:
            box = _crop_to_multiple_of_8(rgb.size)
            if box is None:
                log.warning("%s: skipped, smaller than 8x8 pixels", path)
                unreadable.append(path.name)
                continue
            rgb = rgb.crop(box)
            alpha = alpha.crop(box) if alpha is not None else None
        pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
        weight = torch.from_numpy(np.asarray(alpha, dtype=np.float32) / 255) if alpha is not None else None
        if class_caption and caption_file(path) is None:
            caption = class_caption  # kohya: an image without a caption file is its folder's class
        else:
            caption = caption_for(path, filename_regex, filename_join)
        images.append(TrainingImage(path, pixels.contiguous(), weight, caption, times))
    if not images:
        skipped = f" ({len(unreadable)} unreadable: {', '.join(unreadable[:5])})" if unreadable else ""
        raise ParamsError(f"{folder}: no training images (PNG/JPEG/WebP) found{skipped}")
    return images


def image_files(folder: Path, repeats: int = 1) -> list[tuple[Path, int, str | None]]:
    """(image, times per epoch, its folder's class caption) for the images directly in `folder`
    (`repeats` times, no class) and in its `N_name` subfolders (N times, class `name`), by name."""
    if not 1 <= repeats <= MAX_REPEATS:
        raise ParamsError(f"repeats: expected 1 to {MAX_REPEATS}, got {repeats}")
    found: list[tuple[Path, int, str | None]] = [(p, repeats, None) for p in _images_in(folder)]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        match = _REPEAT_FOLDER.match(sub.name)
        if match is None:
            continue
        times = int(match.group(1))
        if not 1 <= times <= MAX_REPEATS:
            raise ParamsError(f"{sub}: {times} repeats in the folder name; expected 1 to {MAX_REPEATS}")
        found += [(p, times, match.group(2).strip() or None) for p in _images_in(sub)]
    return found


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _crop_to_multiple_of_8(size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The centered box of `size` (W, H) whose sides are multiples of 8 (the VAE's factor)."""
    width, height = size
    crop_w, crop_h = width - width % 8, height - height % 8
    if not crop_w or not crop_h:
        return None
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return left, top, left + crop_w, top + crop_h


def caption_file(path: Path) -> Path | None:
    """The `<stem>.txt` beside image `path`, when there is one."""
    text_file = path.with_suffix(".txt")
    return text_file if text_file.is_file() else None


def caption_for(path: Path, filename_regex: str = "", filename_join: str = " ") -> str:
    """The caption of image `path`: its `.txt` file (UTF-8, stripped) when there is one, else
    `caption_from_file_name(path.stem, ...)`."""
    text_file = caption_file(path)
    if text_file is None:
        return caption_from_file_name(path.stem, filename_regex, filename_join)
    try:
        return text_file.read_text("utf-8-sig").strip()  # -sig: Notepad's byte-order mark
    except (OSError, UnicodeDecodeError) as e:
        raise ParamsError(f"{text_file}: the caption cannot be read as UTF-8 text ({e})") from None


def caption_from_file_name(stem: str, filename_regex: str = "", filename_join: str = " ") -> str:
    """A file stem as a caption (A1111): leading digits, dashes and spaces go, then, with a
    regex, its finds joined by `filename_join`. As in A1111, a leading tag that starts with a
    digit loses it (`1girl` → `girl`): such captions belong in a `.txt` file.

    >>> caption_from_file_name("00012-a cat, smile")
    'a cat, smile'
    >>> caption_from_file_name("00012-1girl, smile")
    'girl, smile'
    >>> caption_from_file_name("003 cat_in_the_hat", r"[a-z]+", " ")
    'cat in the hat'
    """
    text = _NUMBERS_AT_START.sub("", stem)
    if filename_regex:
        text = filename_join.join(_filename_pattern(filename_regex).findall(text))
    return text


def _filename_pattern(regex: str) -> re.Pattern[str]:
    # File names are at most 255 bytes; a pattern that could backtrack for long on them is refused.
    pattern = bounded_regex(regex, "filename_regex", max_text=255)
    if pattern.groups > 1:
        raise ParamsError(f"filename_regex: {regex!r} has {pattern.groups} groups; use at most one "
                          "(what it finds is joined with filename_join)")
    return pattern


class CaptionMaker:
    """Each step's prompt (A1111's create_text): a random template line, `[filewords]` → the
    caption's comma-separated tags, each kept with probability 1 - `tag_drop_out`, shuffled
    with `shuffle_tags`, `[name]` → `placeholder` (in a line of tags alone, such as
    `[name], [filewords]`, at a random place among the tags). kohya's LoRA options add `keep_tokens` (the
    first N tags are never dropped nor moved) and `caption_dropout` (the whole prompt becomes ""
    with that probability, so the network also learns the unconditioned image). Every draw comes
    from `rng`.

    >>> maker = CaptionMaker(["a photo of [name], [filewords]"], "emb", shuffle_tags=False,
    ...                      tag_drop_out=0.0, rng=random.Random(0))
    >>> maker.make("1girl, smile")
    'a photo of emb, 1girl, smile'
    """

    def __init__(self, lines: Sequence[str], placeholder: str, *, shuffle_tags: bool,
                 tag_drop_out: float, rng: random.Random, keep_tokens: int = 0,
                 caption_dropout: float = 0.0) -> None:
        if not lines:
            raise ParamsError("template: has no lines")
        for name, value in (("tag_drop_out", tag_drop_out), ("caption_dropout", caption_dropout)):
            if not 0 <= value < 1:
                raise ParamsError(f"{name}: expected a probability in [0, 1), got {value}")
        self.lines = list(lines)
        self.placeholder = placeholder
        self.shuffle_tags = shuffle_tags
        self.tag_drop_out = tag_drop_out
        self.keep_tokens = keep_tokens
        self.caption_dropout = caption_dropout
        self.rng = rng

    def make(self, filewords: str) -> str:
        if self.caption_dropout > 0 and self.rng.random() < self.caption_dropout:
            return ""
        text = self.rng.choice(self.lines)
        tags = filewords.split(",")
        kept, tags = tags[:self.keep_tokens], tags[self.keep_tokens:]
        if self.tag_drop_out > 0:
            tags = [tag for tag in tags if self.rng.random() > self.tag_drop_out]
        if self.shuffle_tags:
            self.rng.shuffle(tags)
        if _is_tag_list(text):
            # The name is one more tag, at a random place after the kept ones: an embedding
            # trained only at the start of its prompts barely works elsewhere in a prompt.
            tags.insert(self.rng.randint(0, len(tags)), self.placeholder)
            return ", ".join(tag.strip() for tag in kept + tags if tag.strip())
        return text.replace("[filewords]", ",".join(kept + tags)).replace("[name]", self.placeholder)


def _is_tag_list(line: str) -> bool:
    """Whether a template line is `[name]` and `[filewords]` alone, as comma-separated tags
    (emaki's `tags_filewords`), rather than a sentence such as A1111's "a photo of a [name]"."""
    return sorted(item.strip() for item in line.split(",")) == ["[filewords]", "[name]"]


class LatentCache:
    """The VAE latents of `images`, encoded once. `encode(pixels [1, 3, H, W])` gives the mean
    and std of the latent distribution, already scaled by the model's scaling factor.

    `method` (A1111's latent_sampling_method): `once` samples `mean + std·ε` at construction and
    keeps it; `deterministic` keeps the mean; `random` draws a fresh sample at every `latent()`.
    ε comes from `generator`. With `use_weight`, `weight()` is the image's alpha at latent size,
    normalised as A1111 does (`w -= min(w); w /= mean(w)`), or ones for an image without alpha.
    """

    def __init__(
        self,
        images: Sequence[TrainingImage],
        encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        method: str,
        generator: torch.Generator,
        *,
        use_weight: bool = False,
    ) -> None:
        if method not in LATENT_SAMPLING_METHODS:
            raise ParamsError(f"latent_sampling_method: expected one of "
                              f"{', '.join(LATENT_SAMPLING_METHODS)}, got {method!r}")
        self.method = method
        self.generator = generator
        self._means: list[torch.Tensor] = []
        self._stds: list[torch.Tensor] = []  # with `random` only
        self._weights: list[torch.Tensor | None] = []
        with torch.no_grad():
            for image in images:
                mean, std = encode(image.pixels.unsqueeze(0))
                mean, std = mean.squeeze(0), std.squeeze(0)
                if method == "once":
                    mean = mean + std * self._noise(mean)
                elif method == "random":
                    self._stds.append(std)
                self._means.append(mean)
                self._weights.append(_latent_weight(image.weight, mean) if use_weight else None)

    def __len__(self) -> int:
        return len(self._means)

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(like.shape, generator=self.generator, device=self.generator.device)
        return noise.to(like)

    def latent(self, index: int) -> torch.Tensor:
        """[C, h, w]; a fresh sample each call with `random`."""
        if self.method == "random":
            with torch.no_grad():
                mean = self._means[index]
                return mean + self._stds[index] * self._noise(mean)
        return self._means[index]

    def weight(self, index: int) -> torch.Tensor | None:
        """[C, h, w] loss weight (mean 1), or None when built without `use_weight`."""
        return self._weights[index]


def _latent_weight(alpha: torch.Tensor | None, latent: torch.Tensor) -> torch.Tensor:
    channels, height, width = latent.shape
    if alpha is None:
        return torch.ones(channels, height, width, device=latent.device)
    # Area averaging: each latent cell stands for an 8x8 patch of pixels, so its weight is the
    # mean alpha over that patch; bilinear would read only a few of those pixels and miss thin
    # edges, and bicubic (A1111's PIL default) can overshoot outside the alpha range.
    w = F.interpolate(alpha[None, None].float(), size=(height, width), mode="area")[0, 0]
    w = w - w.min()
    mean = w.mean()
    w = w / mean if mean > 0 else torch.ones_like(w)  # all equal: A1111 would divide 0 by 0
    return w.expand(channels, height, width).contiguous().to(latent.device)


def batch_order(images: Sequence[TrainingImage], batch_size: int,
                generator: torch.Generator) -> Iterator[list[int]]:
    """Batches of image indices, endlessly. Each epoch takes a fresh permutation from
    `generator` (of every image `repeats` times), groups it by pixel size (a batch never mixes
    sizes: one bucket), cuts each group into batches of `batch_size` and shuffles the batches;
    every image is used `repeats` times per epoch, so a group's last batch (or a whole group
    smaller than `batch_size`) is smaller rather than dropped or padded with extra images
    (A1111 drops it and draws random fillers)."""
    if batch_size < 1:
        raise ParamsError(f"batch_size: expected at least 1, got {batch_size}")
    if not images:
        raise ParamsError("batch_order: no training images")
    sizes = [tuple(image.pixels.shape[-2:]) for image in images]
    pool = [index for index, image in enumerate(images) for _ in range(image.repeats)]
    while True:
        groups: dict[tuple[int, ...], list[int]] = {}
        for drawn in torch.randperm(len(pool), generator=generator, device=generator.device).tolist():
            index = pool[drawn]
            groups.setdefault(sizes[index], []).append(index)
        batches = [group[i:i + batch_size]
                   for group in groups.values() for i in range(0, len(group), batch_size)]
        for j in torch.randperm(len(batches), generator=generator, device=generator.device).tolist():
            yield batches[j]


def dataset_fingerprint(images: Sequence[TrainingImage]) -> str:
    """sha256 (hex) of the images' sorted file names, one a line: the provenance of a run."""
    names = "\n".join(sorted(image.path.name for image in images))
    return hashlib.sha256(names.encode("utf-8")).hexdigest()


def captions_for_policy(images: Sequence[TrainingImage], lines: Sequence[str],
                        placeholder: str) -> list[tuple[str, str]]:
    """Every (source, text) the prompt policy judges before training (for
    `emaki.safety.check_training_captions`): each image's caption, from its `.txt` or its
    image file, and each template line (`template:<n>`, 1-based) with `[name]` filled in and
    `[filewords]` left empty."""
    items = [(str(caption_file(image.path) or image.path), image.filewords) for image in images]
    items += [(f"template:{number}", line.replace("[filewords]", "").replace("[name]", placeholder))
              for number, line in enumerate(lines, 1)]
    return items
