"""The fast inference loop: static state updated in place, one host read per chunk of steps, CUDA graphs on CUDA.
It must select exactly what the plain loop (a read after every step) and the training rollout select."""

import math

import pytest
import torch

import stepprune
from stepprune.selector.decoder import PointerDecoder
from stepprune.selector.graphs import GraphedLoop
from stepprune.selector.loop import run_selection, selection_limits

D, HEADS = 16, 2
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class StopAt(PointerDecoder):
    """Prefers the stop slot from a per-sample step on (episodes of chosen lengths) and counts executed steps.
    ``stop_from`` lives on the decoder's device and is changed in place (a CUDA graph reads it where it is)."""

    calls = 0

    def step(self, q, t, cache, mem, bias):
        self.calls += 1
        logits = super().step(q, t, cache, mem, bias)
        shift = torch.zeros_like(logits)
        shift[:, -1] = torch.where(t >= self.stop_from, 100.0, -100.0)
        return logits + shift


def _setup(B=4, N=40, k_max=16, seed=0, device="cpu", stop_from=(2, 5, 9, 100)):
    torch.manual_seed(seed)
    dec = StopAt(D, HEADS, 4, 2, k_max=k_max).to(device)
    dec.stop_from = torch.tensor(stop_from, device=device)
    h_v = torch.nn.functional.layer_norm(torch.randn(B, N, D, device=device), (D,))
    mask = torch.ones(B, N, dtype=torch.bool, device=device)
    mask[1, N - 7:] = False  # a padded sample
    return dec, dec.memory(h_v), mask


def _same(a, b, diagnostics=True):
    assert torch.equal(a.selection, b.selection) and torch.equal(a.count, b.count)
    assert torch.equal(a.steps, b.steps) and torch.equal(a.capped, b.capped)
    if diagnostics:
        for x, y in ((a.log_prob, b.log_prob), (a.entropy, b.entropy), (a.p1_stop, b.p1_stop)):
            assert torch.equal(x, y)


@pytest.mark.parametrize("chunk", [1, 3, 5, 16, 100])
def test_chunked_loop_selects_what_the_plain_loop_and_the_training_rollout_select(chunk):
    dec, mem, mask = _setup()
    lim = selection_limits(mask.sum(dim=1), 1, 16, None)
    train = run_selection(dec, mem, mask, *lim, 16, train=True)
    with torch.no_grad():
        plain = run_selection(dec, mem, mask, *lim, 16, train=False, sync_every=1)
        fast = run_selection(dec, mem, mask, *lim, 16, train=False, sync_every=chunk)
    assert plain.count.tolist() == [2, 5, 9, 16]  # different lengths; the last sample is capped
    _same(plain, fast)
    assert torch.equal(train.selection, fast.selection) and torch.equal(train.count, fast.count)


@pytest.mark.parametrize("chunk", [1, 4, 6, 16])
def test_the_chunked_loop_exits_after_the_chunk_in_which_every_sample_stopped(chunk):
    dec, mem, mask = _setup(stop_from=(2, 5, 9, 3))  # episodes of 3, 6, 10 and 4 steps
    lim = selection_limits(mask.sum(dim=1), 1, 16, None)
    with torch.no_grad():
        dec.calls = 0
        ro = run_selection(dec, mem, mask, *lim, 16, train=False, sync_every=chunk)
    assert ro.steps.tolist() == [3, 6, 10, 4]
    assert dec.calls == min(16, math.ceil(10 / chunk) * chunk)  # whole chunks, then one read of all(done)


def test_stepprune_loop_engine_defaults_and_errors(llava, make_batch, make_context, small):
    method = stepprune.build_method("stepprune", small).bind(llava)
    assert method.loop_engine(torch.device("cpu")) == "eager"
    assert method.loop_engine(torch.device("cuda")) == "graph"
    method.config.loop = "graph"
    with pytest.raises(ValueError, match="needs CUDA"):
        method.select(make_context(llava, make_batch(llava, 2, answers=False)))
    method.config.loop = "eager"
    assert method.loop_engine(torch.device("cuda")) == "eager"


# ------------------------------------------------------------------------------------------------ CUDA graphs
@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("chunk", [3, 16])
def test_graphed_loop_selects_what_the_eager_loop_selects(chunk):
    dec, mem, mask = _setup(device="cuda")
    lim = selection_limits(mask.sum(dim=1), 1, 16, None)
    with torch.no_grad():
        eager = run_selection(dec, mem, mask, *lim, 16, train=False, sync_every=chunk)
        graphed = GraphedLoop(dec, 4, 41, 16, chunk, mem.z.dtype)
        first = graphed.run(mem, mask, *lim)
        _same(eager, first)
        # Replays on new inputs reuse the capture: another memory, other stops, the same answers as eager.
        dec.stop_from.copy_(torch.tensor([1, 3, 4, 6]))
        mem2 = dec.memory(torch.nn.functional.layer_norm(torch.randn(4, 40, D, device="cuda"), (D,)))
        _same(run_selection(dec, mem2, mask, *lim, 16, train=False, sync_every=chunk), graphed.run(mem2, mask, *lim))
    assert first.count.tolist() == [2, 5, 9, 16]  # the first result was copied out, not overwritten


@cuda
@pytest.mark.gpu
def test_stepprune_selects_the_same_tokens_with_cuda_graphs(llava_path, make_batch, make_context, small):
    adapter = stepprune.load_backbone(llava_path, device="cuda")
    torch.manual_seed(0)
    method = stepprune.build_method("stepprune", {**small, "k_max": 20, "sync_every": 8}).bind(adapter)
    ctx = make_context(adapter, make_batch(adapter, 3, answers=False))
    method.config.loop = "eager"
    eager = method.select(ctx)
    eager_diag = dict(method.last_diagnostics)
    method.config.loop = "auto"  # = graph on CUDA
    for _ in range(2):  # captured on the first call, replayed on the second
        graphed = method.select(ctx)
        assert torch.equal(eager.source_index, graphed.source_index) and torch.equal(eager.count, graphed.count)
        assert torch.equal(eager_diag["selection_order"], method.last_diagnostics["selection_order"])
    assert len(method._graph_loops) == 1
