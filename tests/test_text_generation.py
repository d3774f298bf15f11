"""tinygpt's text-generation pipeline: against direct ``generate`` + decode, and against transformers' pipeline."""

from __future__ import annotations

import json
import re
import shutil
import warnings

import pytest
from checkpoints import (
    UER_TOKENIZER_CONFIG,
    build_gpt2_dir,
    chinese_bert_vocab,
    load_hf_model,
)

from tinygpt.config import ConfigError, GPT2Config
from tinygpt.errors import InputError
from tinygpt.generation import set_seed, with_defaults
from tinygpt.model import Model
from tinygpt.text_generation import TextGenerationPipeline, pipeline

pytestmark = pytest.mark.usefixtures("one_kernel_thread")

PROMPT = "Hello, I'm a language model"
# The second prompt holds a special token: decode would drop it, so the prompt must come back as the string given.
PROMPTS = [PROMPT, "Ünïcödé façade — 東京 <|endoftext|> and then"]
CHINESE_PROMPT = "这是很久之前的事情了"
CJK = r"[\u4e00-\u9fff]"


@pytest.fixture(scope="module")
def generator(small_gpt2_dir) -> TextGenerationPipeline:
    return pipeline("text-generation", small_gpt2_dir)




@pytest.fixture(autouse=True)
def no_global_seed():
    """set_seed is process-wide: never leave one behind for other tests."""
    yield
    set_seed(None)


def with_task_params(model_dir, directory, task_specific_params):
    """A copy of ``model_dir`` in ``directory`` whose config.json has these ``task_specific_params``."""
    directory.mkdir(exist_ok=True)
    for file in model_dir.iterdir():
        shutil.copy(file, directory / file.name)
    config = json.loads((directory / "config.json").read_text())
    config["task_specific_params"] = task_specific_params
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def defaults_dir(small_gpt2_dir, tmp_path_factory):
    """The small model with distilgpt2-style text-generation defaults (and a key that is not a generate option)."""
    return with_task_params(small_gpt2_dir, tmp_path_factory.mktemp("with_defaults"),
                            {"text-generation": {"do_sample": True, "max_length": 24, "prefix": "x"},
                             "summarization": {"max_length": 3}})


@pytest.fixture(scope="module")
def chinese_dir(tmp_path_factory):
    """A small random model with the uer Chinese model's tokenizer layout (BERT vocab.txt, [CLS] prompts)."""
    directory = build_gpt2_dir(tmp_path_factory.mktemp("small_chinese"), seed=6, n_layer=2, n_embd=64, n_head=4,
                               vocab_size=21128, n_positions=128)
    (directory / "vocab.txt").write_text("".join(f"{token}\n" for token in chinese_bert_vocab(21128)),
                                         encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(UER_TOKENIZER_CONFIG), encoding="utf-8")
    return directory


def direct_texts(model: Model, prompt: str, **options) -> list[str]:
    """prompt + decoded continuation of each sequence ``model.generate`` returns."""
    ids = model.encode_prompt(prompt)
    return [prompt + model.decode(sequence[len(ids):]) for sequence in model.generate(ids, **options)]


# ------------------------------------------------------------------------------------------ results vs generate
def test_result_is_the_prompt_plus_the_decoded_continuation(generator):
    for prompt in PROMPTS:
        result = generator(prompt, max_new_tokens=12)
        assert result == [{"generated_text": text} for text in direct_texts(generator.model, prompt,
                                                                             max_new_tokens=12)]
        assert result[0]["generated_text"].startswith(prompt)


def test_return_full_text_false_gives_only_the_continuation(generator):
    for prompt in PROMPTS:
        full = generator(prompt, max_new_tokens=10)[0]["generated_text"]
        new = generator(prompt, max_new_tokens=10, return_full_text=False)[0]["generated_text"]
        assert full == prompt + new
        assert new  # the random model does not end at once: there is a continuation to compare


def test_a_list_of_prompts_gives_one_list_per_prompt(generator):
    batched = generator(PROMPTS, max_new_tokens=8)
    assert batched == [generator(prompt, max_new_tokens=8) for prompt in PROMPTS]

    sampled = generator(PROMPTS, do_sample=True, seed=5, num_return_sequences=3, max_new_tokens=6)
    assert [len(group) for group in sampled] == [3, 3]
    model = generator.model
    prompt_ids = [model.encode_prompt(prompt) for prompt in PROMPTS]
    sequences = model.generate(prompt_ids, do_sample=True, seed=5, num_return_sequences=3, max_new_tokens=6)
    expected = [[{"generated_text": prompt + model.decode(sequence[len(ids):])}
                 for sequence in sequences[3 * index:3 * index + 3]]
                for index, (prompt, ids) in enumerate(zip(PROMPTS, prompt_ids))]
    assert sampled == expected


def test_max_length_counts_the_prompt_tokens(generator):
    n_prompt = len(generator.model.encode_prompt(PROMPT))
    by_length = generator(PROMPT, max_length=n_prompt + 7)
    assert by_length == generator(PROMPT, max_new_tokens=7)


# ------------------------------------------------------------------------------------------------------ seeding
def test_set_seed_makes_calls_repeat(generator):
    options = dict(do_sample=True, max_new_tokens=10, num_return_sequences=4)
    set_seed(42)
    first = generator(PROMPT, **options)
    second = generator(PROMPT, **options)
    assert first == second
    assert len({r["generated_text"] for r in first}) > 1  # the four sequences are really sampled
    set_seed(43)
    assert generator(PROMPT, **options) != first


def test_seed_per_call(generator):
    options = dict(do_sample=True, max_new_tokens=10, num_return_sequences=2)
    with_seed_7 = generator(PROMPT, seed=7, **options)
    assert generator(PROMPT, seed=7, **options) == with_seed_7
    assert generator(PROMPT, seed=8, **options) != with_seed_7
    set_seed(42)  # an explicit seed wins over the global one
    assert generator(PROMPT, seed=7, **options) == with_seed_7


# --------------------------------------------------------------------------------------------- model defaults
def test_task_specific_params_are_the_defaults(defaults_dir):
    config = GPT2Config.from_file(defaults_dir / "config.json")
    assert dict(config.text_generation_params) == {"do_sample": True, "max_length": 24, "prefix": "x"}
    assert Model.from_pretrained(defaults_dir).generation_defaults == {"do_sample": True, "max_length": 24}
    generator = pipeline("text-generation", defaults_dir)
    assert generator.defaults == {"do_sample": True, "max_length": 24}
    result = generator(PROMPT, seed=3)
    assert result == [{"generated_text": text} for text in direct_texts(generator.model, PROMPT, do_sample=True,
                                                                         max_length=24, seed=3)]


def test_config_json_is_read_once(defaults_dir, monkeypatch):
    from pathlib import Path

    reads = []
    for method in ("read_text", "read_bytes"):
        original = getattr(Path, method)
        monkeypatch.setattr(Path, method, lambda path, *args, _original=original, **kwargs: (
            reads.append(path.name), _original(path, *args, **kwargs))[1])
    assert pipeline("text-generation", defaults_dir).defaults == {"do_sample": True, "max_length": 24}
    assert reads.count("config.json") == 1


def test_with_defaults_merges_a_calls_options_over_the_models():
    defaults = {"do_sample": True, "max_length": 50, "temperature": 0.7, "top_k": 5}
    assert with_defaults({}, defaults) == defaults
    assert with_defaults({"seed": 3, "top_k": 9}, defaults) == {**defaults, "seed": 3, "top_k": 9}
    # A length the call sets replaces both default lengths; None sets nothing.
    assert with_defaults({"max_new_tokens": 5}, defaults) == {"do_sample": True, "temperature": 0.7, "top_k": 5,
                                                              "max_new_tokens": 5}
    assert with_defaults({"max_new_tokens": None}, defaults) == {**defaults, "max_new_tokens": None}
    # Decoding greedily, the default sampling options are dropped; the call's own are kept (generate warns).
    assert with_defaults({"do_sample": False}, defaults) == {"do_sample": False, "max_length": 50}
    assert with_defaults({"do_sample": False, "top_k": 2}, defaults) == {"do_sample": False, "max_length": 50,
                                                                         "top_k": 2}
    assert with_defaults({"temperature": 0.5}, {"max_length": 50, "top_p": 0.9}) == {"max_length": 50,
                                                                                      "temperature": 0.5}


def test_call_options_override_the_defaults(defaults_dir):
    generator = pipeline("text-generation", defaults_dir)
    greedy = direct_texts(generator.model, PROMPT, max_new_tokens=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # max_new_tokens replaces the default max_length: no "both set" warning
        assert generator(PROMPT, do_sample=False, max_new_tokens=5) == [{"generated_text": greedy[0]}]
    sampled = direct_texts(generator.model, PROMPT, do_sample=True, max_length=30, seed=3)
    assert generator(PROMPT, max_length=30, seed=3) == [{"generated_text": sampled[0]}]


def test_sampling_defaults_do_not_warn_when_a_call_decodes_greedily(small_gpt2_dir, tmp_path):
    directory = with_task_params(small_gpt2_dir, tmp_path, {"text-generation": {
        "do_sample": True, "temperature": 0.7, "top_k": 5, "seed": 1, "max_length": 24}})
    generator = pipeline("text-generation", directory)
    greedy = direct_texts(generator.model, PROMPT, max_new_tokens=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the model's sampling defaults do nothing here, and that is no news
        assert generator(PROMPT, do_sample=False, max_new_tokens=5) == [{"generated_text": greedy[0]}]
    with pytest.warns(UserWarning, match=r"no effect without do_sample=True: temperature=0\.5 \("):
        result = generator(PROMPT, do_sample=False, temperature=0.5, max_new_tokens=5)
    assert result == [{"generated_text": greedy[0]}]
    with pytest.warns(UserWarning, match=r"no effect without do_sample=True: temperature=0\.5 \("):
        pipeline("text-generation", generator.model)(PROMPT, temperature=0.5, max_new_tokens=5)


def test_bad_task_specific_params_name_config_json(small_gpt2_dir, tmp_path):
    for name, params, message in [
        ("list", ["text-generation"], r"config\.json: task_specific_params must be a JSON object .*not a list"),
        ("zero_temperature", {"text-generation": {"do_sample": True, "temperature": 0}},
         r"config\.json: task_specific_params\['text-generation'\]: temperature must be a positive finite number"),
        ("string_do_sample", {"text-generation": {"do_sample": "true"}},
         r"config\.json: task_specific_params\['text-generation'\]: do_sample must be True or False"),
    ]:
        directory = with_task_params(small_gpt2_dir, tmp_path / name, params)
        with pytest.raises(ValueError, match=message):
            pipeline("text-generation", directory)
        with pytest.raises(ConfigError, match=message):  # read with the rest of config.json, when the model loads
            Model.from_pretrained(directory)


def test_a_loaded_model_brings_no_defaults(defaults_dir):
    model = pipeline("text-generation", defaults_dir).model
    generator = pipeline("text-generation", model)
    assert generator.defaults == {}
    assert generator(PROMPT) == [{"generated_text": direct_texts(model, PROMPT)[0]}]  # greedy, 20 new tokens


# ------------------------------------------------------------------------------------------- vs transformers
@pytest.fixture(scope="module")
def hf_generator(small_gpt2_dir):
    import transformers

    return transformers.pipeline("text-generation", model=str(small_gpt2_dir))


@pytest.mark.parametrize("options", [
    dict(max_new_tokens=16),
    dict(max_new_tokens=9, return_full_text=False),
    dict(max_length=30),
    dict(max_new_tokens=12, repetition_penalty=1.3),
])
def test_greedy_output_equals_transformers_pipeline(generator, hf_generator, options):
    for prompt in PROMPTS:
        ours = generator(prompt, do_sample=False, **options)
        theirs = hf_generator(prompt, do_sample=False, **options)
        assert ours == theirs
    assert generator(PROMPTS, do_sample=False, **options) == hf_generator(PROMPTS, do_sample=False, **options)


def test_chinese_text_has_no_spaces_between_characters(chinese_dir):
    """A BERT-vocabulary model: the prompt starts with [CLS], the text is joined without spaces between Chinese
    characters. transformers' BertTokenizer.decode spaces every token, so compare with spaces removed."""
    import torch
    from transformers import BertTokenizer

    generator = pipeline("text-generation", chinese_dir)
    text = generator(CHINESE_PROMPT, do_sample=False, max_new_tokens=12)[0]["generated_text"]

    tokenizer = BertTokenizer.from_pretrained(chinese_dir)
    prompt_ids = tokenizer(CHINESE_PROMPT)["input_ids"][:-1]  # [CLS] + text, without BERT's closing [SEP]
    with torch.no_grad():
        output = load_hf_model(chinese_dir).generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=12,
                                                     eos_token_id=tokenizer.sep_token_id, pad_token_id=0)
    reference = tokenizer.decode(output[0, len(prompt_ids):], skip_special_tokens=True)

    assert text.startswith(CHINESE_PROMPT)
    assert text.replace(" ", "") == CHINESE_PROMPT + reference.replace(" ", "")
    assert re.search(CJK, text[len(CHINESE_PROMPT):])  # the continuation has Chinese characters to check
    assert not re.search(f"{CJK} {CJK}", text)


# ------------------------------------------------------------------------------------------------------ errors
def test_int8_pipeline_runs_the_int8_model(small_gpt2_dir):
    from tinygpt.weights import QuantizedWeight

    generator = pipeline("text-generation", small_gpt2_dir, dtype="int8")
    assert isinstance(generator.model.weights["lm_head.weight"], QuantizedWeight)
    int8 = Model.from_pretrained(small_gpt2_dir, dtype="int8")
    ids = int8.encode_prompt(PROMPT)
    want = PROMPT + int8.decode(int8.generate(ids, max_new_tokens=8)[0][len(ids):])
    assert generator(PROMPT, max_new_tokens=8, do_sample=False)[0]["generated_text"] == want


def test_only_text_generation_is_supported(small_gpt2_dir):
    with pytest.raises(ValueError, match="unsupported task 'summarization'.*text-generation"):
        pipeline("summarization", small_gpt2_dir)


def test_bad_calls_are_clear_errors(generator):
    with pytest.raises(TypeError, match="unknown generation option.*max_tokens"):
        generator(PROMPT, max_tokens=5)
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        generator(PROMPT, do_sample=True, temperature=0)
    with pytest.raises(ValueError, match="the prompt is empty"):
        generator("")
    with pytest.raises(ValueError, match="empty list"):
        generator([])
    with pytest.raises(InputError, match="prompt 1 must be a string, got int"):
        generator([PROMPT, 3])
    with pytest.raises(ValueError, match="context of 256 positions"):
        generator(PROMPT, max_new_tokens=300)


def test_bad_models_are_clear_errors(generator, tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="revision='main'.*already loaded"):
        pipeline("text-generation", generator.model, revision="main")
    with pytest.raises(ValueError, match="dtype='int8'.*already loaded"):
        pipeline("text-generation", generator.model, dtype="int8")
    with pytest.raises(ValueError, match="dtype must be one of float32, int8, got 'int4'"):
        pipeline("text-generation", tiny_model_dir, dtype="int4")
    with pytest.raises(ValueError, match="needs a tokenizer"):
        pipeline("text-generation", tiny_model_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipeline("text-generation", tmp_path / "missing")
