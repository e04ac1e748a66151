"""Regenerate asterisk_small/ from the Debian package asterisk-core-sounds-en-g722 (standalone script).

    apt-get install -y asterisk-core-sounds-en-g722
    python plugins/vqt_speech/data/make_subset.py [--source DIR] [--every 3]

Takes the English voice prompts (raw G.722, 16 kHz mono, 8000 bytes per second) in sorted path order,
skips the silence/ folder and the two beep prompts (*-2tone), keeps prompts of 2 to 30 s, and copies
every 3rd of those (the 1st, 4th, 7th, ...) unchanged; a prompt in a subfolder gets the folder in its
file name (dictate/play_help.g722 -> dictate-play_help.g722). Deterministic: same package, same files.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

SOURCE = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
TARGET = Path(__file__).resolve().parent / "asterisk_small"
BYTES_PER_SECOND = 8000  # G.722 at 64 kbit/s
MIN_SECONDS, MAX_SECONDS = 2.0, 30.0


def choose(source: Path, every: int) -> list[Path]:
    prompts = sorted(p for p in source.rglob("*.g722") if p.is_file())
    speech = [
        p
        for p in prompts
        if p.parent.name != "silence"
        and not p.stem.endswith("-2tone")
        and MIN_SECONDS * BYTES_PER_SECOND < p.stat().st_size <= MAX_SECONDS * BYTES_PER_SECOND
    ]
    return speech[::every]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="the installed en_US_f_Allison folder")
    parser.add_argument("--every", type=int, default=3, help="keep every n-th prompt of 2 to 30 s")
    args = parser.parse_args()
    if not args.source.is_dir():
        raise SystemExit(f"{args.source}: not found; apt-get install asterisk-core-sounds-en-g722")
    chosen = choose(args.source, args.every)
    TARGET.mkdir(exist_ok=True)
    for old in TARGET.glob("*.g722"):
        old.unlink()
    for prompt in chosen:
        name = "-".join(prompt.relative_to(args.source).parts)
        shutil.copyfile(prompt, TARGET / name)
    total = sum(p.stat().st_size for p in chosen)
    minutes = total / BYTES_PER_SECOND / 60
    print(f"{len(chosen)} prompts, {total / 1e6:.2f} MB, {minutes:.1f} minutes -> {TARGET}")


if __name__ == "__main__":
    main()
