"""The numbered-sources prompt shared by every answer backend, and how sources are labelled.

Sources travel inside ``<source id="n">`` blocks so that any LLM, and the
extractive answerer, can tell them apart from the question.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.schema import BaseNode, MetadataMode

SYSTEM_PROMPT = (
    "You answer questions about technical documentation using only the numbered sources given. "
    "After every sentence that uses a source, cite it as [n] with the source's number, e.g. [1] or [2][3]. "
    "Quote commands, options and code exactly as the sources write them. "
    "If the sources do not contain the answer, say that the documentation provided does not cover it. "
    "Be concise."
)

_SOURCE = re.compile(r"<source id=\"(\d+)\"[^\n]*>\n(.*?)\n</source>", re.DOTALL)
_QUESTION = re.compile(r"<question>\n(.*?)\n</question>", re.DOTALL)
CITATION = re.compile(r"\[(\d+)\]")


@dataclass
class NumberedSource:
    number: int
    text: str


def source_label(metadata: dict) -> str:
    """'guide.pdf, p. 12 (xii), Install > Linux': file, page and section as one line."""
    parts = [str(metadata.get("file_name") or metadata.get("source") or "unknown")]
    page = metadata.get("page")
    if page is not None:
        label = metadata.get("page_label")
        parts.append(f"p. {page}" + (f" ({label})" if label and str(label) != str(page) else ""))
    if metadata.get("section"):
        parts.append(str(metadata["section"]))
    return ", ".join(parts)


def build_messages(question: str, nodes: list[BaseNode]) -> list[ChatMessage]:
    blocks = []
    for number, node in enumerate(nodes, start=1):
        text = node.get_content(metadata_mode=MetadataMode.NONE).strip()
        label = source_label(node.metadata).replace('"', "'")
        blocks.append(f'<source id="{number}" ref="{label}">\n{text}\n</source>')
    user = "Sources:\n\n" + "\n\n".join(blocks) + f"\n\n<question>\n{question.strip()}\n</question>\n\nAnswer with citations:"
    return [ChatMessage(role=MessageRole.SYSTEM, content=SYSTEM_PROMPT), ChatMessage(role=MessageRole.USER, content=user)]


def parse_prompt(prompt: str) -> tuple[str, list[NumberedSource]]:
    """The question and numbered sources back out of a prompt made by build_messages."""
    question = _QUESTION.search(prompt)
    sources = [NumberedSource(int(n), text) for n, text in _SOURCE.findall(prompt)]
    return (question.group(1).strip() if question else ""), sources


def clean_citations(answer: str, count: int) -> str:
    """Drop markers that point to no shown source (e.g. [7] with five sources)."""
    return CITATION.sub(lambda m: m.group(0) if 1 <= int(m.group(1)) <= count else "", answer)
