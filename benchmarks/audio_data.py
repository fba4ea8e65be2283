"""Spoken-word clips synthesised offline with eSpeak NG (Debian's ``espeak-ng``), for the audio benchmarks.

No spoken-word data set ships in a package Graft can install, so the clips are made here: each
"speaker" is an eSpeak NG English voice with a voice variant (formants, pitch range) and its own
base pitch and speed; each clip varies pitch and speed around the speaker's, and gets white noise at
a random SNR (10 to 30 dB). Clips are 16-bit WAV bytes (22.05 kHz, as eSpeak writes them).
Nothing is committed: the clips are made on demand (``apt-get install espeak-ng``).

    python -m benchmarks.audio_data --out /tmp/clips   # writes WAV files, prints a summary
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service import audio

WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2"]


@dataclass(frozen=True)
class Speaker:
    accent: str
    variant: str
    pitch: int  # eSpeak 0-99
    speed: int  # words per minute

    @property
    def name(self) -> str:
        return f"{self.accent}+{self.variant}"


def speakers(n: int, seed: int = 0) -> list[Speaker]:
    rng = np.random.default_rng(seed)
    combos = [(a, v) for a in ACCENTS for v in VARIANTS]
    picked = rng.choice(len(combos), size=n, replace=False)
    return [Speaker(*combos[i], pitch=int(rng.integers(25, 75)), speed=int(rng.integers(130, 190))) for i in picked]


def speak(text: str, speaker: Speaker, rng: np.random.Generator) -> bytes:
    """One clip of ``text`` by ``speaker`` with jittered pitch and speed and added noise, as WAV bytes."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    pitch = int(np.clip(speaker.pitch + rng.integers(-10, 11), 0, 99))
    speed = int(speaker.speed * rng.uniform(0.85, 1.15))
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-v", speaker.name, "-p", str(pitch), "-s", str(speed), "-w", tmp.name, text],
                       check=True, capture_output=True)
        clip = audio.decode(Path(tmp.name).read_bytes(), audio.Limits(10**8, 60.0, 2))
    x = clip.samples
    power = float(np.mean(x ** 2)) or 1e-8
    snr_db = rng.uniform(10, 30)
    noisy = x + rng.standard_normal(len(x)).astype(np.float32) * np.float32(np.sqrt(power / 10 ** (snr_db / 10)))
    return audio.encode_wav(noisy / max(1.0, float(np.abs(noisy).max())), clip.rate)


def keyword_clips(per_word: int, n_speakers: int = 24, seed: int = 0) -> list[tuple[bytes, str, str]]:
    """(wav, word, speaker) for ``per_word`` clips of each word, speakers drawn round-robin."""
    rng = np.random.default_rng(seed)
    people = speakers(n_speakers, seed)
    return [(speak(word, people[(i + w) % n_speakers], rng), word, people[(i + w) % n_speakers].name)
            for w, word in enumerate(WORDS) for i in range(per_word)]


SENTENCES = ["the quick brown fox jumps over the lazy dog", "please call me back when you get this message",
             "it will rain in the north later today", "my account number ends in four two seven",
             "turn the lights off in the kitchen", "we should meet again next week at noon",
             "the train to the airport leaves at six", "thank you for waiting, an agent will answer soon"]


def speaker_clips(n_speakers: int, per_speaker: int, seed: int = 1) -> list[tuple[bytes, str]]:
    """(wav, speaker) for ``per_speaker`` sentences by each of ``n_speakers`` speakers."""
    rng = np.random.default_rng(seed)
    out = []
    for person in speakers(n_speakers, seed):
        for i in range(per_speaker):
            out.append((speak(SENTENCES[(i + int(rng.integers(0, 8))) % len(SENTENCES)], person, rng), person.name))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-word", type=int, default=8)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (wav, word, who) in enumerate(keyword_clips(args.per_word)):
        (args.out / f"{word}-{i:04d}-{who}.wav").write_bytes(wav)
    print(f"wrote {len(WORDS) * args.per_word} clips to {args.out}")
