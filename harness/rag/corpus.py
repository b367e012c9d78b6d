"""Find a retrieval config's corpus files and read them as documents (txt, md, html, jsonl, pdf).

Globs are relative to the config file. A file's document id is its path below the glob's fixed
directory (`../docs/**/*.md` matching ../docs/guide/intro.md gives `guide/intro.md`), so ids
survive moving the corpus; its `source` is its path relative to the config file. A JSONL
row's id is its `id`. Text keeps its characters as
read (only line endings are normalised to "\\n"), so chunk offsets point into it exactly.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.rag.config import CORPUS_SUFFIXES, CorpusSource, RetrievalConfig
from harness.versions import canonical_json, content_hash

MARKDOWN_SUFFIXES = (".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")


@dataclass(frozen=True)
class CorpusFile:
    """One file a corpus glob matched, with the source entry (and metadata) that matched it."""

    path: Path
    relative: str  # to the config file's directory, posix separators
    document_id: str  # below the glob's fixed directory
    source: CorpusSource
    entry: int  # index of the source in the config's `corpus` list

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower()

    @property
    def shown(self) -> str:
        """How errors name the file: relative to the working directory when inside it."""
        try:
            return self.path.relative_to(Path.cwd().resolve()).as_posix()
        except ValueError:
            return str(self.path)


@dataclass(frozen=True)
class Document:
    """A document of the corpus: a file, or one row of a JSONL file."""

    id: str
    text: str
    source: str  # the file it came from, relative to the config file
    kind: str  # "text", "markdown", "html", "pdf" or "jsonl"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        """Content hash of what shapes its chunks: id, text and metadata."""
        return content_hash({"id": self.id, "text": self.text, "metadata": self.metadata})


def corpus_files(config: RetrievalConfig, config_path: Path) -> list[CorpusFile]:
    """Every supported file the corpus globs match, sorted by path; the first glob matching a
    file gives it its metadata. A glob matching no supported file is a ConfigError."""
    base = config_path.resolve().parent
    found: dict[Path, CorpusFile] = {}
    for entry, source in enumerate(config.sources()):
        pattern = source.path if os.path.isabs(source.path) else str(base / source.path)
        fixed = _fixed_dir(pattern)
        matched = 0
        for name in sorted(glob.glob(pattern, recursive=True)):
            path = Path(name).resolve()
            if not path.is_file() or path.suffix.lower() not in CORPUS_SUFFIXES:
                continue
            matched += 1
            if path not in found:
                relative = Path(os.path.relpath(path, base)).as_posix()
                document_id = Path(os.path.relpath(path, fixed)).as_posix()
                found[path] = CorpusFile(path, relative, document_id, source, entry)
        if matched == 0:
            raise ConfigError(
                f"{source.path!r} matches no corpus files ({', '.join(CORPUS_SUFFIXES)})",
                path=config_path,
                field=f"corpus[{entry}]",
            )
    return sorted(found.values(), key=lambda f: f.relative)


def _fixed_dir(pattern: str) -> Path:
    """The directory part of a glob before its first wildcard (a plain file: its directory)."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed).resolve() if fixed else Path.cwd()


def file_fingerprints(files: list[CorpusFile]) -> list[list[Any]]:
    """[document id, relative path, sha256 of the bytes, source metadata] per file: what the
    index version hashes (content, not modification times)."""
    out: list[list[Any]] = []
    for item in files:
        digest = hashlib.sha256()
        with item.path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        out.append([item.document_id, item.relative, digest.hexdigest(), item.source.metadata])
    return out


def load_documents(files: list[CorpusFile]) -> list[Document]:
    """Read every file into documents; duplicate document ids are a ConfigError."""
    documents: list[Document] = []
    seen: dict[str, str] = {}
    for item in files:
        for document in _read(item):
            if document.id in seen:
                raise ConfigError(
                    f"duplicate document id {document.id!r} (also in {seen[document.id]})",
                    path=item.shown,
                )
            seen[document.id] = item.shown
            documents.append(document)
    return documents


def _read(item: CorpusFile) -> list[Document]:
    metadata = dict(item.source.metadata)
    if item.suffix == ".jsonl":
        return _jsonl_documents(item, metadata)
    if item.suffix == ".pdf":
        return [Document(item.document_id, _pdf_text(item), item.relative, "pdf", metadata)]
    text = _decode(item)
    if item.suffix in HTML_SUFFIXES:
        return [Document(item.document_id, html_text(text), item.relative, "html", metadata)]
    kind = "markdown" if item.suffix in MARKDOWN_SUFFIXES else "text"
    return [Document(item.document_id, text, item.relative, kind, metadata)]


def _decode(item: CorpusFile) -> str:
    try:
        text = item.path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=item.shown
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _jsonl_documents(item: CorpusFile, metadata: dict[str, Any]) -> list[Document]:
    documents = []
    for number, line in enumerate(_decode(item).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON: {exc.msg}", path=item.shown, line=number) from None
        if not isinstance(row, dict):
            raise ConfigError(
                "expected an object {id, text, metadata}", path=item.shown, line=number
            )
        row_id, text, extra = row.get("id"), row.get("text"), row.get("metadata") or {}
        if not isinstance(row_id, str | int) or isinstance(row_id, bool) or str(row_id) == "":
            raise ConfigError(
                "each row needs an 'id' (string or integer)", path=item.shown, line=number
            )
        if not isinstance(text, str):
            raise ConfigError("each row needs a 'text' string", path=item.shown, line=number)
        if not isinstance(extra, dict):
            raise ConfigError("'metadata' must be an object", path=item.shown, line=number)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        documents.append(Document(str(row_id), text, item.relative, "jsonl", {**metadata, **extra}))
    return documents


def _pdf_text(item: CorpusFile) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(item.path))
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except (PdfReadError, OSError, ValueError) as exc:
        raise ConfigError(f"cannot read PDF: {exc}", path=item.shown) from None
    return "\n\n".join(page for page in pages if page).replace("\r\n", "\n")


# --- HTML -------------------------------------------------------------------------------------
_SKIPPED_TAGS = {"script", "style", "noscript", "template", "head", "svg"}
_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li",
    "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
}  # fmt: skip


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self.skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_text(markup: str) -> str:
    """The visible text of an HTML page: tags, scripts and styles removed, one block a line,
    paragraphs (blank lines) kept, runs of spaces collapsed."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    lines = [
        re.sub(r"[ \t\f\v\u00a0]+", " ", line).strip() for line in "".join(parser.parts).split("\n")
    ]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def scalar_metadata(metadata: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """Metadata a vector store can filter on: scalars kept, None dropped, the rest as JSON."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in metadata.items():
        if value is None:
            continue
        out[str(key)] = (
            value if isinstance(value, str | int | float | bool) else canonical_json(value)
        )
    return out
