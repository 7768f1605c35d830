#!/usr/bin/env python3
"""Writes strict, standalone JSON schemas for kubeconform, offline.

kubeconform normally downloads its schemas (yannh/kubernetes-json-schema) from the
internet; CI has no internet. The same schemas come from two local sources instead:

  openapi  the running kube-apiserver's OpenAPI v2 document (GET /openapi/v2): every
           built-in kind of exactly the Kubernetes version we run (1.34.x);
  crd      the chart's CustomResourceDefinition YAML: our own kinds (TradingBot, ...),
           with `metadata` checked against the apiserver's ObjectMeta.

Every file is "standalone" (the definitions it references travel inside it) and "strict"
(an object with known properties rejects unknown ones, as `kubectl apply
--validate=strict` does). Layout: OUT/<group or v1>/<kind lowercase>_<version>.json, for
the kubeconform template OUT/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json.

Usage: k8s-json-schemas.py openapi SWAGGER.json OUT
       k8s-json-schemas.py crd SWAGGER.json OUT CRD.yaml...
"""

import json
import os
import sys

import yaml

INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
REF_PREFIX = "#/definitions/"
QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"


def nullable(t):
    """YAML `key:` with no value is null; the apiserver treats it as absent."""
    if isinstance(t, list):
        return t if "null" in t else t + ["null"]
    return [t, "null"]


def convert(node, refs, root=False):
    """One schema node of OpenAPI v2 / a CRD's openAPIV3Schema as strict JSON schema.

    Walks keywords only (a property *named* "$ref" is not a reference); collects the
    names of referenced definitions into `refs`.
    """
    if isinstance(node, bool) or not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"][len(REF_PREFIX):]
        refs.add(name)
        return {"$ref": node["$ref"]}
    if node.get("x-kubernetes-int-or-string") or node.get("format") == "int-or-string":
        return {"oneOf": [{"type": ["string", "null"]}, {"type": ["integer", "null"]}]}
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {k: convert(v, refs) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = convert(value, refs)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [convert(v, refs) for v in value]
        elif key in ("type", "required", "enum", "pattern", "minimum", "maximum",
                     "minLength", "maxLength", "minItems", "maxItems", "uniqueItems",
                     "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
                     "minProperties", "maxProperties", "description"):
            out[key] = value
        # format (int32, byte, date-time...), default, x-kubernetes-*: not asserted
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if "type" in out and not root:
        out["type"] = nullable(out["type"])
    if out.get("enum") is not None and not root:
        out["enum"] = list(out["enum"]) + [None]
    return out


def definitions(swagger):
    """The converted definitions of an OpenAPI v2 document, by name."""
    defs = {}
    for name, schema in swagger["definitions"].items():
        if name == INT_OR_STRING:
            defs[name] = {"oneOf": [{"type": ["string", "null"]}, {"type": ["integer", "null"]}]}
        elif name == QUANTITY:
            # the apiserver's own parser rule (k8s.io/apimachinery resource.Quantity)
            defs[name] = {"oneOf": [
                {"type": ["string", "null"], "pattern": QUANTITY_PATTERN},
                {"type": ["number", "null"]},
            ]}
        else:
            refs = set()
            defs[name] = (convert(schema, refs), refs)
    return defs


def closure(defs, start):
    """Every definition reachable from the names in `start`."""
    seen, todo = {}, list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        entry = defs[name]
        schema, refs = entry if isinstance(entry, tuple) else (entry, set())
        seen[name] = schema
        todo.extend(refs)
    return seen


def write(out_dir, group, version, kind, schema):
    directory = os.path.join(out_dir, group or "v1")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{kind.lower()}_{version}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(schema, f, separators=(",", ":"))


def with_identity(schema, group, version, kind):
    """Pins apiVersion and kind (a schema is looked up by them, and they are required)."""
    api_version = f"{group}/{version}" if group else version
    props = dict(schema.get("properties", {}))
    props["apiVersion"] = {"type": "string", "enum": [api_version]}
    props["kind"] = {"type": "string", "enum": [kind]}
    schema = dict(schema)
    schema["properties"] = props
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind"})
    return schema


def from_openapi(swagger, out_dir):
    defs = definitions(swagger)
    count = 0
    for name, raw in swagger["definitions"].items():
        if not name.startswith("io.k8s."):
            continue  # a CRD installed in this cluster: its schema comes from our YAML
        for gvk in raw.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk["group"], gvk["version"], gvk["kind"]
            refs = set()
            root = convert(raw, refs, root=True)
            root = with_identity(root, group, version, kind)
            root["definitions"] = closure(defs, refs)
            write(out_dir, group, version, kind, root)
            count += 1
    return count


def from_crds(swagger, out_dir, paths):
    defs = definitions(swagger)
    meta = closure(defs, {OBJECT_META})
    count = 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for crd in yaml.safe_load_all(f):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for v in crd["spec"]["versions"]:
                    refs = set()
                    root = convert(v["schema"]["openAPIV3Schema"], refs, root=True)
                    root.setdefault("properties", {})["metadata"] = {"$ref": REF_PREFIX + OBJECT_META}
                    root = with_identity(root, group, v["name"], kind)
                    root["definitions"] = meta
                    write(out_dir, group, v["name"], kind, root)
                    count += 1
    return count


def main(argv):
    if len(argv) < 4 or argv[1] not in ("openapi", "crd"):
        sys.stderr.write(__doc__)
        return 2
    with open(argv[2], encoding="utf-8") as f:
        swagger = json.load(f)
    if argv[1] == "openapi":
        count = from_openapi(swagger, argv[3])
    else:
        count = from_crds(swagger, argv[3], argv[4:])
    if count == 0:
        sys.stderr.write(f"k8s-json-schemas: no kinds found in {argv[2:]}\n")
        return 1
    print(f"k8s-json-schemas: wrote {count} schemas into {argv[3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
