from pathlib import Path

import pytest
from pydantic import ValidationError

from fl_core.config import FederationConfig, load_config
from fl_core.errors import ConfigError
from fl_core.study import study_hash


def test_defaults_are_the_make_run_federation():
    config = load_config()
    assert config.rounds == 10
    assert config.data.synthetic.hospitals == 20
    assert config.data.source == "synthetic"


def test_yaml_and_toml_files_load_and_overrides_win(tmp_path: Path):
    yaml_file = tmp_path / "f.yaml"
    yaml_file.write_text("rounds: 4\nround:\n  min_sites: 3\n")
    toml_file = tmp_path / "f.toml"
    toml_file.write_text("rounds = 4\n[round]\nmin_sites = 3\n")
    for path in (yaml_file, toml_file):
        config = load_config(path, {"rounds": 7})
        assert config.rounds == 7
        assert config.round.min_sites == 3


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"bogus": 1}, "bogus: unknown key"),
        ({"round.bogus": 1}, "round.bogus: unknown key"),
        ({"rounds": -1}, "rounds:"),
        ({"round.min_sites": 50}, "round.min_sites 50 > data.synthetic.hospitals 20"),
        ({"data.source": "prepared", "data.path": "/no/such/folder"}, "data.path /no/such/folder"),
        ({"data.source": "prepared"}, "data.path is required"),
        ({"training.optimizer": "adamw"}, "training.optimizer:"),
        ({"federation_id": "Bad Id"}, "federation_id:"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=overrides)
    assert field in str(caught.value)
    assert caught.value.exit_code == 2


def test_unparsable_and_missing_files(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("rounds: [1,\n")
    with pytest.raises(ConfigError, match="does not parse"):
        load_config(broken)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listed)


def test_config_is_frozen_and_hash_is_stable():
    config = FederationConfig()
    with pytest.raises(ValidationError):
        config.rounds = 3  # type: ignore[misc]
    assert study_hash(config) == study_hash(FederationConfig())
    assert study_hash(config) != study_hash(load_config(overrides={"rounds": 3}))


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
)
def test_shipped_example_configs_are_valid(path):
    assert load_config(path).rounds >= 1
