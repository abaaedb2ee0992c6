"""Which licence covers a file, read from a Debian ``copyright`` file.

Machine-readable (DEP-5) copyright files list ``Files:`` patterns per licence, and the last stanza that
matches a file wins. Older free-form files name the licence in prose; for those a few well-known phrases
are recognised. The manifest keeps both the licence name and the path of the copyright file itself.
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache
from pathlib import Path

_PROSE = (
    (re.compile(r"creativecommons\.org/licenses/by-sa/3\.0|Attribute Share-Alike", re.I), "CC-BY-SA-3.0"),
    (
        re.compile(r"Creative Commons Attribution[- ]ShareAlike 3\.0|CREATIVE COMMONS PUBLIC LICENSE", re.I),
        "CC-BY-SA-3.0",
    ),
    (re.compile(r"GNU General Public License.*version 2|common-licenses/GPL-2", re.I | re.S), "GPL-2+"),
    (re.compile(r"licensed under the GPL|common-licenses/GPL", re.I), "GPL"),
)


@lru_cache(maxsize=64)
def _stanzas(copyright_file: Path) -> tuple[tuple[tuple[str, ...], str], ...]:
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:(.*?)(?=^\S|\Z)", block, re.M | re.S)
        lic = re.search(r"^License:\s*(\S.*)$", block, re.M)
        if files and lic:
            stanzas.append((tuple(files.group(1).split()), lic.group(1).strip()))
    return tuple(stanzas)


def _matches(pattern: str, in_pkg: str) -> bool:
    return fnmatch.fnmatch(in_pkg, pattern) or in_pkg.endswith("/" + pattern) or pattern.endswith("/" + in_pkg)


def licence_for(copyright_file: Path, in_pkg: str) -> str:
    """Licence of the file at ``in_pkg`` (its path inside the package) according to ``copyright_file``."""
    if not copyright_file.exists():
        return "unknown"
    found = None
    for patterns, lic in _stanzas(copyright_file):
        if any(_matches(p, in_pkg) for p in patterns):
            found = lic
    if found:
        return found
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    for pattern, name in _PROSE:
        if pattern.search(text):
            return name
    return "see copyright file"
