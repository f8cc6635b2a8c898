"""Audio in the handler: WAV headers and samples of every PCM width and float, mono mix-down, band-limited
resampling (checked against the analytic signal), duration bounds before decoding, and a clear status for
each kind of bad file."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from handlers.audio import (MAX_FILTER_VALUES, AudioPreprocess, filter_values, pad_clips, read_wav_header, resample,
                            wav_samples)
from handlers.errors import ConfigError, InvalidInput, MalformedRequest, TooLong, UnsupportedMediaType
from servekit.examples.zoo import tone, wav_bytes

RATE = 16_000
AUDIO = AudioPreprocess(RATE, 400, RATE)  # 25 ms to 1 s


def riff(fmt: bytes, data: bytes, extra_chunks: bytes = b"") -> bytes:
    """A RIFF/WAVE file from a fmt chunk body and sample bytes."""
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra_chunks + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_chunk(codec: int, channels: int, rate: int, bits: int) -> bytes:
    block = channels * bits // 8
    return struct.pack("<HHIIHH", codec, channels, rate, rate * block, block, bits)


@pytest.mark.parametrize("bits, dtype, scale", [(16, "<i2", 32767), (32, "<i4", 2**31 - 1)])
def test_pcm_samples_come_back_as_floats(bits: int, dtype: str, scale: int) -> None:
    samples = tone(0.1)
    data = riff(fmt_chunk(1, 1, RATE, bits), (samples * scale).astype(dtype).tobytes())
    header = read_wav_header(data)
    assert (header.channels, header.rate, header.bits, header.frames) == (1, RATE, bits, len(samples))
    np.testing.assert_allclose(wav_samples(data, header), samples, atol=1e-4)


def test_8_bit_pcm_is_unsigned_and_24_bit_is_signed() -> None:
    samples = np.array([-1.0, -0.5, 0.0, 0.5, 0.99], np.float32)
    eight = riff(fmt_chunk(1, 1, RATE, 8), (samples * 128 + 128).clip(0, 255).astype(np.uint8).tobytes())
    np.testing.assert_allclose(wav_samples(eight, read_wav_header(eight)), samples, atol=1 / 128)
    ints = (samples * (2**23 - 1)).astype(np.int32)
    packed = b"".join(int(v).to_bytes(4, "little", signed=True)[:3] for v in ints)
    twenty_four = riff(fmt_chunk(1, 1, RATE, 24), packed)
    np.testing.assert_allclose(wav_samples(twenty_four, read_wav_header(twenty_four)), samples, atol=1e-6)


@pytest.mark.parametrize("bits, dtype", [(32, "<f4"), (64, "<f8")])
def test_float_wav_and_the_extensible_header(bits: int, dtype: str) -> None:
    samples = tone(0.05)
    plain = riff(fmt_chunk(3, 1, RATE, bits), samples.astype(dtype).tobytes())
    np.testing.assert_array_equal(wav_samples(plain, read_wav_header(plain)), samples)
    # WAVE_FORMAT_EXTENSIBLE: the codec is the first two bytes of the sub-format GUID
    extensible = fmt_chunk(0xFFFE, 1, RATE, bits) + struct.pack("<HHI", 22, bits, 4) + struct.pack("<H", 3) + bytes(14)
    wrapped = riff(extensible, samples.astype(dtype).tobytes(), extra_chunks=b"LIST" + struct.pack("<I", 3) + b"abc\x00")
    np.testing.assert_array_equal(wav_samples(wrapped, read_wav_header(wrapped)), samples)


def test_stereo_is_mixed_down_to_mono() -> None:
    left, right = tone(0.1, 440), tone(0.1, 660, amplitude=0.25)
    data = wav_bytes(np.stack([left, right], 1).reshape(-1), channels=2)
    np.testing.assert_allclose(AUDIO.decode(data), (left + right) / 2, atol=1e-4)


@pytest.mark.parametrize("orig", [8_000, 22_050, 44_100, 48_000])
def test_resampling_keeps_a_tone_where_it_was(orig: int) -> None:
    """A 440 Hz tone at ``orig`` Hz, resampled to 16 kHz, is the 440 Hz tone at 16 kHz (away from the edges)."""
    seconds = 0.5
    out = AUDIO.decode(wav_bytes(tone(seconds, rate=orig), rate=orig))
    assert len(out) == int(np.ceil(seconds * orig * RATE / orig))
    expected = tone(seconds)
    inner = slice(200, -200)
    assert np.abs(out[inner] - expected[:len(out)][inner]).max() < 2e-3


def test_resampling_removes_what_the_new_rate_cannot_hold() -> None:
    """A 5 kHz tone (well inside 16 kHz's band) keeps its power; a 12 kHz one (above its Nyquist frequency) must not
    alias back into the band."""
    def rms(samples: np.ndarray) -> float:
        return float(np.sqrt(np.mean(samples[200:-200] ** 2)))

    assert rms(resample(tone(0.5, 5_000, rate=44_100), 44_100, RATE)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert rms(resample(tone(0.5, 12_000, rate=44_100), 44_100, RATE)) < 0.01


def test_duration_bounds_are_checked_before_decoding() -> None:
    long_clip = wav_bytes(tone(1.5))
    with pytest.raises(TooLong, match=r"lasts 1.5 s; this model takes 0.025 s to 1 s \(refused before decoding\)"):
        AUDIO.decode(long_clip)
    with pytest.raises(InvalidInput, match="lasts 0.01 s"):
        AUDIO.decode(wav_bytes(tone(0.01)))
    # the bound applies after resampling: 1 s at 8 kHz is 1 s at 16 kHz
    assert len(AUDIO.decode(wav_bytes(tone(1.0, rate=8_000), rate=8_000))) == RATE


def test_rates_that_do_not_resample_cheaply_or_at_all_are_refused() -> None:
    assert filter_values(44_100, RATE) < MAX_FILTER_VALUES < filter_values(44_099, RATE)
    with pytest.raises(InvalidInput, match="44099 Hz, which does not resample cheaply"):
        AUDIO.decode(wav_bytes(tone(0.5, rate=44_099), rate=44_099))
    strict = AudioPreprocess(RATE, 400, RATE, resample=False)
    with pytest.raises(InvalidInput, match="sampled at 8000 Hz; this model takes 16000 Hz"):
        strict.decode(wav_bytes(tone(0.5, rate=8_000), rate=8_000))


@pytest.mark.parametrize("data, error, message", [
    (b"", MalformedRequest, "not a WAV file"),
    (b"hello world, not audio", MalformedRequest, "not a WAV file"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00", UnsupportedMediaType, "is MP3"),
    (b"fLaC\x00\x00\x00\x22", UnsupportedMediaType, "is FLAC"),
    (b"OggS\x00\x02", UnsupportedMediaType, "is Ogg"),
    (riff(fmt_chunk(0x55, 1, RATE, 16), b"\x00" * 100), UnsupportedMediaType, "holds MP3 audio"),
    (riff(fmt_chunk(2, 1, RATE, 4), b"\x00" * 100), UnsupportedMediaType, "holds MS ADPCM audio"),
    (riff(fmt_chunk(1, 1, RATE, 12), b"\x00" * 100), MalformedRequest, "12-bit PCM"),
    (riff(fmt_chunk(1, 0, RATE, 16), b"\x00" * 100), MalformedRequest, "0 channels"),
    (riff(fmt_chunk(1, 1, 100, 16), b"\x00" * 100), InvalidInput, "sampling rate of 100 Hz"),
    (wav_bytes(tone(0.1))[:-500], MalformedRequest, "truncated"),
    (wav_bytes(tone(0.1))[:30], MalformedRequest, "fmt chunk is truncated"),
    (b"RIFF\x04\x00\x00\x00WAVE", MalformedRequest, "no fmt chunk"),
    (b"RIFF" + struct.pack("<I", 12) + b"WAVEdata" + struct.pack("<I", 0), MalformedRequest, "before its fmt chunk"),
    (riff(fmt_chunk(3, 1, RATE, 32), np.array([0.1, np.nan], "<f4").tobytes() * 300), MalformedRequest, "NaN"),
])
def test_bad_files_are_refused_with_what_was_wrong(data: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        AUDIO.decode(data, "the clip")


def test_several_clips_are_padded_with_a_mask() -> None:
    samples, mask = AUDIO.decode_many([wav_bytes(tone(0.1)), wav_bytes(tone(0.05))])
    assert samples.shape == mask.shape == (2, 1600)
    assert mask[0].sum() == 1600 and mask[1].sum() == 800 and not samples[1, 800:].any()
    _, mask = pad_clips([np.ones(3, np.float32)])
    assert mask.dtype == np.int64
    with pytest.raises(MalformedRequest, match="no audio"):
        AUDIO.decode_many([])


def test_settings_round_trip_and_bad_ones_are_refused() -> None:
    assert AudioPreprocess.from_dict(AUDIO.to_dict(), ["400..16000"]) == AUDIO
    with pytest.raises(ConfigError, match="unknown"):
        AudioPreprocess.from_dict({"sampling_rate": RATE, "speed": 2}, ["400..16000"])
    with pytest.raises(ConfigError, match="need sampling_rate"):
        AudioPreprocess.from_dict({}, ["400..16000"])
    with pytest.raises(ConfigError, match="one dynamic dimension"):
        AudioPreprocess.from_dict({"sampling_rate": RATE}, [16000])
    with pytest.raises(ConfigError, match="sampling_rate 10"):
        AudioPreprocess(10, 1, 2)
