"""The public evaluation sets are in the repository, whole: a plain clone evaluates with nothing beside it."""

from __future__ import annotations

import hashlib
import json

from tests.conftest import EVAL, REPO


def test_django_pages_match_their_manifest() -> None:
    lines = (EVAL / "django" / "MANIFEST.sha256").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 534
    docs = EVAL / "django" / "docs"
    for line in lines:
        digest, name = line.split(maxsplit=1)
        assert hashlib.sha256((docs / name).read_bytes()).hexdigest() == digest, name
    assert sum(1 for _ in docs.rglob("*.html")) == len(lines)


def test_each_set_has_its_questions_and_documents() -> None:
    assert sum(1 for _ in (EVAL / "ord-qa" / "questions.jsonl").open(encoding="utf-8")) == 90
    assert len(list((EVAL / "ord-qa" / "docs").glob("*.md"))) == 32
    assert len(json.loads((EVAL / "solana" / "rag_dataset.json").read_text(encoding="utf-8"))["examples"]) == 58
    assert (EVAL / "solana" / "source_files" / "BlockchainSolana.pdf").read_bytes().startswith(b"%PDF")
    assert sum(1 for _ in (EVAL / "django" / "questions.jsonl").open(encoding="utf-8")) == 60


def test_nothing_in_the_repository_points_outside_it() -> None:
    outside = "../" + "shared"  # spelled in two parts so this file does not match itself
    texts = [
        p
        for p in REPO.rglob("*")
        if p.is_file()
        and p.suffix in {".py", ".md", ".toml", ".yaml", ".txt", ".ipynb", ".example", ""}
        and not {".git", ".venv", ".docsrag", "artifacts"} & set(p.relative_to(REPO).parts)
    ]
    offenders = [str(p.relative_to(REPO)) for p in texts if outside in p.read_text(encoding="utf-8", errors="replace")]
    assert offenders == []
