"""JSON Schema of cluster.yaml, for editors (yaml-language-server) and `nfsroot schema`."""

from __future__ import annotations

import json

from pipeline.spec.model import Cluster


def schema_bytes() -> bytes:
    schema = Cluster.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "nfsroot-pipeline cluster.yaml"
    return (json.dumps(schema, indent=2, sort_keys=True) + "\n").encode()
