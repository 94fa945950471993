"""MMBench EN/CN reader, prompts and CircularEval."""

import base64

import pytest

from stepprune.benchmarks import RecordError, mmbench, mmbench_cn
from stepprune.benchmarks.fixtures import image_base64, mmbench_records, write_mmbench

EN_SUFFIX = "\nAnswer with the option's letter from the given choices directly."


def test_load_en_prompts_and_circular_copies(folders):
    items = mmbench.load(folders["mmbench_en"])
    assert [it.qid for it in items] == ["0", "1", "1000000", "2000000", "3000000", "1000001"]
    assert [it.meta["group"] for it in items] == [0, 1, 0, 0, 0, 1]
    assert items[0].prompt == "What animal is shown?\nA. cat\nB. dog\nC. bird\nD. fish" + EN_SUFFIX
    # hint first; C is "nan" and D is empty, so both are missing
    assert items[1].prompt == ("The picture was taken at noon.\nIs it day or night?\nA. day\nB. night"
                               + EN_SUFFIX)
    assert items[1].meta["options"] == {"A": "day", "B": "night"}
    assert items[2].prompt == "What animal is shown?\nA. dog\nB. bird\nC. fish\nD. cat" + EN_SUFFIX
    assert [it.answer for it in items] == ["B", "A", "A", "D", "C", "B"]
    assert items[1].meta["prompt_lmms"] == (
        "The picture was taken at noon. Is it day or night? There are several options:\nA. day\nB. night\n"
        + EN_SUFFIX)
    assert items[0].load_image().size == (32, 32)


def test_load_cn(folders):
    items = mmbench_cn.load(folders["mmbench_cn"])
    assert mmbench_cn.NAME == "mmbench_cn" and len(items) == 6
    assert items[0].prompt == "图中是什么动物？\nA. 猫\nB. 狗\nC. 鸟\nD. 鱼\n请直接回答选项字母。"
    assert items[0].meta["prompt_lmms"] == (
        "图中是什么动物？ 有如下几个选项：\nA. 猫\nB. 狗\nC. 鸟\nD. 鱼\n\n"
        "请直接使用所提供的选项字母作为答案回答。")


def test_cn_answers_resolve_only_through_the_static_extractor(folders):
    item = mmbench_cn.load(folders["mmbench_cn"])[0]  # answer B
    assert mmbench_cn.score_one("答案是B。", item) == 0.0
    assert mmbench_cn.score_one("答案是B。", item, flavour="lmms") == 1.0
    assert mmbench_cn.details("选B", item, flavour="lmms")["rule_based_prefetch"] is None


def test_limit_keeps_whole_circular_groups(folders):
    items = mmbench.load(folders["mmbench_en"], limit=1)
    assert [it.qid for it in items] == ["0", "1000000", "2000000", "3000000"]


def test_any_single_tsv_is_accepted_but_not_two(tmp_path):
    write_mmbench(tmp_path, "en", file_name="renamed.tsv")
    assert len(mmbench.load(tmp_path)) == 6
    write_mmbench(tmp_path, "en", file_name="other.tsv")
    with pytest.raises(FileNotFoundError, match="exactly one"):
        mmbench.load(tmp_path)


def test_image_given_as_a_row_reference_is_resolved(tmp_path):
    rows = mmbench_records()
    rows[2]["image"] = "0"  # circular copy pointing at its base row's image
    write_mmbench(tmp_path, rows=rows)
    items = mmbench.load(tmp_path)
    assert items[2].image_bytes == base64.b64decode(image_base64(0))


def _answers(items, right: dict[str, str]) -> list[str]:
    return [right.get(it.qid, it.answer) for it in items]


def test_circular_eval_needs_every_copy(folders):
    items = mmbench.load(folders["mmbench_en"])
    assert mmbench.aggregate(items, _answers(items, {}))["circular_accuracy"] == 100.0       # mmbench-13
    wrong_copy = _answers(items, {"2000000": "A"})                                           # mmbench-12
    out = mmbench.aggregate(items, wrong_copy)
    assert out["circular_accuracy"] == 50.0 and out["category/attribute_recognition"] == 0.0
    assert out["row_accuracy"] == pytest.approx(500 / 6)
    assert mmbench.score_one("A", items[3]) == 0.0 and mmbench.score_one("D", items[3]) == 1.0


def test_llava_flavour_reports_judge_share_and_bounds(folders):
    items = mmbench.load(folders["mmbench_en"])
    preds = _answers(items, {"1": "I am not sure about it"})  # no letter, no option text: judge needed
    out = mmbench.aggregate(items, preds)
    assert out["circular_accuracy"] == 50.0
    assert out["circular_accuracy_upper"] == 100.0
    assert out["judge_needed"] == pytest.approx(100 / 6)
    assert mmbench.details("I am not sure about it", items[1])["rule_based_prefetch"] is None


def test_lmms_flavour_uses_the_static_extractor(folders):
    items = mmbench.load(folders["mmbench_en"])
    # "B or A" is ambiguous for the prefetch; the static extractor takes the leading B (right for row 0)
    preds = _answers(items, {"0": "B or A"})
    llava, lmms = mmbench.aggregate(items, preds), mmbench.aggregate(items, preds, flavour="lmms")
    assert llava["circular_accuracy"] == 50.0 and llava["circular_accuracy_upper"] == 100.0
    assert lmms["circular_accuracy"] == 100.0 and lmms["judge_needed"] == pytest.approx(100 / 6)
    assert mmbench.details(" B ", items[0], flavour="lmms")["resolved"] == "B"


def test_missing_prediction_fails_its_group(folders):
    items = mmbench.load(folders["mmbench_en"])
    preds = _answers(items, {})
    preds[5] = None
    out = mmbench.aggregate(items, preds)
    assert out["circular_accuracy"] == 50.0 and out["circular_accuracy_upper"] == 50.0
    assert out["missing"] == 1


@pytest.mark.parametrize("column, value, field", [
    ("answer", "C", "answer"),      # C is "nan" on question 1
    ("image", "not base64!", "image"),
    ("index", "abc", "index"),
])
def test_malformed_rows_raise_record_error(tmp_path, column, value, field):
    rows = mmbench_records()
    rows[1][column] = value
    write_mmbench(tmp_path, rows=rows)
    with pytest.raises(RecordError) as err:
        mmbench.load(tmp_path)
    assert err.value.field == field and err.value.row == 3  # line 3: header, row 0, row 1
    assert err.value.file.endswith("mmbench_dev_20230712.tsv")


def test_missing_column(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "answer"} for r in mmbench_records()]
    write_mmbench(tmp_path, rows=rows)
    (tmp_path / "mmbench_dev_20230712.tsv").write_text(
        (tmp_path / "mmbench_dev_20230712.tsv").read_text().replace("\tanswer\t", "\tgold\t", 1))
    with pytest.raises(RecordError) as err:
        mmbench.load(tmp_path)
    assert (err.value.row, err.value.field) == (1, "answer")
