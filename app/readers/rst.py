"""reStructuredText as Sphinx writes it, without docutils: one piece per section, with the heading path.

Heading levels follow the order in which each adornment style first appears, as in docutils; roles, object
descriptions and admonitions read as a reader sees them; ``include``-like directives are dropped, never resolved."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from app.readers.base import Piece

_MIN_ADORNMENT = 2
_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1*\s*$")
# Inline markup removed from titles in the section path: ``x``, `x`_, **x**, *x* (roles are rendered first)
_INLINE_MARKUP = (
    (re.compile(r"``(.+?)``"), r"\1"),
    (re.compile(r"`([^`]+?)`_{0,2}"), r"\1"),
    (re.compile(r"\*\*(.+?)\*\*"), r"\1"),
    (re.compile(r"(?<!\w)\*(\S.*?)\*(?!\w)"), r"\1"),
)
_ROLE = re.compile(r":(?:[\w-]+:)?([\w-]+):`([^`]+)`")
_TITLED_TARGET = re.compile(r"^(.*?)\s*<([^<>]+)>$", re.S)
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\.[ \t]+(?P<name>[\w:.+-]+)::(?:[ \t]+(?P<arg>.*))?$")
_EXPLICIT = re.compile(r"^[ \t]*\.\.(?:[ \t]|$)")  # comments, link targets, substitution definitions
_OPTION = re.compile(r"^[ \t]+:[\w -]+:")
_RST_HINT = re.compile(r"^\.\. [\w:-]+::|^\.\. _[^:]+:|:(?:func|class|meth|ref|doc|mod|attr):`", re.M)

#: Sphinx object descriptions (any domain): each becomes a section titled by its signature.
# fmt: off
_OBJECTS = frozenset({
    "function", "class", "method", "classmethod", "staticmethod", "attribute", "property", "data", "exception", "decorator",
    "decoratormethod", "option", "cmdoption", "envvar", "describe", "object", "macro", "member", "type", "var", "struct", "union",
    "enum", "enumerator", "abstractmethod", "coroutinefunction", "coroutinemethod", "opcode", "pdbcommand", "2to3fixer",
})
_LABELS = {
    "note": "Note", "warning": "Warning", "tip": "Tip", "hint": "Hint", "important": "Important", "caution": "Caution",
    "danger": "Danger", "attention": "Attention", "error": "Error", "seealso": "See also", "admonition": "", "rubric": "",
    "versionadded": "New in version", "versionchanged": "Changed in version", "deprecated": "Deprecated since version",
    "deprecated-removed": "Deprecated since version", "impl-detail": "CPython implementation detail",
}
_VERSIONED = frozenset({"versionadded", "versionchanged", "deprecated", "deprecated-removed"})
_CODE = frozenset({"code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "productionlist", "parsed-literal"})
#: Directives whose argument and body are not reading matter (navigation, indexing, other files, raw output).
_DROPPED = frozenset({
    "include", "literalinclude", "toctree", "index", "raw", "image", "figure", "highlight", "currentmodule", "module",
    "moduleauthor", "sectionauthor", "codeauthor", "testsetup", "testcleanup", "tabularcolumns", "meta", "contents",
    "autosummary", "csv-table", "audit-event", "audit-event-table",
})
# fmt: on
#: Directives whose argument is a condition or a style: their body is kept, the argument is not.
_TRANSPARENT = frozenset({"only", "ifconfig", "container", "rst-class", "cssclass", "centered", "hlist"})


def render_roles(text: str) -> str:
    """Sphinx roles as readable text: ``:func:`os.walk``` → ``os.walk()``, ``:class:`~a.B``` → ``B``, ``:ref:`label <x>``` → ``label``."""
    return _ROLE.sub(_render_role, text) if ":`" in text else text


def _render_role(match: re.Match[str]) -> str:
    role, content = match.group(1), match.group(2)
    titled = _TITLED_TARGET.match(content)
    if titled and titled.group(1):
        return titled.group(1)
    content = content.lstrip("!")
    if content.startswith("~"):
        content = content[1:].rsplit(".", 1)[-1]
    if role in ("func", "meth") and not content.endswith(")"):
        content += "()"
    elif role in ("pep", "rfc"):
        content = f"{role.upper()} {content}"
    return content


def looks_like_rst(text: str) -> bool:
    """A .txt file holding reST: Sphinx directives, link targets or roles, or an underlined section title."""
    if _RST_HINT.search(text):
        return True
    lines = text.splitlines()
    return any(_title_at(lines, i) is not None for i in range(min(len(lines), 200)) if i == 0 or not lines[i - 1].strip())


@dataclass(frozen=True)
class _Title:
    text: str
    style: tuple[bool, str]  # (has overline, adornment character)
    consumed: int  # lines taken by the title and its adornment(s)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """The first line at or after ``start`` that is not blank and not indented deeper than ``indent``."""
    i = start
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
        i += 1
    return i


def split_rst(text: str) -> list[Piece]:
    """Split reST at section titles and object descriptions; text before the first title gets an empty section."""
    lines = text.splitlines()
    styles: list[tuple[bool, str]] = []
    path: list[tuple[int, str]] = []
    objects: list[tuple[int, str]] = []  # open object descriptions: (directive indent, signature)
    pieces: list[Piece] = []
    body: list[str] = []
    verbatim: int | None = None  # indent of the line opening a code or literal block
    fenced = False  # the verbatim block was opened as a fence, to be closed when it ends

    def flush() -> None:
        content = "\n".join(body).strip()
        if content:
            titles = [title for _, title in path] + [signature for _, signature in objects]
            pieces.append(Piece(text=content, section=" > ".join(titles)))
        body.clear()

    i = 0
    after_title = False
    while i < len(lines):
        line = lines[i]
        if verbatim is not None:
            if not line.strip() or _indent(line) > verbatim:
                body.append(line)
                i += 1
                continue
            if fenced:
                _close_fence(body)
            verbatim, fenced = None, False
        if line.strip():
            while objects and _indent(line) <= objects[-1][0]:
                flush()
                objects.pop()
        title = _title_at(lines, i) if (i == 0 or after_title or not lines[i - 1].strip()) else None
        after_title = False
        if title is not None:
            flush()
            objects.clear()
            if title.style not in styles:
                styles.append(title.style)
            level = styles.index(title.style) + 1
            while path and path[-1][0] >= level:
                path.pop()
            plain = _plain_title(title.text)
            path.append((level, plain))
            body.append(plain)
            after_title = True
            i += title.consumed
            continue
        directive = _DIRECTIVE.match(line)
        if directive:
            i, verbatim, fenced = _directive(lines, i, directive, body, objects, flush)
            continue
        if _EXPLICIT.match(line):  # a comment, link target or substitution definition with its indented body
            i = _block_end(lines, i + 1, _indent(line))
            continue
        stripped = line.rstrip()
        if stripped.endswith("::"):  # the next indented block is literal text
            verbatim = _indent(line)
            stripped = stripped[:-1] if len(stripped) > 2 and stripped[-3] != " " else stripped[:-2].rstrip()
        if stripped.strip():
            body.append(render_roles(stripped))
        elif not line.strip():
            body.append("")
        i += 1
    if fenced:
        _close_fence(body)
    flush()
    return pieces


def _close_fence(body: list[str]) -> None:
    """Close the fence opened last in ``body``, with the code between it dedented and trimmed of blank lines."""
    opening = max(n for n, line in enumerate(body) if line.startswith("```"))
    code = textwrap.dedent("\n".join(body[opening + 1 :])).strip("\n")
    del body[opening + 1 :]
    body.extend([*code.splitlines(), "```"])


def _directive(
    lines: list[str], i: int, match: re.Match[str], body: list[str], objects: list[tuple[int, str]], flush: Callable[[], None]
) -> tuple[int, int | None, bool]:
    """Render the directive at line i; returns the next line, and the indent and fencing of a code block it opens."""
    indent = _indent(lines[i])
    name = match["name"].rsplit(":", 1)[-1].lower()
    argument = (match["arg"] or "").strip()
    after = i + 1
    while after < len(lines) and _OPTION.match(lines[after]) and _indent(lines[after]) > indent:
        after += 1  # the directive's :options:
    pad = " " * indent
    if name in _OBJECTS:
        flush()
        objects.append((indent, render_roles(argument) or name))
        return after, None, False
    if name in _DROPPED:
        return _block_end(lines, i + 1, indent), None, False
    if name in _CODE:
        language = argument.split()[0] if argument and name in ("code-block", "sourcecode", "code") else ""
        body.append(f"```{language}")  # fenced at the margin, with its code dedented when the block ends
        return after, indent, True
    label = _LABELS.get(name)
    if label is None:  # an unknown directive: its argument and body are kept as text
        if argument and name not in _TRANSPARENT:
            body.append(pad + render_roles(argument))
        return after, None, False
    if name in _VERSIONED and argument:
        version, _, rest = argument.partition(" ")
        text = f"{label} {version}:" + (f" {render_roles(rest.strip())}" if rest.strip() else "")
    elif label:
        text = f"{label}:" + (f" {render_roles(argument)}" if argument else "")
    else:
        text = render_roles(argument)
    if text:
        body.append(pad + text)
    return after, None, False


def _plain_title(title: str) -> str:
    title = render_roles(title)
    for pattern, replacement in _INLINE_MARKUP:
        title = pattern.sub(replacement, title)
    return title


def _adornment_char(line: str) -> str | None:
    match = _ADORNMENT.match(line)
    return match.group(1) if match and len(line.rstrip()) >= _MIN_ADORNMENT else None


def _is_title_text(line: str) -> bool:
    """Titles start in column 1 and are not themselves adornment lines."""
    return bool(line.strip()) and not line[0].isspace() and _adornment_char(line) is None


def _title_at(lines: list[str], i: int) -> _Title | None:
    """The section title starting at line i, if any (overline + title + underline, or title + underline)."""
    over = _adornment_char(lines[i])
    if over is not None and i + 2 < len(lines):
        title = lines[i + 1].strip()
        under = _adornment_char(lines[i + 2])
        width = len(lines[i].rstrip())
        if title and under == over and width >= len(title) and len(lines[i + 2].rstrip()) >= len(title):
            return _Title(title, (True, over), 3)
    if i + 1 < len(lines) and _is_title_text(lines[i]):
        under = _adornment_char(lines[i + 1])
        title = lines[i].strip()
        if under is not None and len(lines[i + 1].rstrip()) >= len(title):
            return _Title(title, (False, under), 2)
    return None
