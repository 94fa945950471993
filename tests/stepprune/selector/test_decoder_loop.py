"""The pointer decoder and the selection loop, Eqs. (4)-(9): masking, stop rules, limits, straight-through feedback,
training/inference agreement and the no-host-sync step."""

import pytest
import torch

from stepprune.selector.decoder import NEG, PointerDecoder, SelfAttentionCache
from stepprune.selector.loop import run_selection, selection_limits
from stepprune.selector.scores import alive_probabilities, log_survival

D, HEADS = 16, 2


class StopBiased(PointerDecoder):
    """A decoder whose stop logit is shifted by a constant (forces or forbids stopping, to test the loop rules)."""

    stop_shift = 0.0

    def step(self, q, t, cache, mem, bias):
        logits = super().step(q, t, cache, mem, bias)
        shift = torch.zeros_like(logits)
        shift[:, -1] = self.stop_shift
        return logits + shift


class StopAt(PointerDecoder):
    """A decoder that prefers the stop slot from a per-sample step on (episodes of chosen, different lengths);
    the image slots are still picked by the natural argmax."""

    stop_from = torch.tensor([2, 5, 9, 100])

    def step(self, q, t, cache, mem, bias):
        logits = super().step(q, t, cache, mem, bias)
        shift = torch.zeros_like(logits)
        shift[:, -1] = torch.where(t >= self.stop_from, 100.0, -100.0)
        return logits + shift


def _setup(B=3, N=20, k_max=8, seed=0, cls=PointerDecoder, **kw):
    torch.manual_seed(seed)
    dec = cls(D, HEADS, 4, 2, k_max=k_max, **kw)
    h_v = torch.nn.functional.layer_norm(torch.randn(B, N, D), (D,))
    return dec, dec.memory(h_v), torch.ones(B, N, dtype=torch.bool)


def _limits(mask, k_min, k_max, ratio=None):
    return selection_limits(mask.sum(dim=1), k_min, k_max, ratio)


def test_the_mask_never_reselects_a_token():
    dec, mem, mask = _setup(N=20, k_max=20, cls=StopBiased)
    dec.stop_shift = -100.0  # never stop: the episode must use all 20 slots, each exactly once
    with torch.no_grad():
        ro = run_selection(dec, mem, mask, *_limits(mask, 1, 20), 20, train=False)
    for b in range(3):
        assert sorted(ro.selection[b].tolist()) == list(range(20))
    assert ro.count.tolist() == [20, 20, 20] and bool(ro.capped.all())


def test_chosen_slots_get_exactly_zero_probability_afterwards():
    dec, mem, mask = _setup(N=30, k_max=12)
    ro = run_selection(dec, mem, mask, *_limits(mask, 1, 12), 12, train=True)
    p = torch.softmax(ro.logits, dim=-1)
    for b in range(3):
        for t in range(ro.logits.shape[1]):
            for s in range(t):
                if ro.valid[b, t]:
                    assert p[b, t, ro.selection[b, s]] == 0.0


def test_stop_slot_is_masked_before_k_min_and_never_after():
    dec, mem, mask = _setup(N=30, k_max=10)
    ro = run_selection(dec, mem, mask, *_limits(mask, 3, 10), 10, train=True)
    stop = ro.logits[..., -1]
    assert bool((stop[:, :3] <= NEG / 2).all())
    assert bool((stop[:, 3:][ro.valid[:, 3:]] > NEG / 2).all())


def test_k_min_and_cap_limits():
    dec, mem, mask = _setup(B=3, N=20, cls=StopBiased)
    mask[1, 5:] = False  # sample 1 has 5 valid tokens: cap 5, and K_min 7 is clamped to 5
    k_min, cap = _limits(mask, 7, 12)
    assert k_min.tolist() == [7, 5, 7] and cap.tolist() == [12, 5, 12]
    with torch.no_grad():
        dec.stop_shift = 100.0  # stop as soon as allowed
        ro = run_selection(dec, mem, mask, k_min, cap, 12, train=False)
        assert ro.count.tolist() == [7, 5, 7]
        assert ro.steps.tolist() == [8, 5, 8]  # stopped: K + 1 steps; sample 1 is capped at its 5 tokens
        assert ro.capped.tolist() == [False, True, False]
        dec.stop_shift = -100.0  # never stop
        ro = run_selection(dec, mem, mask, k_min, cap, 12, train=False)
        assert ro.count.tolist() == [12, 5, 12] and bool(ro.capped.all())
        assert set(ro.selection[1, :5].tolist()) == set(range(5))  # padded slots are never chosen
        assert bool((ro.selection[1, 5:] == 20).all())  # sentinel N after the K-th


def test_selection_limits_with_a_ratio():
    k_min, cap = selection_limits(torch.tensor([144, 64, 2]), 1, 100, 0.25)
    assert cap.tolist() == [36, 16, 1] and k_min.tolist() == [1, 1, 1]


def test_straight_through_value_and_gradient():
    dec, mem, _ = _setup(B=2, N=6, k_max=4, step_embedding=False)
    z = mem.z.detach()
    mem.z = z
    chosen = torch.tensor([2, 5])
    p = torch.softmax(torch.randn(2, 7), dim=-1).requires_grad_(True)
    t = torch.zeros((), dtype=torch.long)
    q = dec.next_query(mem, chosen, p, t)
    assert torch.equal(q, z[torch.arange(2), chosen])  # forward value is exactly z_{i_t}
    assert torch.equal(q, dec.next_query(mem, chosen, None, t))  # = the inference feedback
    jac = torch.autograd.functional.jacobian(lambda v: dec.next_query(mem, chosen, v, t), p)  # (2, d, 2, N+1)
    for b in range(2):
        torch.testing.assert_close(jac[b, :, b], z[b].T)  # d q_{t+1} / d p_t = Z^T
        assert bool((jac[b, :, 1 - b] == 0).all())


def test_training_and_inference_rollouts_select_the_same_set():
    dec, mem, mask = _setup(B=4, N=40, k_max=16, cls=StopAt)
    lim = _limits(mask, 1, 16)
    train = run_selection(dec, mem, mask, *lim, 16, train=True)
    with torch.no_grad():
        infer = run_selection(dec, mem, mask, *lim, 16, train=False, sync_every=4)
    assert torch.equal(train.selection, infer.selection)
    assert torch.equal(train.count, infer.count)
    assert train.count.tolist() == [2, 5, 9, 16]  # episodes of different lengths, one capped


def test_alive_probabilities_of_a_rollout():
    dec, mem, mask = _setup(B=4, N=30, k_max=10, cls=StopAt)
    ro = run_selection(dec, mem, mask, *_limits(mask, 1, 10), 10, train=True)
    a, _ = alive_probabilities(log_survival(ro.logits, 30), ro.valid)
    assert bool((a[:, 0] == 1).all()) and bool((a[:, 1:] <= a[:, :-1]).all())


def test_static_and_growing_caches_give_the_same_step():
    dec, mem, _ = _setup(B=2, N=10, k_max=5)
    bias = torch.zeros(2, 11)
    growing = SelfAttentionCache.growing(2)
    static = SelfAttentionCache.static_cache(2, 2, HEADS, 5, D // HEADS, torch.device("cpu"), torch.float32)
    q = dec.start_query(2, torch.zeros((), dtype=torch.long), torch.float32)
    for s in range(5):
        t = torch.tensor(s)
        a = dec.step(q, t, growing, mem, bias)
        b = dec.step(q, t, static, mem, bias)
        torch.testing.assert_close(a, b)
        q = dec.next_query(mem, a.argmax(-1), None, t)


def test_glimpse_mask_hides_masked_memory_rows():
    for glimpse in (True, False):
        dec, mem, _ = _setup(B=1, N=10, k_max=4, mask_glimpse=glimpse)
        bias = torch.zeros(1, 11)
        bias[0, 3] = NEG
        t = torch.zeros((), dtype=torch.long)
        q = dec.start_query(1, t, torch.float32)
        base = dec.step(q, t, SelfAttentionCache.growing(2), mem, bias)
        for layer in range(2):  # perturb the masked slot's cross-attention keys and values
            mem.keys[layer][:, :, 3] += 5.0
            mem.values[layer][:, :, 3] += 5.0
        moved = dec.step(q, t, SelfAttentionCache.growing(2), mem, bias)
        same = torch.allclose(base, moved)
        assert same == glimpse


@pytest.mark.parametrize("kw", [{"pointer": "cross_attention"}, {"logit_clip": 10.0}, {"step_embedding": False}])
def test_decoder_variants_run(kw):
    dec, mem, mask = _setup(N=12, k_max=6, **kw)
    ro = run_selection(dec, mem, mask, *_limits(mask, 1, 6), 6, train=True)
    assert torch.isfinite(torch.softmax(ro.logits, -1)).all()
    if "logit_clip" in kw:
        live = ro.logits[ro.logits > NEG / 2]
        assert bool((live.abs() <= 10.0).all())


def test_a_step_never_reads_device_values_on_the_host():
    """On the meta device any .item()/bool()/nonzero raises; the loop between its chunk checks must not."""
    with torch.device("meta"):
        dec = PointerDecoder(D, HEADS, 4, 2, k_max=8)
        mem = dec.memory(torch.randn(2, 20, D))
        mask = torch.ones(2, 20, dtype=torch.bool)
        k_min, cap = torch.ones(2, dtype=torch.long), torch.full((2,), 8)
        with torch.no_grad():
            ro = run_selection(dec, mem, mask, k_min, cap, 8, train=False, sync_every=1000)
            assert ro.selection.shape == (2, 8)
            with pytest.raises(RuntimeError):  # the chunk check is the only host read
                run_selection(dec, mem, mask, k_min, cap, 8, train=False, sync_every=4)
