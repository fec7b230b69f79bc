"""HuaTuo's comparison table: one row per question, one column per model, as Markdown and HTML.

Reads infer.py results files (JSON Lines, one per model, the same questions in the same order) and
writes ``comparison.md`` and ``comparison.html`` (every cell HTML-escaped) into ``--output_dir``;
``scripts/test.sh`` runs the models and then this.

    python compare.py --results "LLaMA=out/base.jsonl,HuaTuo=out/ours.jsonl" --output_dir out
"""

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from utils.args import flag, help_text, parse
from utils.cli import UserError
from utils.data.records import DataError, question_of, read_results
from utils.eval.tables import to_html, to_markdown
from utils.files import write_json
from utils.model.runinfo import run_config

logger = logging.getLogger("compare")


def parse_results(results) -> list[tuple[str, str]]:
    """``"name=path,name=path"`` (or a list of ``name=path``) -> [(name, path)]."""
    items = results.split(",") if isinstance(results, str) else list(results)
    pairs = []
    for item in (i.strip() for i in items):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise UserError(f"--results: expected name=path, got {item!r}")
        pairs.append((name.strip(), path.strip()))
    if not pairs:
        raise UserError("--results: no results files given")
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise UserError(f"--results: model names must differ, got {names}")
    return pairs


def load_table(pairs: list[tuple[str, str]], with_reference: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows; every file must answer the first file's questions in the same order."""
    columns, questions, references, bases = [], None, None, {}
    for name, path in pairs:
        loaded = read_results(path)
        bases[name] = (loaded.records[0].get("settings") or {}).get("base_model")
        these = [question_of(r) for r in loaded.records]
        if questions is None:
            questions, first = these, path
            references = [r.get("output") or "" for r in loaded.records]
        elif these != questions:
            bad = next((i for i, (a, b) in enumerate(zip(these, questions)) if a != b), min(len(these), len(questions)))
            where = f"{path}:{loaded.lines[bad]}" if bad < len(these) else f"{path}"
            raise DataError(
                f"{where}: field 'instruction': question {bad + 1} differs from {first} ({len(these)} vs "
                f"{len(questions)} questions)"
            )
        columns.append([r["model_output"] for r in loaded.records])
    if len({b for b in bases.values() if b is not None}) > 1:  # HuaTuo's table compares adapters of one base
        logger.warning(
            "the results come from different base models: %s", ", ".join(f"{n}: {b}" for n, b in bases.items())
        )
    header = (
        ["test input"]
        + (["reference"] if with_reference and any(references) else [])
        + [f"{n} output" for n, _ in pairs]
    )
    rows = []
    for i, question in enumerate(questions):
        rows.append(
            [question] + ([references[i]] if len(header) > len(pairs) + 1 else []) + [col[i] for col in columns]
        )
    return header, rows


@dataclass
class CompareArgs:
    """Which results files, and where the table goes."""

    results: str | list[str] = flag(
        "", "'name=path,name=path': infer.py --output_file results, one per model (column order)"
    )
    output_dir: str = flag("./comparison", "where comparison.md, comparison.html, comparison_config.json go")
    with_reference: bool = flag(True, "add the files' reference answers ('output') as a column when present")
    title: str = flag("Model comparison", "HTML page title")


GROUPS = (CompareArgs,)


def main(**flags):
    (run,) = parse(GROUPS, flags)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    pairs = parse_results(run.results)
    header, rows = load_table(pairs, run.with_reference)
    out = Path(run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(to_markdown(header, rows), encoding="utf-8")
    (out / "comparison.html").write_text(to_html(header, rows, run.title), encoding="utf-8")
    write_json(out / "comparison_config.json", run_config(asdict(run), models=dict(pairs)))
    print(f"{len(rows)} questions x {len(pairs)} models: {out / 'comparison.md'}, {out / 'comparison.html'}")


if __name__ == "__main__":
    from utils.cli import run

    run(main, help_text(GROUPS, __doc__))
