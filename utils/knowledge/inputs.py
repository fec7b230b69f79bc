"""The inputs of a build, loaded once: our knowledge-base files merged with the cMeKG diseases of the
installed pycmekg (ours win on a shared name), and the question styles. Bad input raises KnowledgeError
naming the file, the line and the field."""

from __future__ import annotations

from dataclasses import dataclass, field

from utils.knowledge.cmekg import ImportReport, load_all
from utils.knowledge.schema import Entry, load_styles, resolve_kb_paths


@dataclass
class KnowledgeBase:
    entries: list[Entry]  # ours, then cMeKG's (when used)
    styles: dict  # style name -> phrasings (data/knowledge/styles.json)
    files: list[str]  # our knowledge-base files read
    styles_path: str  # the styles file read
    cmekg_source: dict = field(default_factory=dict)  # package, version, pickle sha256 (empty: not used)
    cmekg_report: ImportReport | None = None  # what the cMeKG import kept and dropped (None: not used)


def load_knowledge_base(kb_path: str, styles_path: str, use_cmekg: bool) -> KnowledgeBase:
    """Our entries (+ cMeKG's diseases when asked and installed) and the styles."""
    files = resolve_kb_paths(kb_path)
    entries, report = load_all(files, use_cmekg)
    styles = load_styles(styles_path)
    return KnowledgeBase(
        entries=entries,
        styles=styles,
        files=files,
        styles_path=styles_path,
        cmekg_source=report.source if report else {},
        cmekg_report=report,
    )
