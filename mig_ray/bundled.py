"""Files shipped inside the package, named `bundled:NAME` wherever a file path is taken.

A job file or a command line that says `bundled:valid_tags_tulu3.json` works on any machine that
has the package installed (a cluster node with nothing mounted, a laptop), because each process
resolves the name in its own installation. Ground floor: imports nothing of mig_ray.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

BUNDLED = "bundled:"
FOLDERS = ("demo", "data")  # mig_ray/demo (the demo pool), mig_ray/data (the Tulu3 valid tags)


def is_bundled(value: str | Path) -> bool:
    return str(value).startswith(BUNDLED)


def resolve_bundled(value: str | Path) -> Path:
    """`bundled:NAME` -> the file shipped in mig_ray/demo or mig_ray/data; any other value -> that
    path (user-expanded, absolute: Ray tasks run in other folders). ValueError names the folders
    when no bundled file has that name."""
    text = str(value)
    if not is_bundled(text):
        return Path(os.path.expanduser(text)).absolute()  # pathlib's raises for an unknown ~user
    name = text[len(BUNDLED):]
    for folder in FOLDERS:
        path = Path(str(resources.files("mig_ray") / folder / name))
        if name and path.is_file():
            return path
    shipped = sorted(p.name for f in FOLDERS for p in Path(str(resources.files("mig_ray") / f)).iterdir()
                     if p.is_file() and not p.name.startswith(("_", ".")) and p.suffix in (".json", ".jsonl"))
    raise ValueError(f"no bundled file {name!r} (shipped: {', '.join(BUNDLED + s for s in shipped)})")
