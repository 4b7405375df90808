"""Token ids in, text deltas out: incremental detokenisation that honours stop sequences.

Decoding token by token is wrong for byte-level BPE (a character can span tokens) and a
stop sequence can span tokens too, so the whole output is decoded each time and text is
released only when it can no longer change: not a trailing partial character, and not
a tail that could still become a stop sequence. The stop sequence itself is never sent
(as in the OpenAI and DashScope APIs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"  # what a decoder shows for an incomplete UTF-8 sequence


class IncrementalText:
    def __init__(self, decode: Callable[[list[int]], str], stops: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stops = [s for s in stops if s]
        self._ids: list[int] = []
        self._text = ""
        self._sent = 0  # characters of _text already released
        self.stopped = False  # a stop sequence was found: ignore further tokens

    @property
    def text(self) -> str:
        """Everything released so far."""
        return self._text[: self._sent]

    def push(self, ids: Sequence[int]) -> str:
        """Add generated ids; return the text that became final (may be empty)."""
        if self.stopped:
            return ""
        self._ids.extend(ids)
        self._text = self._decode(self._ids)
        cut = self._find_stop()
        if cut is not None:
            self._text = self._text[:cut]
            self.stopped = True
            return self._release(len(self._text))
        # One trailing U+FFFD may be a character whose next byte is still to come; earlier
        # ones are bytes that never form a character (a random model emits those).
        safe = len(self._text) - self._text.endswith(REPLACEMENT)
        safe -= self._held_back(self._text[:safe])
        return self._release(safe)

    def finish(self) -> str:
        """Generation ended: release whatever is still held back."""
        return self._release(len(self._text))

    def _release(self, upto: int) -> str:
        if upto <= self._sent:
            return ""
        delta = self._text[self._sent : upto]
        self._sent = upto
        return delta

    def _find_stop(self) -> int | None:
        # Only text not yet released can contain a new match.
        start = max(0, self._sent - max((len(s) for s in self._stops), default=0))
        hits = [i for i in (self._text.find(s, start) for s in self._stops) if i >= 0]
        return min(hits) if hits else None

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop sequence."""
        longest = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest
