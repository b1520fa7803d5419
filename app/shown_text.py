"""Characters that change how the text around them is shown, escaped wherever a file name or notice is displayed.

Bidirectional overrides, embeddings, isolates and marks reorder what a reader sees: a file named
``invoice_\\u202efdp.md`` reads "invoice_dm.pdf". Shown as their ``\\uXXXX`` escapes instead.
"""

from __future__ import annotations

import re

BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


def escape_bidi(text: str) -> str:
    return BIDI_CONTROLS.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)
