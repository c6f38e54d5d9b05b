import re
from pathlib import Path

import pytest

from sdk.config import ProjectConfig, config_to_yaml, load_config, load_yaml, validate_config
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


def test_a_teacher_kinds_table_shows_only_the_presets_of_that_kind():
    from sdk.config import reference_markdown

    text = reference_markdown()
    for kind in ("openai", "llamacpp"):  # every shipped preset has an hf teacher: its model is no value of these
        table = re.split(r"\n##?#? ", text.split(f"### teacher (kind `{kind}`) keys")[1])[0]  # to the next heading
        assert "| teacher.model | `required` | " in table.replace("`teacher.model`", "teacher.model")
        assert "fraud/default" not in table and "embedded:smollm2-135m-instruct'" not in table, table
    hf = re.split(r"\n##?#? ", text.split("### teacher (kind `hf`) keys")[1])[0]
    assert "fraud/default" in hf and "`'embedded:smollm2-135m-instruct'` |" in hf


@pytest.mark.parametrize("data, expected", [
    ({"template": "fraud", "data": {"n_tain": 3}}, "data.n_tain: unknown key; did you mean `data.n_train`?"),
    ({"template": "fraud", "teacher": {"adapt": {"lora_rr": 2}}},
     "teacher.adapt.lora_rr: unknown key; did you mean `teacher.adapt.lora_r`?"),
    ({"temlpate": "fraud"}, "temlpate: unknown key; did you mean `template`?"),
    # a key of another section: the same section's namesake is suggested first
    ({"template": "fraud", "distill": {"temprature": 2.0}},
     "distill.temprature: unknown key; did you mean `distill.loss.temperature` or `distill.on_policy.temperature`?"),
    ({"template": "fraud", "distill": {"loss": {"kind": "soft_target_kd", "alpah": 0.5}}},
     "distill.loss.alpah: unknown key (loss 'soft_target_kd'); did you mean `distill.loss.alpha`?"),
    # a loss's own check, at its own key (it named the whole loss), and a list entry by its index
    ({"template": "code", "distill": {"stages": [{"name": "kd", "loss": {
        "kind": "response_kd", "temperature": {"kind": "step", "values": [5, 2, 1], "milestones": [0.5, 0.2]}}}]}},
     "distill.stages[0].loss.temperature: milestones must increase strictly, each in (0, 1)"),
    ({"template": "fraud", "export": {"formats": {"gguf": {"quants": ["Q9"]}}}},
     "export.formats.gguf.quants: unknown GGUF type(s) ['Q9']"),
    ({"template": "fraud", "template_options": {"fraud_rat": 0.1}},
     "template_options.fraud_rat: unknown key (template 'fraud'); did you mean `template_options.fraud_rate`?"),
    ({"template": "fraud", "student": {"layers": "six"}},
     "student.layers: Input should be a valid integer, unable to parse string as an integer (got 'six')"),
])
def test_errors_name_the_field_and_suggest_the_key_meant(data, expected):
    with pytest.raises(DistillError) as err:
        validate_config(data, source="p.yaml")
    assert expected in str(err.value)


def test_no_suggestion_for_a_key_like_no_other():
    with pytest.raises(DistillError) as err:
        validate_config({"template": "fraud", "student": {"zzzqqq": 1}})
    assert str(err.value).endswith("student.zzzqqq: unknown key")


_OPENAI = {"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"}


@pytest.mark.parametrize("teacher, expected", [
    # a key of another kind is said to be one, not suggested as itself ("did you mean `teacher.adapt`?")
    ({**_OPENAI, "adapt": {"enabled": False}}, "teacher.adapt: unknown key for kind openai (a key of kind hf)"),
    ({**_OPENAI, "n_ctx": 4096}, "teacher.n_ctx: unknown key for kind openai (a key of kind llamacpp)"),
    ({"base_url": "http://127.0.0.1:1/v1"}, "teacher.base_url: unknown key for kind hf (a key of kind openai)"),
    # suggestions come from the kind written only: `adapt` is no near miss of an openai teacher's `api`
    ({**_OPENAI, "modle": "m"}, "teacher.modle: unknown key; did you mean `teacher.model`?"),
    ({**_OPENAI, "adapta": 1}, "teacher.adapta: unknown key"),
    ({"kind": "llamacpp", "model": "x.gguf", "threds": 2}, "teacher.threds: unknown key; did you mean `teacher.threads`?"),
    ({"adapt": {"lora_rr": 2}}, "teacher.adapt.lora_rr: unknown key; did you mean `teacher.adapt.lora_r`?"),
])
def test_an_unknown_key_is_judged_against_the_teacher_kind_written(teacher, expected):
    with pytest.raises(DistillError) as err:
        validate_config({"template": "fraud", "teacher": teacher, "student": {"base": "embedded:smollm2-135m-instruct"}},
                        source="p.yaml")
    assert f"  {expected}" in str(err.value).splitlines(), str(err.value)  # the whole line: no other hint

def test_relative_paths_resolve_against_the_yaml_folder(tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    (proj / "models" / "teacher").mkdir(parents=True)
    (proj / "project.yaml").write_text(
        "template: fraud\ndata: {path: data/tx.csv}\nteacher: {model: ./models/teacher}\n"
        "student: {model: org/hub-model}\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config("proj/project.yaml")
    assert cfg.data.path == proj.resolve() / "data" / "tx.csv"  # whether or not it exists (preflight says so)
    assert cfg.teacher.model == str(proj.resolve() / "models" / "teacher")
    assert cfg.student.model == "org/hub-model"  # a hub id stays as written


def test_absolute_and_embedded_paths_are_kept(tmp_path):
    p = tmp_path / "project.yaml"
    p.write_text(f"template: fraud\ndata: {{path: {tmp_path / 'tx.csv'}}}\n")
    cfg = load_config(p)
    assert cfg.data.path == tmp_path / "tx.csv" and cfg.teacher.model == "embedded:smollm2-135m-instruct"


@pytest.mark.parametrize("data, message", [
    ({"path": "t.csv", "label_column": "x", "time_column": "x"}, "label_column and time_column name the same column"),
    ({"path": "t.csv", "columns": ["a", "b"], "drop_columns": ["b"]}, "columns and drop_columns both list ['b']"),
    ({"path": "t.csv", "columns": ["a", "label"]}, "columns lists 'label', the label_column"),
    ({"path": "t.csv", "columns": ["a", "b", "c"], "max_prompt_columns": 2}, "columns lists 3 columns, more than max_prompt_columns (2)"),
    ({"path": "t.csv", "drop_columns": ["label"]}, "drop_columns lists the label_column 'label'"),
    ({"time_column": "when"}, "time_column describe your own table: set data.path too"),
])
def test_table_settings_are_checked_once(data, message):
    with pytest.raises(DistillError) as err:
        validate_config({"template": "fraud", "data": data}, source="p.yaml")
    assert f"data: {message}" in str(err.value)


def test_table_settings_validate():
    cfg = validate_config({"template": "fraud", "data": {"path": "t.csv", "label_column": "fraud", "positive_label": 1,
                                                         "time_column": "when", "columns": ["when", "amount"]}})
    assert cfg.data.columns == ["when", "amount"] and cfg.data.positive_label == 1


def test_export_formats_are_validated_by_their_exporter():
    cfg = validate_config({"template": "fraud", "export": {"formats": {"gguf": {"quants": ["Q6_K"]}, "onnx": {}}}})
    assert cfg.export.formats["gguf"]["quants"] == ["Q6_K"]
    assert cfg.export.formats["onnx"]["quants"] == ["int8"] and cfg.export.gate.min_retention == 0.95
    for bad, says in (({"formats": {"tensorrt": {}}}, "unknown export format 'tensorrt'"),
                      ({"formats": {"gguf": {"quants": ["Q9"]}}}, "unknown GGUF type"),
                      ({"formats": {"onnx": {"int4_block_size": 48}}}, "power of 2"),
                      ({"formats": {"onnx": {"quant": ["int8"]}}}, "quant"),
                      ({"formats": {}}, "at least one format")):
        with pytest.raises(DistillError, match=says):
            validate_config({"template": "fraud", "export": bad})
    # the spelling before exporters had their own keys still reads (older run folders load)
    old = validate_config({"template": "fraud", "export": {"quants": ["Q8_0"]}})
    assert old.export.formats == {"gguf": {"quants": ["Q8_0"]}}


def test_an_api_key_pasted_as_its_variable_name_is_refused_without_echo():
    data = {"name": "x", "template": "fraud",
            "teacher": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m",
                        "api_key_env": "sk-3f9a81c2d4e5b6a7"},
            "student": {"base": "embedded:smollm2-135m-instruct"}}
    with pytest.raises(DistillError, match="teacher.api_key_env: must be the name of an environment variable") as err:
        validate_config(data)
    assert "3f9a81c2" not in str(err.value)
    data["teacher"]["api_key_env"] = "DEEPSEEK_API_KEY"
    assert validate_config(data).teacher.api_key_env == "DEEPSEEK_API_KEY"


@pytest.mark.parametrize("secret", [
    "sk_live_abcdef0123456789abcdef",  # a Stripe-style key: letters, digits and _, so a valid variable name
    "a3f9c2d4e5b6a7f8091a2b3c4d5e6f70",  # 32 hex digits
    "KEY_0123456789abcdef0123456789abcdef0123",
    "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv",  # long mixed-case letters and digits
    "hf_KrFqVYyLmNoPqRsTuVwXyZaBcDeFgHiJ",  # a Hugging Face token: letters only
    "gsk_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF",
    "xK9mP2qR7sT4vW8yZ3bC6dF1gH5jL0nQ",  # no prefix, random base62
])
def test_an_api_key_that_is_a_valid_variable_name_is_still_refused_without_echo(secret):
    data = {"name": "x", "template": "fraud", "student": {"base": "embedded:smollm2-135m-instruct"},
            "teacher": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m", "api_key_env": secret}}
    with pytest.raises(DistillError, match="teacher.api_key_env: looks like an API key itself") as err:
        validate_config(data)
    assert secret not in str(err.value) and secret[4:14] not in str(err.value)


@pytest.mark.parametrize("name", ["DEEPSEEK_API_KEY", "OPENAI_API_KEY", "MY_KEY_2", "AZURE_OPENAI_API_KEY", "HF_TOKEN",
                                  "OPENAI_API_KEY_2024", "MyApiKey", "sk_key", "TOGETHER_API_KEY_PRODUCTION_TEAM_2",
                                  "sk_prod_deepseek_key_1", "MyCompanyOpenAIKey2024Prod", "GROQ_API_KEY"])
def test_ordinary_variable_names_are_accepted(name):
    data = {"name": "x", "template": "fraud", "student": {"base": "embedded:smollm2-135m-instruct"},
            "teacher": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m", "api_key_env": name}}
    assert validate_config(data).teacher.api_key_env == name


@pytest.mark.parametrize("url, base", [
    ("https://api.deepseek.com/chat/completions", "https://api.deepseek.com"),
    ("http://host:8080/v1/chat/completions/", "http://host:8080/v1"),
    ("http://host:8080/v1/completions", "http://host:8080/v1"),
    ("https://x.example.com/openai/v1/chat/completions?api-version=2025-01-01",
     "https://x.example.com/openai/v1?api-version=2025-01-01"),
])
def test_an_operation_url_pasted_as_the_base_url_is_refused_with_the_base(url, base):
    # the client appends /chat/completions itself: .../chat/completions/chat/completions would 404
    data = {"name": "x", "template": "fraud", "student": {"base": "embedded:smollm2-135m-instruct"},
            "teacher": {"kind": "openai", "base_url": url, "model": "m"}}
    with pytest.raises(DistillError, match="teacher.base_url: must be the endpoint's base URL, without "
                       r"/(chat/)?completions") as err:
        validate_config(data)
    assert f"use {base!r}" in str(err.value)
    data["teacher"]["base_url"] = base
    assert validate_config(data).teacher.base_url == base


def test_a_key_given_twice_and_a_file_not_in_utf8_are_named(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("name: x\ntemplate: fraud\ndata:\n  n_train: 48\ndata:\n  n_test: 5\n")
    with pytest.raises(DistillError, match=r"key 'data' appears twice \(lines 3 and 5\)"):
        load_config(p)
    p.write_text("name: x\ntemplate: fraud\ndata: {n_train: 48, n_train: 7}\n")
    with pytest.raises(DistillError, match="key 'n_train' appears twice"):
        load_config(p)
    p.write_bytes("name: café\ntemplate: fraud\n".encode("latin-1"))
    with pytest.raises(DistillError, match="not UTF-8"):
        load_config(p)


def test_yaml_anchors_and_merge_keys_still_load(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("name: x\ntemplate: fraud\n_sizes: &sizes {n_val: 40, n_test: 50}\n"
                 "data:\n  <<: *sizes\n  n_train: 60\n")
    data = load_yaml(p)
    assert data["data"] == {"n_val": 40, "n_test": 50, "n_train": 60}


def test_the_endpoint_must_be_an_http_url_without_credentials():
    data = {"name": "x", "template": "fraud", "student": {"base": "embedded:smollm2-135m-instruct"},
            "teacher": {"kind": "openai", "base_url": "api.deepseek.com", "model": "m"}}
    with pytest.raises(DistillError, match=r"teacher.base_url: must be an http:// or https:// URL"):
        validate_config(data)
    data["teacher"]["base_url"] = "https://me:sk-3f9a81c2d4e5b6a7@api.deepseek.com"
    with pytest.raises(DistillError, match="teacher.base_url: must not carry credentials") as err:
        validate_config(data)
    assert "3f9a81c2" not in str(err.value)
    data["teacher"]["base_url"] = "https://x.openai.azure.com/v1?api-version=2025-01-01&api-key=sk-3f9a81c2d4e5"
    with pytest.raises(DistillError, match=r"teacher.base_url: must not carry credentials in its query \(api-key"
                       ) as err:
        validate_config(data)
    assert "3f9a81c2" not in str(err.value)
    data["teacher"]["base_url"] = "https://x.openai.azure.com/v1?api-version=2025-01-01&signature_version=2"
    assert validate_config(data).teacher.base_url.endswith("signature_version=2")  # a name, not a signature
    for name in ("access_token", "sig", "X-Amz-Signature", "key"):
        data["teacher"]["base_url"] = f"https://x.example.com/v1?{name}=abc123"
        with pytest.raises(DistillError, match="must not carry credentials in its query"):
            validate_config(data)
    data["teacher"]["base_url"] = " http://127.0.0.1:8080/v1 "
    assert validate_config(data).teacher.base_url == "http://127.0.0.1:8080/v1"


@pytest.mark.parametrize("data, message", [
    ({"data": {"n_train": True}}, "data.n_train: expected a number, got true"),  # YAML's `yes`
    ({"seed": False}, "seed: expected a number, got false"),
    ({"distill": {"lr": True}}, "distill.lr: expected a number, got true"),
    ({"export": {"gate": {"min_retention": True}}}, "export.gate.min_retention: expected a number, got true"),
])
def test_true_or_false_where_a_number_belongs_is_refused(data, message):
    with pytest.raises(DistillError, match=message):
        validate_config({"name": "x", "template": "fraud", **data})


def test_numbers_written_as_text_still_read():
    # YAML 1.1 reads an unquoted 1e-4 as a string: it must stay a learning rate
    cfg = validate_config({"name": "x", "template": "fraud", "distill": {"lr": "1e-4"}, "data": {"n_train": 300.0}})
    assert cfg.distill.lr == 1e-4 and cfg.data.n_train == 300
    # and a flag stays a flag
    assert validate_config({"name": "x", "template": "fraud", "distill": {"fsdp": True}}).distill.fsdp is True


@pytest.mark.parametrize("data, message", [
    ({"distill": {"lr": float("nan")}}, r"distill.lr: Input should be a finite number \(got nan\)"),
    ({"distill": {"max_epochs": float("inf")}}, r"distill.max_epochs: Input should be a finite number"),
    ({"distill": {"max_epochs": 1e9}}, r"distill.max_epochs: Input should be less than or equal to 1000"),
    ({"export": {"gate": {"min_retention": 1.5}}}, r"export.gate.min_retention: Input should be less than or "
                                                   r"equal to 1"),
    # a schedule's end: one line, at the schedule's own key, not one per member of the number-or-schedule union
    ({"distill": {"loss": {"kind": "soft_target_kd", "alpha": {"kind": "linear", "start": 0.0,
                                                                 "end": float("nan")}}}},
     r"distill.loss.alpha.end: Input should be a finite number \(got nan\)$"),
    ({"distill": {"loss": {"kind": "soft_target_kd", "alpha": float("nan")}}},
     r"distill.loss.alpha: Input should be a finite number \(got nan\)$"),
])
def test_nan_infinity_and_out_of_range_numbers_are_refused(data, message):
    # NaN fails no comparison, so it would pass every `ge=`/`le=` bound if pydantic did not refuse it first
    with pytest.raises(DistillError, match=message):
        validate_config({"name": "x", "template": "fraud", **data})


@pytest.mark.parametrize("data, message", [
    ({"distill": {"max-epochs": 3}}, r"distill.max-epochs: unknown key; did you mean `distill.max_epochs`"),
    ({"my-key": 3}, r"my-key: unknown key"),
    ({"distill": {"loss": {"kind": "soft_target_kd", "alpha-x": 1}}}, r"distill.loss.alpha-x: unknown key \(loss 'soft_target_kd'\)"),
    ({"template_options": {"fraud-rate": 0.1}}, r"template_options.fraud-rate: unknown key"),
])
def test_an_unknown_key_that_is_not_a_python_name_is_named(data, message):
    # union-member tags are cut from error locations; a hyphenated key was taken for one (and crashed)
    with pytest.raises(DistillError, match=message):
        validate_config({"name": "x", "template": "fraud", **data})


def test_a_base_url_that_is_no_url_is_not_echoed():
    # a key pasted into base_url by mistake: refused without repeating it
    data = {"name": "x", "template": "fraud", "student": {"base": "embedded:smollm2-135m-instruct"},
            "teacher": {"kind": "openai", "base_url": "sk-proj-Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc1Df", "model": "m"}}
    with pytest.raises(DistillError, match="teacher.base_url: must be an http") as err:
        validate_config(data)
    assert "Ab3De5Gh7" not in str(err.value) and "the value given is not shown" in str(err.value)
    data["teacher"]["base_url"] = "ftp://host/v1"
    with pytest.raises(DistillError, match="got 'ftp://host/v1'"):
        validate_config(data)


def test_a_components_error_found_by_its_sections_check_is_named_where_it_sits_and_pickles():
    """A stage's completed loss is checked by the distill section's own check (pydantic then reports it at
    `distill`): its errors are still named at the stage's loss key; and a ValidationError holding one crosses
    processes (pickle)."""
    import pickle

    from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

    from sdk.config import ComponentError, _collapsed, _describe_error

    class Loss(BaseModel):
        model_config = ConfigDict(extra="forbid")
        a: int = 0
        b: int = 0

        @model_validator(mode="after")
        def _order(self):
            if self.a > self.b:
                raise ValueError("a: must not exceed b")
            return self

    class Section(BaseModel):
        stages: list[dict]

        @model_validator(mode="after")
        def _losses(self):
            for i, st in enumerate(self.stages):
                try:
                    Loss.model_validate(st)
                except ValidationError as err:
                    raise ComponentError("loss 'x'", Loss, err).under(("stages", i, "loss")) from None
            return self

    with pytest.raises(ValidationError) as err:
        Section.model_validate({"stages": [{}, {"a": 2, "b": 1}]})
    assert [_describe_error(e, Section, "distill.") for e in _collapsed(err.value)] == [
        "distill.stages[1].loss.a: must not exceed b"]
    assert "loss 'x': a: must not exceed b" in str(pickle.loads(pickle.dumps(err.value)))


def test_a_misspelt_key_in_a_list_entry_or_a_loss_gets_the_key_meant():
    for data, expected in [
        ({"distill": {"stages": [{"name": "kd", "lrr": 1e-4}]}}, "distill.stages[0].lrr: unknown key; did you mean "
                                                                  "`distill.stages[0].lr`?"),
        ({"distill": {"loss": {"kind": "soft_target_kd", "lr": 1e-4}}},
         "distill.loss.lr: unknown key (loss 'soft_target_kd'); did you mean `distill.lr`"),
    ]:
        with pytest.raises(DistillError) as err:
            validate_config({"name": "x", "template": "fraud", **data})
        assert expected in str(err.value)
