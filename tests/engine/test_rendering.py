"""Prompts rendering on many threads at once, on a tokenizer that was set to truncate."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlxnb._engine.backend import TextBackend, load_text_model


def test_a_settled_tokenizer_renders_the_same_prompts_on_eight_threads_at_once(
    tiny_model_dir: Path,
) -> None:
    """Loading settles the tokenizer (the file's truncation and padding are cleared there, not
    by whichever render comes first), so renders on many threads only read it."""
    model, tokenizer, model_id = load_text_model(tiny_model_dir)
    # As a tokenizer file that sets them leaves a freshly loaded tokenizer (mlx-lm's wrapper
    # encodes at load only when the model has tool-call markers).
    rust_tokenizer = tokenizer._tokenizer._tokenizer
    rust_tokenizer.enable_truncation(8)
    rust_tokenizer.enable_padding(length=64)
    backend = TextBackend(model, tokenizer, model_id)
    assert rust_tokenizer.truncation is None and rust_tokenizer.padding is None
    chats = [[{"role": "user", "content": f"question {i}: " + "word " * 40 * i}] for i in range(32)]
    alone = [backend.render(chat, None, None).tokens for chat in chats]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda chat: backend.render(chat, None, None).tokens, chats))
    assert together == alone
    assert len(alone[-1]) > 8 * 40, "a prompt was truncated"
