"""Dependencies run one way: ``producers → schema ← workers``. Only the console-script root
(``workers/cli.py``) and ``workers/dev/`` may import ``producers``, and the runtime never
imports ``workers/dev``. Tests share helpers through ``tests/support`` only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def violations(
    package: str, forbidden: tuple[str, ...], *, exempt: tuple[str, ...] = ()
) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(exempt):
            continue
        for name in sorted(imported_modules(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{rel} imports {name}")
    return found


@pytest.mark.parametrize(
    ("package", "forbidden", "exempt"),
    [
        ("schema", ("workers", "producers", "playwright"), ()),
        ("producers", ("workers", "playwright"), ()),
        ("workers", ("producers", "workers.dev"), ("workers/cli.py", "workers/dev/")),
        # Shared test helpers live in tests/support, never in conftest files or test modules.
        ("tests", ("tests.conftest", "tests.integration", "tests.unit"), ()),
    ],
)
def test_imports_run_one_way(
    package: str, forbidden: tuple[str, ...], exempt: tuple[str, ...]
) -> None:
    assert violations(package, forbidden, exempt=exempt) == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from workers.dev.demo import run_demo\n")
    assert "workers.dev.demo" in imported_modules(module)


def test_the_readme_tree_names_every_folder_and_module() -> None:
    """The README's package table matches the tree: a new module or folder is named there."""
    section = (ROOT / "README.md").read_text().split("### The tree", 1)[1].split("\n## ", 1)[0]
    unnamed = []
    for package in ("schema", "producers", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if f"{rel.parent.name}/" not in section:
                unnamed.append(f"{rel.parent.as_posix()}/")
            if path.name != "__init__.py" and path.name not in section:
                unnamed.append(rel.as_posix())
    for folder in sorted(p for p in (ROOT / "deploy").iterdir() if p.is_dir()):
        if f"{folder.name}/" not in section:
            unnamed.append(f"deploy/{folder.name}/")
    assert sorted(set(unnamed)) == []
