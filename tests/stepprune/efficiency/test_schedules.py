"""Each cost model's shape-level description — visual tokens handed to the LLM, entering each LLM layer, and rows
through the projector — equals what the real run does on the tiny LLaVA backbone (576 visual tokens)."""

import pytest
import torch

import stepprune
from stepprune.backbones.tiny import TinyLlavaSpec, build_tiny_llava
from stepprune.efficiency.costs import Geometry, method_cost
from stepprune.efficiency.scene import PromptShape
from tests.conftest import make_images

BUDGETS = (192, 128, 64)
IN_LLM = ("fastv", "sparsevlm", "pdrop", "dart")


def _geometry(adapter, prompt) -> Geometry:
    ids = prompt.input_ids[0][prompt.attention_mask[0].bool()]
    where = (ids == adapter.image_token_id).nonzero().flatten()
    prefix, suffix = int(where[0]), int(ids.numel() - where[-1] - 1)
    return Geometry("llava", adapter.num_layers, int(where.numel()), PromptShape(prefix, suffix, 1), 1)


def _observed(adapter, method, prompt, monkeypatch):
    """(tokens handed to the LLM, tokens entering each layer, rows projected) of one real run."""
    rows = []
    project = adapter.project

    def counting(tokens):
        rows.append(tokens.shape[1])
        return project(tokens)

    monkeypatch.setattr(adapter, "project", counting)
    out = stepprune.PrunedVLM(adapter, method).generate(prompt, max_new_tokens=1)
    monkeypatch.undo()
    return int(out.kept[0]), out.visual_per_layer[0].tolist(), sum(rows)


def _cases():
    for name, cls in sorted(stepprune.METHODS.items()):
        if cls.budgeted:
            yield from ((name, b) for b in BUDGETS)
        else:
            yield name, None


@pytest.mark.parametrize("name,budget", list(_cases()))
def test_cost_schedule_matches_the_runner(name, budget, llava, monkeypatch):
    prompt = llava.prepare(make_images(1, seed=3), ["What color is the square?"], keys=["0"])
    if name == "stepprune":
        torch.manual_seed(0)
        method = stepprune.build_method(name, {"d": 32, "heads": 4, "k_max": 48})
    else:
        method = stepprune.build_method(name, {"budget": budget} if budget else {})
    kept, per_layer, projected = _observed(llava, method, prompt, monkeypatch)
    cost = method_cost(method, _geometry(llava, prompt), k=kept if name == "stepprune" else None)
    assert (cost.visual, cost.per_layer, cost.projected) == (kept, per_layer, projected)


@pytest.fixture(scope="module")
def llava_32_layers(tmp_path_factory):
    """The tiny LLaVA with Vicuna-7B's depth, where the in-LLM methods' published layer indices apply unchanged."""
    path = build_tiny_llava(tmp_path_factory.mktemp("tiny32"), TinyLlavaSpec(text_layers=32))
    return stepprune.load_backbone(path)


@pytest.mark.parametrize("name", IN_LLM)
def test_in_llm_schedules_at_the_7b_depth(name, llava_32_layers, monkeypatch):
    adapter = llava_32_layers
    prompt = adapter.prepare(make_images(1, seed=4), ["How many objects are there in the image?"], keys=["0"])
    for budget in BUDGETS:
        method = stepprune.build_method(name, {"budget": budget})
        kept, per_layer, projected = _observed(adapter, method, prompt, monkeypatch)
        cost = method_cost(method, _geometry(adapter, prompt))
        assert (cost.visual, cost.per_layer, cost.projected) == (kept, per_layer, projected), budget
        assert per_layer[0] == 576 and per_layer[-1] < 576  # the published layers prune inside 32 layers
