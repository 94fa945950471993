"""Starting points of the language stage: word embeddings along the per-patch head's class directions, mimetic QK."""

import pytest
import torch

from stepprune.backbones.pretrain.language_init import align_word_embeddings, class_directions, mimetic_qk
from stepprune.backbones.pretrain.objectives import PatchHeads
from stepprune.backbones.pretrain.spec import build_backbone
from stepprune.backbones.pretrain.words import NAMED_CLASSES

from .conftest import TINY


def _heads(seed: int = 3) -> PatchHeads:
    torch.manual_seed(seed)
    heads = PatchHeads(TINY.text_hidden)
    torch.nn.init.normal_(heads.norm.weight, 1.0, 0.3)  # a non-trivial LayerNorm scale, as after stage 1
    return heads


def test_class_directions_read_the_head_through_its_layernorm():
    heads = _heads()
    dirs = class_directions(heads)
    assert set(dirs) == {n for names in NAMED_CLASSES.values() for n in names}
    # a token along a class's direction gets that class's head logit up (bias aside), most among its kind
    for kind, names in NAMED_CLASSES.items():
        for name in names:
            tok = 5.0 * dirs[name]
            logits = heads(tok[None, None])[kind][0, 0] - heads.proj.bias[
                sum(heads.sizes[:heads.names.index(kind)]):][: len(names)]
            assert int(logits.argmax()) == names.index(name)
        assert all(abs(float(d.mean())) < 1e-6 and abs(float(d.norm()) - 1) < 1e-5 for d in dirs.values())


def test_align_word_embeddings_sets_only_the_named_rows():
    model, processor = build_backbone(TINY, seed=0)
    heads = _heads()
    emb_before = model.get_input_embeddings().weight.detach().clone()
    out_before = model.get_output_embeddings().weight.detach().clone()
    n = align_word_embeddings(model, processor.tokenizer, heads)
    dirs = class_directions(heads)
    assert n == len(dirs)
    ids = {name: processor.tokenizer(" " + name, add_special_tokens=False)["input_ids"][0] for name in dirs}
    for table, before in ((model.get_input_embeddings().weight, emb_before),
                          (model.get_output_embeddings().weight, out_before)):
        for name, i in ids.items():
            assert torch.nn.functional.cosine_similarity(table[i], dirs[name], dim=0) > 0.999
            assert abs(float(table[i].detach().norm() - before.norm(dim=-1).mean())) < 1e-5
        others = sorted(set(range(table.shape[0])) - set(ids.values()))
        torch.testing.assert_close(table[others], before[others])


def test_mimetic_qk_copies_queries_to_keys():
    model, _ = build_backbone(TINY, seed=0)
    assert mimetic_qk(model) == TINY.text_layers
    for layer in model.model.language_model.layers:
        torch.testing.assert_close(layer.self_attn.k_proj.weight, layer.self_attn.q_proj.weight)


def test_start_language_stage_applies_the_config():
    from pipeline.backbone_pretrain import start_language_stage
    from pipeline.pretrain_config import PretrainJobConfig

    model, processor = build_backbone(TINY, seed=0)
    heads = {"patch": _heads()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start_language_stage(model, heads, processor, PretrainJobConfig(arch=TINY))  # the defaults change nothing
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    cfg = PretrainJobConfig(arch=TINY)
    cfg.stage2.init_words, cfg.stage2.init_qk = True, "mimetic"
    start_language_stage(model, heads, processor, cfg)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any("embed_tokens" in k for k in changed) and any("lm_head" in k for k in changed)
    assert any("k_proj" in k for k in changed) and not any("q_proj" in k or "vision" in k for k in changed)


def test_bad_init_qk_is_rejected():
    from pipeline.config_loader import ConfigError, from_dict
    from pipeline.pretrain_config import PretrainJobConfig

    with pytest.raises(ConfigError, match="init_qk"):
        from_dict(PretrainJobConfig, {"stage2": {"init_qk": "identity"}})
