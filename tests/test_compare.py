"""compare.py and scripts/test.sh: HuaTuo's table, one row per question, one column per model."""

import json
import os
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from conftest import REPO_ROOT, tiny_train_args, write_jsonl

import compare
import finetune
from utils.data.records import DataError


class Cells(HTMLParser):
    """Rows of cell texts of an HTML table (<br> read back as a newline)."""

    def __init__(self):
        super().__init__()
        self.rows, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "br" and self._cell is not None:
            self._cell += "\n"

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def html_rows(text: str) -> list[list[str]]:
    parser = Cells()
    parser.feed(text)
    return parser.rows


NASTY = '<script>alert("x")</script> a|b & c\n第二行'


def test_table_cells_are_escaped(tmp_path):
    a = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"instruction": "问题<1>", "output": "参考", "model_output": NASTY},
            {"instruction": "问2", "model_output": "好"},
        ],
    )
    b = write_jsonl(
        tmp_path / "b.jsonl",
        [{"instruction": "问题<1>", "model_output": "乙|答"}, {"instruction": "问2", "model_output": ""}],
    )
    compare.main(results=f"甲={a},乙={b}", output_dir=str(tmp_path / "out"))
    page = (tmp_path / "out" / "comparison.html").read_text()
    assert "<script>" not in page
    assert html_rows(page) == [
        ["test input", "reference", "甲 output", "乙 output"],
        ["问题<1>", "参考", NASTY, "乙|答"],
        ["问2", "", "好", ""],
    ]
    md = (tmp_path / "out" / "comparison.md").read_text().splitlines()
    assert md[0] == "| test input | reference | 甲 output | 乙 output |"
    assert (
        md[2] == '| 问题&lt;1&gt; | 参考 | &lt;script&gt;alert("x")&lt;/script&gt; a\\|b &amp; c<br>第二行 | 乙\\|答 |'
    )
    assert len(md) == 4


def test_different_questions_are_refused(tmp_path):
    a = write_jsonl(
        tmp_path / "a.jsonl", [{"instruction": "问1", "model_output": "x"}, {"instruction": "问2", "model_output": "y"}]
    )
    b = write_jsonl(
        tmp_path / "b.jsonl", [{"instruction": "问1", "model_output": "x"}, {"instruction": "问3", "model_output": "y"}]
    )
    with pytest.raises(DataError, match=r"b\.jsonl:2: field 'instruction': question 2 differs"):
        compare.main(results=[f"a={a}", f"b={b}"], output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="expected name=path"):
        compare.main(results=str(a), output_dir=str(tmp_path / "out"))


@pytest.mark.slow
def test_test_sh_compares_base_and_two_adapters(tiny_base, train_file, trained_adapter, tmp_path):
    other = tmp_path / "lora-other"
    finetune.train(
        **tiny_train_args(
            base_model=tiny_base,
            data_path=str(train_file),
            output_dir=str(other),
            micro_batch_size=16,
            max_steps=2,
            learning_rate=1e-2,
            seed=7,
            val_set_size=8,
        )
    )
    questions = [json.loads(l) for l in (REPO_ROOT / "data" / "infer.json").read_text().splitlines() if l.strip()][:3]
    infer_data = write_jsonl(tmp_path / "q.jsonl", questions)
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        BASE_MODEL=tiny_base,
        LORA_WEIGHTS=str(trained_adapter),
        OTHER_ADAPTERS=f"Alpaca={other}",
        INFER_DATA=str(infer_data),
        OUT_DIR=str(tmp_path / "cmp"),
    )
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "test.sh"), "--num_beams", "1", "--max_new_tokens", "6"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = html_rows((tmp_path / "cmp" / "comparison.html").read_text())
    assert rows[0] == ["test input", "reference", "base output", "Alpaca output", "HuaTuo output"]
    assert len(rows) == 1 + len(questions)
    for column, name in enumerate(["base", "Alpaca", "HuaTuo"], start=2):
        answers = [json.loads(l) for l in (tmp_path / "cmp" / f"{name}.jsonl").read_text().splitlines()]
        assert [row[column] for row in rows[1:]] == [a["model_output"] for a in answers]
    settings = {
        n: json.loads((tmp_path / "cmp" / f"{n}.jsonl").read_text().splitlines()[0])["settings"]
        for n in ("base", "Alpaca", "HuaTuo")
    }
    assert settings["base"]["prompt_template"] == "ori_template" and settings["base"]["lora_weights"] == ""
    assert settings["Alpaca"]["lora_weights"] == str(other) and settings["HuaTuo"]["lora_weights"] == str(
        trained_adapter
    )
    assert [row[0] for row in rows[1:]] == [q["instruction"] for q in questions]
    md = (tmp_path / "cmp" / "comparison.md").read_text().splitlines()
    assert md[0] == "| test input | reference | base output | Alpaca output | HuaTuo output |" and len(md) == 2 + len(
        questions
    )


def test_results_of_different_base_models_are_flagged(tmp_path, caplog):
    a = write_jsonl(
        tmp_path / "a.jsonl", [{"instruction": "问1", "model_output": "x", "settings": {"base_model": "/m/llama-7b"}}]
    )
    b = write_jsonl(
        tmp_path / "b.jsonl", [{"instruction": "问1", "model_output": "y", "settings": {"base_model": "/m/llama-7b"}}]
    )
    compare.load_table([("A", str(a)), ("B", str(b))], True)
    assert "different base models" not in caplog.text
    c = write_jsonl(
        tmp_path / "c.jsonl",
        [{"instruction": "问1", "model_output": "z", "settings": {"base_model": "Qwen/Qwen2.5-7B"}}],
    )
    compare.load_table([("A", str(a)), ("C", str(c))], True)
    assert "different base models: A: /m/llama-7b, C: Qwen/Qwen2.5-7B" in caplog.text
