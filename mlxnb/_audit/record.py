"""The audit row: :class:`TurnRecord`, its versioned column schema and time formatting.

One :class:`TurnRecord` describes one finished turn, from any front door. :data:`COLUMNS` is the
single description of the row that the SQLite store, the DataFrame dtypes and the export formats
are all derived from; :data:`SCHEMA_VERSION` goes up whenever it changes. Columns are only ever
added, at the end, each naming the version that added it and the value older rows get, so a file
or an export from an older version can be brought up to date (see :mod:`mlxnb._audit.store`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from mlxnb.errors import AuditError
from mlxnb.events import Turn

SCHEMA_VERSION = 6
"""Version of the audit row schema (stored in every row and in the database header).

1. The first schema.
2. ``image_count`` and ``images`` (vision requests): older rows read as ``0`` and null.
3. ``sampling`` (the effective sampling settings): older rows read as null.
4. ``draft_tokens`` and ``accepted_draft_tokens`` (prompt-lookup decoding): older rows read
   as ``0``.
5. ``request`` (what was asked, for replay): older rows read as null.
6. No new column: the ``conversations`` table (saved chat histories,
   :mod:`mlxnb._audit.conversations`) beside the turns; a migrated file starts with it empty.
"""

Status = Literal["ok", "cancelled", "error"]
STATUSES: tuple[Status, ...] = ("ok", "cancelled", "error")
SOURCES = ("widget", "python", "eval", "server", "magic")
"""The front doors mlxnb itself records; other values are allowed for custom doors."""

ColumnKind = Literal["str", "str?", "int", "int?", "float", "float?", "time"]


@dataclass(frozen=True)
class Column:
    """One column of the audit row.

    Attributes:
        name: Column name (the :class:`TurnRecord` field of the same name).
        kind: Value kind; a trailing ``?`` marks a nullable column.
        since: The :data:`SCHEMA_VERSION` that added the column.
        default: The value rows written before ``since`` read as (``None``: null). A column
            added after version 1 that is not nullable needs one.
    """

    name: str
    kind: ColumnKind
    since: int = 1
    default: int | str | None = None

    def __post_init__(self) -> None:
        if self.since > 1 and self.default is None and not self.nullable:
            raise AuditError(f"column {self.name} was added later: it needs a default")

    @property
    def nullable(self) -> bool:
        """Whether the column may hold null."""
        return self.kind.endswith("?")

    @property
    def dtype(self) -> str:
        """The pandas dtype of the column."""
        base = self.kind.rstrip("?")
        return {"str": "string", "int": "Int64", "float": "Float64"}.get(
            base, "datetime64[ns, UTC]"
        )

    @property
    def sql(self) -> str:
        """The column's SQLite declaration."""
        base = self.kind.rstrip("?")
        sql_type = {"int": "INTEGER", "float": "REAL"}.get(base, "TEXT")
        sql = f"{self.name} {sql_type}" + ("" if self.nullable else " NOT NULL")
        if isinstance(self.default, str):
            sql += " DEFAULT '" + self.default.replace("'", "''") + "'"
        elif self.default is not None:
            sql += f" DEFAULT {int(self.default)}"
        return sql


COLUMNS: tuple[Column, ...] = (
    Column("request_id", "str"),
    Column("started_at", "time"),
    Column("source", "str"),
    Column("model", "str"),
    Column("status", "str"),
    Column("finish_reason", "str"),
    Column("duration_s", "float"),
    Column("time_to_first_token_s", "float?"),
    Column("prompt_tokens", "int"),
    Column("completion_tokens", "int"),
    Column("cached_tokens", "int"),
    Column("prompt_tps", "float?"),
    Column("generation_tps", "float?"),
    Column("peak_memory_gb", "float?"),
    Column("conversation_id", "str?"),
    Column("endpoint", "str?"),
    Column("client", "str?"),
    Column("run_id", "str?"),
    Column("error_type", "str?"),
    Column("error_message", "str?"),
    Column("tool_calls", "str"),
    Column("tool_call_errors", "int"),
    Column("content", "str"),
    Column("reasoning", "str"),
    Column("schema_version", "int"),
    Column("image_count", "int", since=2, default=0),
    Column("images", "str?", since=2),
    Column("sampling", "str?", since=3),
    Column("draft_tokens", "int", since=4, default=0),
    Column("accepted_draft_tokens", "int", since=4, default=0),
    Column("request", "str?", since=5),
)
COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in COLUMNS)

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""How ``started_at`` is stored: fixed width, so text order is time order."""


def format_time(moment: datetime) -> str:
    """``moment`` (timezone-aware) as the stored UTC text, in :data:`TIME_FORMAT`."""
    utc = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"  # 3x faster than strftime


def parse_time(text: str) -> datetime:
    """The inverse of :func:`format_time`."""
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=timezone.utc)


@dataclass(frozen=True, kw_only=True, slots=True)
class TurnRecord:
    """One finished turn, as one audit row.

    Attributes:
        request_id: Unique, time-sortable id (see :func:`mlxnb._ids.new_request_id`).
        started_at: When the request entered mlxnb (timezone-aware; stored as UTC).
        source: The front door: ``widget``, ``python``, ``eval``, ``server`` or ``magic``.
        model: Model id or path.
        status: ``ok``, ``cancelled`` or ``error``.
        finish_reason: ``stop``, ``length``, ``tool_calls``, ``cancelled`` or ``error``.
        duration_s: Seconds from start until the stream ended.
        time_to_first_token_s: Seconds until the first generated token, if any.
        prompt_tokens: Tokens in the rendered prompt.
        completion_tokens: Tokens generated.
        cached_tokens: Prompt tokens served from the prompt cache.
        prompt_tps: Prompt tokens processed per second.
        generation_tps: Generated tokens per second.
        peak_memory_gb: Peak MLX memory during the turn, in GB.
        conversation_id: Id of the conversation the turn belongs to.
        endpoint: HTTP path (``/v1/chat/completions``) or other entry point name.
        client: Client address for HTTP requests.
        run_id: Evaluation run id.
        error_type: Exception class name when the turn failed.
        error_message: Error text when the turn failed.
        tool_calls: JSON text, a list of ``{"name", "arguments"}`` objects.
        tool_call_errors: Number of tool calls that could not be parsed.
        content: The visible answer.
        reasoning: The reasoning text.
        schema_version: Schema version the row was written with.
        image_count: Images in the request (``0`` when none).
        images: JSON text, a list of per-image summaries in request order: ``{"sha256",
            "format", "width", "height", "bytes"}`` (never the image itself); ``None`` when
            there are none. A list cut to fit ``max_text_chars`` ends in ``{"omitted": n}``
            for the ``n`` summaries dropped from its end, so it always accounts for
            ``image_count`` images.
        sampling: JSON text, the sampling settings the request ran with after defaults were
            applied (request, then the model's ``generation_config.json``, then mlxnb's):
            ``{"max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", ...}``;
            ``None`` when the request was refused before its settings were checked.
        draft_tokens: Tokens drafted by prompt-lookup decoding (``0`` when it was off).
        accepted_draft_tokens: Of those, how many the model confirmed; the acceptance rate is
            ``accepted_draft_tokens / draft_tokens``.
        request: JSON text, what was asked, so the turn can be asked again
            (:func:`mlxnb.replay`): ``{"messages", "tools", "enable_thinking",
            "chat_template_kwargs", "prompt"}`` (images as placeholders, never their bytes);
            ``None`` with ``log_content=False``, when it did not fit ``max_text_chars``, or
            for rows written before schema 5.
    """

    request_id: str
    started_at: datetime
    source: str
    model: str
    status: Status
    finish_reason: str
    duration_s: float
    time_to_first_token_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    prompt_tps: float | None = None
    generation_tps: float | None = None
    peak_memory_gb: float | None = None
    conversation_id: str | None = None
    endpoint: str | None = None
    client: str | None = None
    run_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    tool_calls: str = "[]"
    tool_call_errors: int = 0
    content: str = ""
    reasoning: str = ""
    schema_version: int = SCHEMA_VERSION
    image_count: int = 0
    images: str | None = None
    sampling: str | None = None
    draft_tokens: int = 0
    accepted_draft_tokens: int = 0
    request: str | None = None

    def __post_init__(self) -> None:
        if self.started_at.tzinfo is None or self.started_at.utcoffset() is None:
            raise AuditError("started_at must be timezone-aware (use datetime.now(timezone.utc))")
        if self.status not in STATUSES:
            raise AuditError(f"status must be one of {STATUSES}, not {self.status!r}")
        if not self.request_id or not self.source:
            raise AuditError("request_id and source must not be empty")
        object.__setattr__(self, "started_at", self.started_at.astimezone(timezone.utc))
        # One spelling of "absent" keeps CSV exports (which cannot tell "" from null) lossless.
        for name in (
            "conversation_id",
            "endpoint",
            "client",
            "run_id",
            "error_type",
            "error_message",
            "images",
            "sampling",
            "request",
        ):
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        for name in ("time_to_first_token_s", "prompt_tps", "generation_tps", "peak_memory_gb"):
            value = getattr(self, name)
            if value is not None and math.isnan(value):
                object.__setattr__(self, name, None)
        if self.image_count < 0:
            raise AuditError(f"image_count must be >= 0, not {self.image_count}")
        if self.images is not None:
            accounted = images_accounted(self.images)
            if accounted == 0:  # one spelling of "no images"
                object.__setattr__(self, "images", None)
            if accounted != self.image_count:
                raise AuditError(
                    f"image_count is {self.image_count} but images accounts for {accounted}"
                )

    @classmethod
    def from_turn(
        cls,
        turn: Turn,
        *,
        request_id: str,
        source: str,
        model: str,
        started_at: datetime,
        duration_s: float,
        conversation_id: str | None = None,
        endpoint: str | None = None,
        client: str | None = None,
        run_id: str | None = None,
        error_type: str | None = None,
        images: Sequence[Mapping[str, Any]] = (),
        sampling: Mapping[str, Any] | None = None,
        request: Mapping[str, Any] | None = None,
    ) -> TurnRecord:
        """The record of a finished :class:`~mlxnb.events.Turn`.

        Args:
            turn: The finished turn (its usage, texts and tool calls are copied).
            request_id: The request's id (see :func:`mlxnb._ids.new_request_id`).
            source: The front door (``widget``, ``python``, ``eval``, ``server`` or ``magic``).
            model: Model id or path.
            started_at: When the request started (timezone-aware).
            duration_s: Seconds until the stream ended.
            conversation_id: Conversation id, if any.
            endpoint: HTTP path or entry point name, if any.
            client: Client address, if any.
            run_id: Evaluation run id, if any.
            error_type: Exception class name when the turn failed.
            images: One summary per image of the request, in request order
                (:meth:`mlxnb._images.Image.summary`: ``sha256``, ``format``, ``width``,
                ``height``, ``bytes``); stored as JSON, never the image bytes.
            sampling: The effective sampling settings (stored as JSON), if known.
            request: What was asked (messages, tools, template settings), stored as JSON.

        Returns:
            The record; ``status`` is ``cancelled`` or ``error`` for those finish reasons and
            ``ok`` otherwise.

        Raises:
            ValueError: ``images`` is not a sequence of JSON-serialisable mappings.
        """
        stored_images = images_json(images)  # checks ``images`` before ``len`` is taken
        usage = turn.usage
        status: Status = (
            "cancelled"
            if turn.finish_reason == "cancelled"
            else "error"
            if turn.finish_reason == "error"
            else "ok"
        )
        return cls(
            request_id=request_id,
            started_at=started_at,
            source=source,
            model=model,
            status=status,
            finish_reason=turn.finish_reason,
            duration_s=float(duration_s),
            time_to_first_token_s=usage.time_to_first_token,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            prompt_tps=usage.prompt_tps,
            generation_tps=usage.generation_tps,
            peak_memory_gb=usage.peak_memory_gb,
            conversation_id=conversation_id,
            endpoint=endpoint,
            client=client,
            run_id=run_id,
            error_type=error_type,
            error_message=turn.error,
            tool_calls=turn.tool_calls_json(),
            tool_call_errors=len(turn.tool_call_errors),
            content=turn.content,
            reasoning=turn.reasoning,
            image_count=len(images),
            images=stored_images,
            sampling=sampling_json(sampling),
            draft_tokens=usage.draft_tokens,
            accepted_draft_tokens=usage.accepted_draft_tokens,
            request=request_json(request),
        )

    def to_row(self) -> tuple[Any, ...]:
        """The record as a tuple in :data:`COLUMN_NAMES` order (``started_at`` as text)."""
        return (
            self.request_id,
            format_time(self.started_at),
            self.source,
            self.model,
            self.status,
            self.finish_reason,
            self.duration_s,
            self.time_to_first_token_s,
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            self.prompt_tps,
            self.generation_tps,
            self.peak_memory_gb,
            self.conversation_id,
            self.endpoint,
            self.client,
            self.run_id,
            self.error_type,
            self.error_message,
            self.tool_calls,
            self.tool_call_errors,
            self.content,
            self.reasoning,
            self.schema_version,
            self.image_count,
            self.images,
            self.sampling,
            self.draft_tokens,
            self.accepted_draft_tokens,
            self.request,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> TurnRecord:
        """The inverse of :meth:`to_row`."""
        values = dict(zip(COLUMN_NAMES, row, strict=True))
        values["started_at"] = parse_time(values["started_at"])
        return cls(**values)


def request_json(request: Mapping[str, Any] | None) -> str | None:
    """What was asked as JSON text (values JSON cannot hold are written as their text)."""
    if request is None:
        return None
    return json.dumps(dict(request), ensure_ascii=False, default=str)


def sampling_json(sampling: Mapping[str, Any] | None) -> str | None:
    """Sampling settings as the stored JSON text (keys sorted), or ``None``.

    Raises:
        ValueError: The settings are not JSON-serialisable.
    """
    if sampling is None:
        return None
    try:
        return json.dumps(dict(sampling), sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"sampling settings must be JSON-serialisable: {exc}") from exc


OMITTED = "omitted"
"""Key of the entry that ends an image list cut to fit: ``{"omitted": n}``."""


def images_json(images: Sequence[Mapping[str, Any]]) -> str | None:
    """Image summaries as the stored JSON text, or ``None`` for none.

    Raises:
        ValueError: ``images`` is not a sequence of JSON-serialisable mappings.
    """
    if isinstance(images, (str, bytes, Mapping)) or not isinstance(images, Sequence):
        raise AuditError(f"images must be a sequence of summaries, not {type(images).__name__}")
    if not images:
        return None
    if not all(isinstance(image, Mapping) for image in images):
        raise AuditError("each image summary must be a mapping")
    try:
        return json.dumps([dict(image) for image in images], ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"image summaries must be JSON-serialisable: {exc}") from exc


def split_omitted(entries: list[Any]) -> tuple[list[Any], int]:
    """A stored image list as (the summaries it kept, how many were cut from its end)."""
    if entries and isinstance(entries[-1], dict) and list(entries[-1]) == [OMITTED]:
        omitted = entries[-1][OMITTED]
        if isinstance(omitted, int) and not isinstance(omitted, bool) and omitted > 0:
            return entries[:-1], omitted
    return entries, 0


def images_accounted(text: str) -> int:
    """How many images a stored ``images`` text accounts for (kept plus omitted).

    Raises:
        ValueError: ``text`` is not a JSON list of objects.
    """
    try:
        entries = json.loads(text)
    except ValueError:
        entries = None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise AuditError(f"images must be a JSON list of objects, not {text[:60]!r}")
    kept, omitted = split_omitted(entries)
    return len(kept) + omitted
