"""The training dataset: images, captions, templates, latents and batches (A1111 v1.10 semantics)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from emaki.errors import ParamsError
from emaki.training.dataset import (
    CaptionMaker,
    LatentCache,
    TrainingImage,
    batch_order,
    caption_for,
    captions_for_policy,
    dataset_fingerprint,
    load_images,
)
from emaki.training.templates import TEMPLATE_NAMES, read_template


def save(path: Path, size: tuple[int, int] = (16, 16), color: tuple[int, ...] = (255, 0, 0),
         mode: str = "RGB") -> Path:
    Image.new(mode, size, color).save(path)
    return path


def image(hw: tuple[int, int], weight: torch.Tensor | None = None) -> TrainingImage:
    return TrainingImage(Path("x.png"), torch.zeros(3, *hw), weight, "")


def fake_encode(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A stand-in VAE: 4 channels at 1/8 size, std 0.5; it must run without autograd."""
    assert not torch.is_grad_enabled()
    pooled = torch.nn.functional.avg_pool2d(pixels, 8)
    mean = torch.cat([pooled, pooled.mean(1, keepdim=True)], dim=1)
    return mean, torch.full_like(mean, 0.5)


# captions


def test_caption_from_txt_beside_the_image(tmp_path: Path) -> None:
    png = save(tmp_path / "0001-ignored name.png")
    (tmp_path / "0001-ignored name.txt").write_text("\ufeff  1girl, smile\nblue sky \n", "utf-8")
    assert caption_for(png) == "1girl, smile\nblue sky"
    # The regex filters file-name captions only.
    assert caption_for(png, r"\w+", "_") == "1girl, smile\nblue sky"


def test_caption_from_file_name(tmp_path: Path) -> None:
    assert caption_for(tmp_path / "00012-a cat, smile.png") == "a cat, smile"
    assert caption_for(tmp_path / "00012-1girl, smile.png") == "girl, smile"  # as A1111
    assert caption_for(tmp_path / "-12-3 cat.png") == "cat"
    assert caption_for(tmp_path / "003 cat_in_the_hat (2).png", r"[a-z]+", " ") == "cat in the hat"
    assert caption_for(tmp_path / "cat-in-hat.png", r"([a-z]+)-?", "+") == "cat+in+hat"


@pytest.mark.parametrize("regex", ["(unclosed", "(a)(b)", "(a+)+$"])  # the last one backtracks forever
def test_bad_filename_regex(tmp_path: Path, regex: str) -> None:
    with pytest.raises(ParamsError, match="filename_regex"):
        caption_for(tmp_path / "a.png", regex)
    save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("from a file")
    with pytest.raises(ParamsError, match="filename_regex"):  # even when no caption needs it
        load_images(tmp_path, size=(8, 8), varsize=False, use_weight=False, filename_regex=regex)


# images


def test_loads_images_by_name_and_skips_the_rest(tmp_path: Path) -> None:
    save(tmp_path / "b.PNG")
    save(tmp_path / "a.jpg")
    save(tmp_path / "c.webp")
    (tmp_path / "a.txt").write_text("caption of a")
    (tmp_path / "notes.md").write_text("not an image")
    (tmp_path / "corrupt.png").write_bytes(b"not an image at all")
    whole = (tmp_path / "b.PNG").read_bytes()
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "sub").mkdir()
    save(tmp_path / "sub" / "nested.png")
    images = load_images(tmp_path, size=(8, 8), varsize=False, use_weight=False)
    assert [i.path.name for i in images] == ["a.jpg", "b.PNG", "c.webp"]
    assert [i.filewords for i in images] == ["caption of a", "b", "c"]


def test_no_images_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="no training images"):
        load_images(tmp_path, size=(8, 8), varsize=False, use_weight=False)
    (tmp_path / "corrupt.png").write_bytes(b"junk")
    with pytest.raises(ParamsError, match=r"no training images .*corrupt\.png"):
        load_images(tmp_path, size=(8, 8), varsize=False, use_weight=False)
    with pytest.raises(ParamsError, match="missing.*does not exist"):
        load_images(tmp_path / "missing", size=(8, 8), varsize=False, use_weight=False)
    with pytest.raises(ParamsError, match="corrupt.png.*not a folder"):
        load_images(tmp_path / "corrupt.png", size=(8, 8), varsize=False, use_weight=False)


def test_size_needed_without_varsize(tmp_path: Path) -> None:
    save(tmp_path / "a.png")
    with pytest.raises(ParamsError, match="size"):
        load_images(tmp_path, size=None, varsize=False, use_weight=False)
    with pytest.raises(ParamsError, match="multiples of 8"):
        load_images(tmp_path, size=(12, 16), varsize=False, use_weight=False)


def test_resize_and_pixel_range(tmp_path: Path) -> None:
    save(tmp_path / "a.png", size=(30, 20), color=(255, 0, 51))
    (img,) = load_images(tmp_path, size=(24, 16), varsize=False, use_weight=False)
    assert img.pixels.dtype == torch.float32
    assert img.pixels.shape == (3, 16, 24)  # size is (W, H)
    assert torch.allclose(img.pixels[:, 5, 7], torch.tensor([1.0, -1.0, 51 / 127.5 - 1]))
    assert img.weight is None


def test_varsize_center_crops_to_multiples_of_8(tmp_path: Path) -> None:
    picture = Image.new("RGB", (21, 35), (0, 0, 0))
    for x in range(2, 18):  # the 16 columns a centered crop of 21 keeps
        for y in range(1, 33):
            picture.putpixel((x, y), (255, 255, 255))
    picture.save(tmp_path / "a.png")
    save(tmp_path / "b.png", size=(16, 8))
    save(tmp_path / "tiny.png", size=(7, 30))
    a, b = load_images(tmp_path, size=None, varsize=True, use_weight=False)
    assert a.pixels.shape == (3, 32, 16)
    assert bool((a.pixels == 1).all())  # only the white rectangle is left
    assert b.pixels.shape == (3, 8, 16)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° to display
    Image.new("RGB", (24, 8), (0, 255, 0)).save(tmp_path / "a.jpg", exif=exif)
    (img,) = load_images(tmp_path, size=None, varsize=True, use_weight=False)
    assert img.pixels.shape == (3, 24, 8)


def test_alpha_becomes_the_weight(tmp_path: Path) -> None:
    picture = Image.new("RGBA", (16, 8), (10, 20, 30, 255))
    for x in range(8):
        for y in range(8):
            picture.putpixel((x, y), (10, 20, 30, 0))
    picture.save(tmp_path / "a.png")
    save(tmp_path / "b.png", size=(16, 8))
    a, b = load_images(tmp_path, size=None, varsize=True, use_weight=True)
    assert a.weight is not None and a.weight.shape == (8, 16)
    assert a.weight[:, :8].max() == 0 and a.weight[:, 8:].min() == 1
    assert b.weight is None
    (a, _) = load_images(tmp_path, size=None, varsize=True, use_weight=False)
    assert a.weight is None
    assert torch.allclose(a.pixels[:, 0, 0], torch.tensor([10, 20, 30]) / 127.5 - 1)


# latents


def test_latent_sampling_methods() -> None:
    images = [image((16, 24)), image((8, 8))]
    images[0].pixels.uniform_(-1, 1, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        means = [fake_encode(i.pixels[None])[0][0] for i in images]

    deterministic = LatentCache(images, fake_encode, "deterministic", torch.Generator().manual_seed(0))
    assert len(deterministic) == 2
    assert deterministic.latent(0).shape == (4, 2, 3)
    assert torch.equal(deterministic.latent(0), means[0]) and torch.equal(deterministic.latent(1), means[1])

    once = LatentCache(images, fake_encode, "once", torch.Generator().manual_seed(0))
    assert torch.equal(once.latent(0), once.latent(0))
    assert not torch.allclose(once.latent(0), means[0])
    again = LatentCache(images, fake_encode, "once", torch.Generator().manual_seed(0))
    assert torch.equal(once.latent(0), again.latent(0))  # reproducible for one seed

    rand = LatentCache(images, fake_encode, "random", torch.Generator().manual_seed(0))
    first, second = rand.latent(0), rand.latent(0)
    assert not torch.equal(first, second)
    assert (first - means[0]).abs().max() < 5 * 0.5  # mean + 0.5·ε
    assert rand.weight(0) is None

    with pytest.raises(ParamsError, match="latent_sampling_method"):
        LatentCache(images, fake_encode, "sometimes", torch.Generator())


def test_latent_weight_normalisation() -> None:
    alpha = torch.zeros(16, 32)
    alpha[:, 16:] = 1.0  # right half opaque
    alpha[:8, 24:] = 0.5
    flat = torch.full((16, 16), 0.7)
    images = [image((16, 32), alpha), image((16, 16), flat), image((8, 8))]
    cache = LatentCache(images, fake_encode, "deterministic", torch.Generator(), use_weight=True)
    w = cache.weight(0)
    assert w is not None and w.shape == (4, 2, 4)
    assert torch.allclose(w.mean(), torch.tensor(1.0)) and w.min() == 0
    assert torch.equal(w[0], w[3])  # the same weight for every channel
    expected = torch.tensor([[0.0, 0.0, 1.0, 0.5], [0.0, 0.0, 1.0, 1.0]])
    assert torch.allclose(w[0], expected / expected.mean())
    flat_weight, no_alpha = cache.weight(1), cache.weight(2)
    assert flat_weight is not None and torch.equal(flat_weight, torch.ones(4, 2, 2))  # not 0/0
    assert no_alpha is not None and torch.equal(no_alpha, torch.ones(4, 1, 1))  # no alpha: ones
    assert LatentCache(images, fake_encode, "once", torch.Generator()).weight(0) is None


# batches


def test_batch_order_never_mixes_sizes_and_covers_each_epoch() -> None:
    sizes = [(8, 8)] * 5 + [(16, 8)] * 2 + [(8, 16)]
    images = [image(s) for s in sizes]
    batches = batch_order(images, 2, torch.Generator().manual_seed(3))
    epochs = []
    for _ in range(4):
        epoch = [next(batches) for _ in range(5)]  # 3 + 1 + 1 batches per epoch
        for batch in epoch:
            assert len({sizes[i] for i in batch}) == 1
        assert sorted(i for batch in epoch for i in batch) == list(range(8))
        assert sorted(len(b) for b in epoch) == [1, 1, 2, 2, 2]  # small groups: smaller batches
        epochs.append(epoch)
    assert len({str(e) for e in epochs}) > 1  # a fresh order each epoch
    replay = batch_order(images, 2, torch.Generator().manual_seed(3))
    assert [next(replay) for _ in range(20)] == [b for e in epochs for b in e]


def test_batch_larger_than_the_dataset() -> None:
    images = [image((8, 8)) for _ in range(3)]
    assert next(batch_order(images, 4, torch.Generator().manual_seed(0))) in (
        [0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0])
    with pytest.raises(ParamsError, match="batch_size"):
        next(batch_order(images, 0, torch.Generator()))


# prompts


def test_caption_maker_fills_the_template() -> None:
    maker = CaptionMaker(["a photo of [name], [filewords]", "[name] art"], "emaki", shuffle_tags=False,
                         tag_drop_out=0.0, rng=random.Random(0))
    made = {maker.make("1girl, smile") for _ in range(50)}
    assert made == {"a photo of emaki, 1girl, smile", "emaki art"}


def test_a_tag_template_puts_the_name_at_every_place_among_the_tags() -> None:
    maker = CaptionMaker(["[name], [filewords]"], "neko", shuffle_tags=False, tag_drop_out=0.0,
                         rng=random.Random(0))
    made = {maker.make("1girl, solo, smile") for _ in range(100)}
    assert made == {"neko, 1girl, solo, smile", "1girl, neko, solo, smile", "1girl, solo, neko, smile",
                    "1girl, solo, smile, neko"}
    pinned = CaptionMaker(["[filewords], [name]"], "neko", shuffle_tags=True, tag_drop_out=0.0,
                          rng=random.Random(0), keep_tokens=1)
    made = [pinned.make("1girl, solo, smile").split(", ") for _ in range(100)]
    assert all(tags[0] == "1girl" and sorted(tags) == ["1girl", "neko", "smile", "solo"] for tags in made)
    assert {tags.index("neko") for tags in made} == {1, 2, 3}


def test_caption_maker_is_reproducible_and_drops_and_shuffles() -> None:
    tags = ",".join(f"t{i}" for i in range(20))

    def run(seed: int, *, shuffle_tags: bool, tag_drop_out: float) -> list[str]:
        maker = CaptionMaker(["[filewords]"], "x", shuffle_tags=shuffle_tags, tag_drop_out=tag_drop_out,
                             rng=random.Random(seed))
        return [maker.make(tags) for _ in range(30)]

    assert run(7, shuffle_tags=True, tag_drop_out=0.3) == run(7, shuffle_tags=True, tag_drop_out=0.3)
    assert run(7, shuffle_tags=True, tag_drop_out=0.3) != run(8, shuffle_tags=True, tag_drop_out=0.3)

    shuffled = run(1, shuffle_tags=True, tag_drop_out=0.0)
    assert all(sorted(s.split(",")) == sorted(tags.split(",")) for s in shuffled)
    assert any(s != tags for s in shuffled)

    dropped = run(1, shuffle_tags=False, tag_drop_out=0.5)
    kept = Counter(len(s.split(",")) for s in dropped if s)
    assert 5 <= sum(n * c for n, c in kept.items()) / 30 <= 15  # about half of 20 kept
    order = tags.split(",")
    for s in dropped:  # dropout alone keeps the order
        positions = [order.index(t) for t in s.split(",") if t]
        assert positions == sorted(positions)

    assert run(1, shuffle_tags=False, tag_drop_out=0.0) == [tags] * 30
    with pytest.raises(ParamsError, match="tag_drop_out"):
        run(1, shuffle_tags=False, tag_drop_out=1.0)


def test_fingerprint_and_policy_captions(tmp_path: Path) -> None:
    save(tmp_path / "01-cat.png")
    save(tmp_path / "dog.png")
    (tmp_path / "dog.txt").write_text("a dog, running")
    images = load_images(tmp_path, size=(8, 8), varsize=False, use_weight=False)
    fingerprint = dataset_fingerprint(images)
    assert len(fingerprint) == 64 and fingerprint == dataset_fingerprint(images[::-1])
    assert fingerprint != dataset_fingerprint(images[:1])
    items = captions_for_policy(images, ["a photo of [name], [filewords]", "picture"], "emb")
    assert items == [
        (str(tmp_path / "01-cat.png"), "cat"),
        (str(tmp_path / "dog.txt"), "a dog, running"),
        ("template:1", "a photo of emb, "),
        ("template:2", "picture"),
    ]


# templates


def test_read_template_by_name_and_path(tmp_path: Path) -> None:
    assert read_template("tags") == ["[name]"]
    assert read_template("style.txt") == read_template("style")
    assert read_template("none") == ["picture"]
    own = tmp_path / "mine.txt"
    own.write_text("\n  [name] sketch  \n\n[filewords] by [name]\n")
    assert read_template(str(own)) == ["[name] sketch", "[filewords] by [name]"]
    with pytest.raises(ParamsError, match=r"'nope'.*none, style, style_filewords.*tags_filewords"):
        read_template("nope")
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(ParamsError, match=r"blank\.txt.*no lines"):
        read_template(str(tmp_path / "blank.txt"))


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_every_shipped_template(name: str) -> None:
    lines = read_template(name)
    assert lines
    if name != "none":
        assert all("[name]" in line or "[filewords]" in line for line in lines)
    if name.endswith("filewords") or name == "hypernetwork":
        assert all("[filewords]" in line for line in lines)


def test_shipped_templates_are_the_data_files() -> None:
    from importlib import resources

    folder = resources.files("emaki.data").joinpath("textual_inversion_templates")
    on_disk = sorted(p.name.removesuffix(".txt") for p in folder.iterdir() if p.name.endswith(".txt"))
    assert on_disk == sorted(TEMPLATE_NAMES)
