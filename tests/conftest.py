"""Shared fixtures: one real Ray cluster per test session, the real digits data, and one small
real fine-tuning run (MobileNetV2 with ImageNet weights, 2 Ray Train workers, 32 px) that the
training, export and serving tests share; and a small random-weight ONNX classifier (``serving_onnx``)
that the serving and export tests use."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token file needed for a local test cluster
# bundled datasets are cached under TRANSFERKIT_HOME: keep the tests' copy out of the user's cache
os.environ["TRANSFERKIT_HOME"] = tempfile.mkdtemp(prefix="transferkit-test-home-")

SMALL = 32  # image size for tests: keeps the suite fast on 2 CPUs


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster (2 CPUs, dashboard on: see shared NOTES) shared by every test.

    Sets ``RAY_ADDRESS`` so CLI subprocesses join it instead of starting a second cluster."""
    import ray

    ctx = ray.init(num_cpus=2, include_dashboard=True, logging_level="WARNING")
    old = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = ctx.address_info["address"]
    yield ctx
    ray.shutdown()
    if old is None:
        os.environ.pop("RAY_ADDRESS", None)
    else:
        os.environ["RAY_ADDRESS"] = old


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """All 1,797 real digits as ``<class>/*.png``."""
    from transferkit.data import materialize

    root = tmp_path_factory.mktemp("digits") / "all"
    materialize("digits", root)
    return root


@pytest.fixture(scope="session")
def digits_80_20(digits_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A stratified 80/20 split into two ImageFolders (train side, held-out side)."""
    from transferkit.data import scan_folder, stratified_split

    names, samples = scan_folder(digits_dir)
    train, _, hold = stratified_split(samples, 0.0, 0.2, seed=1)
    base = tmp_path_factory.mktemp("digits8020")
    out = []
    for sub, items in (("train80", train), ("holdout20", hold)):
        for p, y in items:
            d = base / sub / names[y]
            d.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, d)
        out.append(base / sub)
    return out[0], out[1]


@pytest.fixture(scope="session")
def trained_run(ray_cluster, digits_80_20, tmp_path_factory) -> Path:
    """A real fine-tuning run folder (2 workers, 3 epochs, 32 px) on the 80% folder."""
    from transferkit.config import FinetuneConfig
    from transferkit.training.trainer import finetune

    run = tmp_path_factory.mktemp("runs") / "teacher"
    cfg = FinetuneConfig.model_validate(
        {
            "data": {"dataset": str(digits_80_20[0]), "image_size": SMALL},
            "model": {"arch": "mobilenet_v2", "weights": "IMAGENET1K_V1", "freeze_depth": 2},
            "optim": {"epochs": 3},
            "scaling": {"num_workers": 2},
            "output": str(run),
            "seed": 0,
        }
    )
    finetune(cfg)
    return run


@pytest.fixture(scope="session")
def exported_onnx(trained_run, tmp_path_factory) -> Path:
    """``trained_run`` exported and validated to ONNX."""
    from transferkit.config import ExportConfig
    from transferkit.export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "teacher.onnx"
    export_onnx(ExportConfig(run=str(trained_run), output=str(out)))
    return out


# -- a small ONNX classifier with transferkit metadata (serving and export tests) ----------------
#
# ``serving_onnx`` builds a small CNN and exports it with torch's dynamo exporter (random weights,
# no download). Its contract, kept when the body is replaced by the training pipeline's exported
# model: a session-scoped ``pathlib.Path`` to a self-contained ``.onnx`` file that carries
# transferkit metadata (class names '0'..'9', preprocessing) and has a symbolic batch dimension.

SERVING_CLASS_NAMES = [str(i) for i in range(10)]


@pytest.fixture(scope="session")
def serving_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-contained ONNX classifier (float32 [N,3,32,32] -> logits [N,10]) with metadata."""
    import onnx
    import torch
    from helpers import tiny_cnn

    from transferkit.config import Preprocessing
    from transferkit.metadata import ModelMetadata

    path = tmp_path_factory.mktemp("serving_model") / "digits_cnn.onnx"
    torch.onnx.export(
        tiny_cnn(3, len(SERVING_CLASS_NAMES)),
        (torch.randn(2, 3, 32, 32),),
        str(path),
        dynamo=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: "batch"},),
        external_data=False,
    )
    proto = onnx.load(str(path))
    meta = ModelMetadata(
        class_names=SERVING_CLASS_NAMES,
        preprocessing=Preprocessing(
            input_size=32, channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
        ),
        arch="tiny_cnn",
        source_run="tests/conftest.py",
        extra={"purpose": "serving tests"},
    )
    for key, value in meta.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path
