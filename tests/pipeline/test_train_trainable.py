"""``train.trainable``: the LM-loss steps train only the named parameters of the method (e.g. StepPrune's e_STOP)."""

import json

import pytest
import torch

from pipeline.config import TrainJobConfig
from pipeline.config_loader import ConfigError, load
from pipeline.engine import Engine
from pipeline.model import build_model
from pipeline.train_bench import synthvqa_batches
from tests.pipeline.train_fixtures import TINY_SELECTOR


def _cfg(backbone, *extra: str) -> TrainJobConfig:
    return load(TrainJobConfig, None, [
        f"backbone.path={backbone}", "method.name=stepprune", f"method.config={json.dumps(TINY_SELECTOR)}",
        "train.global_batch_size=2", "train.micro_batch_size=2", "train.max_steps=4", "deepspeed.enabled=false",
        *extra])


def test_only_the_named_parameters_move_in_a_training_step(tiny_llava_dir, one_thread):
    torch.manual_seed(0)
    model = build_model(_cfg(tiny_llava_dir, "train.trainable=[decoder.stop,denoiser]"), torch.device("cpu"))
    method = model.method
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    assert trainable and all(n == "decoder.stop" or n.startswith("denoiser.") for n in trainable)
    assert "decoder.stop" in trainable and "decoder.start" not in trainable
    before = {k: v.detach().clone() for k, v in method.named_parameters()}  # buffers (running statistics) aside
    engine = Engine(model, _cfg(tiny_llava_dir, "train.trainable=[decoder.stop,denoiser]"), distributed=False)
    assert {id(p) for p in engine.params} == {id(p) for n, p in method.named_parameters() if n in trainable}
    (batch,) = synthvqa_batches(model.adapter, micro_batch=2, n_batches=1)
    out = engine.forward(batch, 0)
    engine.backward(out.loss)
    assert engine.step()
    after = dict(method.named_parameters())
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert "decoder.stop" in moved  # the LM loss reaches e_STOP
    assert moved <= trainable  # and nothing else of the selector moved
    assert all(not p.requires_grad for p in model.adapter.model.parameters())


def test_a_prefix_that_names_no_parameter_is_refused_with_the_groups(tiny_llava_dir):
    with pytest.raises(ValueError, match=r"'decoder\.stp' names no parameter.*decoder\.stop"):
        build_model(_cfg(tiny_llava_dir, "train.trainable=[decoder.stp]"), torch.device("cpu"))
    # a prefix matches whole name parts only: "decoder.st" is not "decoder.stop"
    with pytest.raises(ValueError, match="names no parameter"):
        build_model(_cfg(tiny_llava_dir, "train.trainable=[decoder.st]"), torch.device("cpu"))


def test_an_empty_list_is_refused():
    with pytest.raises((ValueError, ConfigError), match="trainable"):
        load(TrainJobConfig, None, ["train.trainable=[]"])
