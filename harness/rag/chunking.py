"""Split documents into chunks: token or character windows, sentences, paragraphs, markdown.

Tokens are counted with a fixed regex, not the embedding model's tokenizer, so chunk
boundaries depend only on the text and the chunking config (never on which model is loaded):
a token is a run of word characters, one CJK character, or one other non-space symbol, each
with any combining marks that follow. English prose averages about 1.2 embedding wordpieces
per such token, so the default 200 tokens fit all-MiniLM-L6-v2's 256-wordpiece window.

A chunk is an exact slice of its document's text (offsets `start`..`end`, surrounding
whitespace trimmed); its id `<document id>#<n>` numbers the document's chunks in order, so
the same text and config always give the same ids. Whitespace-only documents have no chunks.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from harness.rag.config import Chunking
from harness.rag.corpus import Document, scalar_metadata

# Bump when the same text and config would be cut differently: it is part of index versions.
CHUNKER_VERSION = 1

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_MARK = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u200d\u20d0-\u20ff\ufe00-\ufe0f\ufe20-\ufe2f"
TOKEN_PATTERN = re.compile(
    rf"[{_CJK}][{_MARK}]*|[^\W{_CJK}](?:[^\W{_CJK}]|[{_MARK}])*|[^\w\s][{_MARK}]*"
)
_MARK_CHAR = re.compile(rf"[{_MARK}]")
_SENTENCE_END = re.compile(r"[.!?…。！？]+[\"'”’)\]]*(?=\s|$)|\n[ \t]*\n")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")

Span = tuple[int, int]


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, as it is embedded and retrieved."""

    id: str
    document_id: str
    index: int
    text: str
    start: int
    end: int
    metadata: dict[str, str | int | float | bool] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        """sha256 of the text: the embedding cache key (with the model version)."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def token_spans(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """(start, end) character offsets of the tokens of text[start:end]."""
    end = len(text) if end is None else end
    return [m.span() for m in TOKEN_PATTERN.finditer(text, start, end)]


def count_tokens(text: str) -> int:
    return sum(1 for _ in TOKEN_PATTERN.finditer(text))


def chunk_document(document: Document, chunking: Chunking) -> list[Chunk]:
    """The chunks of one document under `chunking` (deterministic; empty text, no chunks)."""
    text = document.text
    if not text.strip():
        return []
    spans = list(_spans(text, chunking))
    headings = _markdown_headings(text) if document.kind == "markdown" else []
    starts = [offset for offset, _ in headings]
    base = scalar_metadata(document.metadata)
    chunks = []
    for index, (start, end) in enumerate(spans):
        metadata: dict[str, str | int | float | bool] = {
            **base,
            "document_id": document.id,
            "source": document.source,
            "chunk_index": index,
            "start": start,
            "end": end,
        }
        at = bisect.bisect_right(starts, start) - 1
        if at >= 0 and headings[at][1]:
            metadata["heading"] = " > ".join(headings[at][1])
        chunks.append(
            Chunk(
                f"{document.id}#{index}", document.id, index, text[start:end], start, end, metadata
            )
        )
    return chunks


def _spans(text: str, chunking: Chunking) -> Iterator[Span]:
    size, overlap = chunking.size, chunking.overlap
    if chunking.strategy == "characters":
        yield from _char_windows(text, 0, len(text), size, overlap)
    elif chunking.strategy == "tokens":
        yield from _token_windows(text, 0, len(text), size, overlap)
    elif chunking.strategy == "sentences":
        yield from _pack(text, list(_split(text, _SENTENCE_END, keep_match=True)), size, overlap)
    elif chunking.strategy == "paragraphs":
        yield from _pack(text, list(_split(text, _PARAGRAPH_BREAK)), size, overlap)
    else:
        yield from _markdown_sections(text, size, overlap)


def _trim(text: str, start: int, end: int) -> Span | None:
    """The span without its surrounding whitespace; None when nothing but whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _token_windows(text: str, start: int, end: int, size: int, overlap: int) -> Iterator[Span]:
    """Windows of `size` tokens, each starting `size - overlap` tokens after the previous."""
    spans = token_spans(text, start, end)
    step = size - overlap
    for first in range(0, len(spans), step):
        last = min(first + size, len(spans))
        yield spans[first][0], spans[last - 1][1]
        if last == len(spans):
            break


def _char_windows(text: str, start: int, end: int, size: int, overlap: int) -> Iterator[Span]:
    """Windows of `size` characters, `size - overlap` apart; a cut never separates a character
    from the combining marks after it."""
    position = start
    while position < end:
        stop = min(position + size, end)
        while stop < end and stop > position + 1 and _MARK_CHAR.match(text, stop):
            stop -= 1
        trimmed = _trim(text, position, stop)
        if trimmed:
            yield trimmed
        if stop >= end:
            break
        following = max(stop - overlap, position + 1)
        while following < stop and _MARK_CHAR.match(text, following):
            following += 1
        position = following


def _split(text: str, boundary: re.Pattern[str], *, keep_match: bool = False) -> Iterator[Span]:
    """Units of text between boundaries (a sentence keeps its end punctuation), trimmed."""
    position = 0
    for match in boundary.finditer(text):
        keep = keep_match and match.group().strip() != ""
        unit = _trim(text, position, match.end() if keep else match.start())
        if unit:
            yield unit
        position = match.end()
    unit = _trim(text, position, len(text))
    if unit:
        yield unit


def _pack(text: str, units: list[Span], size: int, overlap: int) -> Iterator[Span]:
    """Consecutive units joined while they fit in `size` tokens; the next chunk repeats the
    last units of the previous one that fit in `overlap` tokens. A unit longer than `size` is
    cut into token windows of its own."""
    counts = [len(token_spans(text, s, e)) for s, e in units]
    group: list[int] = []
    tokens = 0
    for i, (start, end) in enumerate(units):
        if counts[i] > size:
            if group:
                yield units[group[0]][0], units[group[-1]][1]
                group, tokens = [], 0
            yield from _token_windows(text, start, end, size, overlap)
            continue
        if group and tokens + counts[i] > size:
            yield units[group[0]][0], units[group[-1]][1]
            carried: list[int] = []
            carried_tokens = 0
            for j in reversed(group[1:]):  # never the whole group: each chunk moves forward
                if carried_tokens + counts[j] > overlap:
                    break
                carried.insert(0, j)
                carried_tokens += counts[j]
            while carried and carried_tokens + counts[i] > size:
                carried_tokens -= counts[carried.pop(0)]
            group, tokens = carried, carried_tokens
        group.append(i)
        tokens += counts[i]
    if group:
        yield units[group[0]][0], units[group[-1]][1]


def _markdown_headings(text: str) -> list[tuple[int, list[str]]]:
    """(offset of the heading line, heading path) of each ATX heading outside code fences."""
    headings: list[tuple[int, list[str]]] = []
    path: list[tuple[int, str]] = []
    fence: str | None = None
    offset = 0
    for line in text.split("\n"):
        opener = _FENCE.match(line)
        if opener and (fence is None or opener.group(1)[0] == fence[0]):
            fence = None if fence else opener.group(1)
        elif fence is None and (match := _HEADING.match(line)):
            level = len(match.group(1))
            path = [entry for entry in path if entry[0] < level] + [(level, match.group(2))]
            headings.append((offset, [title for _, title in path]))
        offset += len(line) + 1
    return headings


def _markdown_sections(text: str, size: int, overlap: int) -> Iterator[Span]:
    """Each heading's section (heading line included) is a chunk; text before the first
    heading is one too; a section longer than `size` tokens is cut into token windows;
    a heading with no text under it makes no chunk."""
    starts = [offset for offset, _ in _markdown_headings(text)]
    heading_starts = set(starts)
    bounds = [0, *starts, len(text)]
    for start, end in itertools.pairwise(bounds):
        line_end = text.find("\n", start, end)
        body_start = start
        if start in heading_starts:
            body_start = end if line_end == -1 else line_end
        if not text[body_start:end].strip():
            continue
        section = _trim(text, start, end)
        if section is None:
            continue
        if len(token_spans(text, *section)) <= size:
            yield section
        else:
            yield from _token_windows(text, section[0], section[1], size, overlap)
