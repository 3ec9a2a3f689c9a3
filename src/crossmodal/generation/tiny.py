"""Tiny random-weight vision-language models, built from configs with a locally trained tokenizer.

They are saved like hub checkpoints (config, safetensors, tokenizer, processor, chat template)
and loaded back through exactly the code path real models use, so tests and the demo exercise
the real loading code without any download. Their text is noise: they prove plumbing only.

Both transformers and vLLM load them: attention heads are 32 wide (vLLM's CPU attention takes
head sizes from 32 up), and the LLaVA weights use the layout of the llava-hf checkpoints
(``vision_tower.vision_model.*``), which vLLM expects and transformers converts on load.
"""

from __future__ import annotations

from pathlib import Path

import torch

HEAD_DIM = 32  # the smallest head size vLLM's CPU attention serves

# Same shape as llava-hf/llava-1.5's template: system text, then USER/ASSISTANT turns.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% for item in message['content'] %}{{ item['text'] }}{% endfor %}{{ ' ' }}"
    "{% else %}{{ message['role'].upper() + ': ' }}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>\n' }}"
    "{% else %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{{ ' ' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

_CORPUS = [
    "The image shows a red circle, a blue square and a green triangle on a white background.",
    "Describe the image in great detail. The first image shows two shapes side by side.",
    "Reference descriptions: a picture of a yellow square. Describe this image by thinking "
    "about how it is different from the descriptions above.",
    "Please answer the question according to the above context. Context: Q: A: apple banana",
    "What colour is the circle in the middle? How many shapes are in the picture? one two three",
]


def _tokenizer(vocab_size: int = 512, specials: dict[str, str] | None = None):
    """A byte-level BPE trained here on a few sentences; ``specials`` name extra tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>", *(specials or {}).values()],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=specials or {},
    )


def _vision_tower_in_hub_layout(folder: Path) -> None:
    """Rename transformers 5's ``vision_tower.*`` weights to ``vision_tower.vision_model.*``.

    The llava-hf checkpoints (and so vLLM's loader) keep CLIP's ``vision_model`` level;
    transformers 5 saves without it but loads either layout.
    """
    from safetensors.torch import load_file, save_file

    prefix, hub = "vision_tower.", "vision_tower.vision_model."
    for path in sorted(folder.glob("*.safetensors")):
        weights = load_file(path)
        renamed = {
            hub + k[len(prefix) :] if k.startswith(prefix) and not k.startswith(hub) else k: v
            for k, v in weights.items()
        }
        save_file(renamed, path, metadata={"format": "pt"})


def build_tiny_llava(folder: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """Write a LLaVA-architecture model with a few thousand random weights to ``folder``."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = Path(folder)
    tokenizer = _tokenizer(specials={"image_token": "<image>"})
    tokenizer.padding_side = "left"
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        hidden_size=2 * HEAD_DIM,
        intermediate_size=4 * HEAD_DIM,
        num_attention_heads=2,
        num_hidden_layers=2,
        image_size=image_size,
        patch_size=8,
        projection_dim=2 * HEAD_DIM,
    )
    text = LlamaConfig(
        hidden_size=2 * HEAD_DIM,
        intermediate_size=4 * HEAD_DIM,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    _vision_tower_in_hub_layout(folder)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(folder)
    return folder


# Qwen2-VL's multimodal rotary sections (temporal, height, width) split the rotary half of a
# head; they must sum to HEAD_DIM / 2. Same proportions as Qwen2-VL's [16, 24, 24] for 128.
MROPE_SECTION = [HEAD_DIM // 8, 3 * HEAD_DIM // 16, 3 * HEAD_DIM // 16]

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% else %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_qwen2_vl(folder: str | Path, seed: int = 0) -> Path:
    """Write a Qwen2-VL-architecture model with random weights to ``folder``."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    folder = Path(folder)
    specials = {
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "vision_start_token": "<|vision_start|>",
        "vision_end_token": "<|vision_end|>",
        "im_start_token": "<|im_start|>",
        "im_end_token": "<|im_end|>",
    }
    tokenizer = _tokenizer(specials=specials)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials.values()}
    config = Qwen2VLConfig(
        text_config={
            "hidden_size": 2 * HEAD_DIM,
            "intermediate_size": 4 * HEAD_DIM,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "num_hidden_layers": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 8192,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "rope_scaling": {"type": "mrope", "mrope_section": MROPE_SECTION},
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": MROPE_SECTION,
            },
        },
        vision_config={
            "depth": 2,
            "embed_dim": 2 * HEAD_DIM,
            "hidden_size": 2 * HEAD_DIM,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return folder


def run_make_tiny_vlm(job) -> Path:
    """The ``make-tiny-vlm`` stage (a :class:`crossmodal.stages.MakeTinyVlm` job)."""
    builders = {"llava": build_tiny_llava, "qwen2_vl": build_tiny_qwen2_vl}
    if job.arch not in builders:
        from crossmodal.errors import CrossmodalError

        raise CrossmodalError(f"--arch {job.arch!r}: choose one of {sorted(builders)}")
    return builders[job.arch](Path(job.config).parent, seed=job.seed)
