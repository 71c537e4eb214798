"""The one YAML reader of fedsim (config files, `--set` values, sweep and variants files).

PyYAML implements YAML 1.1, whose float pattern needs a dot and a signed exponent, so `1e-3`
and `5e4` load as strings and are refused by the schema. `load_yaml` uses a SafeLoader whose
float resolver follows YAML 1.2's core schema: `1e-3`, `1E5`, `.5`, `-2.5e+3`, `.inf`, `.nan`.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (the rest of the 1.1 resolvers kept)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = loader.construct_scalar(node).lower()  # type: ignore[arg-type]
    if text.lstrip("+-") == ".inf":
        return float("-inf") if text.startswith("-") else float("inf")
    return float("nan") if text == ".nan" else float(text)


_Loader.add_constructor("tag:yaml.org,2002:float", _float)


def load_yaml(text: str) -> Any:
    """Parse YAML text safely, with numbers read as people write them (`lr: 1e-3` is 0.001)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
