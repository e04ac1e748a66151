"""The built-in speech (1D) plugin: audio through PyAV, a strided/dilated conv codec, speech losses."""

from vqtoolkit.hookspecs import hookimpl
from vqtoolkit.modality import Modality

from .dataset import speech_dataset
from .io import AUDIO_EXTENSIONS, AudioWriter, audio_info, read_audio, stream_audio, write_audio
from .losses import SpeechLoss, log_mel_distance, si_snr
from .nn import SpeechDecoder, SpeechEncoder


def _stream_writer(path, meta, audio_rate: int = 0):
    return AudioWriter(path, meta["sample_rate"])


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
            meta={"sample_bits": 16},  # the bin width of the bits/dim bound
        ),
    )


@hookimpl
def register_encoders(register):
    register("speech", SpeechEncoder)


@hookimpl
def register_decoders(register):
    register("speech", SpeechDecoder)


@hookimpl
def register_losses(register):
    register("speech", SpeechLoss)


@hookimpl
def register_metrics(register):
    register("si_snr", si_snr, higher_is_better=True)
    register("log_mel_distance", log_mel_distance, higher_is_better=False)
