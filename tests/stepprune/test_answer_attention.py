"""The answer slot's attention over the visual tokens: transformers' own eager attention for one sample, the same
rows whatever the batch around a sample, and padding columns of shorter images left at 0."""

import pytest
import torch

from stepprune.answer_attention import answer_slot_attention
from tests.conftest import make_images

pytestmark = pytest.mark.usefixtures("one_thread")


def test_matches_the_eager_attentions_of_transformers(llava, tiny_llava_dir):
    from transformers import LlavaForConditionalGeneration

    prompt = llava.prepare(make_images(1), ["What color is the square?"])
    ours = answer_slot_attention(llava, prompt)[0]  # (layers, N)
    eager = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        out = eager(input_ids=prompt.input_ids, attention_mask=prompt.attention_mask,
                    pixel_values=prompt.pixel_inputs["pixel_values"], output_attentions=True)
    is_image = prompt.input_ids[0] == llava.image_token_id
    theirs = torch.stack([a[0, :, -1, is_image].mean(dim=0) for a in out.attentions])  # (layers, N)
    assert ours.shape == theirs.shape == (llava.num_layers, int(is_image.sum()))
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=1e-4)
    assert float(ours.sum(dim=-1).max()) <= 1 + 1e-5 and float(ours.min()) >= 0


def test_a_samples_rows_do_not_depend_on_its_batch(llava):
    images = make_images(2)
    questions = ["What color is the square?", "How many objects are there in this picture?"]  # different lengths
    both = answer_slot_attention(llava, llava.prepare(images, questions))
    for b in range(2):
        alone = answer_slot_attention(llava, llava.prepare(images[b:b + 1], questions[b:b + 1]))
        torch.testing.assert_close(both[b], alone[0], atol=1e-5, rtol=1e-4)
    # different questions on the same image look differently (the query is the question's last slot)
    same_image = answer_slot_attention(llava, llava.prepare([images[0]] * 2, questions))
    assert not torch.allclose(same_image[0], same_image[1])


def test_padding_columns_of_a_shorter_image_stay_zero(qwen):
    images = make_images(1, size=(96, 96)) + make_images(1, seed=1, size=(48, 48))  # variable token counts
    prompt = qwen.prepare(images, ["What color is it?", "How many?"])
    n = qwen.vision_features(prompt).num_tokens.tolist()
    att = answer_slot_attention(qwen, prompt)
    assert n[1] < n[0] and att.shape == (2, qwen.num_layers, n[0])
    assert (att[1, :, n[1]:] == 0).all() and (att[1, :, :n[1]] > 0).all() and (att[0] > 0).all()
    assert float(att.sum(dim=-1).max()) <= 1 + 1e-5
