"""Every repository file the docs name is committed, so a fresh clone can run what the docs say
(a file that exists only in one working tree, e.g. swallowed by .gitignore, fails here)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "notebooks/README.md", "cluster/README.md")
# A repository path: a top-level folder, then a file with one of these suffixes. The look-behind
# leaves out paths that only pass through such a folder (/home/ubuntu/tests/x.py), the look-ahead
# longer names (x.json.gz); a sentence's full stop stays outside the match.
PATH = re.compile(
    r"(?<![\w./~-])(?:experiments|cluster|notebooks|fedsim|tests)/[\w./*-]*"
    r"\.(?:yaml|yml|py|ipynb|json|sh|md)(?![\w/-]|\.\w)"
)


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


def _named_paths(docs: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """(doc, path) for every repository path the docs name, wildcards (experiments/sweeps/*.yaml) left out."""
    named = []
    for doc in docs:
        text = (REPO / doc).read_text()
        named += [(doc, path) for path in dict.fromkeys(PATH.findall(text)) if "*" not in path]
    return named


@pytest.fixture(scope="module")
def tracked_docs() -> list[str]:
    """The tracked Markdown files, or a skip where REPO is not the top of a git checkout."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed, so which files are tracked cannot be asked")
    top = _git("rev-parse", "--show-toplevel")
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != REPO:
        pytest.skip(f"{REPO} is not the top of a git checkout (an unpacked sdist or a copy): nothing to ask git")
    return _git("ls-files", "--", "*.md").stdout.split()


def test_the_docs_name_repository_paths() -> None:
    named = {path for _, path in _named_paths([doc for doc in DOCS if (REPO / doc).is_file()])}
    assert {"experiments/sweep.py", "cluster/submit.sh", "notebooks/analysis.ipynb"} <= named, sorted(named)


def test_every_path_the_docs_name_is_tracked(tracked_docs: list[str]) -> None:
    assert set(DOCS) <= set(tracked_docs)
    untracked = [f"{doc}: {path}" for doc, path in _named_paths(tracked_docs)
                 if _git("ls-files", "--error-unmatch", "--", path).returncode != 0]
    assert not untracked, "named in the docs but not tracked by git:\n" + "\n".join(untracked)
