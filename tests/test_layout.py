"""The package's folders are its data flow: conf -> config -> data -> training -> registry ->
acceptance -> report. These tests read every module's imports (lazy ones inside functions too:
a lazy import is still a dependency) and refuse one that runs back up the flow."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"
HEAVY = ("torch", "transformers", "peft", "hydra", "soundfile", "soxr")
# what each part of the package may never import (orchestrator.X or a third-party top-level name)
FORBIDDEN = {
    "artifacts": ("orchestrator.config", "orchestrator.data", "orchestrator.training", "orchestrator.registry",
                  "orchestrator.acceptance", "orchestrator.report", *HEAVY),
    "selection": ("orchestrator.config", "orchestrator.data", "orchestrator.training", "orchestrator.registry.store",
                  "orchestrator.acceptance", "orchestrator.report", *HEAVY, "numpy"),
    "config": ("orchestrator.data", "orchestrator.training", "orchestrator.registry", "orchestrator.acceptance",
               "orchestrator.report", "torch", "transformers", "peft"),
    "data": ("orchestrator.training", "orchestrator.registry", "orchestrator.acceptance", "orchestrator.report",
             "hydra"),
    "training": ("orchestrator.acceptance", "orchestrator.report", "orchestrator.cli", "orchestrator.commands"),
    "registry": ("orchestrator.data", "orchestrator.training", "orchestrator.acceptance", "orchestrator.report",
                 *HEAVY),
    "acceptance": ("orchestrator.data", "orchestrator.training", "orchestrator.report", *HEAVY),
    "report": ("orchestrator.data", "orchestrator.training", "orchestrator.cli", "orchestrator.commands", *HEAVY),
}


def imports_of(path: Path, package: Path = PACKAGE) -> set[str]:
    """Every module name `path` imports, at any depth (relative imports resolved)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = path.relative_to(package.parent).with_suffix("").parts[: -node.level]
                module = ".".join([*base, module] if module else base)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def part_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_back_up_the_flow(path: Path) -> None:
    forbidden = FORBIDDEN.get(part_of(path), ())
    bad = sorted(name for name in imports_of(path) for f in forbidden if name == f or name.startswith(f + "."))
    assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {bad}, against the flow"


def test_the_scan_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The scan is not blind: an import inside a function, or a relative one, is found like a
    top-level one, and the rule for `report` refuses it."""
    package = tmp_path / "orchestrator"
    module = package / "report" / "blocks.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from orchestrator.training import loop\n    import torch\n"
                      "    from ..data import audio\n")
    found = imports_of(module, package)
    assert {"orchestrator.training.loop", "torch", "orchestrator.data.audio"} <= found
    assert [f for f in FORBIDDEN["report"] if f in found] == ["orchestrator.data", "orchestrator.training", "torch"]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_a_sprawl(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= 450, f"{path.relative_to(PACKAGE.parent)} has {lines} lines: split it by job"
