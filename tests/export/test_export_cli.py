"""``transferkit export`` with ``--quantize`` and ``--embed-preprocessing`` on a run folder made
here without Ray (a random-weight MobileNetV2 ``model.pt`` and a ``splits.json`` of real digits):
what the command leaves on disk when the gate refuses."""

import json

import pytest
from helpers import run_cli

from transferkit.config import ModelConfig, Preprocessing
from transferkit.models.build import build_model
from transferkit.models.portable import save_portable


@pytest.fixture(scope="module")
def run_folder(digits_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    classes = [str(i) for i in range(10)]
    built = build_model(ModelConfig(arch="mobilenet_v2", weights=None), 10)
    prep = Preprocessing(input_size=32)
    save_portable(run / "model.pt", built.model.eval(), "mobilenet_v2", classes, prep)
    samples = [
        [str(p), int(c)] for c in classes for p in sorted((digits_dir / c).glob("*.png"))[:6]
    ]
    (run / "splits.json").write_text(
        json.dumps({"class_names": classes, "source": str(digits_dir), "train": samples[::2],
                    "val": [], "test": samples[1::2], "skipped": []})
    )  # fmt: skip
    return run


def _tk(*args):
    return run_cli(*args)


@pytest.mark.parametrize("embed", [False, True])
def test_a_refused_quantization_leaves_its_figures_beside_the_output_and_no_model(
    run_folder, tmp_path, embed
):
    out = tmp_path / "m-int8.onnx"
    args = ["export", run_folder, "--quantize", "qdq", "--max-latency-ratio", "0.0001"]
    args += ["--calibration-images", "8", "--latency-runs", "5", "--output", out]
    r = _tk(*args, *(["--embed-preprocessing"] if embed else []))
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-2000:]
    assert not out.exists() and "Traceback" not in r.stderr
    figures = json.loads((tmp_path / "m-int8.onnx.quantization.json").read_text())
    assert figures["shipped"] is None and list(figures["variants"]) == ["qdq"]
