"""Chunkers, corpus readers and retrieval config validation (harness/rag/chunking.py, corpus.py,
config.py): boundaries, overlap, unicode, empty files, markdown headings, stable ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.rag.chunking import Chunk, chunk_document, count_tokens, token_spans
from harness.rag.config import Chunking, load_retrieval_config
from harness.rag.corpus import (
    Document,
    corpus_files,
    html_text,
    load_documents,
)


def doc(text: str, kind: str = "text", metadata: dict | None = None, id: str = "d.txt") -> Document:
    return Document(id=id, text=text, source=f"corpus/{id}", kind=kind, metadata=metadata or {})


def chunks_of(text: str, strategy: str, size: int, overlap: int = 0, kind: str = "text") -> list:
    return chunk_document(doc(text, kind), Chunking(strategy=strategy, size=size, overlap=overlap))


def assert_exact_slices(document_text: str, chunks: list[Chunk]) -> None:
    for chunk in chunks:
        assert document_text[chunk.start : chunk.end] == chunk.text
        assert chunk.metadata["start"] == chunk.start and chunk.metadata["end"] == chunk.end
        assert chunk.text == chunk.text.strip() and chunk.text


# --- tokens and characters ----------------------------------------------------------------------
def test_token_windows_have_exact_boundaries_and_overlap() -> None:
    text = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"
    chunks = chunks_of(text, "tokens", size=4, overlap=1)
    assert [c.text for c in chunks] == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert_exact_slices(text, chunks)


def test_token_windows_without_overlap_cover_every_token_once() -> None:
    text = " ".join(f"t{i}" for i in range(11))
    chunks = chunks_of(text, "tokens", size=5)
    assert [count_tokens(c.text) for c in chunks] == [5, 5, 1]
    assert " ".join(c.text for c in chunks) == text


def test_punctuation_counts_as_tokens() -> None:
    assert [("Hello, world!")[s:e] for s, e in token_spans("Hello, world!")] == [
        "Hello",
        ",",
        "world",
        "!",
    ]


def test_character_windows_respect_size_and_overlap() -> None:
    text = "abcdefghijklmnopqrstuvwxyz"
    chunks = chunks_of(text, "characters", size=10, overlap=3)
    assert [c.text for c in chunks] == ["abcdefghij", "hijklmnopq", "opqrstuvwx", "vwxyz"]
    assert_exact_slices(text, chunks)


def test_character_windows_never_split_a_combining_mark_from_its_letter() -> None:
    text = "abcdefghi" + "e\u0301" + "xyz"  # a cut at 10 would separate e and its accent
    chunks = chunks_of(text, "characters", size=10)
    assert all(not c.text.startswith("\u0301") for c in chunks)
    assert "".join(c.text for c in chunks) == text


def test_unicode_tokens_cjk_emoji_and_accents() -> None:
    assert count_tokens("東京は日本の首都です") == 10  # one token per CJK character
    assert count_tokens("café naïve") == 2
    assert count_tokens("cafe\u0301 ok") == 2  # a combining accent stays with its word
    text = "Émile a mangé 🍎🍐 à Zürich. 東京タワー!"
    for strategy in ("tokens", "characters", "sentences", "paragraphs"):
        chunks = chunks_of(text, strategy, size=3, overlap=1)
        assert chunks, strategy
        assert_exact_slices(text, chunks)


@pytest.mark.parametrize(
    "strategy", ["tokens", "characters", "sentences", "paragraphs", "markdown"]
)
@pytest.mark.parametrize("text", ["", "   ", "\n\n\t\n"])
def test_empty_documents_have_no_chunks(strategy: str, text: str) -> None:
    assert chunks_of(text, strategy, size=10, kind="markdown") == []


# --- sentences and paragraphs -------------------------------------------------------------------
def test_sentences_pack_up_to_size_and_carry_overlap() -> None:
    text = "One two three. Four five six. Seven eight nine! Ten eleven twelve?"
    chunks = chunks_of(text, "sentences", size=8, overlap=4)
    assert [c.text for c in chunks] == [
        "One two three. Four five six.",
        "Four five six. Seven eight nine!",
        "Seven eight nine! Ten eleven twelve?",
    ]
    assert all(count_tokens(c.text) <= 8 for c in chunks)
    assert_exact_slices(text, chunks)


def test_a_sentence_longer_than_size_is_cut_into_token_windows() -> None:
    long = " ".join(f"w{i}" for i in range(12)) + "."
    text = f"Short one. {long} Tail here."
    chunks = chunks_of(text, "sentences", size=5)
    assert chunks[0].text == "Short one."
    assert all(count_tokens(c.text) <= 5 for c in chunks)
    assert chunks[-1].text == "Tail here."
    assert_exact_slices(text, chunks)


def test_paragraphs_split_on_blank_lines_with_a_max_size() -> None:
    text = "First para\nstill first.\n\nSecond para.\n\n\n\nThird para is here."
    chunks = chunks_of(text, "paragraphs", size=5)
    assert [c.text for c in chunks] == [
        "First para\nstill first.",
        "Second para.",
        "Third para is here.",
    ]
    merged = chunks_of(text, "paragraphs", size=100)
    assert [c.text for c in merged] == [text]


# --- markdown -----------------------------------------------------------------------------------
MARKDOWN = """Intro before any heading.

# Guide

Welcome text.

## Install

Run pip install.

```bash
# not a heading, a shell comment
pip install evals
```

## Empty section

### Deep

Deep text.

# Second top
Last words.
"""


def test_markdown_sections_carry_their_heading_path() -> None:
    chunks = chunk_document(
        doc(MARKDOWN, "markdown", id="guide.md"), Chunking(strategy="markdown", size=200, overlap=0)
    )
    assert [c.metadata.get("heading") for c in chunks] == [
        None,
        "Guide",
        "Guide > Install",
        "Guide > Empty section > Deep",
        "Second top",
    ]
    assert chunks[0].text == "Intro before any heading."
    assert chunks[2].text.startswith("## Install") and "pip install evals\n```" in chunks[2].text
    assert chunks[3].text == "### Deep\n\nDeep text."  # the empty section made no chunk
    assert_exact_slices(MARKDOWN, chunks)


def test_long_markdown_sections_are_split_by_size_keeping_the_heading() -> None:
    body = " ".join(f"word{i}" for i in range(30))
    text = f"# Title\n\n{body}\n\n# Next\n\nshort"
    chunks = chunk_document(
        doc(text, "markdown"), Chunking(strategy="markdown", size=10, overlap=2)
    )
    titled = [c for c in chunks if c.metadata.get("heading") == "Title"]
    assert len(titled) == 4
    assert all(count_tokens(c.text) <= 10 for c in chunks)
    assert chunks[-1].text == "# Next\n\nshort"
    assert_exact_slices(text, chunks)


def test_markdown_documents_get_headings_under_any_strategy() -> None:
    chunks = chunk_document(
        doc(MARKDOWN, "markdown"), Chunking(strategy="tokens", size=6, overlap=0)
    )
    assert chunks[0].metadata.get("heading") is None
    assert any(c.metadata.get("heading") == "Guide > Install" for c in chunks)


# --- ids and metadata ---------------------------------------------------------------------------
def test_chunk_ids_are_stable_and_numbered_per_document() -> None:
    config = Chunking(strategy="tokens", size=5, overlap=1)
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    first = chunk_document(doc(text, id="a/b.md"), config)
    second = chunk_document(doc(text, id="a/b.md"), config)
    assert [c.id for c in first] == [f"a/b.md#{i}" for i in range(len(first))]
    assert [(c.id, c.text, c.hash) for c in first] == [(c.id, c.text, c.hash) for c in second]


def test_chunk_metadata_has_source_offsets_and_user_metadata() -> None:
    document = doc(
        "Some text here.",
        metadata={"lang": "en", "tags": ["a", "b"], "none": None, "source": "overridden"},
    )
    (chunk,) = chunk_document(document, Chunking(strategy="tokens", size=50, overlap=0))
    assert chunk.metadata == {
        "lang": "en",
        "tags": '["a","b"]',  # non-scalars become JSON (vector stores filter on scalars)
        "source": "corpus/d.txt",  # reserved keys win over user metadata
        "document_id": "d.txt",
        "chunk_index": 0,
        "start": 0,
        "end": 15,
    }


# --- corpus files -------------------------------------------------------------------------------
def write_config(tmp_path: Path, body: str) -> Path:
    (tmp_path / "retrieval").mkdir(exist_ok=True)
    path = tmp_path / "retrieval" / "docs.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing `text` in Helvetica (offsets computed, so pypdf reads it)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def test_corpus_reads_every_format_with_ids_below_the_glob_directory(tmp_path: Path) -> None:
    corpus = tmp_path / "docs"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.md").write_text("# A\n\nalpha", encoding="utf-8")
    (corpus / "sub" / "b.txt").write_text("beta\r\nline", encoding="utf-8")
    (corpus / "c.html").write_text(
        "<html><head><title>t</title><style>p{}</style></head><body><h1>Gamma</h1>"
        "<p>one &amp; two</p><script>var x;</script></body></html>",
        encoding="utf-8",
    )
    (corpus / "rows.jsonl").write_text(
        '{"id": "r1", "text": "row one", "metadata": {"lang": "en"}}\n\n'
        '{"id": 2, "text": "row two"}\n',
        encoding="utf-8",
    )
    (corpus / "d.pdf").write_bytes(minimal_pdf("Hello PDF world"))
    (corpus / "skip.png").write_bytes(b"\x89PNG")
    config_path = write_config(
        tmp_path,
        "name: docs\ncorpus:\n  - ../docs/**/*\n"
        "  - {path: ../docs/sub/*.txt, metadata: {tier: 2}}\n",
    )
    config = load_retrieval_config(config_path)
    documents = {d.id: d for d in load_documents(corpus_files(config, config_path))}
    assert sorted(documents) == ["2", "a.md", "c.html", "d.pdf", "r1", "sub/b.txt"]
    assert documents["sub/b.txt"].text == "beta\nline"
    assert documents["sub/b.txt"].source == "../docs/sub/b.txt"
    assert documents["sub/b.txt"].metadata == {}  # the first glob matching a file wins
    assert documents["c.html"].text == "Gamma\n\none & two"
    assert documents["r1"].metadata == {"lang": "en"} and documents["r1"].text == "row one"
    assert documents["d.pdf"].text == "Hello PDF world"
    assert documents["a.md"].kind == "markdown"


def test_html_text_keeps_blocks_apart() -> None:
    assert html_text("<ul><li>one</li><li>two</li></ul>x<br>y") == "one\n\ntwo\n\nx\ny"


def test_a_glob_matching_nothing_names_its_corpus_entry(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, "name: docs\ncorpus: [missing/*.md]\n")
    with pytest.raises(ConfigError) as caught:
        corpus_files(load_retrieval_config(config_path), config_path)
    assert caught.value.field == "corpus[0]" and "matches no corpus files" in str(caught.value)


def test_bad_jsonl_rows_are_errors_with_their_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # errors name files relative to the working directory
    (tmp_path / "rows.jsonl").write_text(
        '{"id": "a", "text": "ok"}\n{"id": "b"}\n', encoding="utf-8"
    )
    config_path = write_config(tmp_path, "name: docs\ncorpus: [../rows.jsonl]\n")
    with pytest.raises(ConfigError) as caught:
        load_documents(corpus_files(load_retrieval_config(config_path), config_path))
    assert str(caught.value) == "rows.jsonl:2: each row needs a 'text' string"


def test_duplicate_document_ids_are_refused(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text(
        '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', encoding="utf-8"
    )
    config_path = write_config(tmp_path, "name: docs\ncorpus: [../rows.jsonl]\n")
    with pytest.raises(ConfigError, match="duplicate document id 'a'"):
        load_documents(corpus_files(load_retrieval_config(config_path), config_path))


# --- config -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "name: docs\ncorpus: [a.md]\nchunking: {size: 10, overlap: 10}\n",
            "docs.yaml:3: chunking: overlap (10) must be smaller than size (10)",
        ),
        (
            "name: docs\ncorpus: [a.md]\nsearch:\n  top_k: 3\n  mod: mmr\n",
            "docs.yaml:5: search.mod: unknown key 'mod' (did you mean 'mode'?)",
        ),
        ("name: docs\ncorpus: []\n", "docs.yaml:2: corpus: List should have at least 1 item"),
        (
            "name: docs\ncorpus: [a.md]\nsearch: {query_template: '{{ query'}\n",
            "docs.yaml:3: search.query_template: template syntax error",
        ),
        (
            "name: docs\ncorpus: [a.md]\nchunking: {strategy: words}\n",
            "docs.yaml:3: chunking.strategy: Input should be",
        ),
    ],
)
def test_config_errors_name_file_line_and_field(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "docs.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_retrieval_config(path, display="docs.yaml")
    assert str(caught.value).startswith(expected)


def test_config_defaults_and_version_ignore_description(tmp_path: Path) -> None:
    path = tmp_path / "docs.yaml"
    path.write_text("name: docs\ndescription: one\ncorpus: [a.md]\n", encoding="utf-8")
    first = load_retrieval_config(path)
    assert first.chunking.strategy == "tokens" and first.embedding.model == "all-MiniLM-L6-v2"
    assert first.search.top_k == 5 and first.search.mode == "similarity"
    path.write_text(
        "# reformatted\nname: docs\ndescription: two\ncorpus:\n  - a.md\n"
        "embedding: {batch_size: 64}\n",
        encoding="utf-8",
    )
    assert load_retrieval_config(path).version == first.version
