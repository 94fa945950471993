"""The inference pointer loop captured as CUDA graphs, in chunks, with an early exit (spec Sec. 9.1 item 6b).

At batch 1 one decoder step is a chain of ~40 small kernels, so the eager loop is bound by the CPU launching them
(Sec. 9.2). :class:`GraphedLoop` records ``chunk`` steps of :func:`stepprune.selector.loop.loop_step` — the very
function the eager loop runs — as one CUDA graph on static buffers, then replays it: per chunk one launch and one
host read of the single ``all(done)`` flag. A trailing graph of ``k_max % chunk`` steps keeps the loop exactly
``k_max`` steps long, as the eager loop is, so both run the same steps on the same buffers and select the same
tokens (tested).

Static buffers: the memory (Z, each layer's cross-attention K/V, the pointer keys — laid out exactly as
:meth:`PointerDecoder.memory` lays them out, so the same kernels run), the token mask and the per-sample limits
are copied in per call; the loop state (:class:`~stepprune.selector.loop.LoopState`) is reset in
place. The decoder's parameters are read from where they are when the graphs are captured: build a new
:class:`GraphedLoop` after moving or replacing them (:meth:`GraphedLoop.matches` checks the storage).

Example::

    loop = GraphedLoop(decoder, batch=8, slots=577, k_max=192, chunk=16, dtype=torch.bfloat16)
    rollout = loop.run(mem, token_mask, k_min, cap)     # == run_selection(..., train=False, sync_every=16)
"""

from __future__ import annotations

import torch
from torch import Tensor

from stepprune.selector.decoder import Memory, PointerDecoder
from stepprune.selector.loop import LoopState, Rollout, run_steps


class GraphedLoop:
    """Captured inference loop for one (batch, slots, k_max, chunk, dtype) on one CUDA device.

    Args:
        decoder: the pointer decoder (on a CUDA device, inference mode).
        batch: B. slots: N+1 memory slots. k_max: the loop bound and selection width.
        chunk: steps per captured graph (host reads of all(done) happen between chunks only).
        dtype: the decoder's activation dtype (of Z and the memory K/V).
        tau: softmax temperature used by the diagnostics.
        diagnostics: accumulate the Eq. (9) diagnostics on the device (as the eager loop does).
    """

    def __init__(self, decoder: PointerDecoder, batch: int, slots: int, k_max: int, chunk: int,
                 dtype: torch.dtype, *, tau: float = 1.0, diagnostics: bool = True):
        device = next(decoder.parameters()).device
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need the decoder on a CUDA device, not {device}")
        self.decoder, self.k_max, self.chunk, self.tau = decoder, k_max, chunk, tau
        self.key = (batch, slots, k_max, chunk, dtype, diagnostics)
        self._storage = self._param_storage(decoder)
        with torch.no_grad():  # the production layout (strided K/V views of one GEMM), so kernels match eager
            self.mem = decoder.memory(torch.zeros(batch, slots - 1, decoder.d, device=device, dtype=dtype))
        self.token_mask = torch.ones(batch, slots - 1, dtype=torch.bool, device=device)
        self.k_min = torch.zeros(batch, dtype=torch.long, device=device)
        self.cap = torch.full((batch,), k_max, dtype=torch.long, device=device)
        self.state = LoopState.allocate(decoder, batch, slots, k_max, device, dtype, diagnostics=diagnostics)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        with torch.no_grad():
            # Capture every chunk length the loop will replay before the first run: a capture needs a warm-up
            # that writes the state, which must not happen in the middle of an episode.
            for steps in sorted({min(chunk, k_max), k_max % chunk} - {0}):
                self.graphs[steps] = self._capture(steps)

    @staticmethod
    def _param_storage(decoder: PointerDecoder) -> tuple[int, ...]:
        return tuple(p.data_ptr() for p in decoder.parameters())

    def matches(self, decoder: PointerDecoder, batch: int, slots: int, k_max: int, chunk: int, dtype: torch.dtype,
                diagnostics: bool) -> bool:
        """Whether this capture can serve a call with these shapes (and the decoder's weights where they were)."""
        return (decoder is self.decoder and self.key == (batch, slots, k_max, chunk, dtype, diagnostics)
                and self._param_storage(decoder) == self._storage)

    def _capture(self, steps: int) -> torch.cuda.CUDAGraph:
        """Records ``steps`` loop steps on the static buffers (after a warm-up on a side stream)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # cuBLAS/cuDNN initialise their workspaces outside the capture
            self.state.reset_(self.decoder, self.token_mask)
            run_steps(self.decoder, self.mem, self.state, self.k_min, self.cap, steps, self.tau)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run_steps(self.decoder, self.mem, self.state, self.k_min, self.cap, steps, self.tau)
        return graph

    @torch.no_grad()
    def run(self, mem: Memory, token_mask: Tensor, k_min: Tensor, cap: Tensor) -> Rollout:
        """One batch's episode: copies the inputs in, resets the state, replays chunks until every sample is done
        (or ``k_max`` steps ran). Returns copies of the state (the buffers are reused by the next call).

        Args:
            mem: the batch's memory (same shapes as at construction).
            token_mask: (B, N) bool valid image slots. k_min, cap: (B,) long limits.
        """
        self.mem.z.copy_(mem.z)
        for dst, src in zip(self.mem.keys + self.mem.values, mem.keys + mem.values):
            dst.copy_(src)
        if self.mem.pointer_keys is not None:
            self.mem.pointer_keys.copy_(mem.pointer_keys)
        self.token_mask.copy_(token_mask)
        self.k_min.copy_(k_min)
        self.cap.copy_(cap)
        self.state.reset_(self.decoder, self.token_mask)
        for start in range(0, self.k_max, self.chunk):
            end = min(start + self.chunk, self.k_max)
            self.graphs[end - start].replay()
            if end < self.k_max and bool(self.state.done.all()):  # the one host read per chunk
                break
        return self.state.rollout(clone=True)
