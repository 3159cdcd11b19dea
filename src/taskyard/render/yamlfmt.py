"""The one YAML style of the committed Tekton and trigger files.

Block style, list items indented under their key (as Tekton's own examples are), multi-line
strings as ``|`` blocks, no anchors. The ``str`` representer is this dumper's own: Hera, once
imported, replaces PyYAML's global ``SafeRepresenter`` for ``str`` (hera/_yaml.py), and a file
must not change with what else the process has imported.
"""

from __future__ import annotations

from typing import Any

import yaml


class Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


Dumper.add_representer(str, _str)


def dump(doc: Any) -> str:
    return yaml.dump(
        doc,
        Dumper=Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100_000,
    )
