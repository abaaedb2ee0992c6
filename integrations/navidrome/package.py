"""Pack the plugin as Navidrome wants it: an .ndp zip of manifest.json and plugin.wasm.

``NAVIDROME_ALLOWED_HOSTS`` (comma-separated) replaces the manifest's ``permissions.http.requiredHosts``,
so a build can name the host musicrec runs on. Run by ``make navidrome-plugin``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import zipfile
from pathlib import Path

log = logging.getLogger("navidrome-plugin")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("wasm", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    manifest = json.loads(args.manifest.read_text(encoding="utf-8"))
    if hosts := os.environ.get("NAVIDROME_ALLOWED_HOSTS", "").strip():
        manifest["permissions"]["http"]["requiredHosts"] = [h.strip() for h in hosts.split(",") if h.strip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2) + "\n")
        zf.write(args.wasm, "plugin.wasm")
    tmp.replace(args.out)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    hosts_now = manifest["permissions"]["http"]["requiredHosts"]
    log.info("%s: %d bytes (hosts %s)", args.out, args.out.stat().st_size, hosts_now)


if __name__ == "__main__":
    main()
