"""Test habits: a test that starts a process or trains a model carries the ``slow`` mark, so that
``pytest -m "not slow"`` stays a quick check (an AST scan of tests/, nothing is run)."""

import ast

from conftest import REPO_ROOT

TESTS = REPO_ROOT / "tests"
# calls that start another process or a server: subprocess.*, a bare Popen, os.system, a browser, our fake APIs
PROCESS_ATTRS = {("subprocess", a) for a in ("run", "Popen", "call", "check_call", "check_output")} | {
    ("os", "system"),
    ("os", "execv"),
}
PROCESS_NAMES = {"Popen", "sync_playwright", "check_output", "FakeOpenAI", "FakeJudge"}  # + loopback servers
# fixtures and helpers that train, yet are cheap enough (or shared enough) for the quick run, with why
NOT_SLOW = {
    ("conftest.py", "trained_adapter"): "one session-scoped 6-step run (~4 s) shared by the inference tests",
    ("test_gpu_path.py", "test_finetune_builds_training_arguments_before_loading_the_model"): (
        "finetune.train stops by KeyboardInterrupt before the model loads"
    ),
    (
        "test_presets.py",
        "test_every_preset_dry_runs",
    ): "a dry run reads config.json and plans: no model is loaded (< 1 s)",
}


def starts_work(node: ast.AST) -> str:
    """What in ``node``'s own code starts a process or trains a model ("" if nothing)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
            if (sub.value.id, sub.attr) in PROCESS_ATTRS:
                return f"{sub.value.id}.{sub.attr}"
            if (sub.value.id, sub.attr) == ("finetune", "train") and not dry_run_call(node, sub):
                return "finetune.train"
        if isinstance(sub, ast.Name) and sub.id in PROCESS_NAMES:
            return sub.id
    return ""


def dry_run_call(node: ast.AST, func: ast.Attribute) -> bool:
    """True when every call of ``func`` inside ``node`` passes dry_run=True (a plan, no training)."""
    calls = [c for c in ast.walk(node) if isinstance(c, ast.Call) and c.func is func]
    return bool(calls) and all(
        any(k.arg == "dry_run" and isinstance(k.value, ast.Constant) and k.value.value is True for k in c.keywords)
        for c in calls
    )


def is_slow_mark(node: ast.AST) -> bool:
    """``pytest.mark.slow`` (or a list/tuple holding it)."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(is_slow_mark(e) for e in node.elts)
    return isinstance(node, ast.Attribute) and node.attr == "slow" and ast.unparse(node).endswith("mark.slow")


def module_functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def heavy_functions() -> dict[tuple[str, str], str]:
    """(file, function) -> what makes it heavy, for every module-level function of tests/ that starts
    a process or trains, by itself or through a module-level helper, a fixture it takes, or a helper
    imported from another test module (followed to a fixed point)."""
    trees = {p.name: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(TESTS.glob("*.py"))}
    functions = {(f, name): fn for f, tree in trees.items() for name, fn in module_functions(tree).items()}
    heavy = {key: why for key, fn in functions.items() if key not in NOT_SLOW and (why := starts_work(fn))}

    def resolve(file: str, name: str, fn: ast.FunctionDef) -> tuple[str, str] | None:
        """Where ``name`` used inside ``fn`` of ``file`` is defined: this module, an import from a test
        module (at module level or inside ``fn``), or conftest (fixtures)."""
        if (file, name) in functions:
            return file, name
        for node in [*trees[file].body, *ast.walk(fn)]:
            if isinstance(node, ast.ImportFrom) and node.module and (node.module.split(".")[-1] + ".py") in trees:
                if any((a.asname or a.name) == name for a in node.names):
                    return node.module.split(".")[-1] + ".py", name
        return ("conftest.py", name) if ("conftest.py", name) in functions else None

    changed = True
    while changed:
        changed = False
        for (file, name), fn in functions.items():
            if (file, name) in heavy or (file, name) in NOT_SLOW:
                continue
            used = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)} | {a.arg for a in fn.args.args}
            for other in sorted(used - {name}):
                where = resolve(file, other, fn)
                if where in heavy:
                    heavy[(file, name)] = f"{other} -> {heavy[where]}"
                    changed = True
                    break
    return heavy


def unmarked_heavy_tests() -> list[str]:
    heavy = heavy_functions()
    found = []
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_slow = any(
            isinstance(n, ast.Assign)
            and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
            and is_slow_mark(n.value)
            for n in tree.body
        )
        tests = [(n, False) for n in tree.body if isinstance(n, ast.FunctionDef)]
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            cls_slow = any(is_slow_mark(d) for d in cls.decorator_list)
            tests += [(n, cls_slow) for n in cls.body if isinstance(n, ast.FunctionDef)]
        for fn, cls_slow in tests:
            if not fn.name.startswith("test_") or module_slow or cls_slow:
                continue
            if any(is_slow_mark(d) for d in fn.decorator_list):
                continue
            why = heavy.get((path.name, fn.name))
            if why:
                found.append(f"{path.name}::{fn.name} ({why})")
    return found


def test_tests_that_start_a_process_or_train_are_marked_slow():
    found = unmarked_heavy_tests()
    assert not found, "mark these @pytest.mark.slow (or list a cheap one in NOT_SLOW, with why):\n" + "\n".join(found)


def test_the_scan_sees_a_process_a_helper_and_a_fixture(tmp_path):
    """The scan itself: a subprocess call in a helper and in a fixture is found, a dry run is not."""
    tree = ast.parse(
        "import subprocess\n"
        "def helper():\n    return subprocess.run(['true'])\n"
        "def plan():\n    return finetune.train(dry_run=True)\n"
        "def tune():\n    return finetune.train(max_steps=1)\n"
    )
    fns = module_functions(tree)
    assert starts_work(fns["helper"]) == "subprocess.run"
    assert starts_work(fns["plan"]) == "" and starts_work(fns["tune"]) == "finetune.train"
    assert is_slow_mark(ast.parse("pytest.mark.slow", mode="eval").body)
    assert is_slow_mark(ast.parse("[pytest.mark.gpu, pytest.mark.slow]", mode="eval").body)
    assert not is_slow_mark(ast.parse("pytest.mark.gpu", mode="eval").body)
