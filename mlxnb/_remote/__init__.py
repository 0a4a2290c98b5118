"""The remote family: OpenAI-compatible servers used like local engines.

:mod:`~mlxnb._remote.client` holds ``Endpoint`` (one server: streaming, bounded concurrency,
retries), :mod:`~mlxnb._remote.fanout` ``Endpoints`` (one model over several servers),
:mod:`~mlxnb._remote.engine` what both share as engines (the blocking twins, the refusals),
:mod:`~mlxnb._remote.wire` the chat wire (request bodies, SSE chunks → events) and
:mod:`~mlxnb._remote.recording` their audit rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlxnb._remote.client import Endpoint
from mlxnb._remote.fanout import Endpoints


def endpoint(
    url: str,
    *,
    model: str,
    api_key: str | None = None,
    max_concurrency: int = 8,
    **options: Any,
) -> Endpoint:
    """A model on an OpenAI-compatible server, usable wherever an engine is.

    Another kernel's :func:`mlxnb.serve`, ``mlxnb serve``, ``mlx_lm.server``, LM Studio or
    vLLM: the answer streams over ``/v1/chat/completions`` into mlxnb's events (thinking from
    ``reasoning_content``, tool calls from ``tool_calls`` deltas), so :class:`~mlxnb.Conversation`,
    :func:`mlxnb.chat`, :func:`mlxnb.evaluate` and the audit log work as with a local model.

    Args:
        url: The server's base URL, e.g. ``"http://127.0.0.1:8000/v1"``.
        model: The model's name on the server.
        api_key: The server's API key (sent as a bearer token; never recorded).
        max_concurrency: Most requests in flight at once.
        **options: Further :class:`Endpoint` arguments (``retries``, ``backoff``,
            ``timeout``, ``audit``, ``supports_thinking``, ``kind``).

    Returns:
        The endpoint.

    Example:
        >>> remote = mlxnb.endpoint("http://mac2.local:8000/v1", model="Qwen3-8B")  # doctest: +SKIP
        >>> mlxnb.Conversation(remote).ask("hi")  # doctest: +SKIP
    """
    return Endpoint(url, model=model, api_key=api_key, max_concurrency=max_concurrency, **options)


def endpoints(
    urls: Sequence[str],
    *,
    model: str,
    api_key: str | None = None,
    max_concurrency: int = 8,
    **options: Any,
) -> Endpoints:
    """One model over several OpenAI-compatible servers, for spreading an evaluation.

    ``evaluate(prompts, model=mlxnb.endpoints([url1, url2, url3], model=name))`` sends each
    row to the server with the fewest rows in flight; a server that dies mid-run is skipped
    and its rows run again on the others; ``checkpoint=`` resumes as with one model.

    Args:
        urls: The servers' base URLs.
        model: The model's name on every server.
        api_key: Sent to every server (never recorded).
        max_concurrency: Most requests in flight per server.
        **options: Further :class:`Endpoints` arguments (``dead_for``, ``retries``,
            ``timeout``, ``audit``, ``supports_thinking``, ``kind``).

    Returns:
        The group, used like one engine.
    """
    return Endpoints(urls, model=model, api_key=api_key, max_concurrency=max_concurrency, **options)


__all__ = ["Endpoint", "Endpoints", "endpoint", "endpoints"]
