"""Four-option single-answer exams: built from the knowledge base (kb-mcq), or read from users' files.

One question, in CMExam's four fields (options as a list; ``answer`` is the correct option's letter)
plus where it came from::

    {"id", "question", "options": ["…", "…", "…", "…"], "answer": "C", "explanation": "…",
     "entity", "kind", "field", "style": "fact" | "reverse", "facts": [{"field", "value"}, ...]}

**Built from the knowledge base** (:func:`build_exam`; ``build_dataset.py`` writes one file per split):

* ``fact``: "下列哪一项是{疾病}的常见症状？" The answer is one value of the entry's field.
* ``reverse``: "常见症状包括A、B、C的疾病是下列哪一种？" The answer is the entry; the other options are
  entries of the same kind, the same department or organ *and the same split*.

The exam should measure knowledge, not vocabulary matching, so:

* **Only fields whose values can be checked are asked** (``QUESTIONS``; why the others are not:
  ``NOT_ASKED``), and every option passes :func:`option_problem`: at most ``MAX_OPTION_CHARS``
  characters, no sentence punctuation, no fragment (轻者头痛, 大多发生于大阴唇), not only generic
  words (疼痛, 反复), not held by more than ``GENERIC_DF`` entries (发热 tells no disease apart and, as a
  distractor, is likely true of the asked one although unlisted), and of the field's kind (a symptom
  is no disease, lab value, test or body site). A key that repeats the entity's name (儿童肠套叠 for
  小儿肠套叠) gives the answer away and is not asked.
* **Distractors are plausible**: a value distractor comes from an entry sharing a specific department
  (not 内科/外科) or an organ (发病部位) with the asked entry. It is verifiably not a fact of the asked
  entity: not held by any entry of its alias group (``Entry.names``); not equal to, containing or
  contained in any of the group's values or names; sharing no specific two-character word with them
  (``高热惊厥`` is no distractor beside ``惊厥发作``); if it names an entry, that entry does not mention
  the asked one. A reverse distractor holds none of the values shown, and neither entry names the other.
* **Answer-blind shortcuts score near chance** (:func:`answer_blind_scores`: the option most frequent
  in the training records, the shortest, the longest, the one sharing most characters with the stem,
  always the same letter). Among the verified distractors the three drawn are those nearest to the key
  in length, training frequency and overlap with the stem (seeded), so the key is not systematically
  the extreme option; a question whose key no verified distractor can match is not written.

A question without three such distractors is not written. The correct letters are balanced
(each letter within one of a quarter of a split), so a model that always answers the same letter
scores 25%. The explanation states the entry's facts the question is built on, and ``facts`` lists
them. Prevention is not treatment: a vaccination or prophylaxis value is never an option.

**Users' exam files** (:func:`read_exam_file`): CMExam CSV, CMB JSON, MedQA-MCMLE JSON Lines, C-Eval /
CMMLU CSV and this module's own layout are recognised from their field names (``FIELD_PRESETS``); any
other layout is described by a field mapping. A bad row is named by file and line and left out; the
other rows are kept.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import random
import re
from collections import Counter
from pathlib import Path

from utils.cli import UserError
from utils.data.records import DataError, load_records

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"
N_OPTIONS = 4
SPLITS = ("train", "valid", "test")

# Question wording per field: (fact question, reverse question or None). The wording is part of the
# exam's definition, like the task YAML; fields without wording here are not asked (NOT_ASKED says why).
QUESTIONS: dict[str, dict[str, tuple[str, str | None]]] = {
    "disease": {
        "相关症状": ("下列哪一项是{name}的常见症状？", "常见症状包括{values}的疾病是下列哪一种？"),
        "并发症": ("下列哪一项是{name}可能出现的并发症？", "可能并发{values}的疾病是下列哪一种？"),
        "高危因素": ("下列哪一项是{name}的高危因素？", "高危因素包括{values}的疾病是下列哪一种？"),
        "病因": ("下列哪一项是{name}的病因？", "病因包括{values}的疾病是下列哪一种？"),
    },
    "drug": {
        "药物分类": ("{name}属于下列哪一类药物？", None),
        "适应症": ("{name}可用于下列哪种情况？", "适应症包括{values}的药物是下列哪一种？"),
        "不良反应": ("下列哪一项是{name}的不良反应？", "不良反应包括{values}的药物是下列哪一种？"),
        "禁忌": ("下列哪一项属于{name}的禁忌？", None),
    },
}
# Fields not asked: a wrong option would need a physician's judgement we cannot make, so they are left
# out rather than guessed (the data card can quote this).
NOT_ASKED = {
    "发病部位": "sites nest and have synonyms (面部 / 颜面, 上肢 / 前臂, 肾 / 输尿管 / 尿道 for stones): an unlisted "
    "site is not verifiably wrong without an anatomy ontology",
    "所属科室": "departments overlap (内科 ⊃ 消化内科; 胃溃疡 may go to 普外科): an unlisted one is not wrong",
    "检查": "almost any test (X线, 血常规) is used for many diseases: an unlisted test is not verifiably unused",
    "组织学检查": "as 检查",
    "药物治疗": "cMeKG drug values are unchecked (安慰剂, 叶酸 for 结肠癌) and a same-department drug is "
    "often used off-list (阿米替林 in migraine)",
    "辅助治疗": "as 药物治疗",
    "传播途径": "most infections spread several ways: an unlisted route is not verifiably wrong",
    "相关疾病": "'related' is not a checkable relation",
    "多发人群": "overlapping groups (成人 / 中老年人)",
    "用法用量": "dose fragments that mean little alone",
}
GROUP_FIELD = {"disease": "所属科室", "drug": "药物分类"}
SITE_FIELD = "发病部位"
BROAD_DEPARTMENTS = frozenset({"内科", "外科"})  # too broad to make a distractor plausible
PREVENTION_WORDS = ("疫苗", "接种", "预防")  # prevention is no treatment: never an option
SHOWN_VALUES = 3  # values named in a reverse question (the entry's most specific ones)

# ---- what an option may be (option_problem). Simple, documented guards; cleaning the values is the
# importer's job, these only keep what slips through out of the exam.
MAX_OPTION_CHARS = 12
GENERIC_DF = 40  # a value held by more entries of its kind than this is generic (发热 1111, 头痛 777, 遗传, 感染)
MIN_DF = 2  # a value only one entry holds is often an import fragment (性心, 理损害, 梳洗): not an option
PUNCTUATION = re.compile(r"[，。；：！？、,.;:!?()（）\[\]【】{}<>《》“”\"'‘’…/\\|~]")
JOINERS = re.compile(r"[及和与或等并伴]")  # two things in one option, or a fragment of a list
CJK = re.compile(r"[\u4e00-\u9fff]")
FRAGMENT_START = tuple(
    """
    性 轻者 重者 严重者 患者 部分 少数 大多 主要 特别 尤其 一般 通常 可 偶 如 还 也 且 其 则 但 约
    随 致 使 被 第
    """.split()
)
FRAGMENT_END = tuple(
    """
    性 者 时 的 为 可 引起 所致 导致 为主 多见 少见 常见 较多 明显
    """.split()
)
FRAGMENT_INSIDE = ("发生于", "见于", "最为", "可能", "可以", "尚不", "不清", "不明", "未明", "不详", "有时", "常伴")
GENERIC_WORDS = tuple(
    """
    疼痛 不适 异常 症状 表现 反复 发作 明显 加重 减轻 病变 改变 因素 其他 其它 轻度 中度 重度 持续
    急性 慢性 局部 全身 部位 体征 疾病 病理 损伤 障碍 功能 发现 特点 起病 查体 情况 原因 易感 状态
    位置 性
    """.split()
)
# A symptom option is what a patient has or a clinician sees, not a disease, a lab value or a test.
NOT_SYMPTOM_ENDS = ("病", "综合征", "综合症", "癌", "瘤", "炎", "感染", "血症", "脓肿")
NOT_SYMPTOM_MARKERS = tuple(
    """
    试验 检查 测定 阳性 阴性 抗体 抗原 细胞 计数 浓度 指数 蛋白尿 糖尿 光滑 清楚 境界 边界
    """.split()
)
# ... and says what is wrong: it holds one of these morphemes of an abnormality (a positive list, checked
# on cMeKG's symptom values: it keeps 呼吸困难, 口角歪斜, 颈强直 and drops 智能, 病史, 骨间肌, 乳汁, 年龄,
# 维生素D, which the lists also hold; a sign it misses is dropped rather than guessed).
SYMPTOM_MORPHEMES = tuple(
    """
    痛 痒 热 烧 冷 寒 汗 肿 胀 晕 眩 吐 呕 恶心 泻 咳 痰 喘 闷 悸 麻 瘫 痪 疹 斑 痣 疱 疣 溃 糜烂
    出血 咯血 呕血 便血 血尿 血便 尿血 衄 脓 困难 障碍 减退 减弱 亢进 不良 不振 不全 不足 不畅 不能
    不安 不稳 不齐 不规则 不升 异常 紊乱 失调 乏力 无力 疲 倦 萎缩 僵 强直 挛 搐 抽 惊 震颤 颤 抖 昏
    迷 嗜睡 失眠 多梦 盲 聋 鸣 哑 黄 紫 苍白 发绀 青紫 消瘦 矮小 烦 躁 郁 焦虑 妄想 幻 淡漠 呆 迟钝
    迟滞 落后 恐 怒 激惹 早泄 痿 缺乏 包块 肿块 结节 肿物 饱 渴 厌食 畏食 拒食 拒乳 纳差 流涕 鼻塞
    阻塞 溢泪 流泪 畸形 跛 笨拙 受限 下垂 突出 突眼 脱落 脱发 稀疏 秃 肥大 增大 扩张 积液 失常 过速
    过缓 低下 升高 降低 减少 增多 过多 歪 斜视 凝视 吞咽 呛 鼾 气促 气短 气急 发作 晕厥 休克 脱水
    口干 干涩 色素 皮损 红 紫癜 瘀 压痛 触痛 叩痛 征 消化不良 便秘 尿频 尿急 多尿 少尿 夜尿 无尿
    失禁 潴留 沥滴 梗阻 狭窄 闭经 溢乳 带下 白带 失语 鳞屑 角化 渗液 浑浊 混浊 酸软 松动 缩小 下陷
    短缩 外翻 内翻 歪斜 磨牙 扇动 煽 骤停 窘迫 发育迟缓 畏 先兆 复视 涎
    """.split()
)
LAB_WORDS = tuple(
    """
    血小板 血红蛋白 血糖 血钙 血钾 血钠 胆红素 转氨酶 酶 素 水平 分压 比重
    """.split()
)
SYMPTOM_FIELDS = ("相关症状", "不良反应")
NOT_CAUSE_WORDS = ("传播", "途径", "传染", "病因", "病史", "诱因")  # 血源性传播 is a route; 中医病因 a heading


def _is_prevention(value: str) -> bool:
    return any(w in value for w in PREVENTION_WORDS)


def option_problem(
    field: str, value: str, df: int = 0, diseases: frozenset = frozenset(), sites: frozenset = frozenset()
) -> str | None:
    """Why ``value`` cannot be an option of a ``field`` question, or None. ``df``: how many entries of
    its kind hold it; ``diseases``: every disease name; ``sites``: every 发病部位 value."""
    if not 2 <= len(value) <= MAX_OPTION_CHARS:
        return "length"
    if not CJK.search(value):
        return "no Chinese word"  # 第XI, IgA
    if PUNCTUATION.search(value) or JOINERS.search(value):
        return "punctuation or two things in one"
    if value.startswith(FRAGMENT_START) or value.endswith(FRAGMENT_END) or any(w in value for w in FRAGMENT_INSIDE):
        return "fragment"
    rest = value
    for word in GENERIC_WORDS:
        rest = rest.replace(word, "")
    if not CJK.search(rest):
        return "generic words only"
    if df > GENERIC_DF:
        return "generic: held by many entries"
    if df < MIN_DF:
        return "held by one entry only"
    if _is_prevention(value):
        return "prevention"
    if field in SYMPTOM_FIELDS:
        if value in diseases or value.endswith(NOT_SYMPTOM_ENDS):
            return "a disease, not a symptom"
        if any(m in value for m in NOT_SYMPTOM_MARKERS):
            return "a lab value, test or descriptor, not a symptom"
        if value in sites:
            return "a body site, not a symptom"
        if any(w in value for w in LAB_WORDS):
            return "a lab value, not a symptom"
        if field == "相关症状" and not any(m in value for m in SYMPTOM_MORPHEMES):
            return "no abnormality named: not a symptom"
    if field in ("病因", "高危因素", "并发症") and value in sites:
        return "a body site"
    if field in ("病因", "高危因素") and any(w in value for w in NOT_CAUSE_WORDS):
        return "a route, a history or a heading, not a cause"
    return None


# ----------------------------------------------------------------------------------------------
# answer-blind shortcuts


class TrainingCounts:
    """How often a text occurs in the training records (instruction, input and output), cached. Counted
    only in the records holding the text's rarest character pair (an index of pairs), which gives
    ``"\n".join(texts).count(text)`` for any text without a line break, a hundred times faster."""

    def __init__(self, train_records: list[dict] | None):
        self.texts = [
            f"{r.get('instruction', '')}\n{r.get('input', '')}\n{r.get('output', '')}" for r in train_records or ()
        ]
        postings: dict[str, set[int]] = {}
        for i, text in enumerate(self.texts):
            for j in range(len(text) - 1):
                postings.setdefault(text[j : j + 2], set()).add(i)
        self.postings = {pair: sorted(ids) for pair, ids in postings.items()}
        self.cache: dict[str, int] = {}

    def __call__(self, option: str) -> int:
        if option not in self.cache:
            if len(option) < 2:
                self.cache[option] = sum(t.count(option) for t in self.texts)
            else:
                rarest = min((self.postings.get(option[j : j + 2], ()) for j in range(len(option) - 1)), key=len)
                self.cache[option] = sum(self.texts[i].count(option) for i in rarest)
        return self.cache[option]


def _overlap(option: str, stem: str) -> int:
    """Characters of ``option`` (each once) that occur in the stem."""
    return len(set(option) & set(stem))


def _credit(scores: list[float], answer: int, best) -> float:
    """1/k when the key is among the k options that ``best`` (min or max) picks, else 0: ties are broken
    at random, so a shortcut that cannot tell the options apart scores chance, not 0 or 100%."""
    target = best(scores)
    tied = [i for i, s in enumerate(scores) if s == target]
    return 1 / len(tied) if answer in tied else 0.0


def answer_blind_scores(
    questions: list[dict], train_records: list[dict] | None, counts: TrainingCounts | None = None
) -> dict[str, float]:
    """Accuracy on ``questions`` of shortcuts that never look at the medicine: the option occurring most
    often in the training records, the shortest, the longest, the one sharing most characters with the
    stem, and the best single letter. Ties count as a random pick among the tied options."""
    counts = counts or TrainingCounts(train_records)
    totals = Counter()
    for q in questions:
        options, answer = q["options"], LETTERS.index(q["answer"])
        lengths = [len(o) for o in options]
        totals["most_frequent_in_training"] += _credit([counts(o) for o in options], answer, max)
        totals["shortest"] += _credit(lengths, answer, min)
        totals["longest"] += _credit(lengths, answer, max)
        totals["most_overlap_with_stem"] += _credit([_overlap(o, q["question"]) for o in options], answer, max)
    n = len(questions) or 1
    scores = {
        name: totals[name] / n
        for name in ("most_frequent_in_training", "shortest", "longest", "most_overlap_with_stem")
    }
    letters = Counter(q["answer"] for q in questions)
    scores["same_letter"] = max(letters.values()) / n if letters else 0.0
    return scores


# ----------------------------------------------------------------------------------------------
# building from the knowledge base


def _overlaps(value: str, others) -> bool:
    """``value`` equals, contains or is contained in one of ``others``."""
    return any(value == o or value in o or o in value for o in others)


NEAR_CHARS = 2  # an option sharing this many characters with a fact is a paraphrase of it, not a wrong answer


def _near(value: str, chars: list[set[str]]) -> bool:
    """``value`` shares NEAR_CHARS characters with one of the character sets ``chars`` (痰量增多 /
    脓痰增多, 动脉硬化 / 动脉粥样硬化, 误吞异物 / 误咽异物, 儿童肠套叠 / 小儿肠套叠)."""
    mine = set(value)
    return any(len(mine & c) >= NEAR_CHARS for c in chars)


class _Kind:
    """The entries of one kind, indexed for checking options and drawing distractors."""

    def __init__(self, entries: list, kind: str):
        self.kind = kind
        self.entries = [e for e in entries if e.kind == kind]
        self.by_name = {e.name: e for e in self.entries}
        self.values = {e.name: {v for vs in e.fields.values() for v in vs} for e in self.entries}
        # entries holding a value in any field: how common (generic) or how attested it is
        self.df = Counter(v for e in self.entries for v in {v for vs in e.fields.values() for v in vs})
        # alias group: every entry sharing a name with it (the importer merges twins; this guards the rest)
        holders: dict[str, list] = {}
        for e in self.entries:
            for n in getattr(e, "names", (e.name,)):
                holders.setdefault(n, []).append(e)
        self.group = {
            e.name: {o.name: o for n in getattr(e, "names", (e.name,)) for o in holders[n]}.values()
            for e in self.entries
        }
        self.diseases = frozenset(n for e in entries if e.kind == "disease" for n in getattr(e, "names", (e.name,)))
        self.sites = frozenset(v for e in entries if e.kind == "disease" for v in e.get(SITE_FIELD))
        self.problem_cache: dict[tuple[str, str], str | None] = {}
        self.problems = Counter()  # reason -> values left out (distinct (field, value) pairs)

    def problem(self, field: str, value: str) -> str | None:
        key = (field, value)
        if key not in self.problem_cache:
            why = option_problem(field, value, self.df[value], self.diseases, self.sites)
            self.problem_cache[key] = why
            self.problems[why or "ok"] += 1
        return self.problem_cache[key]

    def plausible_groups(self, entry) -> list[tuple[str, str]]:
        """(field, value) keys an entry shares with the ones its distractors come from."""
        if self.kind == "drug":
            return [("drug", "all")]
        depts = [("dept", d) for d in entry.get(GROUP_FIELD["disease"]) if d not in BROAD_DEPARTMENTS]
        sites = [("site", s) for s in entry.get(SITE_FIELD)]
        return depts + sites or [("dept", d) for d in entry.get(GROUP_FIELD["disease"])]

    def own(self, entry) -> tuple[set[str], set[str]]:
        """(values, names) of the entry's alias group."""
        group = self.group[entry.name]
        return {v for e in group for v in self.values[e.name]}, {
            n for e in group for n in getattr(e, "names", (e.name,))
        }

    def mentions(self, name: str, other: str) -> bool:
        """Entry ``name`` lists ``other`` among its values."""
        return other in self.values.get(name, ())

    def value_ok(self, entry, field: str, value: str, own: set, own_names: set, own_chars: list[set]) -> bool:
        """``value`` is verifiably not a fact of ``entry``'s alias group (see the module docstring); ``own``:
        the group's values and names, ``own_chars``: their character sets."""
        if self.problem(field, value) or _near(value, own_chars):
            return False
        if value in own or _overlaps(value, own):
            return False
        if self.kind == "drug":  # drugs: from another class, as before (a class is exclusive)
            owners = [n for n, e in self.by_name.items() if value in e.get(field)]
            if not any(not set(self.by_name[n].get("药物分类")) & set(entry.get("药物分类")) for n in owners):
                return False
        return not any(self.mentions(n, name) for n in (value,) for name in own_names)

    def entity_ok(self, entry, field: str, shown: list[str], other, own_names: set) -> bool:
        """``other`` has ``field`` in the knowledge base, none of ``shown``, and no link to ``entry``."""
        values = other.get(field)
        return bool(
            other.name not in own_names
            and values
            and not any(_overlaps(v, values) for v in shown)
            and not _overlaps(other.name, shown)
            and not any(self.mentions(other.name, n) for n in own_names)
            and not any(self.mentions(entry.name, n) for n in getattr(other, "names", (other.name,)))
        )


class _Pools:
    """Per kind: field -> plausible-group key -> sorted values / entries, built once."""

    def __init__(self, index: _Kind):
        self.index = index
        self.values: dict[str, dict[tuple, list[str]]] = {}
        self.entries: dict[tuple, list] = {}
        for e in index.entries:
            for g in index.plausible_groups(e) + self._memberships(e):
                self.entries.setdefault(g, []).append(e)
                for field in QUESTIONS[index.kind]:
                    self.values.setdefault(field, {}).setdefault(g, set()).update(e.get(field))
        self.values = {f: {g: sorted(vs) for g, vs in by.items()} for f, by in self.values.items()}

    def _memberships(self, e) -> list[tuple]:
        """Every group an entry belongs to (broad departments too, for entries with nothing finer)."""
        if self.index.kind == "drug":
            return []
        return [("dept", d) for d in e.get(GROUP_FIELD["disease"]) if d in BROAD_DEPARTMENTS]

    def value_candidates(self, entry, field: str) -> list[str]:
        return [v for g in self.index.plausible_groups(entry) for v in self.values.get(field, {}).get(g, ())]

    def entry_candidates(self, entry) -> list:
        return [o for g in self.index.plausible_groups(entry) for o in self.entries.get(g, ())]


# How many verified candidates are looked at, and among how many nearest to the key three are drawn.
CANDIDATES_LOOKED_AT = 300
VERIFIED_WANTED = 40
NEAREST = 5


def _features(option: str, stem: str, counts: TrainingCounts) -> tuple[int, float, int]:
    return len(option), math.log2(1 + counts(option)), _overlap(option, stem)


FEATURE_WEIGHTS = (1.0, 1.0, 2.0)  # length, log2 training frequency, overlap with the stem
OUTLIER_MARGINS = (2, 2.0, 2)  # the key beyond every distractor by this much stands out: not written


def _distance(a: tuple, b: tuple) -> float:
    return sum(w * abs(x - y) for w, x, y in zip(FEATURE_WEIGHTS, a, b))


def _draw(
    rng: random.Random,
    candidates: list,
    ok,
    key_text: str,
    text_of,
    stem: str,
    counts: TrainingCounts,
    k: int = N_OPTIONS - 1,
) -> list | None:
    """``k`` distinct candidates passing ``ok``, near the key in length, training frequency and overlap
    with the stem: up to VERIFIED_WANTED verified ones from a seeded sample, the NEAREST of them, k drawn
    at random. None when fewer than k pass, or when the k cannot hide the key (it is beyond all of them
    in length, frequency or overlap by OUTLIER_MARGINS)."""
    if not candidates:
        return None
    order = rng.sample(range(len(candidates)), min(len(candidates), CANDIDATES_LOOKED_AT))
    verified, seen = [], set()
    for i in order:
        c = candidates[i]
        t = text_of(c)
        if t in seen or t == key_text:
            continue
        seen.add(t)
        if ok(c):
            verified.append(c)
            if len(verified) == VERIFIED_WANTED:
                break
    if len(verified) < k:
        return None
    key = _features(key_text, stem, counts)
    near = sorted(verified, key=lambda c: _distance(_features(text_of(c), stem, counts), key))[: max(NEAREST, k)]
    chosen = rng.sample(near, k)
    feats = [_features(text_of(c), stem, counts) for c in chosen]
    for j, margin in enumerate(OUTLIER_MARGINS):
        if all(key[j] >= f[j] + margin for f in feats) or all(key[j] <= f[j] - margin for f in feats):
            return None
    return chosen


def _question(style: str, entry, field: str, question: str, correct: str, distractors: list[str]) -> dict:
    values = entry.get(field)
    key = json.dumps([style, entry.name, field, correct], ensure_ascii=False)
    return {
        "id": hashlib.sha1(key.encode("utf-8")).hexdigest()[:16],
        "question": question,
        "correct": correct,
        "distractors": distractors,
        "explanation": f"{entry.name}的{field}：{'、'.join(values)}。",  # the facts the question rests on
        "entity": entry.name,
        "kind": entry.kind,
        "field": field,
        "style": style,
        "facts": [{"field": field, "value": v} for v in values],
    }


def _place_answers(questions: list[dict], rng: random.Random) -> list[dict]:
    """Shuffle, then put the answer of the i-th question at letter i mod 4: the letters are balanced."""
    rng.shuffle(questions)
    placed = []
    for i, q in enumerate(questions):
        slot = i % N_OPTIONS
        options = list(q.pop("distractors"))
        rng.shuffle(options)
        options.insert(slot, q.pop("correct"))
        placed.append(
            {"id": q.pop("id"), "question": q.pop("question"), "options": options, "answer": LETTERS[slot], **q}
        )
    return placed


def _gives_away(value: str, names: set[str]) -> bool:
    """The key repeats a name of the entity (儿童肠套叠 for 小儿肠套叠): it answers itself."""
    return _overlaps(value, names) or _near(value, [set(n) for n in names])


def _items(entry, index: _Kind) -> list[tuple]:
    """(style, field, key value or shown values) for every question the entry can give."""
    own_values, own_names = index.own(entry)
    items = []
    for field, (_, reverse_q) in QUESTIONS[entry.kind].items():
        good = [v for v in entry.get(field) if not index.problem(field, v) and not _gives_away(v, own_names)]
        items += [("fact", field, v) for v in good]
        if reverse_q and len(good) >= 2:  # the most specific values (fewest holders), in file order on ties
            shown = sorted(good, key=lambda v: index.df[v])[:SHOWN_VALUES]
            items.append(("reverse", field, tuple(v for v in good if v in shown)))
    return items


# Questions kept per split (a seeded sample): the exam stays a few MB and an lm-eval pass over the test
# split takes minutes, not hours; None keeps every question.
MAX_QUESTIONS = {"train": 10000, "valid": 1000, "test": 2000}


def build_exam(
    entries: list,
    split_of: dict[str, str],
    seed: int = 42,
    max_questions: dict | None = MAX_QUESTIONS,
    train_records: list[dict] | None = None,
) -> dict[str, list[dict]]:
    """Questions per split from knowledge entries (``name``, ``kind``, ``get(field)``, ``names``) and the
    entity split (name -> split), at most ``max_questions[split]`` of them (a seeded sample of the
    possible questions). ``train_records``: the training split's records, so that no option stands out
    by how often it occurs there (without them, frequency is not matched). Deterministic for a given
    knowledge base, split, seed and training records."""
    counts = TrainingCounts(train_records)
    kinds = {kind: _Kind(entries, kind) for kind in QUESTIONS}
    pools = {kind: _Pools(index) for kind, index in kinds.items()}
    items: dict[str, list] = {s: [] for s in SPLITS}
    for entry in entries:
        if entry.kind in kinds:
            items.setdefault(split_of[entry.name], []).extend((entry, *it) for it in _items(entry, kinds[entry.kind]))
    by_split: dict[str, list[dict]] = {}
    left_out = Counter()
    for split, todo in items.items():
        random.Random(f"{seed}:exam:order:{split}").shuffle(todo)
        cap = (max_questions or {}).get(split)
        out = by_split[split] = []
        for entry, style, field, what in todo:
            if cap is not None and len(out) >= cap:
                break
            question = _make(entry, style, field, what, kinds[entry.kind], pools[entry.kind], split_of, counts, seed)
            if question is None:
                left_out[style] += 1
            else:
                out.append(question)
        by_split[split] = sorted(out, key=lambda q: q["id"])  # placement does not depend on the draw order
    placed = {s: _place_answers(qs, random.Random(f"{seed}:exam:{s}")) for s, qs in by_split.items()}
    logger.info(
        "exam: %s questions (left out, fewer than three verified, matching distractors: %s)",
        ", ".join(f"{s} {len(q)}" for s, q in placed.items()),
        dict(left_out),
    )
    return placed


def _make(entry, style, field, what, index: _Kind, pools: _Pools, split_of, counts, seed) -> dict | None:
    fact_q, reverse_q = QUESTIONS[entry.kind][field]
    own_values, own_names = index.own(entry)
    if style == "fact":
        own = own_values | own_names
        own_chars = [set(v) for v in own]
        stem = fact_q.format(name=entry.name)
        rng = random.Random(f"{seed}:exam:fact:{entry.name}:{field}:{what}")
        drawn = _draw(
            rng,
            pools.value_candidates(entry, field),
            lambda v: index.value_ok(entry, field, v, own, own_names, own_chars),
            what,
            str,
            stem,
            counts,
        )
        return None if drawn is None else _question("fact", entry, field, stem, what, drawn)
    shown = list(what)
    stem = reverse_q.format(values="、".join(shown))
    split = split_of[entry.name]
    candidates = [o for o in pools.entry_candidates(entry) if split_of[o.name] == split]
    rng = random.Random(f"{seed}:exam:reverse:{entry.name}:{field}")
    drawn = _draw(
        rng,
        candidates,
        lambda o: index.entity_ok(entry, field, shown, o, own_names),
        entry.name,
        lambda o: o.name,
        stem,
        counts,
    )
    return None if drawn is None else _question("reverse", entry, field, stem, entry.name, [o.name for o in drawn])


def exam_paths(output_path: str | Path) -> dict[str, Path]:
    """Where build_dataset.py writes the exam: ``kb_mcq/{train,valid,test}.json`` beside its train file."""
    folder = Path(output_path).parent / "kb_mcq"
    return {s: folder / f"{s}.json" for s in SPLITS}


# ----------------------------------------------------------------------------------------------
# users' exam files

# Field names of the layouts people publish exams in. "options" is one field (a list, a dict of
# letter -> text, or CMExam's "A text\nB text" string) or several columns joined with "+".
FIELD_PRESETS: dict[str, dict[str, str]] = {
    "medqa": {"question": "question", "options": "options", "answer": "answer_idx"},  # MedQA-MCMLE (JSON Lines)
    "kb-mcq": {"question": "question", "options": "options", "answer": "answer", "explanation": "explanation"},
    "cmb": {"question": "question", "options": "option", "answer": "answer", "explanation": "explanation"},
    "cmexam": {"question": "Question", "options": "Options", "answer": "Answer", "explanation": "Explanation"},
    "ceval": {"question": "question", "options": "A+B+C+D", "answer": "answer", "explanation": "explanation"},
    "cmmlu": {"question": "Question", "options": "A+B+C+D", "answer": "Answer"},
}
OPTION_LINE = re.compile(r"^\s*([A-J])\s*[\s.．、:：)）]\s*(.*?)\s*$")


def parse_fields(spec: str | dict | None) -> dict[str, str] | None:
    """``"question=题干,options=选项,answer=答案[,explanation=解析]"`` or a preset name -> mapping."""
    if not spec:
        return None
    if isinstance(spec, dict):
        mapping = dict(spec)
    elif spec in FIELD_PRESETS:
        return FIELD_PRESETS[spec]
    else:
        mapping = {}
        for item in spec.split(","):
            key, sep, value = item.partition("=")
            if not sep or not value.strip():
                raise UserError(
                    f"--exam_fields: expected key=column, got {item!r} (or a preset: {', '.join(FIELD_PRESETS)})"
                )
            mapping[key.strip()] = value.strip()
    unknown = set(mapping) - {"question", "options", "answer", "explanation"}
    missing = {"question", "options", "answer"} - set(mapping)
    if unknown or missing:
        raise UserError(
            f"--exam_fields: needs question, options, answer (and optionally explanation); "
            f"missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    return mapping


def detect_fields(row: dict) -> dict[str, str] | None:
    """The first preset whose question, options and answer fields the row has (MedQA's rows also
    hold the answer's text in "answer", so its letter field "answer_idx" is looked for first)."""
    for mapping in FIELD_PRESETS.values():
        if all(all(c in row for c in mapping[k].split("+")) for k in ("question", "options", "answer")):
            return mapping
    return None


def _options(row: dict, spec: str) -> list[str] | str:
    """The row's options as a list of texts, or a problem."""
    if "+" in spec:
        columns = spec.split("+")
        texts = [row.get(c) for c in columns]
        while texts and texts[-1] in (None, ""):  # C-Eval-like files may leave trailing options empty
            texts.pop()
        bad = next((c for c, t in zip(columns, texts) if not isinstance(t, str) or not t.strip()), None)
        return f"field '{bad}': option missing or empty" if bad else [t.strip() for t in texts]
    value = row.get(spec)
    if isinstance(value, str):
        texts, letters = [], []
        for line in (l for l in value.splitlines() if l.strip()):
            match = OPTION_LINE.match(line)
            if not match:
                return f"field '{spec}': option line {line.strip()[:20]!r} does not start with a letter A-J"
            letters.append(match.group(1))
            texts.append(match.group(2))
        value = dict(zip(letters, texts))
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if v not in (None, "")]  # CMB leaves unused letters empty
        letters = "".join(str(k).strip().upper() for k, _ in items)
        if letters != LETTERS[: len(letters)]:
            return f"field '{spec}': option letters {letters or 'none'} are not A, B, C, ... in order"
        value = [v for _, v in items]
    if not isinstance(value, list):
        return f"field '{spec}': expected a list, a letter -> text object or 'A …' lines, got {type(value).__name__}"
    if not all(isinstance(t, str) and t.strip() for t in value):
        return f"field '{spec}': every option must be a non-empty string"
    return [t.strip() for t in value]


def normalize_row(row, fields: dict[str, str]) -> dict | str:
    """One exam row in this module's layout, or a problem ``"field 'x': ..."``."""
    if not isinstance(row, dict):
        return f"row: expected an object, got {type(row).__name__}"
    question = row.get(fields["question"])
    if not isinstance(question, str) or not question.strip():
        return f"field '{fields['question']}': missing or not a non-empty string"
    options = _options(row, fields["options"])
    if isinstance(options, str):
        return options
    if not 2 <= len(options) <= len(LETTERS):
        return f"field '{fields['options']}': {len(options)} options (expected 2 to {len(LETTERS)})"
    answer = row.get(fields["answer"])
    answer = answer.strip().upper() if isinstance(answer, str) else answer
    if not isinstance(answer, str) or len(answer) != 1 or answer not in LETTERS[: len(options)]:
        several = isinstance(answer, str) and len(answer) > 1 and set(answer) <= set(LETTERS)
        why = (
            "several answers: only single-answer questions are scored"
            if several
            else f"expected one letter of {LETTERS[0]}-{LETTERS[len(options) - 1]}"
        )
        return f"field '{fields['answer']}': {row.get(fields['answer'])!r}: {why}"
    explanation = row.get(fields.get("explanation", ""), "")
    return {
        "question": question.strip(),
        "options": options,
        "answer": answer,
        "explanation": explanation if isinstance(explanation, str) else "",
    }


def _csv_rows(path: Path):
    """(line, row) per CSV row; the line is where the row starts (options may span several lines)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        start = 2
        for row in reader:
            yield start, row
            start = reader.line_num + 1


def read_exam_file(path: str | Path, fields: str | dict | None = None) -> tuple[list[dict], list[str]]:
    """(questions, problems): every usable row of a JSON, JSON Lines or CSV exam file, and one
    ``path:line: field 'x': problem`` per row left out. ``fields``: a mapping or preset name
    (default: recognised from the first row)."""
    path = Path(path)
    mapping = parse_fields(fields)
    if not path.is_file():
        raise DataError(f"{path}: exam file not found")
    if path.suffix.lower() == ".csv":
        try:
            rows, problems = list(_csv_rows(path)), []
        except (UnicodeDecodeError, csv.Error) as err:
            raise DataError(f"{path}: cannot read as CSV: {err}") from None
    else:  # JSON Lines or a JSON array; rows that are not JSON are named (and logged) by load_records
        loaded = load_records(path, on_bad_record="skip", check=lambda row: None)
        rows, problems = list(zip(loaded.lines, loaded.records)), list(loaded.skipped)
    first = next((row for _, row in rows if isinstance(row, dict)), None)
    mapping = mapping or (detect_fields(first) if first else None)
    if mapping is None:
        raise DataError(
            f"{path}: cannot tell the exam layout from the fields {sorted(first or [])}; pass "
            f"--exam_fields question=...,options=...,answer=... or a preset ({', '.join(FIELD_PRESETS)})"
        )
    questions = []
    for line, row in rows:
        result = normalize_row(row, mapping)
        if isinstance(result, str):
            problems.append(f"{path}:{line}: {result}")
            logger.warning("row left out: %s", problems[-1])
            continue
        questions.append({"id": f"{path.name}:{line}", **result})
    if not questions:
        raise DataError(f"{path}: no usable questions ({len(problems)} rows left out)")
    return questions, problems
