"""GET /metrics: the engine's counters in Prometheus' text exposition format (version 0.0.4)."""

from __future__ import annotations

import math

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(stats, rejected: dict[str, int], requests_total: dict[int, int]) -> str:
    """stats: an ``engine.EngineStats``; rejected: requests refused before reaching the engine, by reason;
    requests_total: HTTP responses by status code."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP tinygpt_{name} {help_text}")
        lines.append(f"# TYPE tinygpt_{name} {kind}")
        lines.extend(f"tinygpt_{name}{labels} {_number(value)}" for labels, value in samples)

    metric("requests_running", "gauge", "Requests being generated.", [("", stats.requests_running)])
    metric("requests_waiting", "gauge", "Requests waiting for room in the batch or the KV cache.",
           [("", stats.requests_waiting)])
    metric("sequences_running", "gauge", "Output sequences being generated.", [("", stats.rows_running)])
    metric("prompt_tokens_total", "counter", "Prompt tokens computed.", [("", stats.prompt_tokens_total)])
    metric("prompt_tokens_reused_total", "counter", "Prompt tokens whose keys and values came from the prefix "
           "cache.", [("", stats.prompt_tokens_reused_total)])
    metric("generation_tokens_total", "counter", "Tokens generated.", [("", stats.generated_tokens_total)])
    metric("requests_finished_total", "counter", "Engine requests ended, by reason.",
           [(f'{{reason="{reason}"}}', count) for reason, count in sorted(stats.requests_finished_total.items())])
    metric("requests_rejected_total", "counter", "HTTP requests refused before reaching the engine, by reason.",
           [(f'{{reason="{reason}"}}', count) for reason, count in sorted(rejected.items())])
    metric("http_responses_total", "counter", "HTTP responses of the API endpoints, by status code.",
           [(f'{{code="{code}"}}', count) for code, count in sorted(requests_total.items())])
    metric("kv_cache_blocks_in_use", "gauge", "KV-cache blocks held by sequences.", [("", stats.kv_blocks_in_use)])
    metric("kv_cache_blocks", "gauge", f"KV-cache blocks in the pool ({stats.kv_block_size} positions each).",
           [("", stats.kv_blocks_total)])
    metric("kv_cache_usage_ratio", "gauge", "Share of the KV-cache pool held by sequences.",
           [("", stats.kv_blocks_in_use / stats.kv_blocks_total if stats.kv_blocks_total else 0.0)])
    histogram = stats.step_seconds
    buckets = [(f'{{le="{_number(bound)}"}}', count)
               for bound, count in zip(histogram.bounds, histogram.counts)]
    lines.append("# HELP tinygpt_step_seconds Time of one engine step (one forward pass over the batch).")
    lines.append("# TYPE tinygpt_step_seconds histogram")
    lines.extend(f"tinygpt_step_seconds_bucket{labels} {count}" for labels, count in buckets)
    lines.append(f'tinygpt_step_seconds_bucket{{le="+Inf"}} {histogram.count}')
    lines.append(f"tinygpt_step_seconds_sum {_number(histogram.sum)}")
    lines.append(f"tinygpt_step_seconds_count {histogram.count}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
