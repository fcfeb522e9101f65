import json
import shutil

import pytest

from tianji_ft.synth.wishes_data import default_wishes_dir, load_wishes_data
from tianji_ft.core.errors import UserError

# Copied from the seed (SocialAI-tianji/Tianji tools/finetune/data_maker/get_wish_datav1.py)
# so a slip in the data files shows up here.
SEED_NAMES = ["赵老师", "大舅", "大伯", "李总", "邻居赵大妈", "母亲", "姐姐", "妹妹", "哥哥", "弟弟", "爷爷", "奶奶",
              "外公", "外婆", "伯母", "叔叔", "阿姨", "堂兄", "堂妹", "表哥", "表妹", "导师", "同学", "同事", "领导",
              "邻居", "老板", "医生"]
SEED_SCENES = ["生日", "春节", "元宵节", "端午节", "七夕节", "中秋节", "重阳节", "除夕", "腊八节", "谈判顺利", "乔迁新居",
               "周年纪念", "新婚快乐", "家庭和睦", "比赛取得好成绩", "发财", "工作升职 ", "康复"]


def test_shipped_data_matches_the_seed_sizes_and_lists():
    data = load_wishes_data()
    assert list(data.names) == SEED_NAMES
    assert list(data.scenes) == SEED_SCENES  # "工作升职 " keeps the seed's trailing space
    assert list(data.styles) == ["小红书", "正常", "严肃"]
    assert len(data.styles["小红书"].examples) == 7 and data.styles["小红书"].uses_example
    assert not data.styles["正常"].uses_example and not data.styles["严肃"].uses_example
    # The seed: output_number_limit = 50  # 限制回答输出长度，严肃的100，普通的小于20
    assert {k: s.length_limit for k, s in data.styles.items()} == {"小红书": 50, "正常": 20, "严肃": 100}
    assert len(data.injection_sentences) == 4 and data.injection_sentences[0] == ""
    assert data.dataset_system_prompt == "你现在是一个送祝福大师，帮我针对不同人和事情、节日送对应的祝福"
    assert data.request_system_prompt.startswith("你现在是一个精通言语表达、热爱他人、尊重长辈")
    assert len(data.input_variants.templates) == 8


def test_suitability_map_skips_some_pairs_and_keeps_most():
    data = load_wishes_data()
    assert len(data.suitable) == 28 * 18
    assert data.is_suitable("奶奶", "重阳节") and not data.is_suitable("奶奶", "七夕节")
    assert sum(data.suitable.values()) == 407


@pytest.fixture
def data_copy(tmp_path):
    folder = tmp_path / "wishes"
    shutil.copytree(default_wishes_dir(), folder)
    return folder


def test_a_name_without_a_map_row_is_a_one_line_error(data_copy):
    names = json.loads((data_copy / "names.json").read_text(encoding="utf-8"))
    (data_copy / "names.json").write_text(json.dumps(names + ["班主任"], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(UserError, match="no row for.*班主任"):
        load_wishes_data(data_copy)


def test_a_short_map_row_is_an_error(data_copy):
    path = data_copy / "role_scene_map.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["suitable"]["医生"] = raw["suitable"]["医生"][:-1]
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(UserError, match="row '医生' must be 18 values"):
        load_wishes_data(data_copy)


def test_broken_json_names_the_file(data_copy):
    (data_copy / "styles.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="styles.json is not valid JSON"):
        load_wishes_data(data_copy)
