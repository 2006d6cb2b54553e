"""The README's curl walk-through, extracted so that tests run exactly what users read."""

from __future__ import annotations

import re
from pathlib import Path

START, END = "<!-- walkthrough:start -->", "<!-- walkthrough:end -->"


def walkthrough_script(readme: Path) -> str:
    text = readme.read_text()
    section = text[text.index(START) + len(START) : text.index(END)]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, "the README's walk-through has no bash blocks"
    return "\n".join(blocks)
