"""Every registered trainable method trains through the pipeline's own pieces (config -> model -> engine ->
checkpoint), in-process and without Ray workers: the job config validates, ``total_steps`` is filled in, the method
is bound, optimizer steps change its weights, and the checkpoint the loop writes loads back."""

import pytest
import torch

import stepprune
from pipeline.config import TrainJobConfig
from pipeline.config_loader import load
from pipeline.engine import Engine
from pipeline.model import build_model, method_config
from stepprune.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import PROMPTS, make_images
from tests.pipeline.train_fixtures import TINY_SELECTOR

TRAINABLE = sorted(n for n, cls in stepprune.METHODS.items() if not cls.training_free)
CONFIGS = {"stepprune": TINY_SELECTOR, "visionselector": {}, "dyrate": {}}


def test_every_trainable_method_has_a_fast_config_here():
    assert set(TRAINABLE) == set(CONFIGS)


@pytest.mark.parametrize("name", TRAINABLE)
def test_method_trains_through_the_engine(name, tiny_llava_dir, tmp_path):
    import json

    torch.set_num_threads(1)
    cfg = load(TrainJobConfig, None, [
        f"backbone.path={tiny_llava_dir}", f"method.name={name}", f"method.config={json.dumps(CONFIGS[name])}",
        "deepspeed.enabled=false", "train.global_batch_size=2", "train.micro_batch_size=2", "train.max_steps=3"])
    assert method_config(cfg)["total_steps"] == 3
    torch.manual_seed(0)
    model = build_model(cfg, torch.device("cpu"))
    engine = Engine(model, cfg, distributed=False)
    adapter, method = model.adapter, model.method
    before = {k: v.clone() for k, v in method.state_dict().items()}
    prompt = adapter.prepare(make_images(2, seed=3), PROMPTS[:2], ["red square", "three objects"])
    for step in range(3):
        out = engine.forward(prompt, step)
        assert torch.isfinite(out.loss)
        engine.backward(out.loss)
        assert engine.step()
    assert any(not torch.equal(before[k], v) for k, v in method.state_dict().items())
    loaded = load_checkpoint(save_checkpoint(method, tmp_path / name, adapter=adapter, step=3), adapter)
    for k, v in method.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.cpu()), k


def test_train_loss_per_question_reaches_the_training_forward(tiny_llava_dir):
    import json

    torch.set_num_threads(1)
    cfg = load(TrainJobConfig, None, [
        f"backbone.path={tiny_llava_dir}", f"method.config={json.dumps(TINY_SELECTOR)}", "train.loss_per=question",
        "deepspeed.enabled=false", "train.global_batch_size=2", "train.micro_batch_size=2", "train.max_steps=3"])
    torch.manual_seed(0)
    model = build_model(cfg, torch.device("cpu"))
    adapter = model.adapter
    # answers of very different lengths: the per-question and per-token means differ
    prompt = adapter.prepare(make_images(2, seed=3), PROMPTS[:2], ["red", "a big red square above three small blue "
                                                                         "circles and two green words"])
    torch.manual_seed(1)
    out = model(prompt, 0)
    lm = {}
    for per in ("question", "token"):
        torch.manual_seed(1)
        inputs, train_out = model.train_inputs(prompt, 0)
        lm[per] = float(adapter.lm_loss(adapter.forward(inputs, biases=train_out.biases), loss_per=per))
    assert float(out.lm_loss) == pytest.approx(lm["question"], abs=1e-5)
    assert abs(lm["question"] - lm["token"]) > 1e-3
