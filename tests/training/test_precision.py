"""``scaling.precision``: which dtype ``torch.autocast`` gets (Ray-free)."""

import pytest
import torch

from transferkit.config import ConfigError, FinetuneConfig
from transferkit.training.precision import autocast_dtype, cpu_has_native_bf16

CPU, GPU = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    ("precision", "device", "dtype"),
    [
        ("auto", CPU, None),
        ("auto", GPU, torch.bfloat16),
        ("fp32", CPU, None),
        ("fp32", GPU, None),
        ("bf16", GPU, torch.bfloat16),
    ],
)
def test_precision_maps_to_the_autocast_dtype(precision, device, dtype):
    assert autocast_dtype(precision, device) is dtype


def test_bf16_on_a_cpu_needs_native_support_and_says_so_when_it_falls_back(caplog, monkeypatch):
    with caplog.at_level("WARNING"):
        expected = torch.bfloat16 if cpu_has_native_bf16() else None
        assert autocast_dtype("bf16", CPU) is expected
    assert ("emulated" in caplog.text) is (not cpu_has_native_bf16())
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False)  # a CPU without either
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert autocast_dtype("bf16", CPU) is None
    assert "training in float32" in caplog.text
    assert autocast_dtype("bf16", GPU) is torch.bfloat16


def test_native_bf16_probe_agrees_with_the_cpu_flags():
    """The probe against /proc/cpuinfo's flags (Linux), an independent source."""
    from helpers import cpu_flags

    flags = cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags here")
    assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_tile" in flags)


def test_unknown_precision_is_refused_naming_the_field_and_values():
    with pytest.raises(ValueError, match="scaling.precision must be auto, bf16 or fp32"):
        autocast_dtype("fp16", CPU)
    with pytest.raises((ConfigError, ValueError), match="precision"):
        FinetuneConfig.model_validate({"scaling": {"precision": "fp16"}})


def test_bf16_autocast_keeps_weights_and_gradients_float32():
    """What the worker loop does on a CPU: convolutions in bfloat16, weights and grads float32."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=autocast_dtype("bf16", CPU)):
        logits = net(x)
    assert logits.dtype is torch.bfloat16
    torch.nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1])).backward()
    assert {p.grad.dtype for p in net.parameters()} == {torch.float32}
