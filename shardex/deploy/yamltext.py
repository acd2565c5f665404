"""A small YAML writer for the generated manifests: block style, keys in the order given,
every string double-quoted (a JSON string is a YAML scalar, so ``"true"``, ``"0400"`` or
``"$(POD_NAME)"`` never change type), a multi-line string as a literal block.

The project has no YAML dependency at run time, and the manifests need only maps, lists,
strings, integers and booleans: this is the whole of it (the tests read its output back with
PyYAML and check it against the Kubernetes schemas).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")


def _key(k: str) -> str:
    return k if _PLAIN_KEY.match(k) else json.dumps(k)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    raise TypeError(f"no YAML for {type(v).__name__} {v!r}")


def _block(text: str, indent: int) -> list[str]:
    """A literal block scalar (``|``, or ``|-`` without a final newline)."""
    pad = " " * indent
    head = "|" if text.endswith("\n") else "|-"
    return [head] + [pad + line if line else "" for line in text.rstrip("\n").split("\n")]


def _lines(value: Any, indent: int) -> list[str]:
    """``value`` (a map or a list) as lines at ``indent`` spaces."""
    pad = " " * indent
    out: list[str] = []
    items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
    for k, v in items:
        lead = f"{pad}{_key(k)}:" if k is not None else f"{pad}-"
        if isinstance(v, dict | list) and v:
            if k is None:  # a list item that is a map or list: its first line after "- "
                sub = _lines(v, indent + 2)
                out.append(f"{pad}- {sub[0].lstrip()}")
                out += sub[1:]
            else:
                out.append(lead)
                out += _lines(v, indent + (2 if isinstance(v, dict) else 0))
        elif isinstance(v, dict | list):
            out.append(f"{lead} {'{}' if isinstance(v, dict) else '[]'}")
        elif isinstance(v, str) and "\n" in v:
            block = _block(v, indent + 2)
            out.append(f"{lead} {block[0]}")
            out += block[1:]
        else:
            out.append(f"{lead} {_scalar(v)}")
    return out


def dump(doc: dict[str, Any]) -> str:
    """One YAML document."""
    return "\n".join(_lines(doc, 0)) + "\n"


def dump_all(docs: Iterable[dict[str, Any]]) -> str:
    """Several documents, each started by ``---``."""
    return "".join(f"---\n{dump(d)}" for d in docs)
