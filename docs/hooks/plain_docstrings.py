"""griffe extension: show the package's docstrings as the plain text they are written in.

The docstrings are not Markdown: they hold shapes like ``x[0]``, products like ``w·(c − u)``, names with
underscores and hand-aligned lines. Outside `code spans` and indented example blocks, this escapes the characters
Markdown would read as links, emphasis or HTML; prose lines flow together, and a line that starts an item of its own
(an argument's name and a colon, a bullet, an indented line) keeps its line break, so a docstring reads on the site
as in the source.
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


# A line that starts a new item: indented, a bullet, or an argument's name and a colon ("seed: ...", "t, x0: ...").
_STARTS_ITEM = re.compile(r"^(\s|[-•*] |\d+[.)] |[\w.\[\]`\"'*]+(, [\w.`*]+)*( \([^)]*\))?: )")


def plain_text(docstring: str) -> str:
    source = docstring.split("\n")
    lines = []
    for index, line in enumerate(source):
        following = source[index + 1] if index + 1 < len(source) else ""
        if not line.strip():
            lines.append("")
        elif line.startswith("    "):  # an indented example: Markdown's code block, shown as written
            lines.append(line)
        else:
            # Prose flows as Markdown flows it; a line break stays where the next line starts an item of its own.
            lines.append(_escape_line(line) + ("  " if following.strip() and _STARTS_ITEM.match(following) else ""))
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
