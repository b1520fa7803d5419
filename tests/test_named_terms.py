"""Which words of a question name something (and so must appear in docs that cover it)."""

from __future__ import annotations

import pytest

from integrations.named_terms import MAX_NAMED_TERMS, named_terms


@pytest.mark.parametrize(
    ("question", "names"),
    [
        ("How do I generate an FPGA bitstream from my design with OpenROAD?", ["FPGA", "OpenROAD"]),
        ("How do I submit the flow as jobs to a Slurm cluster?", ["Slurm"]),
        ("What is the difference between ```set_dont_use``` and set_dont_touch?", ["set_dont_use", "set_dont_touch"]),
        ("Can I write the image to layout.png with SystemVerilog-like syntax?", ["layout.png", "SystemVerilog-like"]),
        # Sentence-initial capitals, "I", plain words and slash alternatives name nothing.
        ("Suppose signal/clock nets misbehave. Especially when I decipher the report?", []),
        ("Where is the cache? Python users ask.", []),
        # Examples of the user's own data are not what the question is about.
        ("A URL like docs/guide/intro.txt stops at the slash in <str:...>; which converter?", ["URL"]),
        ("How do I name files, e.g. report_2024.csv, in the S3 bucket?", ["S3"]),
    ],
)
def test_names_are_acronyms_mid_sentence_capitals_and_identifiers(question: str, names: list[str]) -> None:
    assert named_terms(question) == names


def test_each_name_is_checked_once_and_at_most_a_few_per_question() -> None:
    question = "Compare AAA, BBB, CCC, DDD, EEE, FFF, GGG and AAA again."
    assert named_terms(question) == ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"][:MAX_NAMED_TERMS]
