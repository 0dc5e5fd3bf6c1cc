"""The README is the front door: its asset graph and commands must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from musictrend_dagster.definitions import defs

README = Path(__file__).resolve().parents[2] / "README.md"


def mermaid_graph() -> str:
    """The asset graph as the README's mermaid block: groups as subgraphs, then every edge."""
    graph = defs.resolve_asset_graph()
    groups: dict[str, list[str]] = {}
    for key in graph.get_all_asset_keys():
        groups.setdefault(graph.get(key).group_name, []).append(_node(key))
    lines = ["```mermaid", "flowchart LR"]
    for group in ("ingest", "transform", "features", "models", "forecast", "monitoring"):
        lines += [f"  subgraph {group}", *(f"    {a}" for a in sorted(groups.pop(group))), "  end"]
    assert not groups, f"groups missing from the README order: {sorted(groups)}"
    edges = sorted(
        ("__".join(p.path), "__".join(k.path)) for k in graph.get_all_asset_keys() for p in graph.get(k).parent_keys
    )
    lines += [f"  {parent} --> {child}" for parent, child in edges]
    return "\n".join([*lines, "```"])


def _node(key) -> str:
    """A mermaid node: an id without '/' (the op name), labelled with the asset key when it has a prefix."""
    node = "__".join(key.path)
    return node if len(key.path) == 1 else f'{node}["{key.to_user_string()}"]'


def test_readme_asset_graph_matches_the_definitions():
    assert mermaid_graph() in README.read_text(), "regenerate the README graph: python tests/pipeline/test_readme.py"


def test_ci_runs_the_readme_test_command():
    text = README.read_text()
    assert re.search(r"^make test\b", text, re.M)
    ci = (README.parent / ".ci" / "run").read_text()
    assert "exec make test" in ci


if __name__ == "__main__":
    print(mermaid_graph())
