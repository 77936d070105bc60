"""griffe extension: show the package's docstrings as the plain text they are written in.

The docstrings are not Markdown: they hold shapes like ``x[0]``, products like ``w·(c − u)``, names with
underscores and hand-aligned lines. Outside `code spans` and indented example blocks, this escapes the characters
Markdown would read as links, emphasis or HTML, and keeps every line break, so a docstring reads on the site as in
the source.
"""

from __future__ import annotations

import re

import griffe

_SPECIAL = re.compile(r"([\\\[\]*_<>#|])")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def _escape_text(text: str) -> str:
    return _SPECIAL.sub(r"\\\1", text)


def _escape_line(line: str) -> str:
    parts, last = [], 0
    for match in _CODE_SPAN.finditer(line):
        parts.append(_escape_text(line[last:match.start()]))
        parts.append(match.group(0))
        last = match.end()
    parts.append(_escape_text(line[last:]))
    return "".join(parts)


def plain_text(docstring: str) -> str:
    lines = []
    for line in docstring.split("\n"):
        if not line.strip():
            lines.append("")
        elif line.startswith("    "):  # an indented example: Markdown's code block, shown as written
            lines.append(line)
        else:
            lines.append(_escape_line(line) + "  ")  # two spaces: Markdown's line break
    # An indented block needs a blank line before it to be read as code.
    out = []
    for line in lines:
        if line.startswith("    ") and out and out[-1] and not out[-1].startswith("    "):
            out.append("")
        elif out and out[-1].startswith("    ") and line and not line.startswith("    "):
            out.append("")
        out.append(line)
    return "\n".join(out)


class PlainDocstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_text(obj.docstring.value)
