"""Turn CustomResourceDefinitions into the JSON Schemas deploy/check-manifests.sh uses.

    python3 deploy/k8s/schemas/extract.py CRD.yaml... [--out deploy/k8s/schemas]

For every served version of every CRD given, writes ``<kind>-<group>-<version>.json``
(lower case): the version's ``openAPIV3Schema``, made as strict as the API
server's strict field validation (what ``kubectl apply`` uses by default):

* an object with ``properties`` and neither ``additionalProperties`` nor
  ``x-kubernetes-preserve-unknown-fields`` refuses other fields (the API server
  would refuse or drop them; a misspelt field is an error here);
* ``apiVersion`` and ``kind`` must be the CRD's own, so a schema never passes a
  document of another kind;
* ``nullable: true`` (OpenAPI) becomes ``null`` among the allowed types.

The vendored files and the upstream commits they come from are listed in
README.md beside this script; run it again on newer CRDs to update them.
Needs PyYAML.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

DRAFT = "http://json-schema.org/draft-07/schema#"


def strict(node: Any) -> Any:
    """``node`` (an OpenAPI v3 schema, as parsed) with the rules above, recursively."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items()}
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def schemas_of(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """File name → JSON Schema, one per served version of ``crd``."""
    if crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"not a CustomResourceDefinition: kind {crd.get('kind')!r}")
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    out = {}
    for version in spec["versions"]:
        if not version.get("served", False):
            continue
        schema = strict(version["schema"]["openAPIV3Schema"])
        props = schema.setdefault("properties", {})
        props["apiVersion"] = {"const": f"{group}/{version['name']}"}
        props["kind"] = {"const": kind}
        schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind"})
        schema = {"$schema": DRAFT, "title": f"{kind} {group}/{version['name']}", **schema}
        out[f"{kind.lower()}-{group}-{version['name']}.json"] = schema
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("crds", nargs="+", type=Path, help="CRD YAML files")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args(argv)
    for path in args.crds:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
            written = {name: s for d in docs for name, s in schemas_of(d).items()}
        except (OSError, yaml.YAMLError, KeyError, ValueError) as exc:
            print(f"extract: {path}: {exc}", file=sys.stderr)
            return 1
        for name, schema in written.items():
            text = json.dumps(schema, indent=1, sort_keys=True) + "\n"
            (args.out / name).write_text(text)
            print(f"{path.name} -> {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
