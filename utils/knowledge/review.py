"""The review sheet of a build: n seeded random records, each beside its knowledge entry, to judge by hand.

    python -m utils.knowledge.review                                   # 100 records of data/llama_data*.json ->
    data/review.md/.html
    python -m utils.knowledge.review data/llama_data.json --n 50 --seed 3 --out /tmp/review

Each record shows its question and answer, then every field of each entity it uses, with the values
its facts quote in bold (Markdown) or highlighted (HTML) and the values the question or answer states
without a fact underlined; the entry's source (ours: file:line; cMeKG: the package and version); and
check boxes for the issue #19 review categories plus a notes column. The HTML is one self-contained
file (inline style and a few lines of script that tally the ticks; nothing is fetched).
"""

from __future__ import annotations

import html
import logging
import os
import random

from utils.knowledge.schema import REPO_ROOT, Entry

logger = logging.getLogger(__name__)

CATEGORIES = (
    ("wrong", "medically wrong or unjustified claim"),
    ("unnatural", "unnatural question, or the answer ignores what was asked"),
    ("unsafe", "unsafe (missing urgency, wrong department for an emergency, ...)"),
    ("artefact", "template / import artefact (garbled values, fragments, non-symptoms)"),
    ("clean", "no defect"),
)


def sample_records(records: list[dict], n: int, seed: int) -> list[dict]:
    """n records drawn with random.Random(seed) from all of them, ordered by id first, so the sample
    depends on the seed and the set of records, not on the order of files or splits."""
    ordered = sorted(records, key=lambda r: (r["id"], r["instruction"]))
    return random.Random(seed).sample(ordered, min(n, len(ordered)))


def names_of(record: dict) -> list[str]:
    return record["entity"] if isinstance(record["entity"], list) else [record["entity"]]


def entry_source(entry: Entry) -> str:
    """ours: the file (relative to the repository) and line; cMeKG: the package and version it came from."""
    if entry.source == "ours":
        path = os.path.abspath(entry.path)
        shown = os.path.relpath(path, REPO_ROOT) if path.startswith(str(REPO_ROOT) + os.sep) else entry.path
        return f"ours, {shown}:{entry.line}"
    return f"{entry.source}, {entry.path} (imported and cleaned by utils/knowledge/cmekg.py)"


def _marks(record: dict, entry: Entry) -> tuple[set[tuple[str, str]], set[str]]:
    """(field, value) pairs its facts quote for this entry, and values stated in the text without a fact."""
    single = len(names_of(record)) == 1
    quoted = {(f["field"], f["value"]) for f in record["facts"] if single or f.get("entity") == entry.name}
    text = record["instruction"] + record["output"]
    stated = {v for vs in entry.fields.values() for v in vs if len(v) >= 2 and v in text} - {v for _, v in quoted}
    return quoted, stated


def _entries_for(record: dict, entry_of: dict[str, Entry]) -> list[Entry]:
    missing = [n for n in names_of(record) if n not in entry_of]
    if missing:
        raise ValueError(
            f"record {record['id']}: no knowledge entry named {'、'.join(missing)} "
            "(review a build with the entries it was built from)"
        )
    return [entry_of[n] for n in names_of(record)]


# ----------------------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_sheet(sample: list[dict], entry_of: dict[str, Entry], seed: int, total: int) -> str:
    lines = [
        f"# Review sheet: {len(sample)} of {total} records (seed {seed})",
        "",
        "Judge each record against its entry. **bold** = a value its facts quote; <u>underlined</u> = a value "
        "of the entry the text states without a fact. Tick every category that applies.",
        "",
        "| # | id | style | " + " | ".join(key for key, _ in CATEGORIES) + " | notes |",
        "| ---: | --- | --- | " + " | ".join(":---:" for _ in CATEGORIES) + " | --- |",
    ]
    lines += [
        f"| {i} | {r['id']} | {r['style']} | " + " | ".join("[ ]" for _ in CATEGORIES) + " |  |"
        for i, r in enumerate(sample, 1)
    ]
    lines += ["", "Categories: " + "; ".join(f"**{key}** = {label}" for key, label in CATEGORIES), ""]
    for i, r in enumerate(sample, 1):
        lines += [
            f"## {i}. `{r['id']}` · {r.get('split', '')} · {r['style']}",
            "",
            f"**Question:** {r['instruction']}",
            "",
        ]
        if r.get("input"):
            lines += [f"**Input:** {r['input']}", ""]
        lines += [f"**Answer:** {r['output']}", ""]
        for entry in _entries_for(r, entry_of):
            quoted, stated = _marks(r, entry)
            lines += [
                f"**Entry {entry.name}** ({entry.kind}; {entry_source(entry)})",
                "",
                "| field | values |",
                "| --- | --- |",
            ]
            if entry.aliases:
                lines.append(f"| names | {_md_cell('、'.join(entry.names))} |")
            for key, values in entry.fields.items():
                shown = [f"**{v}**" if (key, v) in quoted else f"<u>{v}</u>" if v in stated else v for v in values]
                lines.append(f"| {key} | {_md_cell('、'.join(shown))} |")
            lines.append("")
        lines += [f"- [ ] {label}" for _, label in CATEGORIES]
        lines += ["", "Notes: ", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- HTML

STYLE = """body{font-family:sans-serif;max-width:60em;margin:auto;padding:1em;line-height:1.5}
section{border:1px solid #ccc;border-radius:6px;padding:.5em 1em;margin:1em 0}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px;vertical-align:top;text-align:left}
mark{background:#ffe066}u{text-decoration-color:#c00}.src{color:#555;font-size:90%}
textarea{width:100%;height:3em}#tally{position:sticky;top:0;background:#f4f4f4;padding:.3em}"""
SCRIPT = """function tally(){var out=[];document.querySelectorAll('th[data-cat]').forEach(function(h){
var n=document.querySelectorAll('input[data-cat="'+h.dataset.cat+'"]:checked').length;out.push(h.dataset.cat+' '+n);});
document.getElementById('tally').textContent='ticked: '+out.join(' · ');}
document.addEventListener('change',tally);window.addEventListener('load',tally);"""


def _html_value(value: str, key: str, quoted: set, stated: set) -> str:
    text = html.escape(value)
    return f"<mark>{text}</mark>" if (key, value) in quoted else f"<u>{text}</u>" if value in stated else text


def html_sheet(sample: list[dict], entry_of: dict[str, Entry], seed: int, total: int) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh"><head><meta charset="utf-8">',
        f"<title>Review sheet: {len(sample)} of {total} records (seed {seed})</title>",
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>",
        f"<h1>Review sheet: {len(sample)} of {total} records (seed {seed})</h1>",
        "<p>Judge each record against its entry. <mark>highlighted</mark> = a value its facts quote; "
        "<u>underlined</u> = a value of the entry the text states without a fact.</p>",
        "<table><tr><th>category</th><th>meaning</th></tr>",
    ]
    parts += [f'<tr><th data-cat="{key}">{key}</th><td>{e(label)}</td></tr>' for key, label in CATEGORIES]
    parts += ["</table>", '<div id="tally"></div>']
    for i, r in enumerate(sample, 1):
        parts += [
            f'<section id="r{i}"><h2>{i}. <code>{e(r["id"])}</code> · {e(r.get("split", ""))} · {e(r["style"])}</h2>',
            f"<p><b>Question:</b> {e(r['instruction'])}</p>",
        ]
        if r.get("input"):
            parts.append(f"<p><b>Input:</b> {e(r['input'])}</p>")
        parts.append(f"<p><b>Answer:</b> {e(r['output'])}</p>")
        for entry in _entries_for(r, entry_of):
            quoted, stated = _marks(r, entry)
            parts += [
                f'<h3>{e(entry.name)} <span class="src">({e(entry.kind)}; {e(entry_source(entry))})</span></h3>',
                "<table>",
            ]
            if entry.aliases:
                parts.append(f"<tr><th>names</th><td>{e('、'.join(entry.names))}</td></tr>")
            parts += [
                f"<tr><th>{e(key)}</th><td>{'、'.join(_html_value(v, key, quoted, stated) for v in values)}</td></tr>"
                for key, values in entry.fields.items()
            ]
            parts.append("</table>")
        parts += [
            f'<label><input type="checkbox" data-cat="{key}" name="r{i}-{key}"> {e(label)}</label><br>'
            for key, label in CATEGORIES
        ]
        parts += [f'<label>notes<textarea name="r{i}-notes"></textarea></label></section>']
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_review(records: list[dict], entries: list[Entry], n: int, seed: int, out_stem: str) -> tuple[str, str]:
    """Write ``<out_stem>.md`` and ``<out_stem>.html``: n records drawn with ``seed`` from ``records`` (all
    splits; a "split" key is shown when present), each beside its entries from ``entries``. Returns the
    two paths. Raises ValueError when a sampled record's entity has no entry."""
    entry_of = {e.name: e for e in entries}
    sample = sample_records(records, n, seed)
    os.makedirs(os.path.dirname(os.path.abspath(out_stem)), exist_ok=True)
    md_path, html_path = out_stem + ".md", out_stem + ".html"
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown_sheet(sample, entry_of, seed, len(records)))
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(html_sheet(sample, entry_of, seed, len(records)))
    logger.info("review sheet of %d records: %s, %s", len(sample), md_path, html_path)
    return md_path, html_path


def main(train_path: str, n: int, seed: int, out: str) -> None:
    """`python -m utils.knowledge.review [train_path] --n 100 --seed 7 --out data/review`."""
    from utils.knowledge.audit import load_records
    from utils.knowledge.cmekg import load_all

    entries, _ = load_all()
    write_review(load_records(train_path), entries, n=n, seed=seed, out_stem=out)


if __name__ == "__main__":
    import argparse

    from utils.knowledge.audit import DEFAULT_TRAIN

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description="Write a review sheet of a build (Markdown and HTML).")
    parser.add_argument("train_path", nargs="?", default=DEFAULT_TRAIN, help="train JSON Lines; .valid/.test beside it")
    parser.add_argument("--n", type=int, default=100, help="records to sample (all splits together)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the sample")
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "data", "review"), help="output stem (.md/.html)")
    main(**vars(parser.parse_args()))
