"""JSON Schemas of the config files, generated from the models, for editors to check and complete.

`python -m controller.schema config/schema` (or `make schema`) rewrites them; a test fails when the
committed files differ from what the models generate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from controller.site import Site

SCHEMAS: dict[str, type[Site]] = {"site.schema.json": Site}


def schema_text(model: type[Site]) -> str:
    schema: dict[str, Any] = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ilma site"
    schema["description"] = (
        "A building: [site], [energy], [[ahu]], [zone_defaults] and [[zone]]. "
        "Units are SI and carried in the key names."
    )
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in SCHEMAS.items():
        path = directory / name
        path.write_text(schema_text(model), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "config/schema")):
        sys.stdout.write(f"wrote {p}\n")
