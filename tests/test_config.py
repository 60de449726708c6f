"""Tests for recsys.config: defaults, YAML file, environment overrides and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from recsys.config import Config, ModelConfig, load_config
from recsys.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_valid_and_as_documented() -> None:
    config = load_config(environ={})
    assert config == Config()
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert config.model.history_length == 20
    assert config.paths.dataset is None
    # Paths come out absolute, keeping the documented relative default's tail.
    for path in (config.paths.artifacts, config.paths.state, config.paths.data_dir):
        assert path.is_absolute()
    assert config.paths.artifacts.name == "artifacts"
    assert config.paths.data_dir.parts[-2:] == (".cache", "data")
    assert config.models_dir == config.paths.artifacts / "models"
    assert config.indexes_dir == config.paths.artifacts / "indexes"
    assert config.feast_dir == config.paths.state / "feast"


def test_environment_without_recsys_variables_is_ignored() -> None:
    assert load_config(environ={"HOME": "/root", "PATH": "/bin", "RECSYSX": "1"}) == Config()


def test_yaml_file_loads_over_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        "kafka:\n  bootstrap_servers: kafka.internal:9094\n  partitions: 8\n"
        "model:\n  embedding_dim: 64\n"
        "paths:\n  artifacts: /srv/artifacts\n",
    )
    config = load_config(path, environ={})
    assert config.kafka.bootstrap_servers == "kafka.internal:9094"
    assert config.kafka.partitions == 8
    assert config.model.embedding_dim == 64
    assert config.paths.artifacts == Path("/srv/artifacts")
    assert config.models_dir == Path("/srv/artifacts/models")
    # Untouched keys keep their defaults.
    assert config.kafka.topic == Config().kafka.topic
    assert config.serving == Config().serving


def test_relative_paths_in_yaml_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "c.yaml", "paths:\n  artifacts: rel/art\n  dataset: ml-100k\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(path, environ={})
    assert config.paths.artifacts == Path.cwd() / "rel" / "art"
    assert config.paths.dataset == Path.cwd() / "ml-100k"
    assert config.models_dir == Path.cwd() / "rel" / "art" / "models"


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "empty.yaml", ""), environ={}) == Config()


def test_env_override_wins_over_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml", "kafka:\n  bootstrap_servers: from-yaml:9092\n  partitions: 8\n"
    )
    config = load_config(path, environ={"RECSYS_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9093"})
    assert config.kafka.bootstrap_servers == "127.0.0.1:9093"
    assert config.kafka.partitions == 8  # the rest of the YAML section survives


def test_env_values_are_parsed_as_typed_yaml_scalars() -> None:
    config = load_config(
        environ={
            "RECSYS_MODEL__EPOCHS": "7",
            "RECSYS_MODEL__LEARNING_RATE": "0.25",
            "RECSYS_SERVING__PORT": "0",
            "RECSYS_PATHS__DATASET": "~",  # YAML null, not the path "~"
        }
    )
    assert config.model.epochs == 7
    assert isinstance(config.model.epochs, int)
    assert config.model.learning_rate == 0.25
    assert config.serving.port == 0
    assert config.paths.dataset is None


def test_env_string_that_looks_like_host_port_stays_a_string() -> None:
    config = load_config(environ={"RECSYS_KAFKA__TOPIC": "events.v2"})
    assert config.kafka.topic == "events.v2"


def test_env_override_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"model\.epochs"):
        load_config(environ={"RECSYS_MODEL__EPOCHS": "0"})  # ge=1


def test_recsys_config_env_selects_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "chosen.yaml", "serving:\n  port: 6000\n")
    config = load_config(environ={"RECSYS_CONFIG": str(path)})
    assert config.serving.port == 6000


def test_explicit_path_beats_recsys_config(tmp_path: Path) -> None:
    chosen = write(tmp_path / "chosen.yaml", "serving:\n  port: 6000\n")
    other = write(tmp_path / "other.yaml", "serving:\n  port: 7000\n")
    config = load_config(chosen, environ={"RECSYS_CONFIG": str(other)})
    assert config.serving.port == 6000


def test_recsys_config_naming_a_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(environ={"RECSYS_CONFIG": str(missing)})


# --------------------------------------------------------------------------------------------
# Errors name the file and the key


def test_unknown_section_in_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "kafak:\n  topic: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert "kafak" in str(info.value)


def test_unknown_key_in_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "kafka:\n  bootstrap_server: x:1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert "kafka.bootstrap_server" in str(info.value)


def test_bad_type_in_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "serving:\n  port: lots\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert "serving.port" in str(info.value)


def test_out_of_range_value_in_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "serving:\n  port: 70000\n")
    with pytest.raises(ConfigError, match=r"serving\.port"):
        load_config(path, environ={})


def test_malformed_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "kafka:\n  topic: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert "not valid YAML" in str(info.value)


def test_yaml_that_is_a_list(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "- kafka\n- model\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert "mapping" in str(info.value)


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "kafka: 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert "kafka" in str(info.value)


def test_section_that_is_not_a_mapping_with_an_env_override(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "kafka: 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"RECSYS_KAFKA__TOPIC": "t"})
    assert str(path) in str(info.value)
    assert "kafka" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["RECSYS_FOO", "RECSYS_KAFKA__", "RECSYS_KAFKA_TOPIC"])
def test_bad_env_var_name(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={name: "x"})
    assert name in str(info.value)
    assert "RECSYS_<SECTION>__<KEY>" in str(info.value)


def test_unknown_section_and_key_from_env() -> None:
    with pytest.raises(ConfigError, match=r"kafak"):
        load_config(environ={"RECSYS_KAFAK__TOPIC": "x"})
    with pytest.raises(ConfigError, match=r"kafka\.topik"):
        load_config(environ={"RECSYS_KAFKA__TOPIK": "x"})


def test_bad_env_type_names_the_key_and_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "kafka:\n  topic: t\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"RECSYS_KAFKA__PARTITIONS": "many"})
    message = str(info.value)
    assert "kafka.partitions" in message
    assert str(path) in message
    assert "environment" in message


# --------------------------------------------------------------------------------------------
# with_overrides


def test_with_overrides_applies_and_keeps_the_rest() -> None:
    base = Config()
    config = base.with_overrides({"model": {"epochs": 2}, "serving": {"port": 0}})
    assert config.model.epochs == 2
    assert config.serving.port == 0
    assert config.model.embedding_dim == base.model.embedding_dim
    assert base.model.epochs == ModelConfig().epochs  # the original is untouched (frozen)


def test_with_overrides_converts_path_strings() -> None:
    config = Config().with_overrides({"paths": {"artifacts": "/tmp/a"}})
    assert config.paths.artifacts == Path("/tmp/a")
    assert config.indexes_dir == Path("/tmp/a/indexes")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"model": {"epochs": 0}}, "model.epochs"),
        ({"model": {"epochs": "x"}}, "model.epochs"),
        ({"kafka": {"nope": 1}}, "kafka.nope"),
        ({"nope": {"a": 1}}, "nope"),
        ({"feast": {"online_store": "memcached"}}, "feast.online_store"),
    ],
)
def test_with_overrides_validates(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config().with_overrides(overrides)
    assert key in str(info.value)
    assert "overrides" in str(info.value)


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(ValidationError):
        config.model.epochs = 9  # type: ignore[misc]


def test_with_overrides_makes_relative_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config().with_overrides({"paths": {"state": "st"}})
    assert config.paths.state == Path.cwd() / "st"
    assert config.feast_dir == Path.cwd() / "st" / "feast"
