"""Tiny random-weight vision-language models built with mlx-vlm's own model classes.

:func:`tiny_vision_model` writes a directory that the real ``mlx_vlm.load`` accepts with no
network: a Qwen-VL family ``config.json`` (tiny text and vision towers), random weights with the
exact parameter names and shapes of mlx-vlm's model class, the real Qwen3 tokenizer (or the local
BPE fallback, extended with the vision markers), a Qwen-VL chat template that renders image parts
as ``<|vision_start|><|image_pad|><|vision_end|>``, and image/video processor configs that keep
images small (a 64x64 image becomes four image tokens), so tests run fast on a CPU.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from mlxnb.testing._tiny import built_model_dir, save_weights
from mlxnb.testing._tokenizers import write_tokenizer

#: Bumped whenever the files written below change, so cached directories are rebuilt.
_FORMAT = 2

VISION_ARCHITECTURES = ("qwen3_vl", "qwen2_5_vl", "qwen2_vl")

#: The vision markers every Qwen-VL tokenizer carries (ids 151652-151656 in the Qwen3 vocab).
VISION_TOKENS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

_DEFAULT_PATCH = {"qwen3_vl": 16, "qwen2_5_vl": 14, "qwen2_vl": 14}
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Qwen3-VL's chat template shape (the Qwen3 template: system + tools, <think> handling, tool
# calls and tool responses) with content lists rendered through ``render_content``: image parts
# become <|vision_start|><|image_pad|><|vision_end|>, video parts the same with <|video_pad|>.
QWEN_VL_TEMPLATE = """\
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- macro render_content(content, do_vision_count) %}
    {%- if content is string %}
        {{- content }}
    {%- elif content is iterable and content is not mapping %}
        {%- for item in content %}
            {%- if item.type in ('image', 'image_url', 'input_image') or 'image' in item \
or 'image_url' in item %}
                {%- if do_vision_count %}
                    {%- set image_count.value = image_count.value + 1 %}
                {%- endif %}
                {%- if add_vision_id %}
                    {{- 'Picture ' ~ image_count.value ~ ': ' }}
                {%- endif %}
                {{- '<|vision_start|><|image_pad|><|vision_end|>' }}
            {%- elif item.type in ('video', 'input_video', 'video_url') or 'video' in item %}
                {%- if do_vision_count %}
                    {%- set video_count.value = video_count.value + 1 %}
                {%- endif %}
                {%- if add_vision_id %}
                    {{- 'Video ' ~ video_count.value ~ ': ' }}
                {%- endif %}
                {{- '<|vision_start|><|video_pad|><|vision_end|>' }}
            {%- elif 'text' in item %}
                {{- item.text }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
{%- endmacro %}
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- render_content(messages[0].content, false) + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n\
You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and \
arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \
\\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + render_content(messages[0].content, false) + \
'<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" %}
        {%- set content = render_content(message.content, false) %}
        {%- if not(content.startswith('<tool_response>') and \
content.endswith('</tool_response>')) %}
            {%- set ns.multi_step_tool = false %}
            {%- set ns.last_query_index = index %}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- set content = render_content(message.content, true) %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n')\
.split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + \
reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""


def _add_vision_tokens(directory: Path) -> dict[str, int]:
    """Make sure the tokenizer in ``directory`` has the vision markers and the VL template.

    The real Qwen3 tokenizer already carries them; the local BPE gets them appended.

    Returns:
        The id of every special token the config names, by its text.
    """
    from tokenizers import AddedToken, Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    missing = [token for token in VISION_TOKENS if tokenizer.token_to_id(token) is None]
    if missing:
        tokenizer.add_special_tokens([AddedToken(token, special=True) for token in missing])
        tokenizer.save(str(directory / "tokenizer.json"))
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    extra = list(config.get("additional_special_tokens") or [])
    config["additional_special_tokens"] = extra + [t for t in VISION_TOKENS if t not in extra]
    config["chat_template"] = QWEN_VL_TEMPLATE
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (directory / "chat_template.jinja").write_text(QWEN_VL_TEMPLATE)
    ids: dict[str, int] = {}
    for token in (*VISION_TOKENS, "<|im_end|>", "<|endoftext|>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise RuntimeError(f"tokenizer lacks {token!r}")
        ids[token] = token_id
    return ids


def vision_model_config(
    arch: str,
    *,
    vocab_size: int,
    token_ids: dict[str, int],
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int,
    vision_depth: int,
    vision_hidden_size: int,
    vision_num_heads: int,
    patch_size: int,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Build a ``config.json`` dictionary for one of :data:`VISION_ARCHITECTURES`.

    Args:
        arch: ``"qwen3_vl"``, ``"qwen2_5_vl"`` or ``"qwen2_vl"``.
        vocab_size: Rows of the embedding table.
        token_ids: Ids of the vision markers and end tokens (see :data:`VISION_TOKENS`).
        hidden_size: Language-model width (also the vision tower's output width).
        num_layers: Language-model blocks.
        num_heads: Language-model attention heads.
        num_kv_heads: Language-model key/value heads.
        intermediate_size: Language-model MLP width.
        vision_depth: Vision-tower blocks.
        vision_hidden_size: Vision-tower width.
        vision_num_heads: Vision-tower attention heads.
        patch_size: Side of one square vision patch, in pixels.
        dtype: The ``torch_dtype`` to record.

    Returns:
        The configuration, in the Hugging Face layout mlx-vlm reads.
    """
    if arch not in VISION_ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {list(VISION_ARCHITECTURES)}")
    head_dim = hidden_size // num_heads
    if head_dim % 8:
        raise ValueError("hidden_size // num_heads must be a multiple of 8 (MRoPE sections)")
    # MRoPE splits the head_dim // 2 rotary frequencies over (time, height, width), in the
    # proportions of the real Qwen2-VL sections [16, 24, 24] for head_dim 128.
    half = head_dim // 2
    time_part = half // 4
    height_part = (half - time_part) // 2
    mrope_section = [time_part, height_part, half - time_part - height_part]
    ids = {
        "image_token_id": token_ids["<|image_pad|>"],
        "video_token_id": token_ids["<|video_pad|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"],
        "vision_end_token_id": token_ids["<|vision_end|>"],
        "vision_token_id": token_ids["<|vision_pad|>"],
        "eos_token_id": [token_ids["<|im_end|>"], token_ids["<|endoftext|>"]],
    }
    text: dict[str, Any] = {
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "intermediate_size": intermediate_size,
        "vocab_size": vocab_size,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
    }
    vision: dict[str, Any] = {
        "model_type": arch,
        "depth": vision_depth,
        "num_heads": vision_num_heads,
        "patch_size": patch_size,
        "spatial_patch_size": patch_size,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
    }
    if arch == "qwen3_vl":
        vision.update(
            hidden_size=vision_hidden_size,
            intermediate_size=2 * vision_hidden_size,
            out_hidden_size=hidden_size,
            num_position_embeddings=256,
            deepstack_visual_indexes=[0],
            hidden_act="gelu_pytorch_tanh",
        )
        return {
            "architectures": ["Qwen3VLForConditionalGeneration"],
            "model_type": arch,
            **ids,
            "tie_word_embeddings": True,
            "torch_dtype": dtype,
            "text_config": {
                **text,
                "model_type": "qwen3_vl_text",
                "head_dim": head_dim,
                "rope_theta": 5_000_000.0,
                "rope_scaling": {
                    "rope_type": "default",
                    "mrope_section": mrope_section,
                    "mrope_interleaved": True,
                },
                "attention_bias": False,
            },
            "vision_config": vision,
        }
    if arch == "qwen2_5_vl":
        vision.update(
            hidden_size=vision_hidden_size,
            intermediate_size=2 * vision_hidden_size,
            out_hidden_size=hidden_size,
            window_size=4 * patch_size * 2,
            fullatt_block_indexes=[vision_depth - 1],
            hidden_act="silu",
        )
    else:
        vision.update(embed_dim=vision_hidden_size, hidden_size=hidden_size, mlp_ratio=2)
    return {
        "architectures": [
            "Qwen2_5_VLForConditionalGeneration"
            if arch == "qwen2_5_vl"
            else "Qwen2VLForConditionalGeneration"
        ],
        "model_type": arch,
        **text,
        **ids,
        "rope_theta": 1_000_000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": mrope_section},
        "torch_dtype": dtype,
        "vision_config": vision,
    }


def processor_configs(
    arch: str, *, patch_size: int, max_image_tokens: int
) -> dict[str, dict[str, Any]]:
    """The image, video and processor configs mlx-vlm's Qwen-VL processor reads.

    Args:
        arch: One of :data:`VISION_ARCHITECTURES`.
        patch_size: Side of one vision patch, in pixels.
        max_image_tokens: Images larger than this many merged tokens are scaled down.

    Returns:
        File name to JSON content: ``preprocessor_config.json``,
        ``video_preprocessor_config.json`` and ``processor_config.json``.
    """
    factor = patch_size * 2
    qwen3 = arch == "qwen3_vl"
    processor = {"qwen3_vl": "Qwen3VL", "qwen2_5_vl": "Qwen2_5_VL", "qwen2_vl": "Qwen2VL"}[arch]
    common = {
        "patch_size": patch_size,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5] if qwen3 else _CLIP_MEAN,
        "image_std": [0.5, 0.5, 0.5] if qwen3 else _CLIP_STD,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
        "min_pixels": factor * factor,
        "max_pixels": factor * factor * max_image_tokens,
        "size": {
            "shortest_edge": factor * factor,
            "longest_edge": factor * factor * max_image_tokens,
        },
        "processor_class": f"{processor}Processor",
    }
    return {
        "preprocessor_config.json": {
            **common,
            "image_processor_type": "Qwen2VLImageProcessorFast",
        },
        "video_preprocessor_config.json": {
            **common,
            "video_processor_type": f"{'Qwen3VL' if qwen3 else 'Qwen2VL'}VideoProcessor",
            "fps": 2.0,
            "min_frames": 2,
            "max_frames": 8,
        },
        "processor_config.json": {"processor_class": f"{processor}Processor"},
    }


def write_random_vision_weights(
    directory: Path, config: dict[str, Any], seed: int, dtype: str = "float32"
) -> None:
    """Instantiate mlx-vlm's model class for ``config`` and save random weights.

    The parameter names and shapes come from the model class itself (``tree_flatten`` of its
    parameters), so they are exactly what ``mlx_vlm.load`` expects; the model's ``sanitize``
    steps leave them unchanged.

    Args:
        directory: Where ``model.safetensors`` goes.
        config: A configuration from :func:`vision_model_config`.
        seed: Seed for MLX's random initialisation.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
    """
    import mlx.core as mx
    from mlx_vlm.utils import get_model_and_args, update_module_configs

    mx.random.seed(seed)
    params = copy.deepcopy(config)
    module, _ = get_model_and_args(params)
    params.setdefault("text_config", {})
    params.setdefault("vision_config", {})
    model_config = module.ModelConfig.from_dict(params)
    model_config = update_module_configs(
        model_config, module, params, ["text", "vision", "perceiver", "projector", "audio"]
    )
    save_weights(directory, module.Model(model_config), dtype)


def tiny_vision_model(
    path: str | Path | None = None,
    *,
    arch: str = "qwen3_vl",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vision_depth: int = 2,
    vision_hidden_size: int = 32,
    vision_num_heads: int = 2,
    patch_size: int | None = None,
    max_image_tokens: int = 16,
    tokenizer: str = "qwen3",
    seed: int = 0,
    dtype: str = "float32",
) -> Path:
    """Write a tiny random-weight Qwen-VL model directory that ``mlx_vlm.load`` accepts offline.

    The weights are random, so the text is gibberish; for exact text pass
    ``forced_output(TokenizerWrapper(processor.tokenizer), text)`` as a logits processor
    (mlx-lm's wrapper, since a transformers 5 tokenizer reports ``eos_token_ids`` as one int).
    The tokenizer is the real Qwen3 tokenizer (it already holds the Qwen-VL vision markers at
    their official ids) or the local BPE with the markers appended; the chat template is Qwen3's
    (thinking, tools, tool responses; text-only chats render exactly as with Qwen3's own) with
    image parts rendered as ``<|vision_start|><|image_pad|><|vision_end|>``.

    An image of ``H x W`` pixels (multiples of ``2 * patch_size``, within the pixel budget)
    becomes ``(H / patch) * (W / patch) / 4`` image tokens; larger images are scaled down to
    at most ``max_image_tokens`` tokens.

    Args:
        path: Target directory. ``None`` uses a cache directory keyed by the arguments, so
            repeated calls return at once.
        arch: ``"qwen3_vl"`` (Qwen3-VL: Qwen3 text model with q/k norms, interleaved MRoPE,
            deepstack vision features), ``"qwen2_5_vl"`` or ``"qwen2_vl"``.
        hidden_size: Language-model width.
        num_layers: Language-model blocks.
        num_heads: Language-model attention heads (``hidden_size // num_heads`` must be a
            multiple of 8).
        num_kv_heads: Language-model key/value heads.
        intermediate_size: Language-model MLP width.
        vision_depth: Vision-tower blocks.
        vision_hidden_size: Vision-tower width.
        vision_num_heads: Vision-tower attention heads.
        patch_size: Vision patch side in pixels (default: the architecture's own, 16 for
            Qwen3-VL and 14 for Qwen2-VL/2.5-VL).
        max_image_tokens: Token budget of one image; larger images are scaled down.
        tokenizer: ``"qwen3"`` or ``"bpe"``.
        seed: Seed for the random weights.
        dtype: Weight type: ``float32`` (fastest on CPUs), ``bfloat16`` or ``float16``.

    Returns:
        The model directory.

    Example:
        >>> import mlx_vlm
        >>> from mlxnb.testing import tiny_vision_model
        >>> model, processor = mlx_vlm.load(str(tiny_vision_model()))  # doctest: +SKIP
    """
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    if arch not in VISION_ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {list(VISION_ARCHITECTURES)}")
    patch = patch_size or _DEFAULT_PATCH[arch]
    shape = {
        "format": _FORMAT,
        "arch": arch,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads,
        "intermediate_size": intermediate_size,
        "vision_depth": vision_depth,
        "vision_hidden_size": vision_hidden_size,
        "vision_num_heads": vision_num_heads,
        "patch_size": patch,
        "max_image_tokens": max_image_tokens,
        "tokenizer": tokenizer,
        "seed": seed,
        "dtype": dtype,
    }

    def write(staging: Path) -> None:
        vocab_size = write_tokenizer(staging, tokenizer)
        token_ids = _add_vision_tokens(staging)
        vocab_size = max(vocab_size, max(token_ids.values()) + 1)
        config = vision_model_config(
            arch,
            vocab_size=vocab_size,
            token_ids=token_ids,
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            intermediate_size=intermediate_size,
            vision_depth=vision_depth,
            vision_hidden_size=vision_hidden_size,
            vision_num_heads=vision_num_heads,
            patch_size=patch,
            dtype=dtype,
        )
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        for name, content in processor_configs(
            arch, patch_size=patch, max_image_tokens=max_image_tokens
        ).items():
            (staging / name).write_text(json.dumps(content, indent=2))
        write_random_vision_weights(staging, config, seed, dtype)

    return built_model_dir(path, shape, f"tiny-{arch}", write)
