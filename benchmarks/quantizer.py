"""Quantizer speed and memory: one training step (forward, backward, EMA codebook update) of vqtoolkit's
VectorQuantizer against vector-quantize-pytorch's VectorQuantize and against the floor, and the peak
memory of one step at K = 65,536.

    python benchmarks/quantizer.py                   # K = 512, 1024, 8192; memory at K = 65,536, N = 4,096
    python benchmarks/quantizer.py --quick --json quantizer.json    # K = 512, 1024; memory at N = 2,048

Both get the same latents (64, 64, 32, 32): N = 65,536 vectors of D = 64, and the same codebook (a
normal draw, as a k-means init from such latents would give): EMA decay 0.99, commitment weight 0.25,
Laplace smoothing 1e-5, plain straight-through (the peer's rotation trick off), no k-means, no dead-code
replacement, train mode. A step is the forward pass (which makes the EMA update, in both), then the
backward pass from a fixed upstream gradient of z_q (a normal draw, what a decoder would send back) plus
the quantizer's own loss: the quantizer's work alone, no stand-in decoder loss whose backward the floor
does not pay either. After a warm-up, ours, the nine floors, our search alone, the bare GEMM and the
peer run interleaved in that order, 21 rounds (the peer in every third above K = 1,024, where its step
takes 20 s or more); each time is the median of its rounds, and step / floor and the speed-up over the
peer are medians of the per-round ratios, so that the machine's drift between rounds cancels. The first
step of each must give identical codes (same codebook, same inputs, before any EMA update); the
codebooks after that step are compared too. Each timed step's page faults are counted as well (the
table gives ours, the mean per step).

The floor is the fastest exact nearest-code search we can write: one GEMM per chunk of rows into one
reused block, then each chunk's row minimum (torch.min with indices), so no N x K matrix is ever held.
The ||e||^2 bias rides in the GEMM (rows [x, 1] times [-2e, ||e||^2], laid out before the clock starts,
which no quantizer step gets for free); it is timed at three chunk sizes (blocks of 2^20, 2^22 and
2^24 floats) and with the augmented codebook stored both ways round (the GEMM reads it as (D + 1) x K
or as the transpose of K x (D + 1)), and, at the same three sizes, as a search on the channel-first
latents themselves (one GEMM per example, its (D, G) matrix read transposed, the bias added by addmm).
The fastest of the nine medians is the floor. Picking the least of nine noisy medians errs low, never
high, so the ratio errs against our step; timed in every round, the nine variants' medians have noise of
a few percent each. A whole training step cannot be faster than the floor; a step that seems to be
means the floor is wrong. The unchunked product alone (`gemm`) is printed beside it.

FSQ and LFQ: one training step (forward, and backward from the same kind of upstream gradient plus the
quantizer's loss) of ours
against the peer's FSQ (levels 8, 5, 5, 5) and LFQ (10 bits, entropy weight 0.1), both projecting the
D = 64 latents to their channels and back.

The process keeps freed memory for the next step as `vqt train` does
(vqtoolkit/memory.py::keep_freed_memory), for ours, the peer and the floor alike; --system-malloc
(VQT_SYSTEM_MALLOC=1) times them with glibc's own settings instead. The page-fault counts show
whether the setting changes a step's memory traffic (in this process the peer's large blocks raise
glibc's own threshold early, so our step faults little under either).

Peak memory: each side runs one step in a fresh process, capped at --memory-cap-gb of address space so
that the peer's N x K matrices cannot exhaust the machine; the figure is the peak resident memory during
the step above the resident memory just before it (the kernel's high-water mark, reset before the step)
or, on CUDA, torch.cuda.max_memory_allocated above the memory allocated before it. The peer needs about
six fp32 N x K matrices at once (6.5 GB at N = 4,096), so the test uses a small N; the full run also
measures ours at N = 65,536 and extrapolates the peer's peak linearly in N.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from einops import rearrange
from peers import PEER, machine

from vqtoolkit.memory import SYSTEM_MALLOC_ENV, keep_freed_memory, peak_kib, restart_peak
from vqtoolkit.nn.quantize import VectorQuantizer, _latent_rows

DIM, DECAY, BETA = 64, 0.99, 0.25
GRID = (32, 32)  # N = batch * 1024


def quantizers(codebook: torch.Tensor, sides: tuple[str, ...]) -> dict[str, torch.nn.Module]:
    """Ours and/or the peer, configured alike and holding the same codebook."""
    size, device = codebook.shape[0], codebook.device
    made = {}
    if "ours" in sides:
        ours = VectorQuantizer(DIM, size, BETA, ema=True, decay=DECAY, kmeans_init=False, dead_code_steps=0)
        ours.codebook.copy_(codebook)
        ours.ema_sum.copy_(codebook)
        made["ours"] = ours.to(device).train()
    if "peer" in sides:
        from vector_quantize_pytorch import VectorQuantize

        peer = VectorQuantize(
            dim=DIM, codebook_size=size, decay=DECAY, commitment_weight=BETA, eps=1e-5, kmeans_init=False,
            threshold_ema_dead_code=0, rotation_trick=False, accept_image_fmap=True,
        )  # fmt: skip
        with torch.no_grad():
            peer._codebook.embed.copy_(codebook[None])
            peer._codebook.embed_avg.copy_(codebook[None])
            peer._codebook.cluster_size.fill_(1.0)
        made["peer"] = peer.to(device).train()
    return made


def step(side: str, quantizer: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Forward (with the EMA update), then backward from a fixed upstream gradient of z_q plus the
    quantizer's loss; returns the codes."""
    z = latents.detach().requires_grad_()
    if side == "ours":
        out = quantizer(z)
        z_q, codes, loss = out.z, out.codes, out.loss
    else:
        z_q, codes, loss = quantizer(z)
    backward(z_q, loss)
    return codes


def upstream(like: torch.Tensor) -> torch.Tensor:
    """A fixed gradient for z_q, as a decoder would send back (the same for every step of a shape)."""
    key = (tuple(like.shape), like.device)
    if key not in _UPSTREAM:
        generator = torch.Generator().manual_seed(1)
        _UPSTREAM[key] = (1e-3 * torch.randn(like.shape, generator=generator)).to(like.device)
    return _UPSTREAM[key]


_UPSTREAM: dict = {}


def backward(z_q: torch.Tensor, loss) -> None:
    """Backward from `upstream` into z_q and from the quantizer's own loss (0 when it has none)."""
    tensors, grads = [z_q], [upstream(z_q)]
    if isinstance(loss, torch.Tensor) and loss.requires_grad:
        tensors.append(loss)
        grads.append(None)
    torch.autograd.backward(tensors, grads)


def codebook_of(side: str, quantizer: torch.nn.Module) -> torch.Tensor:
    return quantizer.codebook if side == "ours" else quantizer._codebook.embed[0]


def timed(fn, device: str) -> float:
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed(codebook_size: int, batch: int, warmup: int, repeats: int, peer_every: int, device: str) -> dict:
    generator = torch.Generator().manual_seed(codebook_size)
    codebook = torch.randn(codebook_size, DIM, generator=generator).to(device)
    latents = torch.randn(batch, DIM, *GRID, generator=generator).to(device)
    pair = quantizers(codebook, ("ours", "peer"))
    codes = {side: step(side, vq, latents).flatten() for side, vq in pair.items()}
    after = {side: codebook_of(side, vq).clone() for side, vq in pair.items()}

    rows = rearrange(latents, "b d h w -> (b h w) d").contiguous()
    squared_norms = codebook.pow(2).sum(1)

    augmented = torch.cat([rows, torch.ones_like(rows[:, :1])], 1)  # [x, 1]
    by_code = torch.cat([-2 * codebook, squared_norms[:, None]], 1)  # (K, D + 1)
    layouts = {"nn": by_code.t().contiguous(), "nt": by_code.t()}  # (D + 1, K) stored either way round

    def chunked_search(block_floats: int, augmented_codebook: torch.Tensor):
        chunk = max(1, min(rows.shape[0], block_floats // codebook_size))
        block = rows.new_empty(chunk, codebook_size)
        minimum = rows.new_empty(chunk)

        @torch.no_grad()
        def search() -> torch.Tensor:
            codes = torch.empty(rows.shape[0], dtype=torch.long, device=rows.device)
            for start in range(0, rows.shape[0], chunk):
                end = min(start + chunk, rows.shape[0])
                distances = torch.mm(augmented[start:end], augmented_codebook, out=block[: end - start])
                torch.min(distances, dim=1, out=(minimum[: end - start], codes[start:end]))
            return codes

        return search

    columns = latents.view(batch, DIM, -1)  # channel-first latents as they lie: (B, D, G)
    weights, norms = -2 * codebook.t(), squared_norms

    def in_place_search(block_floats: int):
        """The chunked search on the channel-first latents themselves: per example (or part of one, for a
        small block) a GEMM of its (D, G) matrix read transposed, the ||e||^2 bias added by the GEMM
        (addmm), no copy into rows."""
        grid = columns.shape[2]
        block_rows = max(1, block_floats // codebook_size)
        span = min(grid, block_rows)  # cells of one example per GEMM
        per_block = max(1, block_rows // grid) if span == grid else 1  # examples per block
        block = rows.new_empty(per_block * span, codebook_size)
        minimum = rows.new_empty(per_block * span)

        @torch.no_grad()
        def search() -> torch.Tensor:
            codes = torch.empty(batch, grid, dtype=torch.long, device=rows.device)
            for first in range(0, batch, per_block):
                last = min(first + per_block, batch)
                for start in range(0, grid, span):
                    for example in range(first, last):
                        part = block[(example - first) * span : (example - first + 1) * span]
                        torch.addmm(norms, columns[example, :, start : start + span].t(), weights, out=part)
                    used = (last - first) * span
                    out = codes[first:last, start : start + span]  # contiguous: whole rows, or part of one
                    torch.min(block[:used], dim=1, out=(minimum[:used], out.view(-1)))
            return codes.view(-1)

        return search

    floors = {
        f"floor_{exponent}_{layout}": chunked_search(2**exponent, matrix)
        for exponent in (20, 22, 24)
        for layout, matrix in layouts.items()
    }
    floors |= {f"floor_{exponent}_in_place": in_place_search(2**exponent) for exponent in (20, 22, 24)}

    @torch.no_grad()
    def gemm() -> torch.Tensor:
        return rows @ codebook.t()

    @torch.no_grad()
    def search() -> torch.Tensor:  # our own nearest-code search alone, to see what the rest of a step costs
        return pair["ours"]._nearest(_latent_rows(latents), pair["ours"].codebook)

    floor_codes = floors["floor_22_nn"]()
    assert torch.equal(floors["floor_22_in_place"](), floor_codes)
    steps = {side: (lambda side=side, vq=vq: step(side, vq, latents)) for side, vq in pair.items()}
    runs = {"ours": steps["ours"], **floors, "search": search, "gemm": gemm, "peer": steps["peer"]}
    for _ in range(warmup):
        for run in runs.values():
            run()
    times, faults = {name: [] for name in runs}, {name: [] for name in runs}
    for index in range(repeats):  # interleaved: ours, the nine floors, search, gemm, the peer, ours, ...
        for name, run in runs.items():
            if name == "peer" and index % peer_every:
                continue
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            times[name].append(timed(run, device))
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    floor_name = min(floors, key=lambda name: ms[name])
    ms["floor"] = ms[floor_name]
    # per round, so that the machine's drift between rounds cancels
    to_floor = [ours / floor for ours, floor in zip(times["ours"], times[floor_name], strict=True)]
    vs_peer = [peer / ours for ours, peer in zip(times["ours"][::peer_every], times["peer"], strict=True)]
    return {
        "codebook_size": codebook_size,
        "rows": latents.numel() // DIM,
        **{f"{name}_ms": value for name, value in ms.items()},
        "speedup_vs_peer": statistics.median(vs_peer),
        "ratio_to_floor": statistics.median(to_floor),
        "floor_variant": floor_name,
        "ratio_to_gemm": ms["ours"] / ms["gemm"],
        "search_fraction": ms["search"] / ms["ours"],
        "codes_identical": torch.equal(codes["ours"], codes["peer"]),
        "codes_identical_to_floor": torch.equal(codes["ours"], floor_codes),
        "codebook_max_diff_after_ema": (after["ours"] - after["peer"]).abs().max().item(),
        "times_ms": {name: [1000 * t for t in values] for name, values in times.items()},
        "page_faults_per_step": {name: statistics.mean(values) for name, values in faults.items()},
    }


def scalar_speed(batch: int, warmup: int, repeats: int, device: str) -> list[dict]:
    """One training step of our FSQ and LFQ against the peer's, interleaved; medians in ms."""
    from vector_quantize_pytorch import FSQ as PeerFSQ
    from vector_quantize_pytorch import LFQ as PeerLFQ

    from vqtoolkit.nn.scalar import FSQ, LFQ

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(batch, DIM, *GRID, generator=generator).to(device)
    made = {
        "fsq": (FSQ(DIM, [8, 5, 5, 5]), PeerFSQ(levels=[8, 5, 5, 5], dim=DIM, channel_first=True)),
        "lfq": (LFQ(DIM, bits=10), PeerLFQ(dim=DIM, codebook_size=1024, entropy_loss_weight=0.1)),
    }

    def ours_step(quantizer) -> None:
        z = latents.detach().requires_grad_()
        out = quantizer(z)
        backward(out.z, out.loss)

    def peer_step(quantizer, method: str) -> None:
        z = latents.detach().requires_grad_()
        if method == "fsq":
            z_q, loss = quantizer(z)[0], 0.0
        else:  # the peer's LFQ takes channel-last vectors
            rows = rearrange(z, "b d h w -> b (h w) d")
            z_q, _, loss = quantizer(rows)
        backward(z_q, loss)

    results = []
    for method, (ours, peer) in made.items():
        ours, peer = ours.to(device).train(), peer.to(device).train()
        runs = {"ours": lambda q=ours: ours_step(q), "peer": lambda q=peer, m=method: peer_step(q, m)}
        for _ in range(warmup):
            for run in runs.values():
                run()
        times = {name: [] for name in runs}
        for _ in range(repeats):
            for name, run in runs.items():
                times[name].append(timed(run, device))
        ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
        results.append({"method": method, "ours_ms": ms["ours"], "peer_ms": ms["peer"],
                        "speedup_vs_peer": ms["peer"] / ms["ours"]})  # fmt: skip
    return results


def profile(codebook_size: int, batch: int, device: str) -> None:
    """torch.profiler's table of the ops in three of our steps, most time first."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    codebook = torch.randn(codebook_size, DIM).to(device)
    latents = torch.randn(batch, DIM, *GRID).to(device)
    ours = quantizers(codebook, ("ours",))["ours"]
    step("ours", ours, latents)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profiler(activities=activities) as prof:
        for _ in range(3):
            step("ours", ours, latents)
        if device == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    print(f"K={codebook_size}, three steps of ours:")
    print(prof.key_averages().table(sort_by=key, row_limit=14))


def memory_child(side: str, codebook_size: int, batch: int, device: str) -> None:
    """Runs in a fresh process: one step of `side`, then prints its peak memory above the start as JSON."""
    generator = torch.Generator().manual_seed(0)
    codebook = torch.randn(codebook_size, DIM, generator=generator).to(device)
    latents = torch.randn(batch, DIM, *GRID, generator=generator).to(device)
    quantizer = quantizers(codebook, (side,))[side]
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        step(side, quantizer, latents)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        start = restart_peak() * 1024
        step(side, quantizer, latents)
        peak = peak_kib() * 1024
    print(json.dumps({"peak_bytes": peak - start}))


def peak_mb(side: str, size: int, batch: int, device: str, cap_gb: float) -> tuple[float | None, str]:
    """Peak MB of one step of `side` in a fresh process (None if it failed) and the error it ended with."""
    command = [sys.executable, __file__, "--memory-child", side, "--sizes", str(size)]
    command += ["--batch", str(batch), "--device", device]
    cap = int(cap_gb * 2**30)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    capped = limit if device == "cpu" else None
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=capped)
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1][:300]
    return json.loads(done.stdout.splitlines()[-1])["peak_bytes"] / 2**20, ""


def memory(codebook_size: int, batch: int, full_batch: int | None, device: str, cap_gb: float) -> dict:
    rows = batch * GRID[0] * GRID[1]
    results = {"codebook_size": codebook_size, "rows": rows, "cap_gb": cap_gb}
    for side in ("ours", "peer"):
        results[f"{side}_peak_mb"], error = peak_mb(side, codebook_size, batch, device, cap_gb)
        if error:
            results[f"{side}_error"] = error
    ours, peer = results["ours_peak_mb"], results["peer_peak_mb"]
    results["peak_mem_ratio_vs_peer"] = ours / peer if ours and peer else None
    # the peer's distances alone: one fp32 N x K matrix (it also makes an N x K one-hot and temporaries)
    results["peer_distance_matrix_mb"] = rows * codebook_size * 4 / 2**20
    if full_batch:
        full_rows = full_batch * GRID[0] * GRID[1]
        results["full_rows"] = full_rows
        results["ours_full_peak_mb"], _ = peak_mb("ours", codebook_size, full_batch, device, cap_gb)
        results["peer_full_peak_mb_extrapolated"] = peer * full_rows / rows if peer else None
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="K = 512, 1024; 3 repeats; memory at N = 2,048")
    parser.add_argument("--sizes", type=int, nargs="+", help="codebook sizes K (default 512 1024 8192)")
    parser.add_argument("--batch", type=int, default=64, help="latents (batch, 64, 32, 32): N = batch * 1024")
    parser.add_argument(
        "--repeats", type=int, default=21, help="timed rounds per K (the peer's: a third of them above 1,024)"
    )
    parser.add_argument("--memory-size", type=int, default=65536, help="K for the peak-memory test")
    parser.add_argument("--memory-batch", type=int, help="batch for the memory test (default 4: N = 4,096)")
    parser.add_argument("--memory-cap-gb", type=float, default=12.0, help="address-space cap per side (CPU)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, all cores)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of our step")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--json", type=Path, help="write all results to this JSON file")
    parser.add_argument("--system-malloc", action="store_true", help="glibc's settings, not vqt train's")
    parser.add_argument("--memory-child", choices=["ours", "peer"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.system_malloc:  # the memory children inherit it
        os.environ[SYSTEM_MALLOC_ENV] = "1"
    kept_memory = keep_freed_memory()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.sizes[0], args.batch, device)
        return 0
    try:
        import vector_quantize_pytorch  # noqa: F401
    except ImportError:
        print(f"error: the peer is missing; install it with: pip install {PEER}", file=sys.stderr)
        return 1

    sizes = args.sizes or ([512, 1024] if args.quick else [512, 1024, 8192])
    if args.profile:
        for size in sizes:
            profile(size, args.batch, device)
    warmup, repeats = (1, 3) if args.quick else (2, args.repeats)

    def peer_every(size: int) -> int:  # a step of the peer takes 20 s or more above K = 1,024
        return 1 if args.quick or size <= 1024 else 3

    results = []
    for size in sizes:
        peer_rounds = len(range(0, repeats, peer_every(size)))
        print(
            f"K={size}: timing ours and the floor ({repeats} rounds), {PEER} ({peer_rounds})", file=sys.stderr
        )
        results.append(speed(size, args.batch, warmup, repeats, peer_every(size), device))
    print(f"FSQ and LFQ steps: ours and {PEER} ({repeats} rounds)", file=sys.stderr, flush=True)
    scalar = scalar_speed(args.batch, warmup, repeats, device)
    memory_batch = args.memory_batch or (2 if args.quick else 4)
    print(f"K={args.memory_size}: peak memory, one process per side", file=sys.stderr, flush=True)
    full_batch = None if args.quick else args.batch
    mem = memory(args.memory_size, memory_batch, full_batch, device, args.memory_cap_gb)

    header = (
        f"{'K':>6} {'ours ms':>9} {'search':>8} {'peer ms':>9} {'floor ms':>9} {'gemm ms':>9} {'speedup':>8}"
    )
    print(header + f" {'/floor':>7} {'codes identical':>16} {'faults/step':>12}  floor variant")
    for r in results:
        print(
            f"{r['codebook_size']:>6} {r['ours_ms']:>9.1f} {r['search_ms']:>8.1f} {r['peer_ms']:>9.1f} "
            f"{r['floor_ms']:>9.1f} "
            f"{r['gemm_ms']:>9.1f} {r['speedup_vs_peer']:>7.2f}x {r['ratio_to_floor']:>6.2f}x "
            f"{str(r['codes_identical']):>16} {r['page_faults_per_step']['ours']:>12,.0f}"
            f"  {r['floor_variant']}"
        )
    for r in scalar:
        print(
            f"{r['method']}: ours {r['ours_ms']:.1f} ms, peer {r['peer_ms']:.1f} ms, "
            f"{r['speedup_vs_peer']:.2f}x"
        )
    peer_mb = f"{mem['peer_peak_mb']:.0f} MB" if mem["peer_peak_mb"] else f"failed ({mem.get('peer_error')})"
    print(
        f"peak memory of one step at K={mem['codebook_size']}, N={mem['rows']}: "
        f"ours {mem['ours_peak_mb']:.0f} MB, "
        f"peer {peer_mb} (its N x K distance matrix alone: {mem['peer_distance_matrix_mb']:.0f} MB)"
    )
    if mem.get("ours_full_peak_mb"):
        extrapolated = mem["peer_full_peak_mb_extrapolated"]
        print(
            f"at N={mem['full_rows']}: ours {mem['ours_full_peak_mb']:.0f} MB; the peer's, extrapolated "
            f"linearly in N: {extrapolated / 1024 if extrapolated else float('nan'):.0f} GB"
        )
    speedup = min(r["speedup_vs_peer"] for r in results)
    to_floor = max(r["ratio_to_floor"] for r in results)
    identical = all(r["codes_identical"] for r in results)
    mem_ratio = mem["peak_mem_ratio_vs_peer"]
    targets = (4.0, 1.5) if device == "cpu" else (2.0, 2.0)
    goals = {
        f"speedup_at_least_{targets[0]:g}x": speedup >= targets[0],
        f"within_{targets[1]:g}x_of_floor": to_floor <= targets[1],
        "codes_identical": identical,
        "peak_memory_at_most_half_the_peer": mem_ratio is not None and mem_ratio <= 0.5,
        "fsq_and_lfq_at_least_the_peers_speed": all(r["speedup_vs_peer"] >= 1 for r in scalar),
    }
    print("goals: " + ", ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in goals.items()))
    threads = torch.get_num_threads()
    ks = "/".join(str(r["codebook_size"]) for r in results)
    mem_text = f"{mem_ratio:.3f}x" if mem_ratio is not None else "n/a (peer failed)"
    print(
        f"quantizer fwd+bwd+EMA: {speedup:.2f}x vs {PEER} (slowest K), {to_floor:.2f}x the floor's time, "
        f"codes identical {identical}, peak memory {mem_text} the peer's at K={mem['codebook_size']} "
        f"(K={ks}, D={DIM}, N={results[0]['rows']}, {threads} threads, "
        f"load {os.getloadavg()[0]:.1f}, {device}, freed memory {'kept' if kept_memory else 'returned'})"
    )
    if args.json:
        report = {
            "benchmark": "quantizer",
            "speedup_vs_peer": speedup,
            "ratio_to_floor": to_floor,
            "codes_identical": identical,
            "peak_mem_ratio_vs_peer": mem_ratio,
            "goals": goals,
            "results": results,
            "scalar": scalar,
            "memory": mem,
            "settings": {
                "dim": DIM,
                "decay": DECAY,
                "beta": BETA,
                "warmup": warmup,
                "repeats": repeats,
                "peer_rounds": {r["codebook_size"]: len(r["times_ms"]["peer"]) for r in results},
            },
            "freed_memory_kept": kept_memory,
            "load_average": os.getloadavg(),
            "machine": machine(device),
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
