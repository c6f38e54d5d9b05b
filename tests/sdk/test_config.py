from pathlib import Path

import pytest

from sdk.config import ProjectConfig, config_to_yaml, load_config, validate_config
from sdk.errors import DistillError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(ROOT.glob("verticals/*/*.yaml"))


def test_shipped_presets_exist():
    assert {p.stem for p in SHIPPED} >= {"tiny", "default"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_yaml_validates_and_names_a_registered_template(path):
    from sdk.registry import get_template

    cfg = load_config(path)
    assert get_template(cfg.template).name == cfg.template
    assert cfg.preset == path.stem


def test_unknown_key_is_named_with_its_path():
    with pytest.raises(DistillError) as err:
        validate_config({"template": "fraud", "distill": {"temprature": 2.0}}, source="p.yaml")
    assert "distill.temprature: unknown key" in str(err.value)
    assert "p.yaml" in str(err.value)


def test_bad_value_is_named():
    with pytest.raises(DistillError, match="distill.alpha"):
        validate_config({"template": "fraud", "distill": {"alpha": 1.5}})


def test_yaml_round_trip(tmp_path):
    cfg = validate_config({"template": "fraud", "student": {"layers": 3}})
    p = tmp_path / "project.yaml"
    p.write_text(config_to_yaml(cfg))
    assert load_config(p) == cfg


def test_unreadable_and_non_mapping_files(tmp_path):
    with pytest.raises(DistillError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(DistillError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_defaults_only_in_the_model():
    cfg = ProjectConfig(template="fraud")
    assert cfg.teacher.model == "embedded:smollm2-135m-instruct"
    assert cfg.teacher.trust_remote_code is False


def test_docs_config_reference_is_current():
    from sdk.config import reference_markdown

    assert (ROOT / "docs" / "config.md").read_text() == reference_markdown(), "run: python -m sdk.config > docs/config.md"
