"""``transferkit evaluate`` / ``evaluate_onnx``: metrics as scikit-learn computes them from an
independent ONNX Runtime run, the CSV of mistakes, the JSON output of the real CLI (no torch, no
ray), agreement with serving every image over real HTTP, and clear errors for bad input.

The model is ``serving_onnx`` (random weights, 10 digit classes): far from accurate, so there are
mistakes to list and every metric is away from its trivial value.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.data.folder import resolve_splits
from transferkit.export.evaluate import evaluate_onnx, onnx_figures
from transferkit.imaging import load_image, preprocess
from transferkit.metadata import MetadataError, ModelMetadata

REPO = Path(__file__).resolve().parents[2]
PER_CLASS = 6  # real digits per class in the small folder: 60 images, 10 in the test split
RUNS = 5  # the smallest latency_runs EvaluateConfig allows: keeps the tests fast


# -- data and the expected answers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first ``PER_CLASS`` real digits of each class as ``<class>/*.png``."""
    from transferkit.data import materialize

    base = tmp_path_factory.mktemp("eval_digits")
    materialize("digits", base / "all")
    small = base / "small"
    for d in sorted((base / "all").iterdir()):
        (small / d.name).mkdir(parents=True)
        for f in sorted(d.glob("*.png"))[:PER_CLASS]:
            shutil.copy(f, small / d.name / f.name)
    return small


def folder_images(root: Path) -> list[tuple[str, str]]:
    """``(absolute path, class folder name)`` of every PNG below ``root``."""
    return sorted((str(p.resolve()), p.parent.name) for p in root.rglob("*.png"))


def reference_predictions(model: Path, paths: list[str]) -> tuple[list[str], np.ndarray]:
    """``(class names, float64 softmax [N, K])``: one image per ORT run, in this process."""
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map)
    logits = np.stack(
        [
            sess.run(None, {"input": preprocess(load_image(p), meta.preprocessing)[None]})[0][0]
            for p in paths
        ]
    ).astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return meta.class_names, e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def evaluated(
    serving_onnx: Path, digit_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """``evaluate_onnx`` on every image of the folder (``split="all"``)."""
    csv_path = tmp_path_factory.mktemp("eval_out") / "mistakes.csv"
    return evaluate_onnx(
        serving_onnx, str(digit_folder), "all", latency_runs=RUNS, errors_csv=csv_path
    )


@pytest.fixture(scope="module")
def expected(serving_onnx: Path, digit_folder: Path) -> dict:
    items = folder_images(digit_folder)
    names, probs = reference_predictions(serving_onnx, [p for p, _ in items])
    return {
        "paths": [p for p, _ in items],
        "names": names,
        "probs": probs,
        "y_true": np.array([names.index(c) for _, c in items]),
        "y_pred": probs.argmax(axis=1),
    }


# -- the library ---------------------------------------------------------------------------------------


def test_metrics_equal_scikit_learn_on_an_independent_run(evaluated: dict, expected: dict) -> None:
    y, p, names = expected["y_true"], expected["y_pred"], expected["names"]
    assert 0.0 < accuracy_score(y, p) < 1.0  # the check below is not between two trivial values
    assert evaluated["split"] == "all" and evaluated["images"] == 10 * PER_CLASS
    assert evaluated["skipped"] == 0 and evaluated["classes"] == names
    assert evaluated["accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-12)
    assert evaluated["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p), abs=1e-12)
    assert evaluated["macro_f1"] == pytest.approx(
        f1_score(y, p, average="macro", zero_division=0), abs=1e-12
    )
    labels = list(range(len(names)))
    prec, rec, f1, support = precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    for i, name in enumerate(names):
        got = evaluated["per_class"][name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx(
            (prec[i], rec[i], f1[i]), abs=1e-12
        )
        assert got["support"] == support[i] == PER_CLASS
    assert evaluated["confusion_matrix"] == confusion_matrix(y, p, labels=labels).tolist()
    assert set(evaluated["latency_ms"]) == {"1", "32"}
    assert all(0 < t["p50"] <= t["p99"] for t in evaluated["latency_ms"].values())


def test_csv_lists_exactly_the_misclassified_files(evaluated: dict, expected: dict) -> None:
    names, probs = expected["names"], expected["probs"]
    with open(evaluated["misclassified_csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "true", "predicted", "confidence", *(f"p_{n}" for n in names)]
    wrong = {
        path: i
        for i, path in enumerate(expected["paths"])
        if expected["y_pred"][i] != expected["y_true"][i]
    }
    assert sorted(r["path"] for r in rows) == sorted(wrong) and evaluated["misclassified"] == len(
        wrong
    )
    for r in rows:
        i = wrong[r["path"]]
        assert r["true"] == names[expected["y_true"][i]] == Path(r["path"]).parent.name
        assert r["predicted"] == names[expected["y_pred"][i]]
        assert float(r["confidence"]) == pytest.approx(probs[i].max(), abs=1e-6)
        assert [float(r[f"p_{n}"]) for n in names] == pytest.approx(probs[i], abs=1e-6)
    confidence = [float(r["confidence"]) for r in rows]
    assert confidence == sorted(confidence, reverse=True)  # most confident mistakes first


def test_a_split_is_the_one_training_used_and_the_csv_defaults_to_the_current_folder(
    serving_onnx: Path, digit_folder: Path, expected: dict, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    r = evaluate_onnx(
        serving_onnx, str(digit_folder), "test", seed=3, latency_runs=RUNS, batch_sizes=(1,)
    )
    test = resolve_splits(
        str(digit_folder), 0.1, 0.1, 3
    ).test  # the split `finetune` takes (DataConfig defaults)
    assert r["images"] == len(test) == 10 and set(r["latency_ms"]) == {"1"}
    index = {p: i for i, p in enumerate(expected["paths"])}
    rows = [index[p] for p, _ in test]
    assert r["accuracy"] == pytest.approx(
        accuracy_score(expected["y_true"][rows], expected["y_pred"][rows])
    )
    assert Path(r["misclassified_csv"]) == tmp_path / "digits_cnn.test.misclassified.csv"
    assert Path(r["misclassified_csv"]).is_file()


def test_folder_classes_are_matched_to_the_model_by_name(
    serving_onnx: Path, digit_folder: Path, expected: dict, tmp_path: Path
) -> None:
    sub = tmp_path / "two"  # folder indices 0, 1 are the model's classes 3 and 7
    for c in ("3", "7"):
        shutil.copytree(digit_folder / c, sub / c)
    r = evaluate_onnx(
        serving_onnx,
        str(sub),
        "all",
        latency_runs=RUNS,
        batch_sizes=(1,),
        errors_csv=tmp_path / "e.csv",
    )
    rows = [i for i, p in enumerate(expected["paths"]) if Path(p).parent.name in ("3", "7")]
    y, p = expected["y_true"][rows], expected["y_pred"][rows]
    assert r["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert r["confusion_matrix"] == confusion_matrix(y, p, labels=list(range(10))).tolist()
    assert [r["per_class"][n]["support"] for n in expected["names"]] == [
        0,
        0,
        0,
        PER_CLASS,
        0,
        0,
        0,
        PER_CLASS,
        0,
        0,
    ]


def test_unreadable_images_are_skipped_with_a_warning_and_counted(
    serving_onnx: Path, digit_folder: Path, tmp_path: Path, caplog
) -> None:
    sub = tmp_path / "broken"
    shutil.copytree(digit_folder, sub)
    (sub / "4" / "zz_truncated.png").write_bytes(
        (sub / "4" / sorted(os.listdir(sub / "4"))[0]).read_bytes()[:40]
    )
    with caplog.at_level(logging.WARNING, logger="transferkit.export.scoring"):
        r = evaluate_onnx(
            serving_onnx,
            str(sub),
            "all",
            latency_runs=RUNS,
            batch_sizes=(1,),
            errors_csv=tmp_path / "e.csv",
        )
    assert r["skipped"] == 1 and r["images"] == 10 * PER_CLASS
    assert r["skipped_files"] == [str(sub / "4" / "zz_truncated.png")]
    assert "zz_truncated.png" in caplog.text


def test_onnx_figures_keeps_its_keys_and_adds_the_classification_metrics(
    serving_onnx: Path, evaluated: dict, expected: dict
) -> None:
    samples = list(zip(expected["paths"], expected["y_true"].tolist()))
    f = onnx_figures(serving_onnx, samples, threads=1, batch_sizes=(1,), runs=RUNS)
    assert {
        "onnx",
        "arch",
        "parameters",
        "file_mb",
        "input_size",
        "test_acc",
        "test_images",
        "threads",
        "latency_ms",
    } <= set(f)
    assert f["test_images"] == 10 * PER_CLASS and f["arch"] == "tiny_cnn" and f["threads"] == 1
    assert f["test_acc"] == pytest.approx(accuracy_score(expected["y_true"], expected["y_pred"]))
    for key in ("balanced_accuracy", "macro_f1", "per_class", "confusion_matrix", "classes"):
        assert f[key] == evaluated[key]


def test_library_errors_name_the_problem(
    serving_onnx: Path, digit_folder: Path, tmp_path: Path
) -> None:
    import onnx

    bare = tmp_path / "bare.onnx"  # a valid ONNX graph without transferkit metadata
    proto = onnx.load(str(serving_onnx))
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    with pytest.raises(MetadataError, match="bare.onnx.*no transferkit metadata"):
        evaluate_onnx(bare, str(digit_folder))
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        evaluate_onnx(tmp_path / "missing.onnx", str(digit_folder))
    presplit = tmp_path / "presplit"  # pre-split folder with train/ and val/ but no test/
    for part in ("train", "val"):
        for c in ("1", "2"):
            shutil.copytree(digit_folder / c, presplit / part / c)
    with pytest.raises(ValueError, match="test split .* is empty"):
        evaluate_onnx(serving_onnx, str(presplit), "test")
    with pytest.raises(ValueError, match="val_fraction"):
        evaluate_onnx(serving_onnx, str(digit_folder), val_fraction=0.7)
    with pytest.raises(ValueError, match="is a folder"):  # refused before scoring, not after
        evaluate_onnx(serving_onnx, str(digit_folder), errors_csv=tmp_path)


# -- the command line ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_all_json(serving_onnx: Path, digit_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    """``transferkit evaluate MODEL --dataset FOLDER --split all --json`` in a fresh interpreter
    that reports, at exit, which of torch / torchvision / ray it imported."""
    out = tmp_path_factory.mktemp("eval_cli")
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write('HEAVY=' + ','.join(m for m in ('torch', 'torchvision', 'ray') "
        "if m in sys.modules) + '\\n'))\n"
        "from transferkit.cli import main\n"
        f"sys.argv = ['transferkit', 'evaluate', {str(serving_onnx)!r}, '--dataset', {str(digit_folder)!r}, "
        f"'--split', 'all', '--json', '--latency-runs', '{RUNS}', '--threads', '1']\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=out, env=env, capture_output=True, text=True, timeout=120
    ), out


def test_cli_json_is_one_object_and_imports_neither_torch_nor_ray(
    cli_all_json, evaluated: dict
) -> None:
    r, out = cli_all_json
    assert r.returncode == 0, r.stderr[-2000:]
    assert "HEAVY=\n" in r.stderr
    doc = json.loads(r.stdout)  # the whole of stdout is one JSON value ...
    assert isinstance(doc, dict)  # ... and an object
    for key in (
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "per_class",
        "confusion_matrix",
        "classes",
    ):
        assert doc[key] == evaluated[key]
    assert doc["misclassified_csv"] == str(out.resolve() / "digits_cnn.all.misclassified.csv")


def test_cli_summary_shows_the_metrics_and_the_csv(
    serving_onnx: Path, digit_folder: Path, evaluated: dict, tmp_path: Path
) -> None:
    r = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(serving_onnx),
            "--dataset",
            str(digit_folder),
            "--split",
            "all",
            "--latency-runs",
            str(RUNS),
            "--errors",
            str(tmp_path / "m.csv"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert f"accuracy {evaluated['accuracy']:.4f}" in r.stdout
    assert f"balanced accuracy {evaluated['balanced_accuracy']:.4f}" in r.stdout
    assert "confusion matrix (rows: true class, columns: predicted)" in r.stdout
    assert "batch 32 p50" in r.stdout and str(tmp_path / "m.csv") in r.stdout
    assert (tmp_path / "m.csv").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(serving_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``transferkit serve MODEL`` on a free loopback port (as tests/serving)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("eval_server") / "server.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "transferkit.cli",
                "serve",
                str(serving_onnx),
                "--port",
                str(port),
                "--threads",
                "1",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
                try:
                    if httpx.get(url + "/v2/health/ready", timeout=2.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"server not ready within 60 s:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_split_all_accuracy_equals_serving_every_image_over_http(
    cli_all_json, server_url: str, digit_folder: Path
) -> None:
    r, _ = cli_all_json
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    items = folder_images(digit_folder)
    with httpx.Client(base_url=server_url, timeout=30.0) as client:
        served = []
        for path, true_class in items:
            resp = client.post(
                "/v1/predict",
                params={"top_k": 1},
                content=Path(path).read_bytes(),
                headers={"content-type": "image/png"},
            )
            assert resp.status_code == 200, resp.text
            served.append(resp.json()["predictions"][0]["label"] == true_class)
    assert doc["images"] == len(items) == 10 * PER_CLASS
    assert doc["accuracy"] == pytest.approx(sum(served) / len(served), abs=1e-12)


def _bad_class_folder(digit_folder: Path, tmp_path: Path) -> Path:
    sub = tmp_path / "with_cat"
    shutil.copytree(digit_folder / "1", sub / "1")
    shutil.copytree(digit_folder / "2", sub / "cat")
    return sub


@pytest.mark.parametrize(
    "case, expected_words",
    [
        ("unknown split", ["--split 'holdout'", "test, val, train, all"]),
        ("missing folder", ["no_such_folder", "neither an existing folder nor a bundled dataset"]),
        ("class the model lacks", ["'cat'", "the model does not know", "'0', '1'"]),
        ("not an ONNX file", ["notes.onnx", "not an ONNX model", "transferkit export"]),
        ("missing model", ["missing.onnx", "file not found"]),
    ],
)
def test_bad_input_exits_2_and_names_the_problem(
    case: str, expected_words: list[str], serving_onnx: Path, digit_folder: Path, tmp_path: Path
) -> None:
    model, dataset, extra = str(serving_onnx), str(digit_folder), []
    if case == "unknown split":
        extra = ["--split", "holdout"]
    elif case == "missing folder":
        dataset = str(tmp_path / "no_such_folder")
    elif case == "class the model lacks":
        dataset = str(_bad_class_folder(digit_folder, tmp_path))
    elif case == "not an ONNX file":
        (tmp_path / "notes.onnx").write_text("this is not an ONNX model")
        model = str(tmp_path / "notes.onnx")
    elif case == "missing model":
        model = str(tmp_path / "missing.onnx")
    r = CliRunner().invoke(
        app,
        [
            "evaluate",
            model,
            "--dataset",
            dataset,
            *extra,
            "--latency-runs",
            str(RUNS),
            "--errors",
            str(tmp_path / "e.csv"),
        ],
    )
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error:") and r.stdout == ""
    for word in expected_words:
        assert word in r.stderr, r.stderr
    assert not (tmp_path / "e.csv").exists()
