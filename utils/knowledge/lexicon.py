"""What kind of thing a short Chinese medical phrase is: a symptom, a body site, a group of people, a test.

The cMeKG import (utils/knowledge/cmekg.py) keeps a value in a field only when it is of that field's kind. For
symptoms this is a *positive* lexicon, built from the data and checked (not a blacklist): a value is a
symptom or sign when

* it is a known symptom term (a value of our hand-written entries' 相关症状, or the name of a cMeKG
  symptom page such as 腹痛, 水肿), or it ends in / contains a symptom head (…痛, …肿, …胀, 发热,
  咳嗽, …出血, …困难, …障碍, 乏力, 皮疹, 黄疸, 瘙痒, 呕吐, 腹泻, ... SYMPTOM_HEADS), and
* it has no disqualifier: a lab value (糖尿, 蛋白尿, AST水平小幅升高), a disease (a disease name of
  the graph or a disease suffix: 气胸, 感冒, 心肌梗死, 肠梗阻, 腹膜炎), a fragment (轻者头痛, 反复,
  婴儿肠套叠多), a descriptor (表面光滑), a test (撞击试验, 肛门指诊), a Roman numeral.

A body site (皮下组织, 神经, 骨) has no symptom head and is therefore not a symptom. Disqualifiers
apply to known terms too: our own entries list 蛋白尿 and 高血压 as findings, and they are still
lab values and diseases, not symptoms a patient reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# ----------------------------------------------------------------------------- symptoms

# a symptom/sign head: the value ends with one of these, or contains one of the CONTAINED heads
SYMPTOM_ENDINGS = tuple(
    """
    痛 疼 肿 胀 热 烧 咳 嗽 痰 出血 流血 困难 障碍 乏力 无力 疹 黄疸 黄染 瘙痒 痒 呕吐 恶心 腹泻
    便秘 麻木 眩晕 头晕 头昏 晕厥 昏迷 抽搐 惊厥 痉挛 震颤 瘫痪 偏瘫 麻痹 嗜睡 失眠 消瘦 苍白 发绀
    紫绀 心悸 胸闷 气短 气促 气急 喘息 喘 寒战 畏寒 怕冷 盗汗 多汗 出汗 大汗 血尿 血便 便血 黑便
    咯血 咳血 呕血 尿频 尿急 少尿 无尿 多尿 尿失禁 失禁 潴留 烦躁 不安 躁动 流涕 鼻塞 喷嚏 流泪 畏光
    耳鸣 模糊 失明 复视 肿块 包块 肿物 硬块 结节 溃疡 红斑 瘀斑 瘀点 紫癜 斑 水疱 疱 脓疱 鳞屑 脱屑
    脱发 压痛 反跳痛 紧张 僵硬 僵直 强直 增大 肿大 脾大 肝大 下降 减退 减轻 不振 减少 增多 紊乱 失调
    不调 口干 口渴 烦渴 多饮 多食 厌食 拒食 拒乳 哭闹 哭吵 萎靡 淡漠 谵妄 幻觉 妄想 焦虑 抑郁 低落
    易怒 激惹 腹水 积液 停经 闭经 痛经 不孕 溢液 溢乳 脱水 休克 受限 变形 松动 异物感 灼热感 烧灼感
    压迫感 感 杂音 啰音 哮鸣音 鸣 嘶哑 失语 发作 异常 改变 充血 水肿 渗出 疲劳 疲乏 倦怠 虚弱 呃逆
    嗳气 反酸 烧心 里急后重 排便 排气 黄瘤 皮损 瘢痕 色素沉着 苔藓样变 肥胖 多毛 消失 突出 突眼 下垂
    歪斜 杵状指 白带 流脓 溢脓 出血点 丧失 缺损 缓慢 增快 过速 过缓 不齐 暂停 打鼾 贫血 营养不良
    发育迟缓 青紫 潮红 发红 红肿 干燥 皲裂 角化 肥厚 萎缩 粗糙 步态 共济失调 眼震 斜视 耳聋 听力下降
    夜盲 色盲 畏声 口臭 流涎 吞咽 气促 呼吸急促 呻吟 尖叫
    """.split()
)
SYMPTOM_CONTAINED = ("疼痛", "出血", "发热", "咳嗽", "呕吐", "腹泻", "瘙痒", "麻木", "无力", "困难", "肿胀")
# a value of its own that only modifies a symptom: a fragment
MODIFIERS = set(
    """
    反复 持续 间歇 突然 阵发性 持续性 进行性 急性 慢性 轻度 重度 严重 明显 加重 缓解 局部 全身 双侧
    单侧 发作 异常 改变 减退 下降 增多 减少 消失 感 不适 不适感 全身不适感 紧张 粗糙 渗出 充血
    """.split()
)

LAB_WORDS = tuple(
    """
    水平 升高 降低 增高 减低 阳性 阴性 计数 比值 浓度 含量 指数 转氨酶 氨基转移酶 胆红素 肌酐 尿素
    电解质 血糖 血钾 血钠 血钙 血脂 白细胞 红细胞 血小板 血红蛋白 细胞容积 蛋白尿 糖尿 管型 酮尿
    乳糜尿 脓尿 血症 抗体 抗原 酶 激素 异型 血沉 凝血 核型 染色体 基因 血液浓缩 功能异常 功能减退
    功能亢进 病毒 杆菌 球菌
    """.split()
)
# physical findings named with 升高/增高 that are signs a clinician reads at the bedside, not lab values
BEDSIDE_RISES = ("体温升高", "皮温升高", "颅内压升高", "颅内压增高", "眼压升高", "眼压增高")
DISEASE_SUFFIXES = tuple(
    """
    病 炎 癌 瘤 综合征 综合症 症 病毒 杆菌 球菌 菌 原虫 支原体 衣原体 螺旋体 寄生虫 畸形 衰竭 梗阻
    梗死 梗塞 失常 中毒 骨折 感染 结核 疝 脓肿 囊肿 结石 穿孔 破裂 扭转 套叠 狭窄 硬化 栓塞 血栓
    损伤 外伤 烧伤 伤 气胸 积气 脱位 感冒 早产 流产 死亡 坏死 妊娠 不全 缺陷 缺乏 过敏 息肉 动脉瘤
    疣 痣 癣 疮 痈 疖 痔 瘘 梗 肌瘤 硬变 变性 增生 肥大 脱垂 血压 性贫血 哮喘 肺水肿 脑水肿
    """.split()
)
FRAGMENT_STARTS = tuple(
    """
    轻者 重者 严重者 少数 多数 部分 可 或 及 以 常 伴 并 且 后期 早期 晚期 初期 偶 有时 如 见于 其
    使 去 休息 呈 形成
    """.split()
)
FRAGMENT_ENDS = ("多", "少", "者", "等", "时", "期", "后", "前", "型", "类", "的", "为主", "减轻", "缓解")
# inside a value: a clause of running text (外阴周围常发红, 上肢见不对称性白斑, 耳鸣以至晕厥, 骨折部有局限性疼痛)
FRAGMENT_WORDS = ("常", "可有", "类似", "为主", "见不", "见有", "以至", "部有", "处有")
NEGATION_STARTS = ("无", "未", "没有", "不伴", "非")
DESCRIPTOR_WORDS = tuple(
    """
    光滑 清楚 清晰 规则 边界 界限 质硬 质软 质韧 活动度 大小 形态 表面 无症状 无明显 病程 不明显
    一般 生长缓慢 单发 多发 颜色 色泽
    """.split()
)
TEST_WORDS = tuple(
    """
    试验 检查 指诊 检测 测定 造影 扫描 超声 活检 穿刺 心电图 X线 CT MRI 镜 化验 培养 涂片 显示 可见
    提示
    """.split()
)
ROMAN = re.compile(r"[ⅠⅡⅢⅣⅤⅥⅦⅧⅨⅩⅪⅫ]|^[IVXivx]+$")
# symptom spellings that say the same thing: value -> the spelling kept
SYNONYMS = {
    "发烧": "发热",
    "瘙痒症": "瘙痒",
    "皮肤瘙痒症": "皮肤瘙痒",
    "精神萎靡不振": "精神萎靡",
    "烦躁不安": "烦躁",
    "食欲不振": "食欲减退",
    "食欲下降": "食欲减退",
    "纳差": "食欲减退",
    "体重减轻": "体重下降",
    "消瘦": "体重下降",
    "紫绀": "发绀",
    "咳血": "咯血",
    "气急": "气促",
    "疲乏": "乏力",
    "疲劳": "乏力",
    "头昏": "头晕",
    "阴道流血": "阴道出血",
    "畏寒": "怕冷",
    "浮肿": "水肿",
    "大便秘结": "便秘",
    "恶心与呕吐": "恶心呕吐",
}
# one spelling that packs two symptoms: value -> the two it stands for
PACKED = {
    "恶心呕吐": ("恶心", "呕吐"),
    "恶心、呕吐": ("恶心", "呕吐"),
    "红肿热痛": ("红肿", "疼痛"),
    "寒战高热": ("寒战", "高热"),
    "畏寒发热": ("怕冷", "发热"),
    "头晕头痛": ("头晕", "头痛"),
}


@dataclass
class SymptomLexicon:
    """Known symptom terms and the disease names they must not be, for :meth:`why_not`."""

    known: set[str] = field(default_factory=set)  # our entries' 相关症状 values, cMeKG symptom pages
    diseases: set[str] = field(default_factory=set)  # disease names of the graph and of our KB (and aliases)

    def why_not(self, value: str) -> str | None:
        """None when ``value`` is a symptom or sign; else the name of the rule that rejects it."""
        if ROMAN.search(value):
            return "symptom_roman"
        if value in MODIFIERS or value.startswith(FRAGMENT_STARTS) or value.endswith(FRAGMENT_ENDS):
            return "symptom_fragment"
        if any(w in value for w in FRAGMENT_WORDS):
            return "symptom_fragment"
        if value.startswith(NEGATION_STARTS) and value not in self.known:
            return "symptom_fragment"
        if any(w in value for w in DESCRIPTOR_WORDS):
            return "descriptor"
        if value not in BEDSIDE_RISES and any(w in value for w in LAB_WORDS):
            return "symptom_lab_value"
        if any(w in value for w in TEST_WORDS):
            return "symptom_test"
        if value in self.diseases or value.endswith(DISEASE_SUFFIXES):
            return "symptom_disease"
        if value in self.known or value.endswith(SYMPTOM_ENDINGS) or any(h in value for h in SYMPTOM_CONTAINED):
            return None
        return "symptom_no_head"


# ----------------------------------------------------------------------------- other field kinds

PEOPLE_WORDS = tuple(
    """
    人 者 儿 婴 童 孩 女 男 妇 孕 产 青年 少年 老年 成人 患者 族 岁 群 工 员 士 生 民 母 胎 嗜
    青少年 中年
    """.split()
)
NOT_PEOPLE = ("部", "皮", "肤", "骨", "脏", "腺", "组织", "器官", "细胞", "病毒", "菌")


def is_people(value: str) -> bool:
    """多发人群: a group of people (老年人, 婴儿, 孕妇, 40岁以上男性), not a body part (头皮)."""
    return any(w in value for w in PEOPLE_WORDS) and not value.endswith(NOT_PEOPLE)


TEST_HEADS = tuple(
    """
    检查 检测 测定 试验 造影 超声 B超 CT MRI X线 片 镜 扫描 活检 穿刺 培养 常规 图 显像 测量 计数
    分析 监测 评估 筛查 化验 染色 抗体 抗原 水平 功能 涂片 指诊 触诊 听诊 叩诊 视诊 PCR 血气 电解质
    血糖 血脂 酶 标志物 量表 评分 诊断 成像 摄影 定位 定量 定性 测试 检验 透视 ECG EEG DNA RNA 凝血
    血型 组化 病理 细胞学 铁蛋白 胆红素 肌酐
    """.split()
)
FINDING_WORDS = tuple(
    """
    升高 降低 增高 减低 阳性 阴性 异常 增多 减少 增大 缩小 可见 示 提示 显示 改变 正常
    """.split()
)


def is_test(value: str) -> bool:
    """检查: an examination or test (血常规, 腹部超声, HCG测定, ALT), not a finding (血小板减少, X线示阴影)."""
    if any(w in value for w in FINDING_WORDS):
        return False
    return value.isascii() or any(h in value for h in TEST_HEADS)


SITE_WORDS = tuple(
    """
    部 脏 肺 心 肝 脾 肾 胃 肠 腔 管 腺 骨 肌 皮 肤 眼 耳 鼻 口 咽 喉 舌 牙 齿 颈 头 脑 脊 髓 神经
    血管 动脉 静脉 关节 膜 囊 道 门 节 手 足 腿 臂 肢 胸 腹 背 腰 盆 宫 卵巢 睾丸 阴 乳 甲 发 系统
    组织 胆 胰 膀胱 颅 面 唇 龈 腭 颌 肩 膝 髋 踝 腕 肘 指 趾 臀 会阴 肛 直肠 结肠 血液 淋巴 全身
    躯干 四肢 角膜 结膜 视网膜 晶状体 玻璃体 巩膜 虹膜 脉络膜 韧带 肌腱 软骨 椎 纵隔 横膈 膈 网膜
    腹膜 胸膜 心包 瓣 窦 输卵管 子宫 阴道 外阴 前列腺 精索 阴囊 阴茎 尿道 输尿管 腋 腹股沟 额 颞 枕
    顶 眶 鼻窦 扁桃体 气管 支气管 食管 十二指肠 阑尾 盲肠 回肠 空肠
    """.split()
)
SINGLE_CHAR_SITES = frozenset("心肝脾肺肾胃肠脑眼耳鼻口舌牙喉咽骨皮胆胰颈头胸腹背腰手足臂腿膝肩")
NOT_SITE = tuple(
    """
    病 炎 癌 瘤 症 征 痛 肿 伤 折 血 热 染 变 损 等 及 还 可 累及 发展 部分 多见 好发
    """.split()
)


def is_site(value: str) -> bool:
    """发病部位: a body site (肺, 回盲部, 膝关节), not a disease, symptom or clause."""
    if len(value) == 1:
        return value in SINGLE_CHAR_SITES
    return any(w in value for w in SITE_WORDS) and not any(w in value for w in NOT_SITE)


UNKNOWN_CAUSE = ("不明", "不清", "未明", "尚未", "未知", "不详", "尚无", "未完全", "未能", "不确定", "待查")


def is_unknown_cause(value: str) -> bool:
    """病因: 病因尚不清楚, 原因未明 ... say that nothing is known: not a cause."""
    return any(w in value for w in UNKNOWN_CAUSE)


# ----------------------------------------------------------------------------- departments

PAEDIATRIC_NAME_WORDS = ("小儿", "儿童", "新生儿", "婴儿", "婴幼儿", "幼儿", "胎儿", "少儿")
NEONATAL_NAME_WORDS = ("新生儿", "胎儿")
CHILD_WORDS = ("儿", "婴", "童", "幼", "新生", "学龄", "小孩", "孩子", "胎")
ADULT_WORDS = ("成人", "成年", "老年", "中年", "青年", "妇女", "女性", "男性", "孕", "产妇", "人群", "患者", "工人")
PAEDIATRIC_DEPARTMENTS = ("儿科", "新生儿科", "小儿外科", "儿童精神科")
# specialties that see children too: kept beside the paediatric department
ALL_AGE_DEPARTMENTS = ("眼科", "耳鼻咽喉科", "口腔科", "皮肤科", "皮肤性病科", "感染科", "急诊科", "变态反应科")
SURGICAL_DEPARTMENTS = tuple(
    """
    外科 普外科 肝胆外科 胸外科 心胸外科 神经外科 泌尿外科 骨科 血管外科 乳腺外科 肛肠科 甲状腺外科
    烧伤整形科 小儿外科
    """.split()
)

# skin, eyes, ENT and teeth have a department of their own, medical or surgical
ORGANS_OF_THEIR_OWN_DEPARTMENT = {
    "皮肤": "皮肤科",
    "眼": "眼科",
    "耳": "耳鼻咽喉科",
    "鼻": "耳鼻咽喉科",
    "咽": "耳鼻咽喉科",
    "喉": "耳鼻咽喉科",
    "口腔": "口腔科",
    "牙": "口腔科",
}
# organ (a word of 发病部位) -> the department of a generic 内科 / 外科 entity. An entity is refined only
# when all its mapped sites agree on one department.
MEDICAL_BY_ORGAN = {
    "肺": "呼吸内科",
    "支气管": "呼吸内科",
    "气管": "呼吸内科",
    "胸膜": "呼吸内科",
    "呼吸": "呼吸内科",
    "心": "心血管内科",
    "冠状动脉": "心血管内科",
    "心包": "心血管内科",
    "胃": "消化内科",
    "肠": "消化内科",
    "食管": "消化内科",
    "肝": "消化内科",
    "胆": "消化内科",
    "胰": "消化内科",
    "消化": "消化内科",
    "十二指肠": "消化内科",
    "肾": "肾内科",
    "脑": "神经内科",
    "神经": "神经内科",
    "脊髓": "神经内科",
    "血液": "血液科",
    "骨髓": "血液科",
    "甲状腺": "内分泌科",
    "垂体": "内分泌科",
    "肾上腺": "内分泌科",
    "内分泌": "内分泌科",
    "关节": "风湿免疫科",
    **ORGANS_OF_THEIR_OWN_DEPARTMENT,
}
SURGICAL_BY_ORGAN = {
    "骨": "骨科",
    "关节": "骨科",
    "脊柱": "骨科",
    "椎": "骨科",
    "肌腱": "骨科",
    "韧带": "骨科",
    "四肢": "骨科",
    "手": "骨科",
    "足": "骨科",
    "膝": "骨科",
    "髋": "骨科",
    "肩": "骨科",
    "踝": "骨科",
    "腕": "骨科",
    "肘": "骨科",
    "肛": "肛肠科",
    "直肠": "肛肠科",
    "乳腺": "乳腺外科",
    "乳房": "乳腺外科",
    "肾": "泌尿外科",
    "膀胱": "泌尿外科",
    "尿道": "泌尿外科",
    "输尿管": "泌尿外科",
    "前列腺": "泌尿外科",
    "睾丸": "泌尿外科",
    "阴囊": "泌尿外科",
    "阴茎": "泌尿外科",
    "脑": "神经外科",
    "颅": "神经外科",
    "脊髓": "神经外科",
    "肺": "胸外科",
    "胸": "胸外科",
    "纵隔": "胸外科",
    "食管": "胸外科",
    "心": "心胸外科",
    "肝": "肝胆外科",
    "胆": "肝胆外科",
    "胰": "肝胆外科",
    "胃": "普外科",
    "肠": "普外科",
    "阑尾": "普外科",
    "腹": "普外科",
    "脾": "普外科",
    "血管": "血管外科",
    "动脉": "血管外科",
    "静脉": "血管外科",
    "甲状腺": "甲状腺外科",
    **ORGANS_OF_THEIR_OWN_DEPARTMENT,
}


def organ_department(sites: list[str], generic: str) -> str | None:
    """The department the sites of a 内科 (``generic``) or 外科 entity point to, when they agree on one."""
    table = MEDICAL_BY_ORGAN if generic == "内科" else SURGICAL_BY_ORGAN
    found = set()
    for site in sites:
        # the longest organ word a site contains decides (十二指肠 before 肠, 心包 before 心)
        hits = sorted((w for w in table if w in site), key=len, reverse=True)
        if hits:
            found.add(table[hits[0]])
    return found.pop() if len(found) == 1 else None


def is_paediatric(name: str, people: list[str]) -> bool:
    """A disease of children: its name says so, or every 多发人群 value is a group of children."""
    if any(w in name for w in PAEDIATRIC_NAME_WORDS):
        return True
    return bool(people) and all(
        any(w in p for w in CHILD_WORDS) and not any(w in p for w in ADULT_WORDS) for p in people
    )


def is_neonatal(name: str, people: list[str]) -> bool:
    return any(w in name for w in NEONATAL_NAME_WORDS) or (bool(people) and all("新生" in p for p in people))
