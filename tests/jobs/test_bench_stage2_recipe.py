"""bench_stage2_recipe end to end: two stage-2 steps of a fresh LLM on the committed backbone's vision side."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "jobs"))


def test_trains_the_language_stage_from_a_saved_vision_side(tmp_path, capsys, one_thread):
    import bench_stage2_recipe
    from transformers import LlavaForConditionalGeneration

    out_dir = tmp_path / "probe"
    bench_stage2_recipe.main(["--steps", "2", "--threads", "1", "--rope-theta", "1e6", "--save", str(out_dir),
                              "stage2.batch_size=2", "loop.val_images=2", "stage2.ground_layer=2"])
    out = capsys.readouterr().out
    assert "rope_theta=1e+06" in out and "stage2.ground_layer=2" in out
    assert re.search(r"\[probe\] step \d+ .*\"lm_loss\"", out) and "[probe] val step" in out
    assert "\"loss_slot\"" in out  # the recipe's slot-words term, with a fresh head (the saved file may lack one)
    probed = LlavaForConditionalGeneration.from_pretrained(out_dir)
    committed = LlavaForConditionalGeneration.from_pretrained(ROOT / "checkpoints" / "synthvqa-llava-tiny")
    assert probed.config.text_config.rope_parameters["rope_theta"] == 1e6
    p, c = probed.state_dict(), committed.state_dict()
    tower = [k for k in c if ".vision_tower." in k]
    assert tower and all((p[k] == c[k]).all() for k in tower)  # frozen in stage 2: still the saved tower
    lm = [k for k in c if ".language_model." in k and k.endswith("q_proj.weight")]
    assert lm and not any(p[k].shape == c[k].shape and (p[k] == c[k]).all() for k in lm)  # a fresh LLM


def test_refuses_an_init_without_pretraining_heads(tmp_path):
    import bench_stage2_recipe

    with pytest.raises(SystemExit) as e:
        bench_stage2_recipe.main(["--init", str(tmp_path)])
    assert e.value.code == 2


def test_steps_0_with_keep_llm_measures_the_init_as_it_is(capsys, one_thread):
    import bench_stage2_recipe

    bench_stage2_recipe.main(["--steps", "0", "--keep-llm", "--threads", "1", "loop.val_images=2",
                              "stage2.batch_size=2"])
    out = capsys.readouterr().out
    assert "no training" in out and "[probe] step" not in out
    val = re.search(r"\[probe\] val step 0 (\{.*\})", out)
    assert val, out
    import json

    shown = json.loads(val.group(1))
    assert 0 <= shown["overall"] <= 100 and 0 < shown["evidence_mass"] < 1 and 0 < shown["query_mass"] < 1


def test_keep_llm_refuses_another_arch(capsys):
    import bench_stage2_recipe

    with pytest.raises(SystemExit) as e:
        bench_stage2_recipe.main(["--steps", "0", "--keep-llm", "arch.text_layers=2"])
    assert e.value.code == 2
