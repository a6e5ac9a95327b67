"""A benchmark's result as its two files: OUT.json (the numbers, for scripts) and OUT.md (the tables people read)."""

from __future__ import annotations

import json
import os


def write_report(out: str, result: dict, markdown: str, indent: int = 2) -> None:
    """Writes out + ".json" and out + ".md" (out has no extension), making the folder when it is missing."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=indent)
        f.write("\n")
    with open(out + ".md", "w") as f:
        f.write(markdown)
    print(f"wrote {out}.md and {out}.json")
