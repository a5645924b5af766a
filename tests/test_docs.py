"""The README and data/README.md say what the code and docs/STATUS.md say: the demo's
numbers, how `profile` reports failures, the default stores, what data/ holds."""
from __future__ import annotations

import os
import re

import click

from host.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def _numbers(text: str) -> list:
    return re.findall(r"\d+(?:\.\d+)?", text)


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_readme_demo_warm_rerun_is_the_one_in_status():
    """Every number of the README's warm-rerun sentence comes from one STATUS run."""
    readme, status = _flat(_read("README.md")), _flat(_read("docs", "STATUS.md"))
    m = re.search(r"rerun with a warm cache (.*?): the demo measures", readme)
    assert m, "the README's warm-rerun sentence is gone"
    quoted = _numbers(m.group(1))
    assert quoted
    runs = re.findall(r"`opcost demo`[^;]*warm[^;]*", status)
    assert any(all(n in run for n in quoted) for run in runs), (quoted, runs)


def test_readme_says_which_profile_failures_stop_the_command():
    """An unknown serial stops `profile` with one error (exit 2); it is not a per-model failure."""
    readme = _flat(_read("README.md"))
    per_model = re.search(r"A failure of one model \(([^)]*)\)", readme)
    assert per_model and "serial" not in per_model.group(1)
    stop = re.search(r"A problem with the command itself \(([^)]*)\)[^.]*?exit code 2", readme)
    assert stop and "unknown serial" in stop.group(1)


def test_readme_names_the_default_stores():
    readme = _flat(_read("README.md"))
    defaults = {}
    for path in (["profile"], ["fit"], ["evaluate"], ["dataset", "import"]):
        cmd: click.Command = main
        for name in path:
            cmd = cmd.commands[name]
        (store,) = [p for p in cmd.params if p.name == "store_path"]
        defaults[" ".join(path)] = store.default
    assert set(defaults.values()) == {"opcost_runs.db"}
    m = re.search(r"Where results go: (.*?); `campaign run`", readme)
    assert m and "`opcost_runs.db`" in m.group(1)
    for command in defaults:
        assert f"`{command}`" in m.group(1)
    assert "`opcost.db` next to the plan" in readme
    assert "in a folder that does not exist yet creates that folder" in readme


def test_data_readme_describes_each_folder():
    doc = _read("data", "README.md")
    assert "in progress" not in doc and len(doc.splitlines()) > 15
    folders = sorted(d for d in os.listdir(os.path.join(ROOT, "data"))
                     if os.path.isdir(os.path.join(ROOT, "data", d)))
    assert folders
    for d in folders:
        row = next((ln for ln in doc.splitlines() if ln.startswith(f"| `{d}/`")), None)
        assert row, f"data/README.md has no row for {d}/"
        assert f"({d}/PROVENANCE.md)" in row and f"({d}/LICENSE)" in row
        license_text = _read("data", d, "LICENSE")
        name = "MIT" if license_text.lstrip().startswith("MIT License") else \
            "Apache-2.0" if "Apache License" in license_text[:200] and "Version 2.0" in license_text[:300] else None
        assert name and name in row, (d, name)
