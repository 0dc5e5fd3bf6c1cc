"""The README is the front door and docs/ the rest: the asset graph matches the code, the README stays short,
and every relative link in the README and the docs pages leads to a file (and a heading) that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from musictrend_dagster.definitions import defs

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
README_MAX_LINES = 220
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def mermaid_graph() -> str:
    """The asset graph as the architecture page's mermaid block: groups as subgraphs, then every edge."""
    graph = defs.resolve_asset_graph()
    groups: dict[str, list[str]] = {}
    for key in graph.get_all_asset_keys():
        groups.setdefault(graph.get(key).group_name, []).append(_node(key))
    lines = ["```mermaid", "flowchart LR"]
    for group in ("ingest", "transform", "features", "models", "forecast", "monitoring"):
        lines += [f"  subgraph {group}", *(f"    {a}" for a in sorted(groups.pop(group))), "  end"]
    assert not groups, f"groups missing from the graph's order: {sorted(groups)}"
    edges = sorted(
        ("__".join(p.path), "__".join(k.path)) for k in graph.get_all_asset_keys() for p in graph.get(k).parent_keys
    )
    lines += [f"  {parent} --> {child}" for parent, child in edges]
    return "\n".join([*lines, "```"])


def _node(key) -> str:
    """A mermaid node: an id without '/' (the op name), labelled with the asset key when it has a prefix."""
    node = "__".join(key.path)
    return node if len(key.path) == 1 else f'{node}["{key.to_user_string()}"]'


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-', repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", _FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    """Relative links of a page (outside code blocks) whose file, or heading in a Markdown file, is missing."""
    broken = []
    for target in _LINK.findall(_FENCE.sub("", page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not a file of this repository
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    return broken


def test_the_asset_graph_matches_the_definitions():
    assert mermaid_graph() in ARCHITECTURE.read_text(), "regenerate the graph: python tests/pipeline/test_docs.py"


def test_the_readme_shows_the_asset_graph_and_links_the_checked_one():
    text = README.read_text()
    assert "](docs/asset_graph.png)" in text
    assert "](docs/architecture.md#the-asset-graph)" in text


def test_ci_runs_the_readme_test_command():
    text = README.read_text()
    assert re.search(r"^make test\b", text, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec make test" in ci


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/ (at most {README_MAX_LINES})"


def test_the_readme_links_every_docs_page():
    linked = {Path(t.partition("#")[0]).name for t in _LINK.findall(README.read_text()) if t.startswith("docs/")}
    missing = sorted(p.name for p in PAGES[1:] if p.name not in linked)
    assert not missing, f"docs pages the README's table of contents does not link: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_resolves(page):
    assert not broken_links(page), f"{page.relative_to(ROOT)}: broken links {broken_links(page)}"


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "a.md").write_text("# A page\n\n## Two words\n")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md) [ok](a.md#two-words) [ok](#here) [web](https://example.org/x.md)\n"
        "```\n[in code](nowhere.md)\n```\n# Here\n[gone](c.md) [no heading](a.md#three-words) ![img](x.png)\n"
    )
    assert [b.split(":")[0] for b in broken_links(page)] == ["c.md", "a.md#three-words", "x.png"]


def test_anchors_follow_github():
    text = "# The daily loop (`benchmarks/bench_daily.py`)\n## Faults (`bench_faults.py --n 3`)\n"
    text += "## Figures\n## Figures\n"
    assert anchors(text) == {
        "the-daily-loop-benchmarksbench_dailypy",
        "faults-bench_faultspy---n-3",
        "figures",
        "figures-1",
    }


if __name__ == "__main__":
    print(mermaid_graph())
