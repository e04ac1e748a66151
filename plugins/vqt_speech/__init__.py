"""The built-in speech (1D) plugin: audio through PyAV, conv codecs (the paper's, SEANet, Vocos), speech
losses and waveform discriminators."""

import math
from pathlib import Path

import torch

from vqtoolkit.hookspecs import hookimpl
from vqtoolkit.modality import Modality, check_numbers
from vqtoolkit.pictures import save_waveform_reconstructions

from .dataset import speech_dataset
from .discriminators import MultiPeriodDiscriminator, MultiResolutionSTFTDiscriminator
from .io import AUDIO_EXTENSIONS, AudioWriter, audio_info, read_audio, stream_audio, write_audio
from .losses import SpeechLoss, log_mel_distance, si_snr
from .nn import SpeechDecoder, SpeechEncoder
from .seanet import SEANetDecoder, SEANetEncoder, VocosDecoder, VocosEncoder

SHIPPED_MODEL = Path(__file__).resolve().parent / "models" / "speech"  # see its MODEL_CARD.md


def _stream_writer(path, meta, audio_rate: int = 0):
    return AudioWriter(path, meta["sample_rate"])


def _report_picture(originals, reconstructions, path, options: dict):
    from vqtoolkit.report import speech_comparison

    return speech_comparison(originals, reconstructions, path, int(options.get("sample_rate", 16000)))


def _report_examples(dataset, options: dict, count: int) -> torch.Tensor:
    """About 2 s of consecutive windows from two places of the held-out speech, so that spectrograms show
    speech rather than fragments."""
    rate = int(options.get("sample_rate", 16000))
    windows = min(len(dataset), math.ceil(2 * rate / dataset[0].shape[-1]))
    starts = sorted({0, max(0, len(dataset) // 2 - windows // 2)})
    return torch.stack([torch.cat([dataset[s + i] for i in range(windows)], -1) for s in starts])


@hookimpl
def register_modalities(register):
    register(
        "speech",
        Modality(
            name="speech",
            rank=1,
            extensions=AUDIO_EXTENSIONS,
            dataset=speech_dataset,
            encoder="speech",
            decoder="speech",
            loss="speech",
            metrics=("si_snr", "log_mel_distance"),
            value_range=(-1.0, 1.0),
            read=read_audio,
            write=write_audio,
            stream=stream_audio,
            stream_writer=_stream_writer,
            info=audio_info,
            check_media=check_audio_meta,
            picture=save_waveform_reconstructions,
            report_picture=_report_picture,
            report_picture_name="speech.png",
            report_examples=_report_examples,
            report_samples=2,
            suffix=".wav",
            sample_bits=16,
            time_rate=lambda media: media["sample_rate"],
            example_grid=lambda options: [int(options.get("segment", 16384))],
            default_model=str(SHIPPED_MODEL) if (SHIPPED_MODEL / "model.safetensors").is_file() else "",
        ),
    )


@hookimpl
def register_encoders(register):
    register("speech", SpeechEncoder)
    register("seanet", SEANetEncoder)
    register("vocos", VocosEncoder)


@hookimpl
def register_decoders(register):
    register("speech", SpeechDecoder)
    register("seanet", SEANetDecoder)
    register("vocos", VocosDecoder)


@hookimpl
def register_discriminators(register):
    register("mpd", MultiPeriodDiscriminator)
    register("mrstft", MultiResolutionSTFTDiscriminator)


@hookimpl
def register_losses(register):
    register("speech", SpeechLoss)


@hookimpl
def register_metrics(register):
    register("si_snr", si_snr, higher_is_better=True)
    register("log_mel_distance", log_mel_distance, higher_is_better=False)


@hookimpl
def register_commands(cli):
    import click

    @cli.command("speech-corpus")
    @click.argument("out_dir", type=click.Path(file_okay=False))
    @click.option("--workers", default=2, show_default=True, help="Decoding processes.")
    def speech_corpus(out_dir, workers):
        """Build a multi-speaker 16 kHz speech corpus in OUT_DIR from Debian packages.

        Sources: festvox-ru (100 min, one male studio voice), the Asterisk prompts in English, Spanish,
        Russian, French and Italian, and the Tux Paint stamp descriptions in eleven languages. Held out
        by speaker: OUT_DIR/test holds the French and Italian Asterisk voices and the Danish and Greek
        Tux Paint voices, OUT_DIR/train the rest. OUT_DIR/README.md lists sources and licences.

        \b
        Install the sources first (as root):
          apt-get install festvox-ru asterisk-core-sounds-{en,es,fr,it,ru}-g722 tuxpaint-stamps-default
        Examples:
          vqt speech-corpus data/speech           # where recipes/speech_vqvae.yaml reads it
          vqt train recipes/speech_vqvae.yaml
        """
        from pathlib import Path

        from vqtoolkit.errors import VQTError
        from vqtoolkit.progress import progress

        from .corpus import build_corpus, count_files

        out = Path(out_dir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise VQTError(f"{out}: exists and is not an empty folder; give a new folder")
        with progress(total=count_files(), desc="speech corpus", unit="file") as bar:
            found = build_corpus(out, workers, bar.update)
        for split in ("train", "test"):
            minutes = sum(i["seconds"] for i in found.values() if i["split"] == split) / 60
            speakers = sum(1 for i in found.values() if i["split"] == split and i["files"])
            click.echo(f"{out / split}: {minutes:.1f} minutes from {speakers} speakers")
        missing = [s for s, i in found.items() if not i["files"]]
        if missing:
            click.echo(f"not installed, skipped: {', '.join(missing)}", err=True)


def check_audio_meta(media: dict) -> None:
    """What decoding a speech codes file takes from its media metadata, in sane ranges."""
    check_numbers(media, {"sample_rate": (int, 1000, 384000), "length": (int, 0, 2**40)}, ("sample_rate",))
    if "source" in media:
        check_numbers(media["source"], {"source_rate": (int, 1, 10**6), "source_channels": (int, 1, 64)})
