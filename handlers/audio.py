"""An audio input's declared preprocessing, and the decode that applies it: WAV bytes -> mono float32
samples at the model's rate.

One ``AudioPreprocess`` per audio input, read from model-config.yaml (``audio:`` under the input). Per
clip: read the RIFF header and find the samples without touching them, refuse a clip longer than
allowed before any sample is converted (413) and one shorter than the model can take (422), convert
PCM (8/16/24/32-bit) or float samples to float32, average the channels to mono, and resample to the
model's rate with a band-limited (windowed-sinc) filter. Served requests and servekit's in-process
checks call the same ``decode``, so served answers equal in-process ones.

Only the standard library and numpy: no audio package is needed in the worker.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from handlers.errors import ConfigError, InvalidInput, MalformedRequest, TooLong, UnsupportedMediaType

PCM, IEEE_FLOAT, EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
PCM_BITS, FLOAT_BITS = (8, 16, 24, 32), (32, 64)
# WAV codecs seen in the wild that we recognise but do not decode (answered 415, not 400 "corrupt").
OTHER_CODECS = {0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM", 0x0050: "MPEG",
                0x0055: "MP3", 0x00FF: "AAC", 0x1610: "AAC"}
# Magic bytes of other audio containers (415 with their name).
OTHER_FORMATS = ((b"ID3", "MP3"), (b"\xff\xfb", "MP3"), (b"\xff\xf3", "MP3"), (b"\xff\xf2", "MP3"),
                 (b"fLaC", "FLAC"), (b"OggS", "Ogg"), (b"FORM", "AIFF"), (b"RF64", "RF64 WAV"),
                 (b"\x1aE\xdf\xa3", "WebM/Matroska"))
MAX_CHANNELS = 32
MIN_RATE, MAX_RATE = 1_000, 384_000  # Hz a clip may have before resampling
# Resampling builds a filter bank of (new rate / gcd) x taps values; rates whose ratio reduces badly
# (44_099 -> 16_000 Hz: 706 M values) are refused instead of computed. Common rates stay far below:
# 44.1 kHz -> 16 kHz is 76 k values, 48 kHz -> 16 kHz 13.
MAX_FILTER_VALUES = 4_000_000
FILTER_WIDTH = 6  # zero crossings each side of the sinc (torchaudio's default lowpass_filter_width)
ROLLOFF = 0.99  # cut-off as a fraction of the lower Nyquist rate (torchaudio's default)
DEFAULT_MAX_SECONDS = 10.0
ACCEPTED = "WAV (PCM 8/16/24/32-bit or float)"


def sniff_audio(data: bytes | bytearray | memoryview) -> str | None:
    """The audio container from its first bytes: "WAV", another one we refuse by name, or None."""
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "WAV"
    if head[4:8] == b"ftyp":
        return "MP4/M4A"
    return next((name for magic, name in OTHER_FORMATS if head.startswith(magic)), None)


@dataclass(frozen=True)
class WavHeader:
    """Where a WAV's samples are and how they are stored."""

    codec: int
    channels: int
    rate: int
    bits: int
    data_offset: int
    data_size: int

    @property
    def frames(self) -> int:
        """Samples per channel."""
        return self.data_size // (self.channels * self.bits // 8)


def read_wav_header(data: bytes | bytearray | memoryview, what: str = "audio") -> WavHeader:
    """The fmt and data chunks of a RIFF/WAVE file; 400 for a damaged one, 415 for another codec or container."""
    view = memoryview(data)
    if len(view) < 12 or bytes(view[:4]) != b"RIFF" or bytes(view[8:12]) != b"WAVE":
        kind = sniff_audio(view)
        if kind is not None:
            raise UnsupportedMediaType(f"{what} is {kind}; this model accepts {ACCEPTED}")
        raise MalformedRequest(f"{what} is not a WAV file (it does not start with a RIFF/WAVE header)")
    offset, fmt = 12, None
    while offset + 8 <= len(view):
        chunk, size = bytes(view[offset:offset + 4]), struct.unpack_from("<I", view, offset + 4)[0]
        body = offset + 8
        if chunk == b"fmt ":
            fmt = _fmt_chunk(view, body, size, what)
        elif chunk == b"data":
            if fmt is None:
                raise MalformedRequest(f"{what}: the WAV data chunk comes before its fmt chunk")
            codec, channels, rate, bits = fmt
            available = len(view) - body
            if size > available:
                raise MalformedRequest(f"{what}: the WAV data chunk declares {size} bytes but {available} remain "
                                       "(a truncated file)")
            block = channels * bits // 8
            return WavHeader(codec, channels, rate, bits, body, size - size % block)
        offset = body + size + (size & 1)  # chunks are word aligned
    raise MalformedRequest(f"{what}: the WAV has no {'data' if fmt else 'fmt'} chunk")


def _fmt_chunk(view: memoryview, body: int, size: int, what: str) -> tuple[int, int, int, int]:
    if size < 16 or body + size > len(view):
        raise MalformedRequest(f"{what}: the WAV fmt chunk is truncated")
    codec, channels, rate, _, block, bits = struct.unpack_from("<HHIIHH", view, body)
    if codec == EXTENSIBLE:
        if size < 40:
            raise MalformedRequest(f"{what}: the WAV extensible fmt chunk is truncated")
        codec = struct.unpack_from("<H", view, body + 24)[0]  # the sub-format GUID starts with the codec
    if codec not in (PCM, IEEE_FLOAT):
        name = OTHER_CODECS.get(codec, f"format code {codec:#06x}")
        raise UnsupportedMediaType(f"{what} holds {name} audio; this model accepts {ACCEPTED}")
    if not 1 <= channels <= MAX_CHANNELS or bits not in (PCM_BITS if codec == PCM else FLOAT_BITS):
        kind = "PCM" if codec == PCM else "float"
        raise MalformedRequest(f"{what}: the WAV header says {channels} channels of {bits}-bit {kind}; expected 1 to "
                               f"{MAX_CHANNELS} channels of {'/'.join(map(str, PCM_BITS if codec == PCM else FLOAT_BITS))}-bit")
    if block != channels * bits // 8:
        raise MalformedRequest(f"{what}: the WAV block align is {block}; {channels} channels of {bits}-bit need "
                               f"{channels * bits // 8}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidInput(f"{what} has a sampling rate of {rate} Hz; expected {MIN_RATE} to {MAX_RATE} Hz")
    return codec, channels, rate, bits


def wav_samples(data: bytes | bytearray | memoryview, header: WavHeader, what: str = "audio") -> np.ndarray:
    """Mono float32 samples in [-1, 1] (channels averaged); 400 for NaN/Inf in a float WAV."""
    raw = memoryview(data)[header.data_offset:header.data_offset + header.data_size]
    if header.codec == IEEE_FLOAT:
        samples = np.frombuffer(raw, "<f4" if header.bits == 32 else "<f8").astype(np.float32)
        if not np.isfinite(samples).all():
            raise MalformedRequest(f"{what}: the float WAV holds NaN or infinite samples")
    elif header.bits == 8:  # 8-bit WAV is unsigned
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif header.bits == 16:
        samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif header.bits == 24:
        triples = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        values = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        samples = np.where(values >= 1 << 23, values - (1 << 24), values).astype(np.float32) / float(1 << 23)
    else:
        samples = (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    if header.channels == 1:
        return samples
    return samples.reshape(-1, header.channels).mean(axis=1, dtype=np.float32)


def filter_values(orig: int, new: int) -> int:
    """How many values the resampling filter bank from ``orig`` to ``new`` Hz holds (its cost)."""
    divisor = math.gcd(orig, new)
    orig, new = orig // divisor, new // divisor
    return new * (2 * math.ceil(FILTER_WIDTH * orig / (min(orig, new) * ROLLOFF)) + orig)


def resample(samples: np.ndarray, orig: int, new: int) -> np.ndarray:
    """Band-limited resampling: a Hann-windowed sinc filter bank, one phase per output sample of a period
    (the algorithm of torchaudio's ``sinc_interp_hann``, in numpy). Output length ``ceil(len * new / orig)``."""
    if orig == new:
        return samples
    divisor = math.gcd(orig, new)
    orig, new = orig // divisor, new // divisor
    cutoff = min(orig, new) * ROLLOFF
    half = math.ceil(FILTER_WIDTH * orig / cutoff)
    positions = np.arange(-half, half + orig, dtype=np.float64) / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + positions[None, :]) * cutoff
    t = np.clip(t, -FILTER_WIDTH, FILTER_WIDTH)
    window = np.cos(t * math.pi / FILTER_WIDTH / 2) ** 2
    t *= math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc = np.where(t == 0, 1.0, np.sin(t) / t)
    kernels = (sinc * window * (cutoff / orig)).astype(np.float32)  # [new, taps]
    padded = np.pad(samples.astype(np.float32, copy=False), (half, half + orig))
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernels.shape[1])[::orig]
    return (frames @ kernels.T).reshape(-1)[:math.ceil(new * len(samples) / orig)]


@dataclass(frozen=True)
class AudioPreprocess:
    """How one audio input turns WAV bytes into the model's samples: its rate, the shortest and longest clip
    (in samples at that rate), and whether other rates are resampled (else refused with 422)."""

    sampling_rate: int
    min_samples: int
    max_samples: int
    resample: bool = True

    def __post_init__(self) -> None:
        if not MIN_RATE <= self.sampling_rate <= MAX_RATE:
            raise ConfigError(f"audio sampling_rate {self.sampling_rate} must be {MIN_RATE} to {MAX_RATE} Hz")
        if not 1 <= self.min_samples <= self.max_samples:
            raise ConfigError(f"audio needs 1 <= min_samples <= max_samples, got {self.min_samples}, {self.max_samples}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], shape: Sequence[Any]) -> AudioPreprocess:
        """From an input's ``audio:`` mapping; the shortest and longest clip are the input's dynamic dimension."""
        known = {"sampling_rate", "resample"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"audio settings {unknown} are unknown; known: {sorted(known)}")
        if "sampling_rate" not in raw:
            raise ConfigError("audio settings need sampling_rate (Hz)")
        low, _, high = str(shape[0] if len(shape) == 1 else "").partition("..")
        if not (low.isdigit() and high.isdigit()):
            raise ConfigError(f"an audio input's shape must be one dynamic dimension of samples like [400..160000]; "
                              f"got {list(shape)}")
        return cls(int(raw["sampling_rate"]), int(low), int(high), bool(raw.get("resample", True)))

    def to_dict(self) -> dict[str, Any]:
        """The ``audio:`` mapping written into model-config.yaml (the clip bounds are the input's shape)."""
        return {"sampling_rate": self.sampling_rate, "resample": self.resample}

    def seconds(self, samples: int) -> str:
        """A length in samples at the model's rate, as seconds for messages."""
        return f"{samples / self.sampling_rate:.3g} s"

    def decode(self, data: bytes | bytearray | memoryview, what: str = "audio") -> np.ndarray:
        """One WAV -> mono float32 samples at the model's rate; every refusal says what and what was expected."""
        header = read_wav_header(data, what)
        length = math.ceil(header.frames * self.sampling_rate / header.rate)  # after resampling
        allowed = f"{self.seconds(self.min_samples)} to {self.seconds(self.max_samples)}"
        if length > self.max_samples:  # before any sample is converted
            raise TooLong(f"{what} lasts {header.frames / header.rate:.3g} s; this model takes {allowed} "
                                   "(refused before decoding)")
        if length < self.min_samples:
            raise InvalidInput(f"{what} lasts {header.frames / header.rate:.3g} s; this model takes {allowed}")
        if header.rate != self.sampling_rate:
            if not self.resample:
                raise InvalidInput(f"{what} is sampled at {header.rate} Hz; this model takes {self.sampling_rate} Hz "
                                   "(resample it before sending)")
            if filter_values(header.rate, self.sampling_rate) > MAX_FILTER_VALUES:
                raise InvalidInput(f"{what} is sampled at {header.rate} Hz, which does not resample cheaply to "
                                   f"{self.sampling_rate} Hz; send {self.sampling_rate} Hz or a common rate "
                                   "(8, 16, 22.05, 44.1, 48 kHz)")
        samples = wav_samples(data, header, what)
        return resample(samples, header.rate, self.sampling_rate)

    def decode_many(self, clips: Sequence[bytes | bytearray | memoryview], what: str = "audio"
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Several clips of one request -> samples ``[n, longest]`` (zero padded) and their mask (1 = a real sample)."""
        if not clips:
            raise MalformedRequest(f"the request holds no {what}")
        decoded = [self.decode(clip, what if len(clips) == 1 else f"{what} {idx}") for idx, clip in enumerate(clips)]
        return pad_clips(decoded)


def pad_clips(clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Clips of different lengths -> zero-padded samples ``[n, longest]`` and the int64 mask of real samples."""
    longest = max(len(clip) for clip in clips)
    samples = np.zeros((len(clips), longest), np.float32)
    mask = np.zeros((len(clips), longest), np.int64)
    for row, clip in enumerate(clips):
        samples[row, :len(clip)] = clip
        mask[row, :len(clip)] = 1
    return samples, mask
