"""The code's layout: no import cycle in utils/, utils never imports a script, the validation split in one place."""

import ast

import pytest
from conftest import REPO_ROOT

from utils.data.records import split_validation

SCRIPTS = {p.stem for p in REPO_ROOT.glob("*.py")}


def utils_imports() -> dict[str, set[str]]:
    """utils module -> the modules it imports (at any depth of its code: function-level imports count)."""
    graph = {}
    for path in sorted((REPO_ROOT / "utils").glob("*.py")):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                deps |= {f"utils.{a.name}" for a in node.names} if node.module == "utils" else {node.module}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[f"utils.{path.stem}"] = {d for d in deps if d.startswith("utils.") or d.split(".")[0] in SCRIPTS}
    return graph


def test_no_import_cycle_in_utils_and_no_script_imported():
    graph = utils_imports()
    scripts = sorted((m, d) for m, deps in graph.items() for d in deps if d.split(".")[0] in SCRIPTS)
    assert not scripts, f"utils modules import scripts: {scripts}"

    def visit(module, path):
        for dep in sorted(graph.get(module, ())):
            assert dep not in path, "import cycle: " + " -> ".join(path[path.index(dep) :] + [dep])
            visit(dep, path + [dep])

    for module in graph:
        visit(module, [module])


def test_validation_split_is_fixed_disjoint_and_complete():
    records = [{"i": i} for i in range(50)]
    train, val = split_validation(records, 7)
    assert len(val) == 7 and len(train) == 43
    assert sorted(r["i"] for r in train + val) == list(range(50))
    assert (train, val) == split_validation(list(records), 7)  # the same every time: seed 2023, not --seed
    assert [r["i"] for r in train] != list(range(7, 50))  # shuffled, as HuaTuo's train_test_split
    assert split_validation(records, 0) == (split_validation(records, 7)[1] + split_validation(records, 7)[0], [])
    with pytest.raises(
        ValueError, match="val_set_size \\(50\\) must be at least 0 and smaller than the 50 records of x.json"
    ):
        split_validation(records, 50, "x.json")
