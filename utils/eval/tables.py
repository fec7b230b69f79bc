"""Tables of text for reports: Markdown and HTML, every cell escaped (compare.py's comparison,
benchmark.py's accuracy table)."""

import html


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:  # a pipe or a newline would break the table
        return html.escape(text, quote=False).replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_html(header: list[str], rows: list[list[str]], title: str) -> str:
    def cell(tag: str, text: str) -> str:
        return f"<{tag}>" + html.escape(text).replace("\n", "<br>") + f"</{tag}>"

    head = "<tr>" + "".join(cell("th", h) for h in header) + "</tr>"
    body = "\n".join("<tr>" + "".join(cell("td", c) for c in row) + "</tr>" for row in rows)
    style = "table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px;vertical-align:top;max-width:28em}"
    return (
        f'<!DOCTYPE html>\n<html lang="zh"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head>\n<body><table>\n{head}\n{body}\n</table></body></html>\n"
    )
