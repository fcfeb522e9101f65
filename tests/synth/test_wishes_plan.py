import pytest

from tianji_ft.synth.wishes_data import load_wishes_data
from tianji_ft.synth.wishes_plan import item_rng, plan_wishes
from tianji_ft.core.errors import UserError

# The seed's prompt pieces, verbatim from get_wish_datav1.py.
SEED_FINAL_PROMPT = """
该祝福语字数小于 {} 字。 \n
请根据对象称谓及场景，写出符合对象的身份和场景气氛的祝福文案。要求的风格是：{} \n，注意不要有标题混在其中，对象称谓是：{}，祝福场景是：{}。 \n
{} 根据不同对象用不同的语气（尊敬、诙谐搞笑、亲近），请直接返回祝福文本，不要说任何其他话：
"""
SEED_INJECTIONS = [
    "",
    "回答中可以不出现对象称谓和场景信息，也不用出现“愿你”“祝你”（对自己的长辈需要出现对象称谓和祝你），",
    "回答中可以不出现对象称谓和场景信息，",
    "回答中不用出现“愿你”“祝你”",
]
SEED_STYLES = {
    "小红书": ("小红书风格，每条加入1-2个emoji表情包来增加趣味性。\n### 注意，你要参考下列句子的艺术风格进行祝福语撰写（注意！只看造句风格），祝福语结尾都带上语气助词词，参考句子为：{} ###", 50),
    "正常": ("正常风格，有礼貌即可", 20),
    "严肃": ("商业严肃风格，要求用在职场或长辈祝福上，显得有礼貌、干练,句子可以长一些", 100),
}
SEED_XHS_FIRST_EXAMPLE = "默念你的名,祝你前途云蒸霞蔚，灿若星河。愿你度过的叫吉时，得到的叫如愿！"


def seed_prompt(data, seed, round_, style, name, scene):
    """What the seed's loop body builds, given the same random generator."""
    rng = item_rng(seed, round_, style, name, scene)
    template, limit = SEED_STYLES[style]
    style_prompt = template.format(rng.choice(data.styles[style].examples)) if style == "小红书" else template
    return SEED_FINAL_PROMPT.format(limit, style_prompt, name, scene, rng.choice(SEED_INJECTIONS))


@pytest.fixture(scope="module")
def data():
    return load_wishes_data()


def test_plan_covers_exactly_the_suitable_grid(data):
    plan = plan_wishes(data, rounds=2, seed=3)
    expected = {(r, st, n, sc) for r in (1, 2) for st in data.styles for n in data.names for sc in data.scenes
                if data.is_suitable(n, sc)}
    got = [(it.round, it.style, it.name, it.scene) for it in plan.items]
    assert len(got) == len(set(got)) == len(expected) == 2 * 3 * 407
    assert set(got) == expected
    assert len(plan.skipped_pairs) == 97 and plan.skipped_requests == 97 * 3 * 2
    assert len({it.id for it in plan.items}) == len(plan.items)


def test_every_prompt_is_the_seeds_final_prompt_format(data):
    assert data.final_prompt == SEED_FINAL_PROMPT and list(data.injection_sentences) == SEED_INJECTIONS
    assert data.styles["小红书"].examples[0] == SEED_XHS_FIRST_EXAMPLE
    plan = plan_wishes(data, seed=1234)
    for it in plan.items:
        assert it.prompt == seed_prompt(data, 1234, it.round, it.style, it.name, it.scene)
    # the random choices do vary across items, as the seed's do
    assert len({it.prompt.split("参考句子为：")[1][:10] for it in plan.items if it.style == "小红书"}) == 7


def test_inputs_are_the_seeds(data):
    plan = plan_wishes(data, names=["弟弟"], scenes=["工作升职"])
    assert [it.input for it in plan.items] == ["祝弟弟工作升职 ,小红书风格", "祝弟弟工作升职 ", "祝弟弟工作升职 ,严肃风格"]


def test_input_variants_follow_the_rebuild_step(data):
    plan = plan_wishes(data, styles=["正常", "严肃"], input_variants=True, seed=5)
    variants = {t.format(name="哥哥", scene="中秋节") for t in data.input_variants.templates}
    plain = {it.input for it in plan.items if it.style == "正常" and it.name == "哥哥" and it.scene == "中秋节"}
    assert plain <= variants
    assert {it.input for it in plan.items if it.style == "正常" and it.scene == "康复"} == {
        f"祝{n}康复" for n in data.names if data.is_suitable(n, "康复")}  # scene not in the rebuild list
    assert all(it.input.endswith(",严肃风格") for it in plan.items if it.style == "严肃")
    inputs = {it.input for it in plan.items if it.style == "正常" and it.scene in data.input_variants.scenes}
    assert any(i.startswith("我想") for i in inputs) and any(i.startswith("送祝福给") for i in inputs)


def test_same_seed_same_prompts_other_seed_differs(data):
    a, b, c = (plan_wishes(data, styles=["小红书"], seed=s) for s in (9, 9, 10))
    assert [i.prompt for i in a.items] == [i.prompt for i in b.items]
    assert [i.prompt for i in a.items] != [i.prompt for i in c.items]


def test_filters_and_their_errors(data):
    plan = plan_wishes(data, styles=["正常"], names=["医生", "母亲"], scenes=["七夕节", "康复"])
    assert [(i.name, i.scene) for i in plan.items] == [("母亲", "康复"), ("医生", "康复")]
    assert plan.skipped_pairs == [("母亲", "七夕节"), ("医生", "七夕节")]
    with pytest.raises(UserError, match="unknown name.*王老五"):
        plan_wishes(data, names=["王老五"])
    with pytest.raises(UserError, match="unknown style"):
        plan_wishes(data, styles=["文言文"])
