"""GGUF → mlx-lm: a llama-architecture GGUF rewritten as an mlx-lm model directory.

Weights are read with ``mx.load`` (dense, Q4_1 or Q8_0), renamed to Hugging Face llama names and
un-permuted; ``config.json`` and a ``tokenizer.json`` are rebuilt from the GGUF's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlxnb.errors import ModelLoadError

DTYPES = ("float32", "float16", "bfloat16", "quantized")

# GGML's Q4_1 / Q8_0 blocks hold 32 values each.
GROUP_SIZE = 32

_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

# GGUF token types (llama.cpp's llama_token_type).
_CONTROL = 3
_USER_DEFINED = 4
# Hugging Face special-token role -> the GGUF's ``tokenizer.ggml.<role>_token_id`` key.
_SPECIAL_ROLES = {"bos": "bos", "eos": "eos", "unk": "unknown", "pad": "padding"}


def convert_gguf(gguf: Path, directory: Path, *, dtype: str = "float32") -> None:
    """Convert a llama-architecture GGUF into an mlx-lm model directory.

    Args:
        gguf: The GGUF file (dense, Q4_1 or Q8_0 tensors: what ``mx.load`` reads).
        directory: An existing directory to write the model files into.
        dtype: One of :data:`DTYPES`.
    """
    import mlx.core as mx

    loaded: Any = mx.load(str(gguf), return_metadata=True)
    tensors, meta = loaded
    if meta.get("general.architecture") != "llama":
        raise ModelLoadError(f"{gguf.name}: only llama GGUFs are supported")
    config = model_config(meta, dtype=dtype, tied="output.weight" not in tensors)
    weights = convert_weights(
        tensors,
        n_heads=config["num_attention_heads"],
        n_kv_heads=config["num_key_value_heads"],
        dtype=dtype,
    )
    if dtype == "quantized":
        config["quantization"] = _quantization_map(weights)
    mx.save_safetensors(str(directory / "model.safetensors"), weights, {"format": "mlx"})
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(meta, directory)


def _scalar(meta: dict[str, Any], key: str) -> Any:
    """A scalar metadata value as a Python number (``mx.load`` returns 0-d arrays)."""
    value = meta[key]
    return value.item() if hasattr(value, "item") else value


def _float32(value: float) -> float:
    """A float32 as its shortest decimal (so ``1e-05`` is not ``9.999999747378752e-06``)."""
    return float(f"{value:.7g}")


def model_config(meta: dict[str, Any], *, dtype: str, tied: bool) -> dict[str, Any]:
    """Build a Hugging Face llama ``config.json`` from GGUF metadata.

    Args:
        meta: Metadata from ``mx.load(..., return_metadata=True)``.
        dtype: The weights' dtype (recorded as ``torch_dtype``).
        tied: Whether the output projection reuses the embeddings (the GGUF has no ``output``).

    Returns:
        The configuration, in the layout mlx-lm reads.
    """
    heads = int(_scalar(meta, "llama.attention.head_count"))
    hidden = int(_scalar(meta, "llama.embedding_length"))
    tokens = meta["tokenizer.ggml.tokens"]
    vocab = int(_scalar(meta, "llama.vocab_size")) if "llama.vocab_size" in meta else len(tokens)
    rope_dims = "llama.rope.dimension_count"
    head_dim = int(_scalar(meta, rope_dims)) if rope_dims in meta else hidden // heads
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": int(_scalar(meta, "llama.feed_forward_length")),
        "num_hidden_layers": int(_scalar(meta, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_scalar(meta, "llama.attention.head_count_kv")),
        "head_dim": head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": int(_scalar(meta, "llama.context_length")),
        "rms_norm_eps": _float32(_scalar(meta, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": _float32(_scalar(meta, "llama.rope.freq_base")),
        "rope_traditional": False,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": tied,
        "bos_token_id": int(_scalar(meta, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_scalar(meta, "tokenizer.ggml.eos_token_id")),
        "torch_dtype": "float32" if dtype == "quantized" else dtype,
    }


def hf_name(gguf_name: str) -> str:
    """Map a GGUF tensor base name (``blk.3.attn_q``) to its mlx-lm module path."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    prefix, index, part = gguf_name.split(".", 2)
    if prefix != "blk" or part not in _BLOCK_NAMES:
        raise ModelLoadError(f"unexpected GGUF tensor {gguf_name!r}")
    return f"model.layers.{index}.{_BLOCK_NAMES[part]}"


def unpermute_rows(weight: Any, n_heads: int) -> Any:
    """Undo llama.cpp's per-head row interleaving of a q or k projection.

    llama.cpp's converter reorders each head's rows from ``[first half, second half]`` to
    alternating pairs, for GGML's interleaved RoPE; mlx-lm uses the split-half RoPE of the
    Hugging Face layout. Rows are permuted whole, so this also applies to packed quantized
    weights and to their scales and biases.

    Args:
        weight: A 2-D array whose rows are the projection's outputs.
        n_heads: Heads of the projection (``head_count`` for q, ``head_count_kv`` for k).

    Returns:
        The rows in Hugging Face order.
    """
    rows, cols = weight.shape
    pairs = rows // n_heads // 2
    return weight.reshape(n_heads, pairs, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def convert_weights(
    tensors: dict[str, Any], *, n_heads: int, n_kv_heads: int, dtype: str
) -> dict[str, Any]:
    """Rename, un-permute and (unless ``dtype="quantized"``) dequantize GGUF tensors.

    Args:
        tensors: Arrays from ``mx.load`` of the GGUF.
        n_heads: Attention heads (rows of ``attn_q`` are permuted per head).
        n_kv_heads: Key/value heads (rows of ``attn_k`` are permuted per head).
        dtype: One of :data:`DTYPES`.

    Returns:
        Arrays named as mlx-lm's llama model expects.
    """
    import mlx.core as mx

    permuted = {"attn_q": n_heads, "attn_k": n_kv_heads}
    weights: dict[str, Any] = {}
    for base in sorted({name.rsplit(".", 1)[0] for name in tensors}):
        parts = {
            kind: tensors[f"{base}.{kind}"]
            for kind in ("weight", "scales", "biases")
            if f"{base}.{kind}" in tensors
        }
        heads = permuted.get(base.rsplit(".", 1)[-1])
        if heads is not None:
            parts = {kind: unpermute_rows(array, heads) for kind, array in parts.items()}
        if dtype != "quantized":
            dense = _dequantize(parts) if "scales" in parts else parts["weight"]
            parts = {"weight": dense.astype(getattr(mx, dtype))}
        module = hf_name(base)
        weights.update({f"{module}.{kind}": array for kind, array in parts.items()})
    mx.eval(weights)
    return weights


def _bits(parts: dict[str, Any]) -> int:
    """Bits per value of a packed quantized weight: packed bits over values per row."""
    packed_bits = parts["weight"].shape[-1] * 32
    values = parts["scales"].shape[-1] * GROUP_SIZE
    return int(packed_bits // values)


def _dequantize(parts: dict[str, Any]) -> Any:
    import mlx.core as mx

    # Dequantize in float32, as GGML does, rather than in the scales' float16.
    return mx.dequantize(
        parts["weight"],
        parts["scales"].astype(mx.float32),
        parts["biases"].astype(mx.float32),
        group_size=GROUP_SIZE,
        bits=_bits(parts),
    )


def _quantization_map(weights: dict[str, Any]) -> dict[str, Any]:
    """``config.json``'s ``quantization``: 4-bit by default, each other width named per module."""
    quantization: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": 4, "mode": "affine"}
    for name in weights:
        if not name.endswith(".scales"):
            continue
        module = name.removesuffix(".scales")
        bits = _bits({"weight": weights[f"{module}.weight"], "scales": weights[name]})
        if bits != quantization["bits"]:
            quantization[module] = {"group_size": GROUP_SIZE, "bits": bits}
    return quantization


def _special_token(meta: dict[str, Any], role: str) -> str | None:
    key = f"tokenizer.ggml.{role}_token_id"
    if key not in meta:
        return None
    return str(meta["tokenizer.ggml.tokens"][int(_scalar(meta, key))])


def build_tokenizer(meta: dict[str, Any]) -> Any:
    """Rebuild a Hugging Face fast tokenizer from a GGUF's ``gpt2`` (byte-level BPE) vocabulary.

    Args:
        meta: Metadata from ``mx.load(..., return_metadata=True)``.

    Returns:
        A ``tokenizers.Tokenizer``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ModelLoadError("only byte-level BPE (tokenizer.ggml.model == 'gpt2') is supported")
    if "tokenizer.ggml.add_bos_token" in meta and _scalar(meta, "tokenizer.ggml.add_bos_token"):
        raise ModelLoadError("only tokenizers that add no BOS token are supported")
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(merge.split(" ", 1)) for merge in meta["tokenizer.ggml.merges"]]
    tokenizer = Tokenizer(
        models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges)
    )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if meta.get("tokenizer.ggml.pre") == "smollm":
        # llama.cpp's "smollm" pre-tokenizer splits every digit on its own first.
        digits = pre_tokenizers.Digits(individual_digits=True)
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([digits, byte_level])
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    types = meta["tokenizer.ggml.token_type"].tolist()
    added = [
        AddedToken(token, special=kind == _CONTROL, normalized=False)
        for token, kind in zip(tokens, types, strict=True)
        if kind in (_CONTROL, _USER_DEFINED)
    ]
    tokenizer.add_tokens(added)
    return tokenizer


def write_tokenizer(meta: dict[str, Any], directory: Path) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

    Args:
        meta: Metadata from ``mx.load(..., return_metadata=True)``.
        directory: The model directory.
    """
    build_tokenizer(meta).save(str(directory / "tokenizer.json"))
    special = {
        f"{role}_token": token
        for role, gguf_role in _SPECIAL_ROLES.items()
        if (token := _special_token(meta, gguf_role)) is not None
    }
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_scalar(meta, "llama.context_length")),
    }
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = meta["tokenizer.chat_template"]
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
