"""utils/knowledge/audit.py: each detector of issue #19's causes on small real-looking records (cases quoted in
the issue or taken from cMeKG 0.2.5), one that must be flagged and one that must not."""

from utils.knowledge import audit as A
from utils.knowledge.schema import Entry


def disease(name, source="cmekg", **fields):
    return Entry(
        kind="disease",
        name=name,
        fields=fields,
        path="pycmekg-0.2.5" if source == "cmekg" else "d.jsonl",
        line=0 if source == "cmekg" else 3,
        source=source,
    )


def record(rid, style, entity, instruction, output, facts=(), split="train"):
    return {
        "id": rid,
        "style": style,
        "entity": entity,
        "instruction": instruction,
        "input": "",
        "output": output,
        "facts": list(facts),
        "source": "cmekg",
        "split": split,
    }


def fact(field, value, source="cmekg", entity=None):
    return {"field": field, "value": value, "source": source, **({"entity": entity} if entity else {})}


# cMeKG 0.2.5's entries, as the current import cleans them
SPLEEN = disease(
    "脾破裂", 所属科室=["外科"], 发病部位=["脾脏"], 相关症状=["休克", "压痛", "左上腹疼痛", "疼痛", "紧张", "腹痛"]
)
CORNUAL = disease("宫角妊娠", 所属科室=["妇产科"], 相关症状=["休克", "子宫不对称性增大", "疼痛", "腹痛", "阴道流血"])
INTUSSUSCEPTION = disease(
    "小儿肠套叠",
    所属科室=["小儿外科"],
    发病部位=["回盲部"],
    相关症状=["休克", "便血", "儿童肠套叠", "呕吐", "果酱样血便", "腹痛", "腹部包块"],
)
RHINITIS = disease("过敏性鼻炎", 所属科室=["耳鼻咽喉科"], 相关症状=["打喷嚏", "鼻痒", "流清涕", "鼻塞"])


def build(records, entries, aliases=None):
    return A.Build(records=records, entries=entries, aliases_of=aliases or {})


def test_spleen_rupture_sent_to_surgery_is_a_red_flag_without_emergency():
    bad = record(
        "a",
        "triage",
        "脾破裂",
        "最近总是休克、左上腹疼痛、疼痛，去医院应该看什么科？",
        "休克、左上腹疼痛、疼痛同时出现时要考虑脾破裂，可以先挂外科，由医生进一步检查。",
        [fact("中心词", "脾破裂"), fact("所属科室", "外科")],
    )
    good = dict(bad, id="b", output="这可能是脾破裂出血，属于急症，请立即拨打120或去急诊科。")
    res = A.cause_10_findings_and_urgency(build([bad, good], [SPLEEN]))["metrics"]
    assert res["red-flag records routed to a department"] == 2
    assert res["red flag without 急诊/120"] == 1


def test_urgency_for_sneezing_and_weak_findings_are_counted():
    sneeze = record(
        "a",
        "triage",
        "过敏性鼻炎",
        "最近总是打喷嚏、鼻痒，去医院应该看什么科？",
        "考虑过敏性鼻炎的可能性较大，应尽快去耳鼻咽喉科就诊。",
        [fact("所属科室", "耳鼻咽喉科")],
    )
    calm = dict(
        sneeze,
        id="b",
        instruction="最近总是打喷嚏、鼻痒、流清涕，去医院应该看什么科？",
        output="考虑过敏性鼻炎，可以到耳鼻咽喉科就诊。",
    )
    res = A.cause_10_findings_and_urgency(build([sneeze, calm], [RHINITIS]))["metrics"]
    assert res["urgency word, not a red flag"] == 1
    assert res["fewer than 3 findings"] == 1


def test_a_man_with_cornual_pregnancy_is_impossible():
    man = record("a", "vignette", "宫角妊娠", "一名28岁男性出现腹痛、阴道流血、休克，可能是什么病？", "考虑宫角妊娠。")
    woman = dict(man, id="b", instruction="一名28岁女性出现腹痛、阴道流血、休克，可能是什么病？")
    res = A.cause_8_impossible_patients(build([man, woman], [CORNUAL]))["metrics"]
    assert res["impossible patient"] == 1
    assert res["  male with an obstetric/gynaecological disease"] == 1


def test_adults_and_old_people_with_a_paediatric_disease_are_impossible():
    adult = record("a", "vignette", "小儿肠套叠", "一名42岁女性最近果酱样血便、腹部包块、呕吐，可能是什么病？", "…")
    elder = dict(adult, id="b", instruction="家里老人果酱样血便、腹部包块、呕吐，应该带他去看哪个科？", style="triage")
    baby = dict(adult, id="c", instruction="一名8个月大的婴儿最近果酱样血便、腹部包块、呕吐，可能是什么病？")
    assert A.patient_of(baby["instruction"]) == (None, 0)
    res = A.cause_8_impossible_patients(build([adult, elder, baby], [INTUSSUSCEPTION]))["metrics"]
    assert res["impossible patient"] == 2
    assert (
        A.impossible_patient("一名5岁女孩出现尿频、尿急", disease("良性前列腺增生"))
        == "female with a male-only disease"
    )
    assert A.impossible_patient("一名65岁男性出现尿频、夜尿增多", disease("良性前列腺增生")) is None
    assert A.impossible_patient("一名5岁男孩出现尿频", disease("良性前列腺增生")) == "child with an adult-only disease"


def test_diagnosis_given_away_by_a_symptom_that_holds_its_core():
    leak = record(
        "a", "vignette", "小儿肠套叠", "一名8个月大的婴儿最近儿童肠套叠、果酱样血便、腹部包块，可能是什么病？", "…"
    )
    fair = dict(leak, id="b", instruction="一名8个月大的婴儿最近呕吐、果酱样血便、腹部包块，可能是什么病？")
    assert A.name_core("小儿肠套叠") == "肠套叠" and A.name_core("急性肺炎") == "肺炎"
    res = A.cause_5_diagnosis_in_question(build([leak, fair], [INTUSSUSCEPTION]))["metrics"]
    assert res["name or core in the question"] == 1


def test_answers_quoting_a_code_point_prefix():
    symptoms = sorted(["休克", "压痛", "左上腹疼痛", "疼痛", "紧张", "腹痛"])
    assert A.is_code_point_sorted(symptoms)
    spleen = disease("脾破裂", 所属科室=["外科"], 相关症状=symptoms)
    prefix = record("a", "overview", "脾破裂", "脾破裂是什么病？", "…", [fact("相关症状", v) for v in symptoms[:4]])
    chosen = record("b", "overview", "脾破裂", "脾破裂是什么病？", "…", [fact("相关症状", v) for v in symptoms[2:]])
    res = A.cause_1_code_point_order(build([prefix, chosen], [spleen]))["metrics"]
    assert res["sorted by code point"] == 1
    assert res["records quoting a code-point prefix"] == 1
    assert res["answers quoting 休克"] == 1


def test_comparison_that_says_different_although_the_full_lists_share():
    a = disease("慢性非萎缩性胃炎", 所属科室=["消化内科"], 相关症状=["上腹痛", "腹胀", "嗳气", "反酸"])
    b = disease("十二指肠炎", 所属科室=["消化内科"], 相关症状=["上腹痛", "黑便", "呕血", "恶心"])
    said = record(
        "a",
        "comparison",
        [a.name, b.name],
        "比较一下两者的主要症状。",
        "不一致。慢性非萎缩性胃炎的主要症状是腹胀、嗳气，而十二指肠炎的主要症状是黑便、呕血。",
        [fact("相关症状", "腹胀", entity=a.name), fact("相关症状", "黑便", entity=b.name)],
    )
    right = dict(said, id="b", output="部分一致。两者都涉及上腹痛。")
    assert A.comparison_verdict(said["output"]) == "different" and A.comparison_verdict(right["output"]) == "overlap"
    res = A.cause_2_comparisons(build([said, right], [a, b]))["metrics"]
    assert res["says 不一致 but full lists share values"] == 1


def test_pairs_sharing_only_non_specific_symptoms():
    fillers = [disease(f"病{i}", 相关症状=["发热", "疼痛"]) for i in range(A.NONSPECIFIC_DISEASES + 1)]
    a = disease("脓疱疮", 所属科室=["皮肤科"], 发病部位=["皮肤"], 相关症状=["发热", "疼痛", "脓疱"])
    b = disease("丹毒", 所属科室=["皮肤科"], 发病部位=["下肢"], 相关症状=["发热", "疼痛", "红斑"])
    c = disease("蜂窝织炎", 所属科室=["皮肤科"], 发病部位=["皮肤"], 相关症状=["发热", "疼痛"])
    generic = record("a", "comparison", ["脓疱疮", "丹毒"], "…", "部分一致。两者都涉及发热。")
    same_site = record("b", "comparison", ["脓疱疮", "蜂窝织炎"], "…", "部分一致。两者都涉及发热。")
    res = A.cause_2_comparisons(build([generic, same_site], [a, b, c, *fillers]))
    assert res["metrics"]["pairs sharing only non-specific symptoms, no site"] == 1
    assert res["examples"]["pairs sharing only non-specific symptoms, no site"] == ["丹毒/脓疱疮"]


def test_values_that_are_not_symptoms():
    flagged = {
        "糖尿": "lab value",
        "蛋白尿": "lab value",
        "高钾血症": "lab value",
        "气胸": "disease name",
        "感冒": "disease name",
        "心肌梗死": "disease name",
        "轻者头痛": "fragment",
        "反复": "fragment",
        "婴儿肠套叠多": "fragment",
        "表面光滑": "descriptor",
        "撞击试验": "test",
        "肛门指诊": "test",
        "Ⅲ度": "roman numeral",
        "旋后肌": "body site",
        "脾脏": "body site",
    }
    for value, kind in flagged.items():
        assert A.not_a_symptom(value, sites={"脾脏"}) == kind, value
    for value in ("发热", "腹痛", "夜尿增多", "白带增多", "视力下降", "无尿", "果酱样血便", "呼吸困难", "软骨"):
        assert A.not_a_symptom(value) is None, value


def test_not_symptoms_are_counted_over_facts_and_question_findings():
    e = disease("儿童肾性糖尿", 所属科室=["肾内科"], 相关症状=["多饮", "糖尿", "多尿", "尿酮阳性"])
    r = record("a", "vignette", e.name, "一名5岁女孩有糖尿、多饮、尿酮阳性的表现，考虑是什么病？", "…")
    res = A.cause_3_not_symptoms(build([r], [e]))["metrics"]
    assert res["symptom mentions"] == 3 and res["not a symptom"] == 2


def test_near_duplicates_in_one_list():
    assert A.near_duplicates(["眼痛", "流泪及眼痛", "畏光"]) == [("眼痛", "流泪及眼痛")]
    assert A.near_duplicates(["咳嗽", "持续性咳嗽"]) == [("咳嗽", "持续性咳嗽")]
    assert A.near_duplicates(["咳嗽", "咳痰", "发热"]) == []
    e = disease("急性结膜炎", 相关症状=["眼痛", "流泪及眼痛", "畏光"])
    dup = record("a", "single_fact", e.name, "…", "…", [fact("相关症状", "眼痛"), fact("相关症状", "流泪及眼痛")])
    ok = record("b", "single_fact", e.name, "…", "…", [fact("相关症状", "眼痛"), fact("相关症状", "畏光")])
    res = A.cause_4_near_duplicates(build([dup, ok], [e]))["metrics"]
    assert res["records with a near-duplicate pair"] == 1 and res["values with an unsplit 及"] == 1


def test_entities_that_are_not_diseases_and_values_of_the_wrong_kind():
    for name in ("手外伤康复", "宫腔镜检查", "发热待查", "高危儿", "肝郁气滞证", "心肺复苏术"):
        assert A.NOT_DISEASE_NAME.search(name), name
    for name in ("小儿肠套叠", "脾破裂", "Whipple病"):
        assert not A.NOT_DISEASE_NAME.search(name), name
    assert A.field_kind_problem("多发人群", "头皮")
    assert A.field_kind_problem("病因", "病因尚不清楚")
    assert A.field_kind_problem("检查", "硬脑膜下血肿")
    assert A.field_kind_problem("多发人群", "中老年男性") is None
    assert A.field_kind_problem("病因", "卵黄管未完全闭合") is None
    assert A.field_kind_problem("检查", "血常规") is None and A.field_kind_problem("检查", "肝功能异常检测") is None


def test_alias_twins_and_the_pairs_that_straddle_splits():
    whipple, huipuer = disease("Whipple病"), disease("惠普尔病")
    bracket, plain = disease("甲状腺功能亢进症（甲亢）"), disease("甲亢")
    other = disease("痛风")
    records = [
        record("a", "overview", "Whipple病", "…", "…", split="train"),
        record("b", "overview", "惠普尔病", "…", "…", split="test"),
        record("c", "overview", bracket.name, "…", "…", split="train"),
        record("d", "overview", "甲亢", "…", "…", split="train"),
        record("e", "overview", "痛风", "…", "…", split="test"),
    ]
    res = A.cause_7_alias_twins(
        build(records, [whipple, huipuer, bracket, plain, other], aliases={"Whipple病": {"惠普尔病"}})
    )
    assert res["metrics"] == {"twin pairs": 2, "pairs straddling splits": 1}
    assert res["examples"]["pairs straddling splits"] == ["Whipple病 (train) / 惠普尔病 (test)"]


def test_treatment_asked_but_not_given_and_cmekg_treatments():
    e = disease("幽门螺杆菌感染", 所属科室=["消化内科"], 相关症状=["上腹痛", "反酸", "嗳气"], 药物治疗=["阿莫西林"])
    asked = record(
        "a", "vignette", e.name, "一名30岁男性上腹痛、反酸、嗳气，是什么病？要怎么治？", "考虑幽门螺杆菌感染。"
    )
    treated = dict(asked, id="b", facts=[fact("药物治疗", "阿莫西林")], output="…需要阿莫西林等药物治疗。")
    not_asked = dict(asked, id="c", instruction="一名30岁男性上腹痛、反酸、嗳气，该挂哪个科？")
    b = build([asked, treated, not_asked], [e])
    res = A.cause_9_treatment_unanswered(b)["metrics"]
    assert res["vignettes asking how to treat"] == 2 and res["answer states no treatment"] == 1
    assert A.cause_12_cmekg_treatments(b)["metrics"] == {"facts": 1, "records": 1, "diseases": 1}


def test_generic_and_missing_paediatric_departments():
    generic = disease("脾破裂", 所属科室=["外科"])
    paed_wrong = disease("小儿肺炎", 所属科室=["呼吸内科"])
    paed_right = disease("小儿肠套叠", 所属科室=["小儿外科"])
    records = [record(n, "single_fact", n, "…", "…") for n in ("脾破裂", "小儿肺炎", "小儿肠套叠")]
    res = A.cause_11_departments(build(records, [generic, paed_wrong, paed_right]))["metrics"]
    assert res == {
        "diseases in the build": 3,
        "only 内科/外科": 1,
        "paediatric entities": 2,
        "paediatric without a paediatric department": 1,
    }


def test_audit_runs_every_cause_and_renders_one_table(tmp_path):
    records = [
        record(
            "a",
            "triage",
            "脾破裂",
            "最近总是休克、左上腹疼痛、疼痛，去医院应该看什么科？",
            "可以先挂外科。",
            [fact("所属科室", "外科")],
            split="train",
        ),
        record(
            "b",
            "overview",
            "宫角妊娠",
            "宫角妊娠是什么病？",
            "宫角妊娠可表现为休克、疼痛。",
            [fact("相关症状", "休克"), fact("相关症状", "疼痛")],
            split="test",
        ),
    ]
    results = A.audit(build(records, [SPLEEN, CORNUAL]))
    assert len(results) == 13 and results["diversity"]["metrics"]["records"] == 2
    table = A.markdown(results)
    assert table.startswith("| cause | metric | count |") and "red flag without 急诊/120 | 1 |" in table
    for split, path in A.split_paths(str(tmp_path / "d.json")).items():
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                "".join(
                    __import__("json").dumps({k: v for k, v in r.items() if k != "split"}, ensure_ascii=False) + "\n"
                    for r in records
                    if r["split"] == split
                )
            )
    assert [(r["id"], r["split"]) for r in A.load_records(str(tmp_path / "d.json"))] == [("a", "train"), ("b", "test")]


def test_verdict_reads_every_phrasing_of_styles_json():
    """The audit reads a comparison's verdict from its wording: every phrasing the builder can use must read as
    the verdict it was chosen for (a 'no difference' answer is no 'different' one; 不完全一样 is an overlap)."""
    from utils.knowledge.schema import load_styles

    style = load_styles()["comparison"]
    for verdict in ("same", "overlap", "different"):
        for template in style[verdict]:
            text = template.format(
                a="甲病",
                b="乙病",
                label="病因",
                common="吸烟",
                a_values="吸烟、饮酒",
                b_values="吸烟、肥胖",
                dept="呼吸内科",
            )
            assert A.comparison_verdict(text) == verdict, template
