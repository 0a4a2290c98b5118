"""Prompt lookup: drafting the next tokens from n-grams the sequence has already seen.

Notebook work copies a lot (editing code, quoting a document, filling a template), so the text
that comes next has often appeared before. After each token the index finds the most recent
earlier occurrence of the last few tokens (prompt and answer alike) and drafts the tokens that
followed it; :class:`~mlxnb._engine.speculative.SpeculativeDecoder` checks them in one model
call.
"""

from __future__ import annotations

from collections.abc import Sequence

NGRAM_SIZES = (3, 2)
"""The n-gram lengths looked up, longest first (a one-token match drafts too much noise)."""


class NgramIndex:
    """Where each n-gram of a growing token sequence last occurred, to draft what followed it.

    Args:
        tokens: The sequence so far.
        sizes: The n-gram lengths to look up, longest first.
    """

    def __init__(self, tokens: Sequence[int], sizes: Sequence[int] = NGRAM_SIZES) -> None:
        self._tokens: list[int] = []
        self._sizes = tuple(sizes)
        self._followed: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens, indexing each n-gram once a token follows it."""
        for token in tokens:
            end = len(self._tokens)
            for size in self._sizes:
                if end >= size:
                    self._followed[tuple(self._tokens[end - size : end])] = end
            self._tokens.append(token)

    def draft(self, count: int) -> list[int]:
        """Up to ``count`` tokens that followed the latest earlier occurrence of the suffix."""
        end = len(self._tokens)
        if count <= 0:
            return []
        for size in self._sizes:
            if end >= size:
                start = self._followed.get(tuple(self._tokens[end - size : end]))
                if start is not None:
                    return self._continue_from(start, count)
        return []

    def _continue_from(self, start: int, count: int) -> list[int]:
        # A copy that reaches the end goes on copying itself: a run that repeats with period
        # ``end - start`` drafts its next period, not only the tokens seen so far.
        tokens, end = self._tokens, len(self._tokens)
        drafted: list[int] = []
        for position in range(start, start + count):
            drafted.append(tokens[position] if position < end else drafted[position - end])
        return drafted
