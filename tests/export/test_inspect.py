"""``transferkit inspect``: what an ONNX file holds, checked against ONNX Runtime's own view of the
file and the metadata the fixture wrote (Ray-free)."""

import hashlib
import json

import onnxruntime as ort
from helpers import run_cli

from transferkit.export.inspect import inspect_onnx


def _tk(*args):
    return run_cli(*args)


def test_inspect_shows_what_a_server_needs(serving_onnx):
    r = inspect_onnx(serving_onnx)
    sess = ort.InferenceSession(str(serving_onnx), providers=["CPUExecutionProvider"])
    assert [(t["name"], t["shape"]) for t in r["inputs"]] == [
        (i.name, i.shape) for i in sess.get_inputs()
    ]  # ORT reports a symbolic dimension by its name, as inspect does
    assert r["inputs"][0]["dtype"] == "float32" and r["outputs"][0]["shape"] == ["batch", 10]
    assert r["sha256"] == hashlib.sha256(serving_onnx.read_bytes()).hexdigest()
    assert r["bytes"] == serving_onnx.stat().st_size and r["opset"] >= 18
    assert r["operators"]["Conv"] == 2 and "Gemm" in r["operators"]
    tk = r["transferkit"]
    assert tk["classes"] == [str(i) for i in range(10)] and tk["arch"] == "tiny_cnn"
    assert tk["preprocessing"]["input_size"] == 32 and tk["preprocessing"]["std"][0] == 0.229
    assert tk["quantization"] is None and tk["embedded_preprocessing"] is False


def test_inspect_json_and_text_from_the_command_line(serving_onnx):
    r = _tk("inspect", serving_onnx, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["transferkit"]["source_run"] == "tests/conftest.py"
    r = _tk("inspect", serving_onnx)
    assert r.returncode == 0, r.stderr
    assert "input  input: float32 [batch, 3, 32, 32]" in r.stdout
    assert "input_size 32" in r.stdout and "quantization: none" in r.stdout


def test_inspect_of_a_file_without_our_metadata_says_so(serving_onnx, tmp_path):
    import onnx

    m = onnx.load(str(serving_onnx))
    del m.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(m, str(bare))
    r = _tk("inspect", bare)
    assert r.returncode == 0 and "no transferkit metadata" in r.stdout


def test_inspect_of_a_text_file_is_a_clear_error(tmp_path):
    f = tmp_path / "notes.onnx"
    f.write_text("not a model")
    r = _tk("inspect", f)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "ONNX" in r.stderr
