"""The bundled ELPV solar-cell images (elpv-dataset wheel): label schemes, counts against the
package's own labels.csv and the published counts, file names, and the error without the extra."""

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from transferkit.data.bundled import ELPV_SCHEMES, elpv_cells, materialize
from transferkit.data.folder import scan_folder

# Deitsch et al. 2019 / the package's labels.csv: 2,624 cells; probabilities 0: 1,508, 1/3: 295,
# 2/3: 106, 1: 715; 1,074 mono, 1,550 poly.
PUBLISHED = {
    "defect": {"functional": 1508 + 295, "defective": 106 + 715},
    "severity": {"p000": 1508, "p033": 295, "p067": 106, "p100": 715},
    "type": {"mono": 1074, "poly": 1550},
}


@pytest.fixture(scope="module")
def elpv_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("elpv") / "defect"
    materialize("elpv", out)
    return out


def test_the_package_loader_agrees_with_our_cells():
    from elpv_dataset.utils import load_dataset

    images, probs, types = load_dataset()
    cells = elpv_cells()
    assert len(cells) == len(probs) == 2624
    assert [c.probability for c in cells] == pytest.approx(probs.tolist())
    assert [c.cell_type for c in cells] == types.tolist()
    from PIL import Image

    first = np.asarray(Image.open(cells[0].path))
    assert first.shape == (300, 300) and first.dtype == np.uint8
    assert np.array_equal(first, images[0])


def test_defect_scheme_thresholds_at_one_half_and_keeps_ids_and_types(elpv_dir):
    names, samples = scan_folder(elpv_dir)
    assert names == sorted(ELPV_SCHEMES["defect"])
    counts = Counter(names[y] for _, y in samples)
    assert counts == PUBLISHED["defect"]
    by_name = {c.file_name: c for c in elpv_cells()}
    for path, y in samples[::97]:
        cell = by_name[Path(path).name]  # <type>_cellNNNN.png
        assert Path(path).name == f"{cell.cell_type}_{cell.path.name}"
        assert names[y] == ("defective" if cell.probability >= 0.5 else "functional")
        assert Path(path).read_bytes() == cell.path.read_bytes()  # the package's PNG, unchanged


@pytest.mark.parametrize("name,scheme", [("elpv-severity", "severity"), ("elpv-type", "type")])
def test_other_label_schemes_have_the_published_counts(tmp_path, name, scheme):
    counts = materialize(name, tmp_path / scheme)
    assert counts == PUBLISHED[scheme]
    assert sorted(p.name for p in (tmp_path / scheme).iterdir()) == sorted(ELPV_SCHEMES[scheme])


def test_without_the_extra_the_error_names_it(tmp_path):
    code = (
        "import sys; sys.modules['elpv_dataset'] = None\n"
        "from transferkit.data.bundled import materialize\n"
        f"materialize('elpv', {str(tmp_path / 'x')!r})\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0
    assert "transferkit[datasets]" in r.stderr and "elpv-dataset" in r.stderr


def test_cli_without_the_extra_exits_2_naming_it(tmp_path):
    code = (
        "import sys; sys.modules['elpv_dataset'] = None\n"
        "sys.argv = ['transferkit', 'data', 'materialize', 'elpv', "
        + repr(str(tmp_path / "x"))
        + "]\n"
        "from transferkit.cli import main; main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "transferkit[datasets]" in r.stderr and "Traceback" not in r.stderr
