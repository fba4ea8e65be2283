"""Audio tasks end to end against a real server: spoken words and speakers synthesised offline with eSpeak NG
(benchmarks/audio_data.py: voices, pitch, speed and noise varied), keyword classification on the speech
embedding with the MFCC baseline in its CV selection, speaker identification with an open-set "unknown",
JSON and multipart predict, a zip of .wav clips, every bad input."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from benchmarks.audio_data import WORDS, keyword_clips, speaker_clips
from service import audio
from tests.conftest import wait_for_job
from tests.integration.test_api import assert_error, predict
from tests.service.test_datasets import make_zip

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("espeak-ng") is None, reason="the clips are synthesised with eSpeak NG: apt-get install espeak-ng"
    ),
]

KEYWORDS = WORDS[:4]  # yes, no, up, down
# Measured on these clips (4 words, 8 per word from 6 voices; 24 test clips by 6 voices never trained on):
# 1.000 on the held-out voices (hybrid head chosen by CV). Chance is 0.25.
MIN_ACCURACY = 0.75


def b64(wav: bytes) -> str:
    return base64.b64encode(wav).decode("ascii")


def words(per_word: int, n_speakers: int, seed: int) -> list[tuple[bytes, str]]:
    return [(wav, word) for wav, word, _ in keyword_clips(per_word, n_speakers, seed) if word in KEYWORDS]


@pytest.fixture(scope="module")
def word_clips() -> dict[str, list[tuple[bytes, str]]]:
    # keyword_clips makes clips of all 10 words; the other 6 words' clips are cheap (~20 ms each)
    return {"train": words(8, 6, seed=0), "test": words(6, 6, seed=99)}


@pytest.fixture(scope="module")
def words_task(server, word_clips) -> tuple:
    client = server.new_tenant("audio-words")
    examples = [{"input": b64(wav), "label": word} for wav, word in word_clips["train"]]
    resp = client.post("/v1/tasks", json={"name": "words", "modality": "audio", "examples": examples})
    assert resp.status_code == 202, resp.text
    job = wait_for_job(client, resp.json()["job"]["id"])
    assert job["status"] == "succeeded", job
    return client, job


def test_keywords_train_and_predict_over_json_and_multipart(words_task, word_clips) -> None:
    client, _ = words_task
    task = client.get("/v1/tasks/words").json()
    assert (task["modality"], task["backbone"]) == ("audio", "openwakeword-speech-embedding")
    metrics = client.get("/v1/tasks/words/versions").json()["versions"][0]["metrics"]
    # the MFCC no-transfer baseline is among the CV candidates (the negative-transfer guard)
    assert {"linear", "prototype", "baseline", "hybrid"} <= set(metrics["heads"]), metrics["heads"]
    assert 0.25 < metrics["heads"]["baseline"]["accuracy"] <= 1.0

    test = word_clips["test"]
    body = predict(client, "words", [b64(wav) for wav, _ in test], top_k=2)
    predicted = [p["label"] for p in body["predictions"]]
    accuracy = float(np.mean([p == word for p, (_, word) in zip(predicted, test, strict=True)]))
    print(f"keywords, 8 per word, held-out voices: {accuracy:.3f} ({metrics['head']} head)")
    assert accuracy >= MIN_ACCURACY, (accuracy, predicted)
    assert all(len(p["scores"]) == 2 for p in body["predictions"])

    # The same clips as multipart files get the same answers; a stereo 44.1 kHz float file is taken too.
    files = [("file", (f"{i}.wav", wav, "audio/wav")) for i, (wav, _) in enumerate(test[:4])]
    resp = client.post("/v1/tasks/words/predict/files", files=files)
    assert resp.status_code == 200, resp.text
    assert [p["label"] for p in resp.json()["predictions"]] == predicted[:4]
    clip = audio.decode(test[0][0], audio.Limits(10**8, 60.0, 2))
    stereo = np.stack([clip.at(44_100)] * 2, axis=1)
    resp = client.post("/v1/tasks/words/predict", json={"inputs": [b64(audio.encode_wav(stereo, 44_100, 32, "float"))]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["predictions"][0]["label"] == predicted[0]



# Runs in `python -I` (isolated: neither the checkout nor PYTHONPATH is importable): the zip alone is enough,
# with numpy and onnxruntime; the shipped audio_decode.py decodes and resamples each WAV file.
CONSUMER = r"""
import json, sys, types, zipfile
import numpy as np
import onnxruntime as ort

bundle, clips = sys.argv[1], sys.argv[2:]
with zipfile.ZipFile(bundle) as zf:
    manifest = json.loads(zf.read("graft-export.json"))
    spec = manifest["preprocessing"]["audio"]
    decoder = types.ModuleType("audio_decode")
    exec(compile(zf.read(spec["file"]).decode(), spec["file"], "exec"), decoder.__dict__)
    session = ort.InferenceSession(zf.read(manifest["model"]["file"]), providers=["CPUExecutionProvider"])
outputs = manifest["model"].get("outputs", [manifest["model"]["output"]])
rows = []
for path in clips:  # one clip per call
    with open(path, "rb") as fh:
        feeds = decoder.inputs(fh.read(), rate=spec["rate"], graph_inputs=manifest["model"]["inputs"])
    rows.append([out[0].tolist() for out in session.run(outputs, feeds)])
others = sorted(m for m in sys.modules if m.split(".")[0] in ("service", "adapters", "tests", "scipy", "torch"))
print(json.dumps({"manifest": manifest, "rows": rows, "others": others}))
"""


def export_and_run(client, name: str, wavs: list[bytes], tmp_path) -> dict:
    """GET the task's export, and run it on ``wavs`` in an isolated consumer process."""
    resp = client.get(f"/v1/tasks/{name}/export")
    assert resp.status_code == 200, resp.text
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        assert {"model.onnx", "graft-export.json", "audio_decode.py"} <= set(zf.namelist()), zf.namelist()
    (tmp_path / "model.zip").write_bytes(resp.content)
    (tmp_path / "consumer.py").write_text(CONSUMER)
    paths = []
    for i, wav in enumerate(wavs):
        (tmp_path / f"{i}.wav").write_bytes(wav)
        paths.append(str(tmp_path / f"{i}.wav"))
    done = subprocess.run([sys.executable, "-I", str(tmp_path / "consumer.py"), str(tmp_path / "model.zip"), *paths],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["others"] == [], out["others"]  # no Graft code, no scipy, no torch on the consumer's side
    return out


def test_keywords_export_reproduces_the_server(words_task, word_clips, tmp_path) -> None:
    client, _ = words_task
    test = [wav for wav, _ in word_clips["test"][:8]]
    clip = audio.decode(test[0], audio.Limits(10**8, 60.0, 2))  # and a stereo 44.1 kHz float file
    test.append(audio.encode_wav(np.stack([clip.at(44_100)] * 2, axis=1), 44_100, 32, "float"))
    out = export_and_run(client, "words", test, tmp_path)
    manifest = out["manifest"]
    labels = manifest["labels"]
    assert sorted(labels) == sorted(KEYWORDS) and manifest["preprocessing"]["audio"]["rate"] == 16_000
    served = predict(client, "words", [b64(wav) for wav in test], top_k=len(labels))["predictions"]
    assert manifest["backbone"]["name"] == "openwakeword-speech-embedding"
    exported = np.array([row[0] for row in out["rows"]])
    expected = np.array([[p["scores"][label] for label in labels] for p in served])
    # measured on synthesised clips: max |dp| <= 2.2e-6 (numpy vs scipy float32 arithmetic in the decoder)
    assert np.abs(exported - expected).max() <= 1e-4, np.abs(exported - expected).max()
    assert [labels[i] for i in exported.argmax(axis=1)] == [p["label"] for p in served]


def test_bad_audio_is_a_clear_4xx(words_task, word_clips) -> None:
    client, _ = words_task
    url = "/v1/tasks/words/predict"
    assert_error(client.post(url, json={"inputs": ["hello there"]}), 422, "inputs[0]", "base64")
    assert_error(client.post(url, json={"inputs": [b64(b"not a wav file at all")]}), 422, "inputs[0]", "not a WAV")
    truncated = word_clips["train"][0][0][:100]
    assert_error(client.post(url, json={"inputs": [b64(truncated)]}), 422, "truncated")
    eight_bit = bytearray(audio.encode_wav(np.zeros(800), 8000))
    eight_bit[34:36] = (8).to_bytes(2, "little")  # bits per sample: 8
    eight_bit[32:34] = (1).to_bytes(2, "little")  # block align
    assert_error(client.post(url, json={"inputs": [b64(bytes(eight_bit))]}), 415, "8-bit")
    # longer than GRAFT_MAX_AUDIO_SECONDS (30 s): 413, read from the header, as JSON and as a file
    long_clip = audio.encode_wav(np.sin(np.arange(31 * 8000) / 8.0) * 0.1, 8000)
    assert_error(client.post(url, json={"inputs": [b64(long_clip)]}), 413, "lasts 31.0 s", "limit is 30 s")
    resp = client.post(url + "/files", files=[("file", ("long.wav", long_clip, "audio/wav"))])
    assert_error(resp, 413, "file[0]", "lasts 31.0 s")
    # bad examples name the example; nothing is stored
    resp = client.post("/v1/tasks/words/examples", json={"examples": [{"input": b64(b"RIFF"), "label": "yes"}]})
    assert_error(resp, 422, "examples[0].input")
    # an image task's inputs are not audio, and an audio task is not for text kinds' labels
    resp = client.post(
        "/v1/tasks", json={"name": "x", "modality": "audio", "kind": "regression", "examples": [
            {"input": b64(word_clips["train"][0][0]), "label": 1.0}]}
    )
    assert_error(resp, 422, "modality")


def test_speakers_open_set_unknown_is_null(server, tmp_path) -> None:
    client = server.new_tenant("audio-speakers")
    clips = speaker_clips(5, 4, seed=1)
    stranger = clips[-1][1]
    enrolled = [(wav, who) for wav, who in clips if who != stranger]
    strangers = [wav for wav, who in clips if who == stranger]
    examples = [{"input": b64(wav), "label": who} for wav, who in enrolled]
    resp = client.post("/v1/tasks", json={"name": "voices", "modality": "audio", "kind": "speakers",
                                          "examples": examples})
    assert resp.status_code == 202, resp.text
    job = wait_for_job(client, resp.json()["job"]["id"])
    assert job["status"] == "succeeded", job
    task = client.get("/v1/tasks/voices").json()
    assert (task["kind"], task["backbone"]) == ("speakers", "resemblyzer-ge2e")
    metrics = client.get("/v1/tasks/voices/versions").json()["versions"][0]["metrics"]
    assert metrics["open_set"]["far_target"] == 0.05 and metrics["speakers"] == 4
    assert "baseline" in metrics and metrics["evaluation"] == "cv"

    body = predict(client, "voices", [b64(wav) for wav in strangers], top_k=2)
    for p in body["predictions"]:
        assert p["speaker"] is None and p["score"] < p["threshold"] and len(p["labels"]) == 2, p
    body = predict(client, "voices", [b64(wav) for wav, _ in enrolled])
    named = [p["speaker"] for p in body["predictions"]]
    assert all(p["labels"][0]["label"] == who for p, (_, who) in zip(body["predictions"], enrolled, strict=True))
    assert all(n in (None, who) for n, (_, who) in zip(named, enrolled, strict=True)), named
    assert sum(n is not None for n in named) >= len(named) // 2, named

    # the export: samples → partials → GE2E → similarities, and the speaker named (-1: unknown)
    probes = [wav for wav, _ in enrolled[::3]] + strangers[:2]
    served = predict(client, "voices", [b64(wav) for wav in probes], top_k=4)["predictions"]
    out = export_and_run(client, "voices", probes, tmp_path)
    manifest = out["manifest"]
    assert manifest["model"]["outputs"] == ["similarities", "speaker"]
    assert abs(manifest["threshold"] - served[0]["threshold"]) < 1e-4
    labels = manifest["labels"]
    for (similarities, speaker), p in zip(out["rows"], served, strict=True):
        expected = {s["label"]: s["score"] for s in p["labels"]}
        assert max(abs(similarities[labels.index(k)] - v) for k, v in expected.items()) <= 1e-4, (similarities, p)
        assert (labels[speaker] if speaker >= 0 else None) == p["speaker"], (speaker, p)
    assert any(p["speaker"] is None for p in served)


def test_zip_of_wav_folders_makes_an_audio_task(server, word_clips) -> None:
    client = server.new_tenant("audio-zip")
    rows = [row for word in KEYWORDS[:2] for row in [r for r in word_clips["train"] if r[1] == word][:4]]
    entries: dict[str, bytes | None] = {f"{word}/{i}.wav": wav for i, (wav, word) in enumerate(rows)}
    resp = client.post("/v1/tasks/zipped/dataset", content=make_zip(entries).getvalue(),
                       headers={"content-type": "application/zip"})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["created"] is True and body["examples"] == 8 and body["task"]["modality"] == "audio"
    assert wait_for_job(client, body["job"]["id"])["status"] == "succeeded"
    bad = make_zip({"yes/0.wav": b"RIFF....WAVEjunk", "no/1.wav": rows[0][0]}).getvalue()
    resp = client.post("/v1/tasks/zipped/dataset", content=bad, headers={"content-type": "application/zip"})
    assert_error(resp, 422, "zip member 'yes/0.wav'")


def test_cli_and_client_send_wav_files(server, word_clips, tmp_path) -> None:
    """A folder of <word>/<n>.wav makes an audio task from the CLI; `graft predict --file x.wav` and positional
    .wav files predict it; the Python client sends WAV bytes as multipart and infers the modality."""
    from graft import Graft, cli
    from graft.client import wav_input
    from tests.client.conftest import new_key
    from tests.client.test_cli import graft, ok_json

    key = new_key(server, "cli-audio")
    env = {"GRAFT_URL": server.url, "GRAFT_API_KEY": key}
    rows = [row for word in KEYWORDS[:2] for row in [r for r in word_clips["train"] if r[1] == word][:4]]
    for i, (wav, word) in enumerate(rows):
        (tmp_path / "clips" / word).mkdir(parents=True, exist_ok=True)
        (tmp_path / "clips" / word / f"{i}.wav").write_bytes(wav)
    created = ok_json(graft("tasks", "create", "said", "--data", str(tmp_path / "clips"), "--json", env=env))
    assert (created["task"]["modality"], created["examples"], created["job"]["status"]) == ("audio", 8, "succeeded")
    probe = tmp_path / "probe.wav"
    probe.write_bytes(word_clips["test"][0][0])
    by_file = ok_json(graft("predict", "said", "--file", str(probe), "--json", env=env))
    by_arg = ok_json(graft("predict", "said", str(probe), "--json", env=env))
    same = [[{k: v for k, v in p.items() if k != "id"} for p in r["predictions"]] for r in (by_file, by_arg)]
    assert same[0] == same[1] and by_file["predictions"][0]["label"] in KEYWORDS[:2]  # ids differ per prediction
    human = graft("predict", "said", "--file", str(probe), env=env)
    assert human.returncode == 0 and human.stdout.splitlines()[1].startswith("probe.wav ")
    assert graft("predict", "said", str(tmp_path / "missing.wav"), env=env).returncode == cli.EXIT_USAGE

    with Graft(server.url, key) as client:
        answer = client.predict("said", wav_input(probe))
        assert answer.predictions[0].model_dump(exclude={"id"}) == same[0][0]
        task = client.create_task("said-json", [(wav, word) for wav, word in rows], progress=False)
        assert task.task.modality == "audio"
    with pytest.raises(ValueError, match="not a WAV file"):
        wav_input(__file__)
