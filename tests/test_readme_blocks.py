"""The README's command block and Python block are the files the tests run (docs/use_on_your_cams.sh,
docs/from_python.py), character for character, so the README cannot drift from what is tested."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fenced_blocks(text: str, fence: str) -> list[str]:
    """The contents of every ``fence`` block of a markdown text.

    >>> fenced_blocks("a\\n```python\\nx = 1\\n```\\nb\\n```\\ny\\n```\\n", "```python")
    ['x = 1\\n']
    """
    return re.findall(rf"^{re.escape(fence)}\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_use_it_on_your_cams_block_is_the_tested_script():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Use it on your CAMs"):]
    assert fenced_blocks(section, "```")[0] == (ROOT / "docs" / "use_on_your_cams.sh").read_text()


def test_the_from_python_block_is_the_tested_file():
    readme = (ROOT / "README.md").read_text()
    assert fenced_blocks(readme, "```python") == [(ROOT / "docs" / "from_python.py").read_text()]
