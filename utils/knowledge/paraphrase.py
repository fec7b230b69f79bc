"""The openai backend: an OpenAI-compatible LLM rewrites each task's question and answer in one of
several voices, held to the task's facts (coverage, no invented drug, test or department, no prevention
as treatment, the red-flag rules' urgency and no other). Every finished record is checkpointed to
<output_path>.partial.jsonl (append, flush, fsync), so rerunning the same command resumes after a crash,
Ctrl-C or SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from utils.args import flag
from utils.cli import UserError
from utils.knowledge.answer_checks import prevention_as_treatment, urges
from utils.knowledge.schema import Entry, display_path
from utils.knowledge.selection import dedup_records
from utils.knowledge.tasks import task_record
from utils.llm import ReplyError, api_errors, ask_json, json_objects, make_client

log = logging.getLogger(__name__)


@dataclass
class LLMSettings:
    """How to reach the LLM and how hard to try (build_dataset.py's openai backend flags; the key: $OPENAI_API_KEY)."""

    base_url: str = flag("https://api.openai.com/v1", "openai backend: API root (…/v1)")
    model: str = flag("gpt-4o-mini", "openai backend: model name")
    num_workers: int = flag(8, "openai backend: concurrent requests")
    max_retries: int = flag(
        5, "openai backend: transport retries per call (in the client), and re-asks per unusable answer"
    )
    timeout: float = flag(60.0, "openai backend: seconds per HTTP request")
    temperature: float = flag(0.7, "openai backend: sampling temperature")
    min_fact_coverage: float = flag(0.6, "openai backend: reject answers stating fewer than this fraction of the facts")
    progress: bool = flag(True, "openai backend: tqdm progress bar on stderr")


class RecordsFailed(UserError):
    """Records whose retries ran out (each logged above): not a bug, so one line and exit status 2; the
    checkpoint keeps the finished ones, and rerunning the command retries just the failed ones."""


SYSTEM_PROMPT = (
    "你是一名医学教育专家，负责根据给定的医学知识编写中文指令微调数据。只使用给定的事实，不要编造资料以外的医学信息。"
)
STYLE_HINTS = {
    "single_fact": "关于一种疾病某一方面的知识问答",
    "overview": "简要介绍一种疾病",
    "vignette": "病例问诊：描述患者年龄、性别和症状，询问可能的诊断和治疗",
    "triage": "根据症状询问应去哪个科室就诊",
    "comparison": "比较两种相关疾病的某一方面是否一致",
    "drug_usage": "药物的用途和用法用量",
    "drug_side_effects": "药物的不良反应",
    "drug_contraindication": "药物的禁忌",
}
# who asks: HuaTuo had GPT-3.5 write questions in several voices; one is picked per task (by its id)
VOICES = (
    "instruction 以患者本人的口吻提问，口语自然",
    "instruction 以患者家属的口吻提问，可以带一点担心的语气",
    "instruction 以医学生向老师请教的口吻提问，用词规范",
    "instruction 像在线问诊平台上的提问，简短直接",
)
RETRY_PROMPT = (
    "上面的输出无法使用：{reason}。请重新只输出一个JSON对象："
    '{{"instruction": "...", "output": "..."}}，output 只能使用资料中的事实。'
)


class MalformedAnswer(ReplyError):
    """The model's message was not the JSON object asked for, left out too many facts, or stated new ones."""


def build_messages(task: dict) -> list[dict]:
    material = {
        "style": task["style"],
        "entity": task["entity"],
        "reference_question": task["instruction"],
        "reference_answer": task["output"],
        "facts": [{k: f[k] for k in ("field", "value")} for f in task["facts"]],
    }
    voice = VOICES[int(task["id"], 16) % len(VOICES)]
    user = (
        "请根据下面的资料写一条“" + STYLE_HINTS[task["style"]] + "”类型的问答。\n"
        "要求：\n"
        '1. 只输出一个JSON对象：{"instruction": "用户的提问", "output": "医生的回答"}，不要输出其他内容；\n'
        f"2. {voice}，可参考 reference_question 改写；\n"
        "3. output 必须逐字包含 facts 中的每一个 value，不得提到资料以外的药物、检查或科室；\n"
        "4. 疫苗和预防措施不是治疗方法，不要写成治疗；\n"
        + (
            "5. 这是急症：output 必须保留 reference_answer 中立即拨打120或急诊就诊的提醒。\n"
            if task.get("urgent")
            else "5. 不要添加“尽快”“立即”“马上”“急诊”等紧急程度的说法。\n"
        )
        + "资料(JSON)："
        + json.dumps(material, ensure_ascii=False)
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


GROUNDED_FIELDS = ("药物治疗", "检查", "所属科室")  # an answer may name only its own entry's drugs, tests, departments


def grounding_vocabulary(entries: list[Entry]) -> set[str]:
    """Every drug, test and department the KB knows (drug entries included), to catch invented ones."""
    vocab = {v for e in entries for k in GROUNDED_FIELDS for v in e.get(k)}
    vocab |= {e.name for e in entries if e.kind == "drug"}
    # 内科/外科 are words inside ordinary prose (外科手术) as much as departments: too short to police
    return {v for v in vocab if len(v) >= 2} - {"内科", "外科"}


def ungrounded(output: str, task: dict, vocabulary: set[str]) -> list[str]:
    """Drugs, tests or departments the output names that are not among the task's facts (or in its reference
    answer: an emergency's advice names 急诊科)."""
    allowed = [f["value"] for f in task["facts"]] + [task["instruction"], task.get("output", "")]
    allowed += task["entity"] if isinstance(task["entity"], list) else [task["entity"]]
    return sorted(v for v in vocabulary if v in output and not any(v in a for a in allowed))


def parse_answer(content: str, task: dict, min_fact_coverage: float, vocabulary: set[str] = frozenset()) -> dict:
    """The record from a model message; raises MalformedAnswer (with the reason) when it is not usable."""
    obj = next(json_objects(content), None)
    if obj is None:
        raise MalformedAnswer(f"not a JSON object: {content[:60]!r}")
    instruction, output = obj.get("instruction"), obj.get("output")
    if not isinstance(instruction, str) or not instruction.strip() or not isinstance(output, str) or not output.strip():
        raise MalformedAnswer(f"'instruction' and 'output' must be non-empty strings: {content[:60]!r}")
    instruction, output = instruction.strip(), output.strip()
    stated = [f for f in task["facts"] if f["value"] in output]
    if task["facts"] and len(stated) / len(task["facts"]) < min_fact_coverage:
        raise MalformedAnswer(f"answer states {len(stated)}/{len(task['facts'])} facts")
    invented = ungrounded(output, task, vocabulary)
    if invented:
        raise MalformedAnswer(f"answer names {'、'.join(invented[:3])}, which the facts do not contain")
    if task["style"] in ("vignette", "single_fact", "overview") and prevention_as_treatment(output, stated):
        raise MalformedAnswer("answer presents prevention (vaccine/prophylaxis) as treatment")
    if urges(output, stated) != bool(task.get("urgent")):  # urgency comes from the red-flag rules only
        raise MalformedAnswer("answer drops the emergency advice" if task.get("urgent") else "answer adds urgency")
    return task_record(task, instruction, output, stated)


def ask(client, task: dict, settings: LLMSettings, vocabulary: set[str]) -> dict:
    """One record from the LLM: unusable answers are asked again with the reason (utils.llm.ask_json)."""
    reply = ask_json(
        client,
        settings.model,
        build_messages(task),
        lambda text: parse_answer(text, task, settings.min_fact_coverage, vocabulary),
        max_attempts=settings.max_retries + 1,
        retry_prompt=RETRY_PROMPT,
        temperature=settings.temperature,
    )
    return reply.value


def load_checkpoint(path: str, wanted: set[str], model: str) -> dict[str, dict]:
    """Finished records from the checkpoint; a torn last line (killed mid-write) is cut off."""
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("%s: dropping a torn last line (%d bytes)", display_path(path), len(data) - cut)
        with open(path, "r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    done, ignored = {}, 0
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            task_id, record = item["id"], item["record"]
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("%s:%d: unreadable checkpoint line skipped", display_path(path), lineno)
            continue
        if task_id in wanted and item.get("model") == model and task_id not in done:
            done[task_id] = record
        else:
            ignored += 1
    log.info(
        "resuming from %s: %d records done%s",
        display_path(path),
        len(done),
        f", {ignored} lines for other tasks/models ignored" if ignored else "",
    )
    return done


def paraphrase_records(tasks: list[dict], entries: list[Entry], output_path: str, settings: LLMSettings) -> list[dict]:
    """Records rewritten by the LLM, in task order (an answer repeating an earlier instruction dropped); raises
    RecordsFailed, after logging each failure, when retries ran out for any."""
    api_key = os.environ.get("OPENAI_API_KEY", "")
    if not api_key:
        log.warning("OPENAI_API_KEY is not set; sending requests with a placeholder key")
    client = make_client(
        settings.base_url, api_key=api_key or None, timeout=settings.timeout, max_retries=settings.max_retries
    )
    checkpoint = output_path + ".partial.jsonl"
    done, failures = request_records(tasks, client, checkpoint, settings, grounding_vocabulary(entries))
    if failures:
        for task_id, why in sorted(failures.items()):
            log.error("record %s failed: %s", task_id, why)
        raise RecordsFailed(
            f"{len(failures)} of {len(tasks)} records failed after retries; {len(done)} are saved in "
            f"{display_path(checkpoint)}. Rerun the same command to retry the failed ones."
        )
    records, n_llm_dup = dedup_records([done[t["id"]] for t in tasks])
    if n_llm_dup:
        log.warning("%d LLM answers repeated an earlier instruction and were dropped", n_llm_dup)
    return records


def request_records(
    tasks: list[dict], client, checkpoint: str, settings: LLMSettings, vocabulary: set[str]
) -> tuple[dict[str, dict], dict[str, str]]:
    """Ask for every task not yet in the checkpoint, ``settings.num_workers`` at a time; returns the finished
    records (task id -> record) and the failures (task id -> why)."""
    from tqdm import tqdm

    done = load_checkpoint(checkpoint, {t["id"] for t in tasks}, settings.model)
    pending = [t for t in tasks if t["id"] not in done]
    failures: dict[str, str] = {}
    os.makedirs(os.path.dirname(os.path.abspath(checkpoint)), exist_ok=True)
    with (
        open(checkpoint, "a", encoding="utf-8") as ckpt,
        tqdm(
            total=len(tasks), initial=len(done), desc="records", file=sys.stderr, disable=not settings.progress
        ) as bar,
    ):
        pool = ThreadPoolExecutor(max_workers=max(1, settings.num_workers))
        try:
            futures = {pool.submit(ask, client, t, settings, vocabulary): t for t in pending}
            for future in as_completed(futures):
                task = futures[future]
                try:
                    record = future.result()
                except (*api_errors(), ReplyError) as e:
                    failures[task["id"]] = f"{task['style']} {task['entity']}: {type(e).__name__}: {e}"
                else:
                    # only the main thread writes, one whole line at a time, durable before counting
                    line = {"id": task["id"], "model": settings.model, "record": record}
                    ckpt.write(json.dumps(line, ensure_ascii=False) + "\n")
                    ckpt.flush()
                    os.fsync(ckpt.fileno())
                    done[task["id"]] = record
                bar.update(1)
        except KeyboardInterrupt:
            log.error(
                "interrupted: %d records are saved in %s; rerun the same command to resume",
                len(done),
                display_path(checkpoint),
            )
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    return done, failures
