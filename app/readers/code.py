"""Source code: file suffix → language, and syntax-aware splitting with tree-sitter grammars from the per-language wheels
(never tree_sitter_language_pack, which downloads grammars at run time)."""

from __future__ import annotations

import importlib
import logging
import threading
from functools import cache
from typing import TYPE_CHECKING

from tree_sitter import Language, Parser

if TYPE_CHECKING:  # llama_index is imported lazily: app.readers stays cheap to import
    from llama_index.core.node_parser import CodeSplitter

log = logging.getLogger(__name__)

# fmt: off
CODE_LANGUAGES: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hh": "cpp",
    ".hpp": "cpp", ".hxx": "cpp", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "tsx", ".go": "go", ".rs": "rust", ".java": "java",
}

# language → (wheel module, function returning the grammar pointer)
_GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"), "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"), "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"), "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"), "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
}
# fmt: on

#: Bounds of the syntax split; past them code is split by lines (see too_complex_to_parse).
MAX_PARSE_CHARS = 1_000_000
MAX_LINE_CHARS = 1_000
MAX_DEPTH = 256

# Parsers are not safe to share between threads: one cache per thread, per language.
_local = threading.local()


@cache
def _grammar(language: str) -> Language:
    if language not in _GRAMMARS:
        raise ValueError(f"no tree-sitter grammar installed for language {language!r}")
    module_name, function_name = _GRAMMARS[language]
    module = importlib.import_module(module_name)
    return Language(getattr(module, function_name)())


def _parser(language: str) -> Parser:
    parsers: dict[str, Parser] = _local.__dict__.setdefault("parsers", {})
    if language not in parsers:
        parsers[language] = Parser(_grammar(language))
    return parsers[language]


def _unused_tokenizer(text: str) -> list[str]:
    """Char mode never tokenizes; passing this keeps CodeSplitter from loading tiktoken."""
    return text.split()


def make_code_splitter(language: str, chunk_chars: int) -> CodeSplitter:
    """A CodeSplitter for ``language`` (ValueError without its grammar) with chunks of at most ``chunk_chars`` characters."""
    from llama_index.core.node_parser import CodeSplitter

    parser = _parser(language)
    return CodeSplitter(language=language, parser=parser, max_chars=chunk_chars, count_mode="char", tokenizer=_unused_tokenizer)


def too_complex_to_parse(text: str, language: str) -> str | None:
    """Why ``text`` should be split by lines rather than by syntax tree (size, minified lines, nesting depth), or None.

    The syntax splitter recurses once per tree level: deep nesting would exhaust the stack or give tiny chunks.
    """
    if len(text) > MAX_PARSE_CHARS:
        return f"{len(text):,} characters of code, over the {MAX_PARSE_CHARS:,} parsed by syntax"
    if any(len(line) > MAX_LINE_CHARS for line in text.splitlines()):
        return f"lines over {MAX_LINE_CHARS} characters (minified?)"
    if language not in _GRAMMARS:
        return None
    cursor = _parser(language).parse(text.encode("utf-8", "surrogatepass")).walk()
    depth = 0
    while True:  # iterative walk: the tree may be deeper than Python's recursion limit
        if cursor.goto_first_child():
            depth += 1
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return None
            depth -= 1


def split_lines(text: str, chunk_chars: int) -> list[str]:
    """Pack whole lines into chunks of at most ``chunk_chars`` characters; longer lines are cut."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in _cut_long_lines(text.splitlines(), chunk_chars):
        if current and size + len(line) + 1 > chunk_chars:
            chunks.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        chunks.append("\n".join(current))
    return [chunk for chunk in chunks if chunk.strip()]


def _cut_long_lines(lines: list[str], limit: int) -> list[str]:
    out: list[str] = []
    for line in lines:
        out.extend(line[i : i + limit] for i in range(0, max(len(line), 1), limit))
    return out
