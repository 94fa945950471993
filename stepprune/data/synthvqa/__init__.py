"""SynthVQA: the project's own grounded VQA corpus, where visual-token selection matters and every answer
comes with its evidence patches. Generated offline (PIL + numpy), deterministic by seed. See README.md in this
folder for the families, the evidence rule and every on-disk layout.

Public API::

    from stepprune.data.synthvqa import SynthVQAConfig, generate_synthvqa
    manifest = generate_synthvqa("out/synthvqa", seed=0, n_train_images=20_000, n_val_images=1_000,
                                 n_test_images=1_000, questions_per_image=8, num_workers=2)

    sample = make_sample(SynthVQAConfig(seed=0), "val", 17)        # one image, in memory
    sample.rendered.image, sample.questions[0].evidence

    scene = Scene.from_dict(row)                                   # a scenes.jsonl row
    rendered, geometry, stats = analyse(scene)                     # exact pixels, owner map, evidence again
    patch_owner(coverage(rendered.owner, n_elements))              # dense per-patch labels
"""

from stepprune.data.synthvqa.config import DEFAULT_FAMILY_WEIGHTS, SPLITS, SynthVQAConfig
from stepprune.data.synthvqa.export_llava import export_llava
from stepprune.data.synthvqa.exports import export_benchmarks
from stepprune.data.synthvqa.generate import GENERATOR_VERSION, generate_split, generate_synthvqa
from stepprune.data.synthvqa.patches import coverage, evidence_patches, patch_owner
from stepprune.data.synthvqa.questions import FAMILIES, FAMILY_BENCHMARK, SUBFAMILIES, Question
from stepprune.data.synthvqa.render import Rendered, render_scene
from stepprune.data.synthvqa.sample import Sample, analyse, make_sample, question_records, scene_record
from stepprune.data.synthvqa.scene import Background, Scene, SceneObject, TextSnippet

__all__ = [
    "DEFAULT_FAMILY_WEIGHTS", "FAMILIES", "FAMILY_BENCHMARK", "GENERATOR_VERSION", "SPLITS", "SUBFAMILIES",
    "Background", "Question", "Rendered", "Sample", "Scene", "SceneObject", "SynthVQAConfig", "TextSnippet",
    "analyse", "coverage", "evidence_patches", "export_benchmarks", "export_llava", "generate_split",
    "generate_synthvqa", "make_sample", "patch_owner", "question_records", "render_scene", "scene_record",
]
