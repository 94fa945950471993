"""Smoke test of the backbone-pretraining job on a tiny config: Ray Train fit, the save_pretrained folder, MLflow,
the measurement and the card; a re-run under the same name resumes instead of retraining."""

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.integration]

TINY = [
    "arch.vision_hidden=64", "arch.vision_layers=2", "arch.vision_heads=2", "arch.vision_intermediate=64",
    "arch.text_hidden=32", "arch.text_layers=2", "arch.text_heads=2", "arch.text_kv_heads=2",
    "arch.text_intermediate=64", "arch.tokenizer_images=10", "arch.local_layers=2",
    "stage1.batch_size=4", "stage1.phases=[{steps: 2, max_objects: 4}, {steps: 1}]",
    "stage2.batch_size=2",
    "stage2.phases=[{steps: 1, max_objects: 4}, {steps: 1, max_objects: 1, families: [existence, mme]}, "
    "{steps: 1, max_objects: 1, family_weights: {mc_science: 1.0}}, {steps: 2}]",
    "stage2.loss_per=question", "stage2.ground_referents=[relation, mc_mmbench]", "stage2.slot_words_weight=1.0",
    "loop.precision=bf16",
    "loop.report_every=1", "loop.checkpoint_every=2", "loop.val_images=2", "loop.threads=1",
    "scaling.cpus_per_worker=1", "eval.n_images=2", "eval.limit=10", "eval.max_new_tokens=4",
]


def test_pretrain_job_end_to_end_and_resume(ray_session, tmp_path):
    from safetensors.torch import load_file

    import stepprune
    from pipeline.config_loader import load
    from pipeline.pretrain_config import PretrainJobConfig
    from pipeline.tracking import MlflowTracker

    from pipeline.backbone_pretrain_job import run

    overrides = TINY + [f"output={tmp_path / 'bb'}", f"storage.root={tmp_path / 'runs'}",
                        f"eval.folder={tmp_path / 'data'}"]
    cfg = load(PretrainJobConfig, None, overrides)
    summary = run(cfg)
    out = tmp_path / "bb"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json",
                 "chat_template.jinja", "pretrain_heads.safetensors", "MODEL_CARD.md"):
        assert (out / name).is_file(), name
    adapter = stepprune.load_backbone(out)
    assert adapter.model.config.image_seq_length == 576
    card = (out / "MODEL_CARD.md").read_text()
    assert "| family | questions | vanilla | blind |" in card and "**overall** | 10 |" in card
    assert summary["overall"] is not None and set(summary["overall"]) == {"vanilla", "blind"}

    client = MlflowTracker(summary["tracking_uri"], run_id=summary["mlflow_run_id"]).client
    metrics = client.get_run(summary["mlflow_run_id"]).data.metrics
    for key in ("s1.loss", "s1.acc_color", "s2.lm_loss", "s2.loss_slot", "val.exact.overall", "test.vanilla.overall",
                "test.blind.overall", "global_step"):
        assert key in metrics, key
    assert metrics["global_step"] == 8
    assert "asked only existence / mme questions" in card and "bf16 autocast" in card
    assert "drawing only mc_science (1) questions" in card and "averaged within each question" in card
    assert "for relation, mc_mmbench questions one head per referent" in card
    assert "a slot-words term (weight 1, decaying with the grounding term" in card
    heads = load_file(str(out / "pretrain_heads.safetensors"))
    assert {k.split(".")[0] for k in heads} == {"patch", "cls", "slot"}

    weights = load_file(str(out / "model.safetensors"))
    again = run(cfg)  # same storage.name: resumes from the final checkpoint, trains nothing more
    assert again["mlflow_run_id"] == summary["mlflow_run_id"]
    for k, v in load_file(str(out / "model.safetensors")).items():
        assert torch.equal(v, weights[k]), k
