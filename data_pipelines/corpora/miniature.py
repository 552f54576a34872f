"""Miniature copies of the public corpora in their exact published layouts (file names, formats, text
files, tar shards), with espeak speech, plus one bad file of each kind a real tree holds: the fixtures of
tests/test_corpora.py and experiments/bench_prepare.py, and a worked example of what each builder reads.
Each writer returns what a build should give back: {"kept": {utt_id: (split or None, speaker, text)},
"bad": {file name: filter}}.

    python -m data_pipelines.corpora.miniature vctk /tmp/vctk_tree [--per-speaker 3]
"""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import soundfile as sf

from data_pipelines.espeak_tts.render import Utterance, render
from data_pipelines.espeak_tts.voices import Voice

TEXTS = ("The cat sat on the mat.", "Seven green boats left early.", "A bird sang in the old tree.",
         "Please close the door.")
_VOICES = (Voice("en", "m3", 40, 180), Voice("en", "f2", 70, 180), Voice("en", "m1", 50, 195),
           Voice("en", "f4", 60, 195), Voice("en", "m5", 30, 180))


def texts(n: int) -> list[str]:
    """`n` distinct sentences (distinct audio, so the duplicate filter keeps them all)."""
    return [TEXTS[i % len(TEXTS)] if i < len(TEXTS) else f"{TEXTS[i % len(TEXTS)][:-1]}, take {i}."
            for i in range(n)]


def speech(voice: int, text: str, rate: int) -> np.ndarray:
    """float32 espeak speech at `rate`."""
    return render(Utterance("x", "train", _VOICES[voice], text), rate).astype(np.float32) / 32768


def _clipped(rate: int) -> np.ndarray:
    return np.clip(8 * speech(0, TEXTS[0], rate), -1, 1)  # driven far into full scale


def libritts(root, rate=24000, per_speaker=2) -> dict:
    kept, bad = {}, {}
    plan = [("train-clean-100", "19", 0, "198"), ("train-clean-100", "26", 1, "495"),
            ("train-clean-360", "40", 2, "222"), ("dev-clean", "84", 3, "121"), ("test-clean", "121", 4, "127")]
    split_of = {"train": "train", "dev": "validation", "test": "test_unseen"}
    for subset, speaker, voice, chapter in plan:
        folder = root / subset / speaker / chapter
        folder.mkdir(parents=True)
        for n, text in enumerate(texts(per_speaker)):
            utt_id = f"{speaker}_{chapter}_{n:06d}_000000"
            sf.write(folder / f"{utt_id}.wav", speech(voice, text, rate), rate, subtype="PCM_16")
            written = text.replace("The cat", "\u201cThe  cat\u201d") if speaker == "19" else text
            (folder / f"{utt_id}.normalized.txt").write_text(written)  # curly quotes, a double space
            (folder / f"{utt_id}.original.txt").write_text(text.upper())  # shipped too; not the one read
            kept[utt_id] = (split_of[subset.split("-")[0]], speaker,
                            written.replace("\u201c", '"').replace("\u201d", '"').replace("  ", " "))
    folder = root / "train-clean-100" / "19" / "198"
    sf.write(folder / "19_198_009999_000000.wav", speech(0, TEXTS[2], rate), rate, subtype="PCM_16")
    bad["19_198_009999_000000.wav"] = "text"  # its .normalized.txt is missing
    sf.write(folder / "19_198_009998_000000.wav", np.zeros(rate, np.float32), rate, subtype="PCM_16")
    (folder / "19_198_009998_000000.normalized.txt").write_text("Silence.")
    bad["19_198_009998_000000.wav"] = "silence"
    return {"kept": kept, "bad": bad}


def vctk(root, rate=48000, per_speaker=3) -> dict:
    kept, bad = {}, {}
    for voice, speaker in enumerate(("p225", "p226", "p227", "p228")):
        (root / "wav48_silence_trimmed" / speaker).mkdir(parents=True)
        (root / "txt" / speaker).mkdir(parents=True)
        for n, text in enumerate(texts(per_speaker), start=1):
            utt_id = f"{speaker}_{n:03d}"
            audio = speech(voice, text, rate)
            for mic in ("mic1", "mic2"):  # both microphones ship; the builder reads mic1
                sf.write(root / "wav48_silence_trimmed" / speaker / f"{utt_id}_{mic}.flac", audio, rate)
            (root / "txt" / speaker / f"{utt_id}.txt").write_text(text + "\n")
            kept[utt_id] = (None, speaker, text)
    # p315's recordings have no transcripts in VCTK 0.92.
    (root / "wav48_silence_trimmed" / "p315").mkdir()
    sf.write(root / "wav48_silence_trimmed" / "p315" / "p315_001_mic1.flac", speech(4, TEXTS[0], rate), rate)
    bad["p315_001_mic1.flac"] = "text"
    (root / "txt" / "p225" / "p225_999.txt").write_text("Corrupt flac.")
    (root / "wav48_silence_trimmed" / "p225" / "p225_999_mic1.flac").write_bytes(b"fLaC" + b"\0" * 64)
    bad["p225_999_mic1.flac"] = "unreadable"
    return {"kept": kept, "bad": bad}


def ljspeech(root, rate=22050, per_speaker=4) -> dict:
    kept, bad, lines = {}, {}, []
    (root / "wavs").mkdir(parents=True)
    for n, text in enumerate(texts(per_speaker), start=1):
        utt_id = f"LJ001-{n:04d}"
        sf.write(root / "wavs" / f"{utt_id}.wav", speech(1, text, rate), rate, subtype="PCM_16")
        # Column 2 as read, column 3 normalised; a '"' must not start a CSV quoted field.
        lines.append(f"{utt_id}|{text.replace('Seven', '7')}|{text}")
        kept[utt_id] = (None, "LJ", text)
    lines.append('LJ050-0001|"No audio" for this one.|"No audio" for this one.')
    bad["LJ050-0001.wav"] = "unreadable"
    sf.write(root / "wavs" / "LJ002-0001.wav", _clipped(rate), rate, subtype="PCM_16")
    lines.append("LJ002-0001|Clipped.|Clipped.")
    bad["LJ002-0001.wav"] = "clipping"
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return {"kept": kept, "bad": bad}


def kaldi(root, rate=16000, per_speaker=3) -> dict:
    """One data directory: recordings of two utterances each, cut by `segments`; one read through a pipe."""
    kept, bad = {}, {}
    root.mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir()
    scp, text, utt2spk, segments = [], [], [], []
    for voice, speaker in enumerate(("spkA", "spkB", "spkC", "spkD")):
        rec = f"{speaker}-rec1"
        parts, t = [], 0.0
        for n, sentence in enumerate(texts(per_speaker)):
            clip = speech(voice, sentence, rate)
            utt_id = f"{speaker}-utt{n}"
            segments.append(f"{utt_id} {rec} {t:.4f} {t + clip.size / rate:.4f}")
            text.append(f"{utt_id} {sentence.upper()}")  # Kaldi transcripts are often upper case
            utt2spk.append(f"{utt_id} {speaker}")
            kept[utt_id] = (None, speaker, sentence.upper())
            parts.append(clip)
            t += clip.size / rate
        sf.write(root / "audio" / f"{rec}.wav", np.concatenate(parts), rate, subtype="PCM_16")
        path = root / "audio" / f"{rec}.wav"
        scp.append(f"{rec} cat {path} |" if speaker == "spkB" else f"{rec} audio/{rec}.wav")
    segments.append("spkA-utt9 spkA-rec9 0.0 1.5")  # its recording is not in wav.scp
    text.append("spkA-utt9 MISSING RECORDING")
    utt2spk.append("spkA-utt9 spkA")
    bad["wav.scp: no recording spkA-rec9"] = "unreadable"
    for name, lines in (("wav.scp", scp), ("text", text), ("utt2spk", utt2spk), ("segments", segments),
                        ("spk2gender", ["spkA m", "spkB f", "spkC m", "spkD f"])):
        (root / name).write_text("\n".join(sorted(lines)) + "\n")
    return {"kept": kept, "bad": bad}


def _mp3(audio: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="MP3", subtype="MPEG_LAYER_III")
    return buf.getvalue()


def emilia(root, rate=24000, per_speaker=3) -> dict:
    """Two shards; speakers span shards as in Emilia; one low-DNSMOS clip, one repeated clip, zh text with
    a tokeniser's spaces."""
    kept, bad = {}, {}
    shards = {0: [], 1: []}
    for voice in range(4):
        speaker = f"EN_B00000_S{voice:05d}"
        for n, text in enumerate(texts(per_speaker)):
            key = f"{speaker}_W{n:06d}"
            audio = speech(voice, text, rate)
            meta = {"id": key, "wav": f"EN_B00000/{speaker}/mp3/{key}.mp3", "text": text, "duration":
                    round(audio.size / rate, 3), "speaker": speaker, "language": "en", "dnsmos": 3.3}
            shards[n % 2].append((key, _mp3(audio, rate), meta))
            kept[key] = (None, speaker, text)
    low = speech(4, TEXTS[3], rate)
    shards[1].append(("EN_B00001_S00000_W000000", _mp3(low, rate), {
        "id": "EN_B00001_S00000_W000000", "text": TEXTS[3], "duration": round(low.size / rate, 3),
        "speaker": "EN_B00001_S00000", "language": "en", "dnsmos": 2.1}))
    bad["EN_B00001_S00000_W000000.mp3"] = "quality"
    zh = render(Utterance("x", "train", Voice("cmn"), "这是一个测试"), rate).astype(np.float32) / 32768
    shards[1].append(("ZH_B00000_S00000_W000000", _mp3(zh, rate), {
        "id": "ZH_B00000_S00000_W000000", "text": "这 是 一个 测试", "duration": round(zh.size / rate, 3),
        "speaker": "ZH_B00000_S00000", "language": "zh", "dnsmos": 3.6}))
    kept["ZH_B00000_S00000_W000000"] = (None, "ZH_B00000_S00000", "这是一个测试")  # the tokeniser's spaces go
    first = shards[0][0]
    shards[1].append(("EN_B00000_S00000_W000099", first[1], dict(first[2], id="EN_B00000_S00000_W000099")))
    bad["EN_B00000_S00000_W000099.mp3"] = "duplicate"  # or its original, whichever is in a held-out split
    (root / "EN").mkdir(parents=True)
    for i, members in shards.items():
        with tarfile.open(root / "EN" / f"EN-B{i:06d}.tar", "w") as tar:
            for key, mp3, meta in members:
                for ext, data in (("mp3", mp3), ("json", json.dumps(meta, ensure_ascii=False).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return {"kept": kept, "bad": bad}


WRITERS = {"libritts_r": libritts, "vctk": vctk, "ljspeech": ljspeech, "kaldi": kaldi, "emilia": emilia}


if __name__ == "__main__":
    import argparse
    import pathlib

    parser = argparse.ArgumentParser(description="write a miniature corpus tree")
    parser.add_argument("corpus", choices=sorted(WRITERS))
    parser.add_argument("out")
    parser.add_argument("--per-speaker", type=int, default=None)
    args = parser.parse_args()
    extra = {} if args.per_speaker is None else {"per_speaker": args.per_speaker}
    print(json.dumps(WRITERS[args.corpus](pathlib.Path(args.out), **extra)["bad"]))
