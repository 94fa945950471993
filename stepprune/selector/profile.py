"""Cost measurements of the selector: parameter counts (on the meta device, no weights) and the wall time of one
inference decoder step of the batched pointer loop, for any width, batch and device.

Used by ``jobs/bench_selector_step.py`` (CPU numbers) and meant for the device measurements of spec Sec. 9.4.

Example::

    from stepprune.selector.profile import parameter_counts, decoder_step_time
    parameter_counts(StepPruneConfig(d_tok=1024, d_llm=4096, token_group=1))
    decoder_step_time(StepPruneConfig(d_tok=1024, d_llm=4096, token_group=1), batch=16, tokens=576)
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from stepprune.selector.config import StepPruneConfig
from stepprune.selector.graphs import GraphedLoop
from stepprune.selector.loop import run_selection
from stepprune.selector.method import StepPrune


def parameter_counts(config: StepPruneConfig) -> dict[str, int]:
    """Trainable parameters per part of a bound config, counted on the meta device (nothing is allocated).

    Returns:
        ``{"encoder", "text_projection" (W_t, inside the encoder), "decoder" (incl. pointer head, e_start,
        e_STOP, step embeddings), "decoder_per_step" (what one step reads: the decoder layers and the pointer
        query projection), "denoiser", "total"}``.
    """
    with torch.device("meta"):
        method = StepPrune(dataclasses.replace(config))
    count = lambda module: sum(p.numel() for p in module.parameters()) if module is not None else 0  # noqa: E731
    dec = method.decoder
    per_step = count(dec.layers) + count(dec.ln_out) + count(dec.pointer_q)
    return {
        "encoder": count(method.encoder),
        "text_projection": count(method.encoder.text_proj),
        "decoder": count(dec),
        "decoder_per_step": per_step,
        "denoiser": count(method.denoiser),
        "total": count(method),
    }


LOOPS = ("plain", "chunked", "graph")


@torch.no_grad()
def loop_step_times(
    config: StepPruneConfig,
    batch: int,
    tokens: int,
    loops: tuple[str, ...] = ("chunked",),
    steps: int = 32,
    repeats: int = 3,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Median seconds per inference decoder step of each ``loop``, on one random selector and memory, the loops
    timed round-robin (so a ratio of two is measured in one run under the same machine load).

    The memory (Z and its K/V/pointer-key GEMM) is built once outside the timed region; the stop slot is blocked
    (K_min = cap = ``steps``) so every repeat runs exactly ``steps`` steps (KV-cached decoder step, masked pointer
    logits, argmax, state update, feedback) of each loop:

    * ``"plain"``: :func:`run_selection` reading ``all(done)`` after every step;
    * ``"chunked"``: :func:`run_selection` reading it once per ``config.sync_every`` steps (the eager default);
    * ``"graph"``: :class:`~stepprune.selector.graphs.GraphedLoop`, ``sync_every``-step chunks replayed as CUDA
      graphs (captured before the timed repeats; CUDA only).

    Args:
        config: a bound config (d, heads, decoder_layers; d_tok/d_llm are irrelevant here).
        batch: B. tokens: N image slots. steps: loop steps per repeat (also the cache size).
        repeats: timed repeats after one warm-up of each loop.
        device, dtype: where and in which precision the decoder runs.
        threads: torch intra-op threads for the measurement (restored afterwards); None leaves it.

    Returns:
        ``{loop: seconds per step}`` and ``"memory"``: the one-off memory GEMM's seconds.
    """
    unknown = set(loops) - set(LOOPS)
    if unknown:
        raise ValueError(f"unknown loop(s) {sorted(unknown)}; choose from {LOOPS}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        cfg = dataclasses.replace(config, k_max=steps)
        method = StepPrune(cfg).to(device=device, dtype=dtype).eval()
        dec = method.decoder
        h_v = torch.nn.functional.layer_norm(torch.randn(batch, tokens, cfg.d, device=device, dtype=dtype), (cfg.d,))
        mask = torch.ones(batch, tokens, dtype=torch.bool, device=device)
        limit = torch.full((batch,), steps, dtype=torch.long, device=device)

        def sync() -> None:
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()

        sync()
        t0 = time.perf_counter()
        mem = dec.memory(h_v)
        sync()
        out = {"memory": time.perf_counter() - t0}
        runs = {}
        for loop in loops:
            if loop == "graph":
                graphed = GraphedLoop(dec, batch, tokens + 1, steps, cfg.sync_every, dtype, diagnostics=False)
                runs[loop] = lambda g=graphed: g.run(mem, mask, limit, limit)
            else:
                every = 1 if loop == "plain" else cfg.sync_every
                runs[loop] = lambda e=every: run_selection(dec, mem, mask, limit, limit, steps, train=False,
                                                           sync_every=e, diagnostics=False)
        times: dict[str, list[float]] = {loop: [] for loop in loops}
        for r in range(repeats + 1):
            for loop, run in runs.items():
                sync()
                t0 = time.perf_counter()
                ro = run()
                sync()
                if r:  # the first round is a warm-up
                    times[loop].append(time.perf_counter() - t0)
                if int(ro.count.min()) != steps:
                    raise RuntimeError(f"the timed {loop} loop did not run the requested number of steps")
        out.update({loop: statistics.median(t) / steps for loop, t in times.items()})
        return out
    finally:
        torch.set_num_threads(previous)


def decoder_step_time(
    config: StepPruneConfig,
    batch: int,
    tokens: int,
    steps: int = 32,
    repeats: int = 3,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    threads: int | None = None,
    seed: int = 0,
    loop: str = "chunked",
) -> dict[str, float]:
    """Seconds per inference decoder step of one ``loop`` (:func:`loop_step_times`; default: the eager chunked
    loop), with random weights and a random memory.

    Returns:
        ``{"per_step_s", "memory_s" (the one-off memory GEMM), "batch", "tokens", "steps", "threads", "loop"}``.
    """
    previous = torch.get_num_threads()
    out = loop_step_times(config, batch, tokens, (loop,), steps, repeats, device, dtype, threads, seed)
    used = threads if threads is not None else previous
    return {"per_step_s": out[loop], "memory_s": out["memory"], "batch": batch, "tokens": tokens, "steps": steps,
            "threads": used, "loop": loop}
