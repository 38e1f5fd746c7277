"""The package's layers (workbench/__init__.py): no module imports from a layer below its own, and the
display and notebook libraries are imported in the notebook layer only."""

import ast
from pathlib import Path

import pytest

import workbench

PACKAGE = Path(workbench.__file__).parent
NOTEBOOK_ONLY = {"matplotlib", "ipywidgets", "IPython", "nbclient", "nbformat"}
LEVEL = {module: level for level, modules in enumerate(workbench.LAYERS.values()) for module in modules}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (functions too), as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from workbench import runs` imports the module workbench.runs
            found |= (
                {f"{node.module}.{alias.name}" for alias in node.names} if node.module == "workbench" else {node.module}
            )
    return found


def layer_of(dotted: str) -> str | None:
    """The top-level workbench module of ``workbench.x.y`` (``x``), else None."""
    parts = dotted.split(".")
    return parts[1] if parts[0] == "workbench" and len(parts) > 1 and parts[1] != "__version__" else None


MODULES = sorted(path for path in PACKAGE.rglob("*.py") if path.name != "__init__.py" or path.parent != PACKAGE)


def test_every_module_has_a_layer_and_every_layer_name_is_a_module():
    top = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in MODULES}
    assert top == set(LEVEL)


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_a_module_imports_nothing_from_a_higher_layer_and_no_display_library_below_the_notebooks(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    imported = imports(path)
    upward = sorted(name for name in imported if (target := layer_of(name)) and LEVEL[target] > LEVEL[own])
    assert not upward, f"{own} (layer {LEVEL[own] + 1}) imports from a higher layer: {upward}"
    if LEVEL[own] < LEVEL["runs"]:
        display = sorted(name for name in imported if name.split(".")[0] in NOTEBOOK_ONLY)
        assert not display, f"{own} imports {display}, which only the notebook layer may"


def test_the_checker_sees_imports_inside_functions_and_from_the_package():
    source = PACKAGE / "runs.py"
    found = imports(source)
    assert "matplotlib" in found  # imported inside setup_display, not at the top
    assert "workbench.models" in found and "workbench.data" in found


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_every_module_declares_its_public_names_and_each_exists(path):
    import importlib

    dotted = "workbench." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    module = importlib.import_module(dotted.removesuffix(".__init__"))
    declared = getattr(module, "__all__", None)
    assert declared, f"{dotted} has no __all__"
    assert not [name for name in declared if not hasattr(module, name)]
