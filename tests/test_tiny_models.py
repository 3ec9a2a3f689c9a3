"""The tiny VLMs load in transformers and in vLLM's layout; text is decoded the way vLLM does.

(tests/test_vllm_real.py serves them through a real vLLM server.)
"""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from crossmodal.generation.tiny import HEAD_DIM, build_tiny_llava, build_tiny_qwen2_vl
from crossmodal.generation.transformers_backend import TransformersGenerator


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {
        "llava": build_tiny_llava(root / "llava", seed=0),
        "qwen2_vl": build_tiny_qwen2_vl(root / "qwen2_vl", seed=0),
    }


def test_llava_weights_use_the_hub_layout_and_load_completely(tiny):
    from transformers import AutoModelForImageTextToText

    folder = tiny["llava"]
    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        patch = f.get_tensor("vision_tower.vision_model.embeddings.patch_embedding.weight")
    tops = {k.split(".")[0] + "." + k.split(".")[1] for k in keys}
    assert {t for t in tops if t.startswith("vision_tower.")} == {"vision_tower.vision_model"}
    model, info = AutoModelForImageTextToText.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    loaded = dict(model.named_parameters())
    (name,) = [n for n in loaded if n.endswith("vision_tower.embeddings.patch_embedding.weight")]
    assert loaded[name].equal(patch)  # read from the file, not freshly initialised


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_head_sizes_are_ones_vllm_cpu_serves(arch, tiny):
    config = json.loads((tiny[arch] / "config.json").read_text())
    text = config["text_config"]
    assert text["hidden_size"] // text["num_attention_heads"] == HEAD_DIM >= 32
    vision = config["vision_config"]
    width = vision.get("embed_dim", vision["hidden_size"])
    heads = vision.get("num_heads", vision.get("num_attention_heads"))
    assert width // heads == HEAD_DIM
    if arch == "qwen2_vl":  # the rotary sections split half a head
        assert sum(text["rope_parameters"]["mrope_section"]) == HEAD_DIM // 2


@pytest.fixture(scope="module")
def llava_gen(tiny):
    return TransformersGenerator(str(tiny["llava"]), device="cpu")


def test_a_character_cut_by_the_token_limit_is_dropped_not_replaced(llava_gen):
    tok = llava_gen.processor.tokenizer
    ids = tok.encode("shape é", add_special_tokens=False)
    plain = tok.decode(ids[:-1])
    assert plain.endswith("\ufffd")  # what a one-shot decode leaves; vLLM returns no such char
    prompt = tok.encode("Q: A:", add_special_tokens=False)
    assert llava_gen._decode(prompt, ids[:-1], ()) == "shape "
    assert llava_gen._decode(prompt, ids, ()) == "shape é"


def test_a_stop_string_cuts_the_text_where_it_starts(llava_gen):
    tok = llava_gen.processor.tokenizer
    ids = tok.encode("apple\nbanana", add_special_tokens=False)
    assert llava_gen._decode([], ids, ("\n",)) == "apple"
    assert llava_gen._decode([], ids, ("nan",)) == "apple\nba"
    assert llava_gen._decode([], ids, ()) == "apple\nbanana"
