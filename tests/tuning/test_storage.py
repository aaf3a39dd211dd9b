"""The experiment folder through a URI (pyarrow's filesystem layer, as Ray uses) and a path."""

import pytest

from transferkit.tuning.storage import ExperimentDir, ExperimentExistsError


@pytest.mark.parametrize("as_uri", [False, True])
def test_experiment_folder_is_claimed_once_written_and_read(tmp_path, as_uri):
    where = (tmp_path / "exp").as_uri() if as_uri else str(tmp_path / "exp")
    exp = ExperimentDir(where)
    assert exp.remote is as_uri and exp.name == "exp"
    assert exp.parent.endswith(str(tmp_path)) and not exp.is_used()
    exp.claim(overwrite=False)
    assert exp.write_text("trials.csv", "a,b\n1,2\n") == exp.join("trials.csv")
    assert exp.read_text("trials.csv") == "a,b\n1,2\n"
    assert (tmp_path / "exp" / "trials.csv").is_file() and exp.is_used()
    with pytest.raises(ExperimentExistsError, match="--resume"):
        ExperimentDir(where).claim(overwrite=False)
    ExperimentDir(where).claim(overwrite=True)
    assert not (tmp_path / "exp" / "trials.csv").exists()
    with pytest.raises(FileNotFoundError):
        exp.read_text("tune_config.yaml")
