"""Built-in scorers for :func:`mlxnb.evaluate`.

A scorer is any callable ``(row) -> value`` where ``row`` is a mapping with the evaluated row's
columns (``content``, ``reasoning``, ``tool_calls``, the input columns such as ``expected``, …).
The column it fills is named after the scorer's ``__name__`` (or the key, when scorers are
given as a dict).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]
Scorer = Callable[[Row], Any]


def _named(name: str, fn: Scorer) -> Scorer:
    fn.__name__ = name
    fn.__qualname__ = name
    return fn


def _text(row: Row, column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value)


def exact_match(
    expected: str = "expected", *, column: str = "content", normalize: bool = True
) -> Scorer:
    """Score 1.0 when the output equals the ``expected`` column, else 0.0.

    Args:
        expected: Column holding the reference answer.
        column: Column holding the model's answer.
        normalize: Compare case-insensitively, ignoring surrounding whitespace.
    """

    def score(row: Row) -> float:
        got, want = _text(row, column), _text(row, expected)
        if normalize:
            got, want = got.strip().casefold(), want.strip().casefold()
        return float(got == want)

    return _named("exact_match", score)


def contains(
    needle: str | None = None,
    *,
    expected: str = "expected",
    column: str = "content",
    case_sensitive: bool = False,
) -> Scorer:
    """Score 1.0 when the output contains ``needle`` (or the ``expected`` column's text).

    Args:
        needle: Fixed text to look for; ``None`` uses the row's ``expected`` column.
        expected: Column with per-row text to look for when ``needle`` is ``None``.
        column: Column holding the model's answer.
        case_sensitive: Match case exactly.
    """

    def score(row: Row) -> float:
        want = needle if needle is not None else _text(row, expected)
        got = _text(row, column)
        if not case_sensitive:
            want, got = want.casefold(), got.casefold()
        return float(bool(want) and want in got)

    return _named("contains", score)


def regex(pattern: str, *, column: str = "content", flags: int = 0) -> Scorer:
    """Score 1.0 when ``pattern`` matches anywhere in the output.

    Args:
        pattern: A Python regular expression.
        column: Column holding the model's answer.
        flags: ``re`` flags.
    """
    compiled = re.compile(pattern, flags)

    def score(row: Row) -> float:
        return float(compiled.search(_text(row, column)) is not None)

    return _named("regex", score)


def _strip_fence(text: str) -> str:
    match = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, re.DOTALL)
    return match.group(1) if match else text


def json_valid(*, column: str = "content") -> Scorer:
    """Score 1.0 when the output (optionally in a code fence) parses as JSON."""

    def score(row: Row) -> float:
        try:
            json.loads(_strip_fence(_text(row, column)))
        except ValueError:
            return 0.0
        return 1.0

    return _named("json_valid", score)


def json_schema_valid(schema: Mapping[str, Any], *, column: str = "content") -> Scorer:
    """Score 1.0 when the output parses as JSON and validates against ``schema``.

    Args:
        schema: A JSON Schema (validated with the ``jsonschema`` package).
        column: Column holding the model's answer.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(dict(schema))

    def score(row: Row) -> float:
        try:
            document = json.loads(_strip_fence(_text(row, column)))
        except ValueError:
            return 0.0
        return float(validator.is_valid(document))

    return _named("json_schema_valid", score)


JUDGE_SYSTEM = (
    "You grade answers. Read the rubric, the question and the answer, think briefly, then "
    "give a score. Answer with JSON only: a short reasoning, then the score."
)


@dataclass(frozen=True)
class Judge:
    """An LLM-as-judge scorer: a second model grades each row against a rubric.

    :func:`mlxnb.evaluate` runs it after the answers, batched through the judge model like any
    run; the row gets the score (``<name>``) and the judge's reasoning (``<name>_reasoning``).
    Its answer is held to a JSON schema while generating, so it always parses.

    Attributes:
        model: The judge: a model or profile name, a path or an engine.
        rubric: What a good answer is, and what each score means.
        scale: The lowest and highest score (whole numbers).
        name: The score's column.
        column: The answer to grade.
        reference: A column holding a reference answer shown to the judge, if any.
        max_reasoning_chars: Longest reasoning the judge may write.
    """

    model: Any
    rubric: str
    scale: tuple[int, int] = (1, 5)
    name: str = "judge"
    column: str = "content"
    reference: str | None = "expected"
    max_reasoning_chars: int = 600

    def __post_init__(self) -> None:
        low, high = self.scale
        if not (isinstance(low, int) and isinstance(high, int) and low < high <= low + 100):
            raise ValueError("scale must be two whole numbers, low < high, at most 100 apart")

    @property
    def __name__(self) -> str:
        """The score's column (evaluate names a scorer's column after its ``__name__``)."""
        return self.name

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON schema the judge's answer follows."""
        low, high = self.scale
        return {
            "type": "object",
            "properties": {
                "reasoning": {"type": "string", "maxLength": self.max_reasoning_chars},
                "score": {"enum": list(range(low, high + 1))},
            },
            "required": ["reasoning", "score"],
            "additionalProperties": False,
        }

    def messages(self, row: Row) -> list[dict[str, str]]:
        """The judge's conversation for one evaluated row."""
        question = row.get("prompt")
        if question is None and row.get("messages") is not None:
            question = json.dumps(row["messages"], ensure_ascii=False, default=str)
        parts = [
            f"Rubric:\n{self.rubric}",
            f"Score from {self.scale[0]} (worst) to {self.scale[1]} (best).",
            f"Question:\n{'' if question is None else question}",
        ]
        if self.reference is not None and row.get(self.reference) is not None:
            parts.append(f"Reference answer:\n{row[self.reference]}")
        parts.append(f"Answer to grade:\n{_text(row, self.column)}")
        return [
            {"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": "\n\n".join(parts)},
        ]

    def __call__(self, row: Row) -> Any:
        """A judge runs in a batched pass of :func:`mlxnb.evaluate`, not row by row."""
        raise TypeError("a Judge grades inside mlxnb.evaluate(scorers=[...]), not on its own")


def judge(
    model: Any,
    rubric: str,
    *,
    scale: tuple[int, int] = (1, 5),
    name: str = "judge",
    column: str = "content",
    reference: str | None = "expected",
) -> Judge:
    """An LLM-as-judge scorer (see :class:`Judge`).

    Example::

        rubric = "Correct and concise: 5 = both, 3 = correct but long, 1 = wrong."
        mlxnb.evaluate(questions, model="small", scorers=[scorers.judge("large", rubric)])
    """
    return Judge(model, rubric, scale, name, column, reference)
