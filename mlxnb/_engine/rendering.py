"""A request's prompt: its messages through the model's chat template, or a raw prompt encoded."""

from __future__ import annotations

from mlxnb._engine.backend import Prompt, TextBackend
from mlxnb._engine.request import Request
from mlxnb._engine.vision import VisionBackend


def render_request(backend: TextBackend | VisionBackend, request: Request) -> Prompt:
    """The prompt ``request`` asks ``backend``'s model to continue.

    A text model's prompts render on callers' threads (before the request is queued), several
    at once, and on the worker's (those queued before the model was loaded). No lock: chat
    templates keep no state, and a settled tokenizer (:class:`TextBackend` encodes once at
    load) only reads itself while it encodes, without the GIL.

    Raises:
        InvalidRequestError: The template rejects the messages, or the prompt is empty or
            holds an impossible token id.
    """
    if request.prompt is not None:
        return backend.render_text(request.prompt)
    return backend.render(
        request.messages,
        request.tools,
        request.enable_thinking,
        request.template_kwargs,
        request.images,
    )
