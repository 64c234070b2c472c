"""LoRA files (issue 15): key names of every layout onto emaki's modules, reading, listing rows."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
import torch
from networks_payload import Payload
from safetensors.torch import save_file

from emaki.errors import UnsafeFileError
from emaki.models.convert import unet_to_ldm
from emaki.models.hashes import sha256_file, tensor_data_hash
from emaki.networks.lora import (
    LoraLibrary,
    bundled_embedding_data,
    file_kind,
    group_modules,
    load_lora,
    lora_hashes,
    lora_strengths,
    model_targets,
    read_lora_file,
    sd15_targets,
    split_key,
    trigger_words,
)
from emaki.networks.lora.apply import ChosenLora
from emaki.prompts.networks import NetworkTag


@pytest.mark.parametrize("key, expected", [
    ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
     ("lora_unet_down_blocks_0_attentions_0_proj_in", "lora_down.weight")),
    ("lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha", ("lora_te1_text_model_encoder_layers_0_mlp_fc1", "alpha")),
    ("lora_unet_input_blocks_1_1_proj_in.hada_w1_a", ("lora_unet_input_blocks_1_1_proj_in", "hada_w1_a")),
    ("lora_unet_x.lokr_t2", ("lora_unet_x", "lokr_t2")),
    ("lora_unet_x.on_input", ("lora_unet_x", "on_input")),
    ("lora_unet_x.weight", ("lora_unet_x", "weight")),
    ("lora_unet_x.oft_blocks", ("lora_unet_x", "oft_blocks")),
    ("lora_unet_x.lora_A.weight", ("lora_unet_x", "lora_down.weight")),
    ("unet.mid_block.attentions.0.proj_out.lora_B.weight", ("unet.mid_block.attentions.0.proj_out", "lora_up.weight")),
    ("text_encoder.text_model.encoder.layers.2.self_attn.out_proj.lora.down.weight",
     ("text_encoder.text_model.encoder.layers.2.self_attn.out_proj", "lora_down.weight")),
    ("text_encoder.text_model.encoder.layers.2.mlp.fc2.lora_linear_layer.up.weight",
     ("text_encoder.text_model.encoder.layers.2.mlp.fc2", "lora_up.weight")),
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.down.weight",
     ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_out", "lora_down.weight")),
    ("base_model.model.down_blocks.0.resnets.0.conv1.lora_A.weight", ("down_blocks.0.resnets.0.conv1", "lora_down.weight")),
    ("unet.conv_in.lora_magnitude_vector", ("unet.conv_in", "dora_scale")),
    ("unet.conv_in.alpha", ("unet.conv_in", "alpha")),
    ("model.diffusion_model.out.0.weight", None),
    ("junk", None),
])
def test_split_key_reads_every_spelling(key, expected):
    assert split_key(key) == expected


def test_grouping_and_bundled_embeddings():
    keys = {"lora_unet_a.lora_up.weight": torch.zeros(2, 1), "lora_unet_a.lora_down.weight": torch.zeros(1, 2),
            "lora_unet_a.alpha": torch.tensor(1.0), "something_else": torch.zeros(1),
            "bundle_emb.sty.string_to_param.*": torch.ones(2, 32), "bundle_emb.plain": torch.ones(1, 32)}
    groups, unknown = group_modules(keys)
    assert groups == {"lora_unet_a": {"lora_up.weight": "lora_unet_a.lora_up.weight",
                                      "lora_down.weight": "lora_unet_a.lora_down.weight", "alpha": "lora_unet_a.alpha"}}
    assert unknown == ["something_else"]
    data = bundled_embedding_data(keys)
    assert set(data) == {"sty", "plain"} and "*" in data["sty"]["string_to_param"] and "plain" in data["plain"]


# --- names → modules ---

@pytest.fixture(scope="module")
def targets(tiny_components):
    return model_targets(tiny_components)


def test_kohya_peft_ldm_and_processor_names_reach_the_same_module(tiny_components, targets):
    unet, te = tiny_components.unet, tiny_components.text_encoder
    proj_in = unet.down_blocks[0].attentions[0].proj_in
    for name in ("lora_unet_down_blocks_0_attentions_0_proj_in", "lora_unet_input_blocks_1_1_proj_in",
                 "unet.down_blocks.0.attentions.0.proj_in", "down_blocks.0.attentions.0.proj_in",
                 "lycoris_input_blocks_1_1_proj_in", "oft_unet_down_blocks_0_attentions_0_proj_in"):
        assert targets.get(name).module is proj_in, name
    conv1 = unet.down_blocks[0].resnets[0].conv1
    assert targets.get("lora_unet_input_blocks_1_0_in_layers_2").module is conv1
    assert targets.get("lora_unet_down_blocks_0_resnets_0_conv1").module is conv1
    to_out = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_out[0]
    for name in ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0",
                 "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out",
                 "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out"):
        assert targets.get(name).module is to_out, name
    assert targets.get("lora_unet_time_embed_0").module is unet.time_embedding.linear_1
    assert targets.get("lora_unet_out_2").module is unet.conv_out
    q_proj = te.get_submodule("encoder.layers.1.self_attn.q_proj")
    for name in ("lora_te_text_model_encoder_layers_1_self_attn_q_proj", "lora_te1_text_model_encoder_layers_1_self_attn_q_proj",
                 "text_encoder.text_model.encoder.layers.1.self_attn.q_proj"):
        target = targets.get(name)
        assert target.module is q_proj and target.component == "text_encoder", name
    assert targets.get("lora_unet_down_blocks_0_attentions_0_proj_in").component == "unet"
    assert targets.get("lora_unet_nothing_here") is None


def test_every_weighted_unet_module_has_an_ldm_name(tiny_components, targets):
    unet = tiny_components.unet
    ldm = unet_to_ldm({k: v for k, v in unet.state_dict().items() if k.endswith(".weight")}, tiny_components.config.unet)
    for key in ldm:
        name = "lora_unet_" + key.removesuffix(".weight").replace(".", "_")
        assert targets.get(name) is not None, name


def test_the_sd15_reference_names_match_a_real_kohya_lora():
    reference = sd15_targets()
    for name in ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                 "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2",
                 "lora_unet_mid_block_attentions_0_proj_out", "lora_unet_output_blocks_11_1_proj_in",
                 "lora_te_text_model_encoder_layers_11_mlp_fc2"):
        assert name in reference, name
    assert "lora_te2_text_model_encoder_layers_0_mlp_fc1" not in reference


# --- files ---

def _kohya(out=32, inp=32, rank=4, conv=False):
    g = torch.Generator().manual_seed(0)
    down = torch.randn((rank, inp, 3, 3) if conv else (rank, inp), generator=g)
    up = torch.randn((out, rank, 1, 1) if conv else (out, rank), generator=g)
    return down, up


META = {"ss_output_name": "aqua-style", "ss_base_model_version": "sd_v1", "ss_network_dim": "4",
        "ss_tag_frequency": json.dumps({"10_aqua": {"aqua": 30, "1girl": 28, " blue hair": 12},
                                        "5_misc": {"1girl": 5, "smile": 3}})}


def write_kohya(path, metadata=None, extra=None):
    down, up = _kohya()
    cdown, cup = _kohya(conv=True, rank=8)
    tensors = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": down,
               "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": up,
               "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha": torch.tensor(2.0),
               "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.lora_down.weight": down.clone(),
               "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.lora_up.weight": up.clone(),
               "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": cdown,
               "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": cup,
               "bundle_emb.aqua-token.string_to_param.*": torch.ones(2, 768)}
    tensors |= extra or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_read_lora_file_gives_shapes_and_metadata_without_data(tmp_path):
    path = write_kohya(tmp_path / "aqua.safetensors", META)
    info = read_lora_file(path)
    assert info.name == "aqua" and info.alias == "aqua-style"
    assert info.shapes["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"] == (8, 32, 3, 3)
    assert info.metadata["ss_base_model_version"] == "sd_v1"
    assert file_kind(info) == ("locon", 4, [])


def test_a_pt_lora_loads_through_the_restricted_loader(tmp_path):
    down, up = _kohya()
    good = tmp_path / "old.pt"
    torch.save({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": down,
                "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": up, "note": "x"}, good)
    network = load_lora(good)
    assert list(network.modules) == ["lora_te_text_model_encoder_layers_0_mlp_fc1"]
    assert read_lora_file(good).shapes["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] == (32, 4)
    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"a": Payload()}, protocol=2))
    Payload.ran = False
    with pytest.raises(UnsafeFileError):
        load_lora(bad)
    assert not Payload.ran


def test_loaded_network_keeps_its_bundled_embeddings(tmp_path):
    network = load_lora(write_kohya(tmp_path / "aqua.safetensors", META))
    assert set(network.modules) == {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                                    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k",
                                    "lora_unet_down_blocks_0_resnets_0_conv1"}
    assert network.embeddings["aqua-token"].vectors.shape == (2, 768)


@pytest.mark.parametrize("parts, kind, rank", [
    ({"lora_up.weight": (8, 2), "lora_down.weight": (2, 8)}, "lora", 2),
    ({"lora_up.weight": (8, 2, 1, 1), "lora_down.weight": (2, 8, 1, 1)}, "lora", 2),
    ({"lora_up.weight": (8, 2, 1, 1), "lora_down.weight": (2, 8, 1, 1), "lora_mid.weight": (2, 2, 3, 3)}, "locon", 2),
    ({"lora_up.weight": (8, 2), "lora_down.weight": (2, 8), "dora_scale": (1, 8)}, "lora+dora", 2),
    ({"hada_w1_a": (8, 3), "hada_w1_b": (3, 8), "hada_w2_a": (8, 3), "hada_w2_b": (3, 8)}, "loha", 3),
    ({"lokr_w1": (2, 2), "lokr_w2_a": (4, 1), "lokr_w2_b": (1, 4)}, "lokr", 1),
    ({"lokr_w1": (2, 2), "lokr_w2": (4, 4)}, "lokr", None),
    ({"weight": (8,), "on_input": ()}, "ia3", None),
    ({"diff": (8, 8), "diff_b": (8,)}, "full", None),
    ({"w_norm": (8,), "b_norm": (8,)}, "norm", None),
    ({"oft_blocks": (2, 4, 4), "alpha": ()}, "oft", 2),
    ({"oft_diag": (2, 4, 4)}, "oft", 2),
])
def test_file_kind_and_rank(parts, kind, rank):
    from emaki.networks.lora import LoraFile

    info = LoraFile(__import__("pathlib").Path("x.safetensors"), {f"lora_unet_m.{p}": s for p, s in parts.items()}, {})
    assert file_kind(info) == (kind, rank, [])


def test_trigger_words_sum_folders_most_frequent_first():
    assert trigger_words(META) == ["1girl", "aqua", "blue hair", "smile"]
    assert trigger_words({"ss_tag_frequency": "not json"}) == []


def test_library_finds_by_stem_alias_and_case(tmp_path):
    folder = tmp_path / "Lora"
    write_kohya(folder / "sub" / "aqua.safetensors", META)
    write_kohya(folder / "Other.safetensors")
    library = LoraLibrary()
    assert library.find("aqua", [folder]) == folder / "sub" / "aqua.safetensors"
    assert library.find("aqua-style", [folder]) == folder / "sub" / "aqua.safetensors"
    assert library.find("other", [folder]) == folder / "Other.safetensors"
    assert library.find("missing", [folder]) is None
    assert library.find(str(folder / "Other.safetensors"), []) == folder / "Other.safetensors"


def test_rows_carry_what_the_listing_and_the_a1111_api_need(tmp_path):
    folder = tmp_path / "Lora"
    aqua = write_kohya(folder / "aqua.safetensors", META,
                       extra={"lora_unet_not_a_module.lora_down.weight": torch.zeros(1, 2),
                              "lora_unet_not_a_module.lora_up.weight": torch.zeros(2, 1)})
    write_kohya(folder / "kohya-hashed.safetensors", {"sshs_model_hash": "ab" * 32})
    old = folder / "old.pt"
    torch.save({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 768),
                "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(3072, 2)}, old)
    (folder / "broken.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
    save_file({"lora_unet_x.a1.weight": torch.zeros(2, 2), "lora_unet_x.a2.weight": torch.zeros(2, 2),
               "lora_unet_x.b1.weight": torch.zeros(2, 2), "lora_unet_x.b2.weight": torch.zeros(2, 2)},
              str(folder / "glora.safetensors"))
    rows = {row["name"]: row for row in LoraLibrary().rows([folder])}
    row = rows["aqua"]
    assert row["status"] == "loaded" and row["alias"] == "aqua-style" and row["path"] == str(aqua)
    assert (row["kind"], row["rank"], row["base_model"], row["sd_version"]) == ("locon", 4, "sd_v1", "sd1")
    assert row["trigger_words"][:2] == ["1girl", "aqua"]
    assert row["hash"] == tensor_data_hash(aqua)[:12]
    assert row["unmatched"] == 2 and row["unmatched_keys"][0].startswith("lora_unet_not_a_module.")
    assert row["embeddings"] == ["aqua-token"]
    assert row["metadata"]["ss_tag_frequency"]["5_misc"] == {"1girl": 5, "smile": 3}  # parsed, as A1111's API
    assert next(iter(row["metadata"])) == "ss_tag_frequency"  # A1111's order: known keys first
    assert json.dumps(row)  # plain values only
    assert rows["kohya-hashed"]["hash"] == "ab" * 6
    assert rows["old"]["status"] == "loaded" and rows["old"]["hash"] == sha256_file(old)[:12]
    assert rows["old"]["unmatched"] == 0 and rows["old"]["sd_version"] == "sd1"
    assert rows["broken"]["status"] == "skipped" and "unreadable" in rows["broken"]["reason"]
    assert rows["glora"]["status"] == "skipped" and "a1.weight" in rows["glora"]["reason"]


def test_tag_strengths_follow_a1111():
    def strengths(*args):
        return lora_strengths(NetworkTag("lora", args))

    assert strengths("x") == (1.0, 1.0, None)
    assert strengths("x", "0.7") == (0.7, 0.7, None)
    assert strengths("x", "0.7", "0.3") == (0.7, 0.3, None)
    assert strengths("x", "0.7", "0.3", "4") == (0.7, 0.3, 4)
    assert strengths("x", "te=0.2", "unet=0.9", "dyn=2") == (0.2, 0.9, 2)
    assert strengths("x", "1", "te=0.5") == (0.5, 0.5, None)
    from emaki.errors import PromptError

    with pytest.raises(PromptError, match="te 'strong'"):
        strengths("x", "strong")


def test_lora_hashes_text(tmp_path):
    network = load_lora(write_kohya(tmp_path / "a.safetensors"))
    chosen = [ChosenLora(network, mentioned="style:v2,b"), ChosenLora(network, mentioned="a"),
              ChosenLora(network, mentioned="a")]
    assert lora_hashes(chosen, lambda n: "0123456789ab") == "stylev2b: 0123456789ab, a: 0123456789ab"
    assert lora_hashes([], lambda n: "") is None


def test_unmatched_keys_are_logged_once_per_file(tmp_path, tiny_components, targets, caplog):
    from emaki.networks.lora import apply_loras

    network = load_lora(write_kohya(tmp_path / "a.safetensors",
                                    extra={"lora_unet_nowhere.lora_down.weight": torch.zeros(1, 2),
                                           "lora_unet_nowhere.lora_up.weight": torch.zeros(2, 1),
                                           "garbage": torch.zeros(1)}))
    calls = []
    with caplog.at_level(logging.WARNING, logger="emaki.networks.lora.apply"):
        applied = apply_loras([ChosenLora(network, mentioned="a")], targets, lambda *a: calls.append(a))
        apply_loras([ChosenLora(network, mentioned="a")], targets, lambda *a: calls.append(a))
    assert sorted(network.unmatched) == ["garbage", "lora_unet_nowhere.lora_down.weight", "lora_unet_nowhere.lora_up.weight"]
    assert applied.unmatched == {"a": network.unmatched}
    assert len([r for r in caplog.records if "name no module" in r.getMessage()]) == 1
    assert applied.weights == 3
