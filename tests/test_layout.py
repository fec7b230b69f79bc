"""The code's layout, as docs/ARCHITECTURE.md draws it: every module of utils/ is on the map with its one
job, imports go only through the doors the map opens, nothing in utils/ imports a script, no function
grows past a page, and the formatter and linter find nothing."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from utils.data.records import split_validation

ARCHITECTURE = REPO_ROOT / "docs" / "ARCHITECTURE.md"
SCRIPTS = {p.stem for p in REPO_ROOT.glob("*.py")}
BASE = "base"  # the modules directly in utils/
MAX_FUNCTION_LINES = 80
MAX_RECIPE_LINES = 60  # finetune.train


def room_of(module: str) -> str:
    """``utils.model.loading`` -> ``model``; ``utils.cli`` -> ``base``."""
    parts = module.split(".")
    if parts[0] != "utils" or len(parts) < 2:
        return ""
    sub = REPO_ROOT / "utils" / parts[1]
    return parts[1] if sub.is_dir() else BASE


def utils_modules() -> dict[str, object]:
    """``utils.room.name`` -> its file, for every module of the package (``__init__`` as the room itself)."""
    found = {}
    for path in sorted((REPO_ROOT / "utils").rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path, module: str) -> set[str]:
    """Modules ``path`` imports at any depth of its code (function-level imports count); relative ones resolved."""
    deps = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            candidates = [f"{base}.{a.name}" for a in node.names]
            known = utils_modules()
            deps |= {c if c in known else base for c in candidates}
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names}
    return {d for d in deps if d.startswith("utils") or d.split(".")[0] in SCRIPTS}


def doors() -> dict[str, set[str]]:
    """room -> the rooms it may import, from the map's table of rooms (``| `utils.x` | job | may import |``)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    table = text.split("## Rooms and doors", 1)[1].split("\n## ", 1)[0]
    rooms = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`utils"):
            name = re.match(r"`([\w.]+)`", cells[0]).group(1)
            room = BASE if name == "utils" else name.split(".")[1]
            rooms[room] = {r.strip() for r in cells[2].split(",") if r.strip() not in ("", "—", "-")}
    return rooms


def test_the_map_lists_every_module_and_only_modules_that_exist():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `(utils/[\w/]+\.py)` \|", text, re.M))
    actual = {str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "utils").rglob("*.py") if p.name != "__init__.py"}
    assert not actual - listed, f"modules missing from docs/ARCHITECTURE.md: {sorted(actual - listed)}"
    assert not listed - actual, f"docs/ARCHITECTURE.md lists modules that do not exist: {sorted(listed - actual)}"
    rooms = {p.name for p in (REPO_ROOT / "utils").iterdir() if (p / "__init__.py").is_file()}
    assert set(doors()) == rooms | {BASE}


def test_imports_go_only_through_the_doors_of_the_map():
    allowed = doors()
    wrong = []
    for module, path in utils_modules().items():
        room = room_of(module)
        for dep in imports_of(path, module):
            if dep.split(".")[0] in SCRIPTS:
                wrong.append(f"{module} imports the script {dep}")
            elif room_of(dep) not in allowed[room] | {room}:
                wrong.append(
                    f"{module} ({room}) imports {dep} ({room_of(dep)}); the map lets {room} import "
                    f"{sorted(allowed[room])}"
                )
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_in_utils():
    graph = {m: {d for d in imports_of(p, m) if d.startswith("utils")} for m, p in utils_modules().items()}

    def visit(module, path):
        for dep in sorted(graph.get(module, ())):
            if dep.startswith(module + ".") or module.startswith(dep + "."):  # a room and its own modules
                continue
            assert dep not in path, "import cycle: " + " -> ".join(path[path.index(dep) :] + [dep])
            visit(dep, path + [dep])

    for module in graph:
        visit(module, [module])


def test_the_door_check_can_fail(tmp_path):
    """The check above sees a wrong door: a data module importing the model room is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from utils.model import loading\n", encoding="utf-8")
    deps = imports_of(bad, "utils.data.bad")
    assert "utils.model.loading" in deps and room_of("utils.model.loading") not in doors()["data"]


def long_functions(limit: int) -> list[str]:
    found = []
    paths = [*REPO_ROOT.glob("*.py"), *(REPO_ROOT / "bench").glob("*.py"), *(REPO_ROOT / "utils").rglob("*.py")]
    for path in sorted(paths):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name}: {lines} lines")
    return found


def test_no_function_in_the_scripts_or_the_package_is_longer_than_a_page():
    assert not long_functions(MAX_FUNCTION_LINES), "\n".join(long_functions(MAX_FUNCTION_LINES))
    tree = ast.parse((REPO_ROOT / "finetune.py").read_text(encoding="utf-8"))
    train = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
    assert train.end_lineno - train.lineno + 1 <= MAX_RECIPE_LINES


RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.slow
@pytest.mark.skipif(RUFF is None, reason="ruff is not installed (requirements.txt has it)")
@pytest.mark.parametrize("command", [["format", "--check"], ["check"]], ids=["format", "lint"])
def test_ruff_finds_nothing(command):
    result = subprocess.run([RUFF, *command, "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not re.findall(
        r"#\s*fmt:\s*(skip|off)",
        "".join(p.read_text(encoding="utf-8") for p in REPO_ROOT.rglob("*.py") if ".venv" not in p.parts),
    )


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
