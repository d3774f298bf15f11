"""``pipeline("text-generation", model=...)``: text in, generated text out, like transformers' pipeline.

What a call returns follows transformers' TextGenerationPipeline: one string gives a list with one
``{"generated_text": ...}`` per returned sequence; a list of strings gives one such list per prompt. The text is
``tokenizer.decode`` of the new token ids (special tokens dropped), with the prompt string put back in front
unless ``return_full_text=False``; the prompt itself is never re-decoded. ``max_length`` counts the prompt's
tokens too, ``max_new_tokens`` only the generated ones (as in ``generate``).

Defaults: a model loaded by name (hub id or directory) brings the generation options of its config.json's
``task_specific_params["text-generation"]`` (``model.generation_defaults``; distilgpt2: ``{"do_sample": true,
"max_length": 50}``), as transformers 4.x pipelines did; options passed to a call override them. (transformers 5
no longer reads ``task_specific_params``.) A :class:`~tinygpt.model.Model` passed in directly is used as it is,
without its defaults, as its own ``generate`` is.

The pipeline only shapes output: the model checks and runs every generation, and the command line sits on the
model beside it (``tinygpt.cli`` does not import this module).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from .errors import InputError
from .generation import GenerationOptions, with_defaults
from .model import Model
from .tokenizers import TOKENIZER_FILE_SETS

SUPPORTED_TASKS = ("text-generation",)
GENERATION_OPTION_NAMES = frozenset(field.name for field in dataclasses.fields(GenerationOptions))


def pipeline(task: str, model: str | os.PathLike | Model, *, revision: str | None = None,
             dtype: str | None = None) -> TextGenerationPipeline:
    """A callable that continues text with ``model``.

    task: "text-generation" (the only task). model: a hub repo id ("distilgpt2"), a local model directory, or
    a loaded :class:`~tinygpt.model.Model`. revision: branch, tag or commit of a hub repo. dtype: "float32"
    (the default) or "int8" weights, as in :meth:`Model.from_pretrained`.
    """
    if task not in SUPPORTED_TASKS:
        raise InputError(f"unsupported task {task!r}; tinygpt's pipeline supports: {', '.join(SUPPORTED_TASKS)}")
    if isinstance(model, Model):
        for name, value in (("revision", revision), ("dtype", dtype)):
            if value is not None:
                raise InputError(f"{name}={value!r} applies to loading a model, but the model is already loaded")
        return TextGenerationPipeline(model)
    loaded = Model.from_pretrained(model, revision=revision, dtype=dtype or "float32")
    return TextGenerationPipeline(loaded, loaded.generation_defaults)


class TextGenerationPipeline:
    """Continues prompts with a model; build one with :func:`pipeline`.

    model: the :class:`~tinygpt.model.Model` (it must have a tokenizer). defaults: generation options used
    when a call does not set them.
    """

    task = "text-generation"

    def __init__(self, model: Model, defaults: dict | None = None):
        if model.tokenizer is None:
            raise InputError("text generation needs a tokenizer, and this model's directory has no tokenizer files "
                             f"({TOKENIZER_FILE_SETS})")
        self.model = model
        self.defaults = dict(defaults or {})

    def __call__(self, text_inputs: str | Sequence[str], *, return_full_text: bool = True, **options):
        """Continue one prompt (-> list of dicts) or a list of prompts (-> one list of dicts per prompt).

        options: those of :func:`tinygpt.generation.generate` (max_length, max_new_tokens, do_sample,
        temperature, top_k, top_p, repetition_penalty, num_return_sequences, seed, eos_token_id, stop,
        pad_token_id). Each dict is ``{"generated_text": str}``: prompt + continuation, or only the
        continuation with ``return_full_text=False``.
        """
        unknown = sorted(set(options) - GENERATION_OPTION_NAMES)
        if unknown:
            raise TypeError(f"unknown generation option(s) {', '.join(unknown)}; "
                            f"the options are: {', '.join(sorted(GENERATION_OPTION_NAMES))}, return_full_text")
        prompts = [text_inputs] if isinstance(text_inputs, str) else _prompt_list(text_inputs)
        prompt_ids = [self.encode(prompt) for prompt in prompts]
        resolved = with_defaults(options, self.defaults)
        sequences = self.model.generate(prompt_ids, **resolved)
        per_prompt = resolved.get("num_return_sequences", 1)  # generate returns them prompt-major
        results = [
            [
                {"generated_text": self._text(prompt, ids, sequence, return_full_text)}
                for sequence in sequences[index * per_prompt:(index + 1) * per_prompt]
            ]
            for index, (prompt, ids) in enumerate(zip(prompts, prompt_ids))
        ]
        return results[0] if isinstance(text_inputs, str) else results

    def encode(self, text: str) -> list[int]:
        """Prompt ids of ``text`` (``model.encode_prompt``); raises InputError if there is nothing to continue."""
        ids = self.model.encode_prompt(text)
        if not ids:
            raise InputError("the prompt is empty: generation needs at least one token to continue from")
        return ids

    def _text(self, prompt: str, prompt_ids: list[int], sequence: list[int], return_full_text: bool) -> str:
        continuation = self.model.decode(sequence[len(prompt_ids):])
        return prompt + continuation if return_full_text else continuation


def _prompt_list(text_inputs) -> list[str]:
    if not isinstance(text_inputs, Sequence) or isinstance(text_inputs, bytes):
        raise InputError(f"text_inputs must be a string or a list of strings, got {type(text_inputs).__name__}")
    if not text_inputs:
        raise InputError("text_inputs is an empty list: give at least one prompt")
    for index, text in enumerate(text_inputs):
        if not isinstance(text, str):
            raise InputError(f"prompt {index} must be a string, got {type(text).__name__}")
    return list(text_inputs)
