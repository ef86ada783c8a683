#!/usr/bin/env python3
"""CycloneDX 1.5 JSON SBOM from `cargo metadata --format-version 1` on stdin.

Used by scripts/ci-build.sh when `cargo cyclonedx` is not installed. Lists
every package of the resolved graph (normal, build and dev dependencies of
the workspace) with its version, licence expression and purl.
"""
import json
import sys
import uuid
from datetime import datetime, timezone


def main() -> int:
    meta = json.load(sys.stdin)
    root_ids = set(meta.get("workspace_members", []))
    components, root = [], None
    for pkg in sorted(meta["packages"], key=lambda p: (p["name"], p["version"])):
        comp = {
            "type": "library",
            "bom-ref": pkg["id"],
            "name": pkg["name"],
            "version": pkg["version"],
            "purl": f"pkg:cargo/{pkg['name']}@{pkg['version']}",
        }
        if pkg.get("license"):
            comp["licenses"] = [{"expression": pkg["license"]}]
        if pkg.get("description"):
            comp["description"] = pkg["description"].strip()
        if pkg["id"] in root_ids:
            comp["type"] = "application"
            root = comp
        else:
            components.append(comp)
    deps = [
        {"ref": node["id"], "dependsOn": sorted(d["pkg"] for d in node.get("deps", []))}
        for node in (meta.get("resolve") or {}).get("nodes", [])
    ]
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": [{"name": "scripts/sbom-from-metadata.py"}],
            **({"component": root} if root else {}),
        },
        "components": components,
        "dependencies": deps,
    }
    json.dump(bom, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
