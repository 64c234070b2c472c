"""Hypernetwork files (specs §1.1-1.3, §1.6): A1111 layouts, loader defaults, NovelAI files."""

from __future__ import annotations

import pickle

import pytest
import torch
from networks_payload import Payload
from torch import nn

from emaki.errors import ModelLoadError, UnsafeFileError
from emaki.models.hashes import sha256_file
from emaki.networks import (
    Hypernetwork,
    HypernetworkModule,
    dropout_structure_for,
    load_hypernetwork,
    save_hypernetwork,
)


def layout(module: HypernetworkModule) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    return ([type(m).__name__ for m in module.linear],
            {k: tuple(v.shape) for k, v in module.state_dict().items()})


# The verified layouts of specs §1.3 (what A1111's class builds).
@pytest.mark.parametrize("dim, options, kinds, keys", [
    (768, {}, ["Linear", "Linear"],
     {"linear.0.weight": (1536, 768), "linear.0.bias": (1536,), "linear.1.weight": (768, 1536), "linear.1.bias": (768,)}),
    (768, {"activation_func": "relu"}, ["Linear", "ReLU", "Linear"], None),
    (768, {"activation_func": "relu", "activate_output": True}, ["Linear", "ReLU", "Linear", "ReLU"], None),
    (768, {"activation_func": "swish", "add_layer_norm": True},
     ["Linear", "Hardswish", "LayerNorm", "Linear", "LayerNorm"],
     {"linear.0.weight": (1536, 768), "linear.0.bias": (1536,), "linear.2.weight": (1536,), "linear.2.bias": (1536,),
      "linear.3.weight": (768, 1536), "linear.3.bias": (768,), "linear.4.weight": (768,), "linear.4.bias": (768,)}),
    (640, {"layer_structure": [1, 2, 2, 1], "activation_func": "relu", "dropout_structure": [0, 0.3, 0, 0]},
     ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"], None),
    (320, {"layer_structure": [1, 1.5, 1], "activation_func": "leakyrelu"}, ["Linear", "LeakyReLU", "Linear"],
     {"linear.0.weight": (480, 320), "linear.0.bias": (480,), "linear.2.weight": (320, 480), "linear.2.bias": (320,)}),
])
def test_module_layouts_match_a1111(dim, options, kinds, keys):
    got_kinds, got_keys = layout(HypernetworkModule(dim, **options))
    assert got_kinds == kinds
    if keys is not None:
        assert got_keys == keys
    linear_keys = sorted({k.rsplit(".", 1)[0] for k in got_keys})
    assert linear_keys == sorted(f"linear.{i}" for i, m in enumerate(kinds) if m in ("Linear", "LayerNorm"))


def test_forward_is_a_residual_scaled_by_the_multiplier():
    module = HypernetworkModule(8, activation_func="tanh", weight_initialization="XavierNormal",
                                generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 5, 8)
    mlp = module.linear(x)
    module.multiplier = 0.7
    torch.testing.assert_close(module(x), x + mlp * 0.7)
    module.train()
    torch.testing.assert_close(module(x), x + mlp)  # strength is 1 while training
    module.eval()
    torch.testing.assert_close(module.apply_with_strength(x.double(), 0.25), (x + mlp * 0.25).double())


def test_normal_init_sets_layernorm_weights_small_too():
    module = HypernetworkModule(64, add_layer_norm=True, generator=torch.Generator().manual_seed(0))
    norm = module.linear[1]
    assert isinstance(norm, nn.LayerNorm) and norm.weight.abs().max() < 0.1 and norm.bias.abs().max() == 0


def test_activations_by_name():
    assert isinstance(HypernetworkModule(4, activation_func="swish", activate_output=False).linear[1], nn.Hardswish)
    for name, cls in (("gelu", nn.GELU), ("silu", nn.SiLU), ("mish", nn.Mish), ("elu", nn.ELU), ("prelu", nn.PReLU)):
        assert isinstance(HypernetworkModule(4, activation_func=name).linear[1], cls)
    assert len(HypernetworkModule(4, activation_func="linear").linear) == 2
    with pytest.raises(Exception, match="unknown"):
        HypernetworkModule(4, activation_func="nonsense")


def a1111_file(tmp_path, name="hn", drop=(), sizes=(32, 64), **create):
    """An A1111-style file as its writer makes it, then with the keys in `drop` removed (as
    older writers left them out)."""
    hn = Hypernetwork.create(name, sizes, generator=torch.Generator().manual_seed(1), **create)
    path = save_hypernetwork(hn, tmp_path / f"{name}.pt")
    data = torch.load(path, weights_only=True)
    for key in drop:
        data.pop(key)
    torch.save(data, path)
    return path, hn


def test_save_load_round_trip_and_a1111_keys(tmp_path):
    hn = Hypernetwork.create("anime", (32, 64), layer_structure=[1, 2, 2, 1], activation_func="relu",
                             add_layer_norm=True, use_dropout=True, activate_output=False,
                             generator=torch.Generator().manual_seed(3))
    hn.step, hn.sd_checkpoint, hn.sd_checkpoint_name = 4000, "925997e9", "nai"
    path = save_hypernetwork(hn, tmp_path / "anime.pt")
    data = torch.load(path, weights_only=True)  # plain containers and tensors only
    assert {32, 64} <= set(data) and isinstance(data[32], tuple) and len(data[32]) == 2
    assert {"step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization",
            "sd_checkpoint", "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure",
            "last_layer_dropout", "optional_info"} <= set(data)
    back = load_hypernetwork(path)
    assert (back.name, back.step, back.layer_structure, back.activation_func, back.is_layer_norm) == \
        ("anime", 4000, [1, 2, 2, 1], "relu", True)
    assert back.dropout_structure == [0, 0.3, 0, 0] and back.use_dropout and not back.activate_output
    assert back.sha256 == sha256_file(path) and back.shorthash == back.sha256[:10]
    x = torch.randn(3, 32)
    for a, b in zip(hn.layers[32], back.layers[32], strict=True):
        torch.testing.assert_close(a(x), b(x))


def test_loader_defaults_activate_output_true_when_absent(tmp_path):
    path, _ = a1111_file(tmp_path, activation_func="relu", drop=("activate_output",))
    back = load_hypernetwork(path)
    assert back.activate_output is True
    assert [type(m).__name__ for m in back.layers[32][0].linear] == ["Linear", "ReLU", "Linear", "ReLU"]


def test_loader_defaults_for_a_bare_file(tmp_path):
    path, _ = a1111_file(tmp_path, name="bare", drop=(
        "layer_structure", "activation_func", "is_layer_norm", "dropout_structure", "use_dropout",
        "last_layer_dropout", "activate_output", "weight_initialization", "name"))
    back = load_hypernetwork(path)
    assert back.name == "bare" and back.layer_structure == [1, 2, 1] and back.activation_func is None
    assert back.dropout_structure == [0, 0, 0] and not back.use_dropout and not back.is_layer_norm


def test_dropout_structure_derived_from_old_flags(tmp_path):
    path, _ = a1111_file(tmp_path, layer_structure=[1, 2, 2, 1], activation_func="relu", use_dropout=True,
                         last_layer_dropout=True, drop=("dropout_structure",))
    back = load_hypernetwork(path)
    assert back.dropout_structure == [0, 0.3, 0.3, 0] and back.use_dropout
    assert dropout_structure_for([1, 2, 2, 1], True, False) == [0, 0.3, 0, 0]


def nai_file(tmp_path, sizes=(320, 640, 1280), name="anime_nai"):
    """NovelAI's layout: int keys only, `linear1`/`linear2` state dicts, no metadata (§1.6)."""
    g = torch.Generator().manual_seed(5)
    data = {}
    for size in sizes:
        pair = []
        for _ in range(2):
            pair.append({"linear1.weight": torch.randn(2 * size, size, generator=g) * 0.02,
                         "linear1.bias": torch.randn(2 * size, generator=g) * 0.02,
                         "linear2.weight": torch.randn(size, 2 * size, generator=g) * 0.02,
                         "linear2.bias": torch.randn(size, generator=g) * 0.02})
        data[size] = tuple(pair)
    path = tmp_path / f"{name}.pt"
    torch.save(data, path)
    return path, data


def test_novelai_file_with_any_subset_of_sizes(tmp_path):
    path, data = nai_file(tmp_path)
    hn = load_hypernetwork(path)
    assert hn.name == "anime_nai" and hn.sizes == [320, 640, 1280]
    assert hn.layer_structure == [1, 2, 1] and hn.activation_func is None and hn.activate_output
    x = torch.randn(4, 640)
    sd = data[640][1]
    manual = x + (x @ sd["linear1.weight"].T + sd["linear1.bias"]) @ sd["linear2.weight"].T + sd["linear2.bias"]
    torch.testing.assert_close(hn.layers[640][1](x), manual)


def test_only_int_keys_are_layers_and_bad_files_are_refused(tmp_path):
    path, _ = nai_file(tmp_path, sizes=(320,))
    data = torch.load(path, weights_only=True)
    data["768"] = "a string key is not a layer"
    torch.save(data, path)
    assert load_hypernetwork(path).sizes == [320]
    torch.save({"name": "x"}, tmp_path / "empty.pt")
    with pytest.raises(ModelLoadError, match="no layers"):
        load_hypernetwork(tmp_path / "empty.pt")
    torch.save({320: ({"linear.0.weight": torch.zeros(3, 3)}, {})}, tmp_path / "wrong.pt")
    with pytest.raises(ModelLoadError, match="does not fit"):
        load_hypernetwork(tmp_path / "wrong.pt")


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({768: (Payload(), Payload())}, f, protocol=2)
    with pytest.raises(UnsafeFileError, match="refused"):
        load_hypernetwork(path)
    assert not Payload.ran


def test_half_precision_inputs_come_back_half():
    module = HypernetworkModule(16, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 16).half()
    out = module.apply_with_strength(x, 1.0)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), module(x.float()), rtol=0, atol=2e-3)


def test_library_finds_by_stem_recursively_and_reloads_changed_files(tmp_path):
    from emaki.networks import HypernetworkLibrary

    (tmp_path / "artists").mkdir()
    path, _ = nai_file(tmp_path / "artists", sizes=(320,), name="Anime_2")
    library = HypernetworkLibrary()
    first = library.load("Anime_2", [tmp_path])
    assert library.load("anime_2", [tmp_path]) is first  # exact stem first, then any case
    assert library.load(str(path), []) is first
    nai_file(tmp_path / "artists", sizes=(320, 640), name="Anime_2")
    import os

    os.utime(path, ns=(0, 1))
    assert library.load("Anime_2", [tmp_path]).sizes == [320, 640]
    with pytest.raises(ModelLoadError, match="no such file"):
        library.load("missing", [tmp_path])
