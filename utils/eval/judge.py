"""LLM-as-judge for open medical questions, on the CMCOQA dimensions.

Each answer is scored 0-3 on 完整性 (completeness), 深刻性 (depth) and 专业性 (professionalism) by a
judge model behind any OpenAI-compatible endpoint (an ``openai`` client from ``utils.llm.make_client``,
which retries transport failures). The judge must reply with one JSON object; a reply that cannot be
read (prose, a missing dimension, a score outside 0-3, cut-off JSON) is asked again with the reason
(``utils.llm.ask_json``), and after ``max_attempts`` the answer is recorded as *unscored* with the
last reason and reply: a judging run never crashes on the judge and never drops an answer.
"""

import json
import logging
import statistics
from concurrent.futures import ThreadPoolExecutor

from utils.llm import ReplyError, api_errors, ask_json, json_objects

logger = logging.getLogger(__name__)

DIMENSIONS = ("完整性", "深刻性", "专业性")
MAX_SCORE = 3
QUESTION_START, ANSWER_START, ANSWER_END = "【问题】", "【回答】", "【回答结束】"

SYSTEM_PROMPT = "你是一位严格、公正的资深临床医学专家，负责评价医疗问答模型的回答质量。"
RUBRIC = (
    "请从以下三个维度评价【回答】对【问题】的质量，每个维度给0到3的整数分：\n"
    "- 完整性：是否覆盖问题所问的全部要点（如病因、症状、诊断、治疗、预防）。0=答非所问或没有回答，1=只覆盖少数要点，"
    "2=覆盖大部分要点，3=全面覆盖。\n"
    "- 深刻性：是否解释了机制、原因或依据，而非只罗列表面信息。0=没有，1=很浅，2=有一定深度，3=深入透彻。\n"
    "- 专业性：医学内容是否准确、术语是否规范、建议是否安全。0=有错误或危险建议，1=不够准确，2=基本准确规范，"
    "3=准确专业。\n"
    '只输出一个JSON对象，不要输出其他内容，格式：{"完整性": 分数, "深刻性": 分数, "专业性": 分数, "理由": "一句话理由"}'
)
RETRY_PROMPT = (
    '上面的输出无法使用：{reason}。请只输出一个JSON对象：{{"完整性": 0-3, "深刻性": 0-3, "专业性": 0-3, "理由": "..."}}'
)


class JudgeReplyError(ReplyError):
    """The judge's reply holds no usable scores; the message says why."""


def build_messages(question: str, answer: str) -> list[dict]:
    user = f"{RUBRIC}\n\n{QUESTION_START}\n{question}\n{ANSWER_START}\n{answer}\n{ANSWER_END}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_reply(text: str) -> dict:
    """``{"完整性": int, "深刻性": int, "专业性": int, "理由": str}`` from a judge reply, else JudgeReplyError."""
    objects = list(json_objects(text or ""))
    if not objects:
        raise JudgeReplyError("no JSON object in the reply")
    problem = "no JSON object with the scores"
    for obj in objects:
        scores = {}
        for dim in DIMENSIONS:
            value = obj.get(dim)
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value.strip())
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if dim not in obj:
                problem = f"'{dim}' missing"
                break
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SCORE:
                problem = f"'{dim}' is {obj.get(dim)!r}, not an integer from 0 to {MAX_SCORE}"
                break
            scores[dim] = value
        else:
            reason = obj.get("理由", "")
            return {**scores, "理由": reason if isinstance(reason, str) else json.dumps(reason, ensure_ascii=False)}
    raise JudgeReplyError(problem)


def judge_one(client, model: str, question: str, answer: str, max_attempts: int = 3, **params) -> dict:
    """Score one answer: ``{"status": "scored"|"unscored", "scores", "attempts", "error", "raw"}``."""
    try:
        reply = ask_json(
            client, model, build_messages(question, answer), parse_reply, max_attempts, RETRY_PROMPT, **params
        )
    except api_errors() as err:  # the client already retried the transport; nothing more to do here
        return {"status": "unscored", "scores": None, "attempts": 1, "error": f"judge endpoint: {err}", "raw": ""}
    except ReplyError as err:
        reason = str(err).split("; last: ", 1)[-1]
        return {
            "status": "unscored",
            "scores": None,
            "attempts": err.attempts,
            "error": f"unusable reply: {reason}",
            "raw": err.raw,
        }
    return {"status": "scored", "scores": reply.value, "attempts": reply.attempts, "error": "", "raw": reply.raw}


def judge_all(
    client, model: str, items: list[tuple[str, str]], max_attempts: int = 3, workers: int = 4, **params
) -> list[dict]:
    """:func:`judge_one` for every (question, answer), ``workers`` at a time, results in input order."""
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(judge_one, client, model, q, a, max_attempts, **params) for q, a in items]
        return [f.result() for f in tqdm(futures, desc="judging", unit="answer")]


def summarize(judgments: list[dict], groups: list[str] | None = None) -> dict:
    """Counts, mean score per dimension and of the 0-9 total, score histograms, per-group means."""
    scored = [j["scores"] for j in judgments if j["status"] == "scored"]
    summary = {
        "answers": len(judgments),
        "scored": len(scored),
        "unscored": len(judgments) - len(scored),
        "judge_calls": sum(j["attempts"] for j in judgments),
    }
    if scored:
        summary["mean"] = {dim: statistics.fmean(s[dim] for s in scored) for dim in DIMENSIONS}
        summary["mean"]["总分"] = statistics.fmean(sum(s[d] for d in DIMENSIONS) for s in scored)
        summary["histogram"] = {
            dim: [sum(1 for s in scored if s[dim] == k) for k in range(MAX_SCORE + 1)] for dim in DIMENSIONS
        }
    if groups:
        by_group: dict[str, list[dict]] = {}
        for group, j in zip(groups, judgments):
            if j["status"] == "scored":
                by_group.setdefault(group, []).append(j["scores"])
        summary["by_group"] = {
            g: {"scored": len(s), **{dim: statistics.fmean(x[dim] for x in s) for dim in DIMENSIONS}}
            for g, s in sorted(by_group.items())
        }
    return summary
