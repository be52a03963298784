"""Wav reading, log-mel spectrograms and the md5-checked, cached FSDD spectrograms (tiny fabricated wav files)."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from pyromm.data import ChecksumError, md5sum
from pyromm.data import fsdd
from pyromm.data.audio import (
    AudioFormatError,
    RecordingTooShortError,
    SpectrogramSettings,
    fix_length,
    mel_center_frequencies,
    mel_filterbank,
    wav_spectrogram,
)

RATE = 8000


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE, channels: int = 1, width: int = 2) -> Path:
    """Write ``samples`` (floats in [-1, 1], interleaved when ``channels`` > 1) as a PCM wav file."""
    if width == 2:
        frames = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    else:
        frames = np.round((np.clip(samples, -1, 1) + 1) * 127.5).astype(np.uint8).tobytes()
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(frames)
    return path


def sine(frequency: float, seconds: float = 0.5, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return amplitude * np.sin(2 * np.pi * frequency * t)


def test_spectrogram_shape_range_and_determinism(tmp_path):
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 3000)
    path = write_wav(tmp_path / "noise.wav", noise)
    first, second = wav_spectrogram(path), wav_spectrogram(path)
    assert first.shape == (32, 128) and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() == 1.0
    assert np.array_equal(first, second)


@pytest.mark.parametrize("bin_index", [5, 20])
def test_sine_energy_lands_in_its_mel_bin(tmp_path, bin_index):
    settings = SpectrogramSettings()
    frequency = float(mel_center_frequencies(settings)[bin_index])
    spectrogram = wav_spectrogram(write_wav(tmp_path / "sine.wav", sine(frequency)), settings)
    assert int(spectrogram.sum(1).argmax()) == bin_index


def test_short_recordings_are_centred_and_padded_with_silence(tmp_path):
    spectrogram = wav_spectrogram(write_wav(tmp_path / "short.wav", sine(1000.0, seconds=0.25)))
    active = np.flatnonzero(spectrogram.max(0) > 0)
    assert spectrogram[:, :active[0]].max() == 0.0 and spectrogram[:, active[-1] + 1 :].max() == 0.0
    assert abs((active[0] + active[-1]) / 2 - 63.5) <= 2


def test_fix_length_crops_and_pads_symmetrically():
    x = torch.arange(10.0)
    assert fix_length(x, 4).tolist() == [3.0, 4.0, 5.0, 6.0]
    assert fix_length(x, 13).tolist() == [0.0] + x.tolist() + [0.0, 0.0]


def test_mel_filterbank_triangles_peak_at_one_and_cover_every_filter():
    settings = SpectrogramSettings()
    bank = mel_filterbank(settings)
    assert bank.shape == (32, 129)
    assert bool((bank.max(1).values > 0.5).all()) and float(bank.max()) <= 1.0


def test_recording_shorter_than_one_frame_is_named(tmp_path):
    path = write_wav(tmp_path / "3_tiny_0.wav", sine(500.0, seconds=0.01))
    with pytest.raises(RecordingTooShortError, match="3_tiny_0.wav.*shorter than one frame"):
        wav_spectrogram(path)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(channels=2), "2 channels, expected mono"), (dict(width=1), "8-bit samples, expected 16-bit"),
     (dict(rate=16000), "16000 Hz, expected 8000 Hz")],
)
def test_wrong_wav_formats_are_named(tmp_path, kwargs, message):
    path = write_wav(tmp_path / "odd.wav", sine(500.0), **kwargs)
    with pytest.raises(AudioFormatError, match=f"odd.wav.*{message}"):
        wav_spectrogram(path)


def test_a_file_that_is_not_wav_is_named(tmp_path):
    path = tmp_path / "fake.wav"
    path.write_bytes(b"not a riff file at all")
    with pytest.raises(AudioFormatError, match="fake.wav is not a readable PCM wav file"):
        wav_spectrogram(path)


def test_recording_names_parse_and_bad_names_are_refused():
    assert fsdd.parse_recording_name("7_jackson_32.wav") == fsdd.Recording("7_jackson_32.wav", 7, "jackson", 32)
    with pytest.raises(ValueError, match="not an FSDD recording name"):
        fsdd.parse_recording_name("seven_jackson.wav")


def test_shipped_manifest_lists_the_3000_recordings():
    recordings = fsdd.recordings_of(fsdd.fsdd_manifest())
    assert len(recordings) == 3000 and len({r.speaker for r in recordings}) == 6
    assert {r.digit for r in recordings} == set(range(10))


def fabricate_fsdd(root: Path, names: list[str]) -> dict[str, str]:
    """Sine recordings under ``root/fsdd/recordings`` (frequency by digit); returns their manifest."""
    directory = root / "fsdd" / "recordings"
    directory.mkdir(parents=True)
    manifest = {}
    for k, name in enumerate(names):
        digit = fsdd.parse_recording_name(name).digit
        path = write_wav(directory / name, sine(300.0 + 250.0 * digit + 7.0 * k, seconds=0.3))
        manifest[name] = md5sum(path)
    return manifest


def test_fsdd_spectrograms_are_cached_and_reused_without_the_files(tmp_path):
    manifest = fabricate_fsdd(tmp_path, ["0_ann_0.wav", "1_ann_0.wav", "1_bob_3.wav"])
    first, recordings = fsdd.load_fsdd_spectrograms(tmp_path, cache_dir=tmp_path / "cache", manifest=manifest)
    assert first.shape == (3, 32, 128) and first.dtype == np.uint8
    assert [r.name for r in recordings] == ["0_ann_0.wav", "1_ann_0.wav", "1_bob_3.wav"]
    for path in (tmp_path / "fsdd" / "recordings").iterdir():
        path.unlink()
    again, _ = fsdd.load_fsdd_spectrograms(tmp_path, cache_dir=tmp_path / "cache", manifest=manifest)
    assert np.array_equal(first, again)
    key = fsdd.spectrogram_cache_key(manifest, SpectrogramSettings())
    assert (tmp_path / "cache" / "fsdd" / f"spectrograms_{key}" / "spectrograms.npy").is_file()
    assert key != fsdd.spectrogram_cache_key(manifest, SpectrogramSettings(top_db=60.0))


def test_wrong_md5_is_named(tmp_path):
    manifest = fabricate_fsdd(tmp_path, ["2_ann_0.wav", "5_ann_1.wav"])
    manifest["5_ann_1.wav"] = "0" * 32
    with pytest.raises(ChecksumError, match="5_ann_1.wav"):
        fsdd.load_fsdd_spectrograms(tmp_path, cache_dir=tmp_path / "cache", manifest=manifest)


def test_missing_recording_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(fsdd, "FSDD_URLS", ())
    manifest = fabricate_fsdd(tmp_path, ["2_ann_0.wav"])
    manifest["4_ann_9.wav"] = "0" * 32
    with pytest.raises(FileNotFoundError, match="4_ann_9.wav is missing"):
        fsdd.load_fsdd_spectrograms(tmp_path, cache_dir=tmp_path / "cache", manifest=manifest)


def test_real_fsdd_recording_matches_its_md5_and_is_deterministic(require_shared_file):
    name = "0_george_0.wav"
    root = require_shared_file(f"fsdd/recordings/{name}")
    path = fsdd.recording_file(root, name, fsdd.fsdd_manifest()[name])
    spectrogram = wav_spectrogram(path)
    assert spectrogram.shape == (32, 128) and np.array_equal(spectrogram, wav_spectrogram(path))
