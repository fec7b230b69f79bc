"""Which of a disease's symptoms a patient can be given as findings (typical, specific, told by the
patient, not naming the disease), and what two diseases must share to be worth comparing (an uncommon
body site, specific findings). The rules and their thresholds; tasks.py draws the patients and pairs."""

from __future__ import annotations

import re
from collections import Counter

from utils.knowledge.schema import Entry

TYPICAL_VALUES = 8  # a patient's findings are drawn from this many of the most typical symptoms
MIN_FINDINGS = 3  # a vignette or triage question states at least this many findings ...
MIN_SPECIFIC = 2  # ... of which this many are specific (see specific_findings)
SPECIFIC_MAX_DISEASES = 30  # a specific finding is listed by at most this many diseases (发热: 1,111) ...
GENERIC_MIN_DISEASES = 100  # ... and is more than a generic complaint (one listed by more diseases than this) ...
# ... with qualifiers that say nothing of where or what: 剧痛 is pain, 神疲乏力 fatigue, 肢体疼痛 pain, 发热畏寒 fever
QUALIFIERS = re.compile(
    r"剧烈|剧|轻度|轻微|稍感|稍|略|明显|严重|腹部|胸部|头部|背部|持续性|持续|反复|间歇性|间歇|阵发性|阵发|全身|周身|肢"
    r"体|四肢|局部|神疲"
    r"|身体|患处|慢性|急性|突发|突然"
)
GENERIC_COMPLAINTS = ("僵硬", "不适", "疼", "痛", "酸", "胀", "麻", "冷", "热", "软", "累")
SPECIFIC_MAX_SITES = 25  # a body site two diseases share makes them comparable unless more list it (心脏 140, 肾 57,
# 皮肤 90, 胃 39: a xanthogranuloma and a purpura both "of the skin" are no pair worth comparing) or a whole system
BROAD_SITE = re.compile(r"系统$|^全身|^周身|^体表")  # 神经系统: Omsk haemorrhagic fever and strychnine poisoning
MIN_RELATEDNESS = (
    2  # a pair shares an uncommon site (2) or two specific findings (1 each): one shared finding is chance
)
# A disease whose name is an exposure, an injury or a pregnancy state is not diagnosed from findings alone: the
# question cannot state the drinking, burn, radiation, poisoning, trauma or fracture (the knowledge base records no
# history), and "最可能是酒精性肝硬化" from 肝掌 and 鼻出血 in a 27-year-old is what the review called unjustified.
HISTORY_NAMES = re.compile(
    r"酒精|酒中毒|饮酒|烧伤|灼伤|烫伤|冻伤|冻僵|放射|辐射|中毒|药物|药源|药疹|医源|术后|手术|外伤|创伤"
    r"|损伤|骨折|脱位|咬伤|蜇伤|电击|触电|淹溺|溺水|输血|物质|吸入|职业|尘肺|矽肺|石棉|脂肪栓塞|双胎"
    r"|多胎|异物|化妆品|引起的|治疗后|挫伤|复苏"
)
# findings only one sex can have (淋菌性尿道炎 lists 阴囊红肿 and 子宫颈红肿): kept out of a patient of the other sex
OTHER_SEX = {
    "女": re.compile(r"阴囊|睾丸|阴茎|前列腺|精索|包皮|龟头|遗精|阳痿|早泄|射精"),
    "男": re.compile(r"阴道|子宫|宫颈|外阴|阴唇|月经|闭经|痛经|经期|白带|乳房|乳腺|泌乳|溢乳|停经|妊娠|孕"),
}
NOTHING = re.compile(r"(?!)")
# what a test shows, not what a patient or a parent tells (右心室肥厚, 胰管内充盈缺损, 胰岛素受体障碍, 酸碱平衡失调)
NOT_TOLD = re.compile(r"心室|心房|心脏增大|肥厚|充盈缺损|腺泡|受体|潴留|酸碱|电解质|串珠|胰管|胰头|阳性|阴性|升高|降低")
# what only the patient can feel: a baby or toddler does not tell of 头昏 or 耳鸣
FELT = re.compile(r"头昏|头晕|头痛|头疼|乏力|疲劳|疲乏|麻木|刺痛|异物感|耳鸣|眩晕|心悸|胸闷|恶心|幻觉|记忆")
TELLS_OF_FEELINGS = 3  # years
MAX_DIFFERENTIAL = 3  # findings that fit more other diseases than this name no "most likely" disease
# name parts that do not identify a disease: 小儿肠套叠's core is 肠套叠 (a finding 儿童肠套叠 gives it away)
NAME_QUALIFIERS = re.compile(
    r"^(小儿|儿童|婴儿|婴幼儿|新生儿|老年|老年性|妊娠期|妊娠|产后|急性|慢性|亚急性|原发性|继发性|先天性|"
    r"特发性|复发性|难治性|重症|重型|轻型|单纯性|家族性|遗传性|获得性)+"
)


def symptoms_of(entry: Entry) -> list[str]:
    """Symptoms that can be put in a patient's mouth (not 'mostly asymptomatic')."""
    return [s for s in entry.get("相关症状") if "无症状" not in s and "无明显症状" not in s]


def names_a_disease(by_symptom: dict[str, set[str]], diseases: list[Entry]) -> set[str]:
    """Symptom values that contain the name of a disease of the knowledge base (慢性阻塞性肺气肿 holds 肺气肿), or are
    one without its 症/病 (腰椎间盘突出): a disease, not a finding, and a question stating it would name that disease
    (held out, perhaps) in its text."""
    names = {n for e in diseases for n in e.names}
    pattern = re.compile("|".join(map(re.escape, sorted((n for n in names if len(n) >= 3), key=len, reverse=True))))
    # 腰椎间盘突出 is 腰椎间盘突出症 without its suffix
    return {s for s in by_symptom if pattern.search(s) or any(s + end in names for end in ("症", "病", "综合征"))}


def specific_findings(by_symptom: dict[str, set[str]]) -> set[str]:
    """Findings that point somewhere: listed by at most SPECIFIC_MAX_DISEASES diseases, and with something left
    once qualifiers (QUALIFIERS) and generic complaints (symptoms of more than GENERIC_MIN_DISEASES diseases,
    GENERIC_COMPLAINTS) are taken out: 午后低热 and 视力突然下降 are specific, 剧痛, 神疲乏力 and 发热畏寒 are not."""
    generic = sorted(
        {s for s, having in by_symptom.items() if len(having) > GENERIC_MIN_DISEASES} | set(GENERIC_COMPLAINTS),
        key=len,
        reverse=True,
    )
    specific = set()
    for finding, having in by_symptom.items():
        if len(having) > SPECIFIC_MAX_DISEASES:
            continue
        rest = QUALIFIERS.sub("", finding)
        for word in generic:
            rest = rest.replace(word, "")
        if len(rest) >= 2:
            specific.add(finding)
    return specific


def name_core(name: str) -> str:
    """The disease name without qualifiers of age, course or origin: 小儿肠套叠 -> 肠套叠."""
    core = NAME_QUALIFIERS.sub("", name)
    return core if len(core) >= 2 else name


def gives_away(finding: str, entry: Entry) -> bool:
    """The finding names the disease (or one of its names): stating it would give the diagnosis away."""
    return any(name_core(n) in finding or finding in n for n in entry.names)


# ============================================================================ what a comparison pair shares


def grounds(e: Entry, sites: set[str], specific: set[str]) -> tuple[set[str], set[str]]:
    """What a comparison pair may share: body sites of at most SPECIFIC_MAX_SITES diseases (``sites``) and specific
    findings (``specific``). Generic shared symptoms (发热, 疼痛, 压痛) and common sites (皮肤, 心脏) do not count."""
    return set(e.get("发病部位")) & sites, set(symptoms_of(e)) & specific


def relatedness(ga: tuple[set[str], set[str]], gb: tuple[set[str], set[str]]) -> int:
    """Shared sites count 2, shared specific findings 1 (0: not worth comparing; a shared department is asked
    for separately)."""
    return 2 * len(ga[0] & gb[0]) + len(ga[1] & gb[1])


def comparable_sites(diseases: list[Entry]) -> set[str]:
    """Body sites listed by at most SPECIFIC_MAX_SITES diseases, whole systems aside."""
    having = Counter(s for e in diseases for s in set(e.get("发病部位")))
    return {s for s, n in having.items() if n <= SPECIFIC_MAX_SITES and not BROAD_SITE.search(s)}
