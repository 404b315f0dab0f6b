"""The benchmarks run in --tiny mode and write results of the documented shape (no speed assertions).

The benchmarks run as subprocesses started together (they are mostly start-up: imports and launch.py runs),
so the module takes about as long as the slowest one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = (
    "mlm_throughput",
    "pipeline_overhead",
    "dataset_memory",
    "prepare_throughput",
    "loader_throughput",
    "gpu_check",
    "quality",
    "pretraining_curve",
    "eval_cost",
    "predict_throughput",
    "packing_cost",
    "ablation",
    "long_texts",
)
# Further runs of a benchmark with options of its own, started with the others: result name -> (script, options).
VARIANTS = {
    # The precision that precision=auto picks on AMX machines, forced so that AVX2-only CI runs it too.
    "packing_cost_bf16": (
        "packing_cost",
        ["--precision", "bf16-mixed", "--architectures", "bert_tiny,modern_tiny"],
    ),
}
TIMEOUT = 420  # generous: the machine may be shared; together they take one to two minutes alone


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], dict]]:
    """Runs every benchmark and VARIANTS with --tiny at once; its CompletedProcess and JSON result per name."""
    folder = tmp_path_factory.mktemp("benchmarks")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    runs = {name: (name, []) for name in BENCHMARKS} | VARIANTS
    processes = {
        name: subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "benchmarks" / f"{script}.py"),
                "--tiny",
                *options,
                "--output",
                str(folder / f"{name}.json"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (script, options) in runs.items()
    }
    deadline = time.monotonic() + TIMEOUT
    results = {}
    for name, process in processes.items():
        try:
            stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in processes.values():
                other.kill()
            raise
        completed = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        output = folder / f"{name}.json"
        results[name] = (completed, json.loads(output.read_text()) if output.is_file() else {})
    return results


def finished(results, name: str) -> tuple[str, dict]:
    completed, payload = results[name]
    assert completed.returncode == 0, (
        f"{name} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    )
    assert payload, f"{name} wrote no JSON"
    assert payload["benchmark"] == VARIANTS.get(name, (name,))[0]
    assert {"cpu", "cores", "date", "torch"} <= set(payload["machine"])
    return completed.stdout, payload


def test_mlm_throughput_tiny(tiny_results):
    stdout, result = finished(tiny_results, "mlm_throughput")
    assert set(result["precisions"]) == {"fp32", "bf16"}  # --tiny runs bf16 on any CPU
    for precision, entry in result["precisions"].items():
        assert set(entry["arms"]) == {"hf-sdpa", "bertlab"}
        for arm in entry["arms"].values():
            assert arm["median_tokens_per_s"] > 0
            assert len(arm["rounds_tokens_per_s"]) == result["rounds"] == 2
        assert entry["ratio"] == entry["arms"]["bertlab"]["ratio_vs_hf"] > 0
        assert entry["target"] == {"fp32": 1.5, "bf16": 2.0}[precision]
        assert f"ratio bertlab/HF {precision}:" in stdout
    # Same masked-token count for both models, and the same model: HF with bertlab's weights, same loss.
    assert result["masked_per_sequence"] >= 1
    equivalence = result["equivalence_fp32"]
    assert "skipped" not in equivalence, equivalence
    assert equivalence["loss_abs_diff"] < 1e-4
    assert "| precision" in stdout and "hf-sdpa" in stdout


def test_pipeline_overhead_tiny(tiny_results):
    stdout, result = finished(tiny_results, "pipeline_overhead")
    assert result["pipeline_windows_tokens_per_s"] and result["bare_windows_tokens_per_s"]
    assert result["pipeline_median_tokens_per_s"] > 0 and result["bare_median_tokens_per_s"] > 0
    assert result["ratio"] > 0 and result["target"] == 0.9
    assert result["run_vocab_size"] == result["size"]["vocab_size"]
    assert "ratio pipeline/bare:" in stdout


def test_dataset_memory_tiny(tiny_results):
    stdout, result = finished(tiny_results, "dataset_memory")
    assert set(result["corpora"]) == {"1x", "10x"}
    assert result["corpora"]["10x"]["text_mb"] > 5 * result["corpora"]["1x"]["text_mb"]
    assert all(c["prepare_mb_per_s"] > 0 for c in result["corpora"].values())
    runs = result["runs"]["prepared"]
    assert runs["1x"]["peak_rss_mb"] > 50 and runs["10x"]["peak_rss_mb"] > 50
    assert result["rss_growth"] == runs["growth"]
    assert result["target_growth"] == 0.1
    assert "RSS growth 1x -> 10x" in stdout and "MB/s" in stdout


def test_prepare_throughput_tiny(tiny_results):
    stdout, result = finished(tiny_results, "prepare_throughput")
    runs = result["runs"]
    assert set(runs) == {"1x", "10x"} and runs["10x"]["text_mb"] > 9 * runs["1x"]["text_mb"]
    assert runs["10x"]["tokens"] == 10 * runs["1x"]["tokens"]
    assert all(r["peak_rss_mb"] > 50 and r["preparation_seconds"] > 0 for r in runs.values())
    assert result["ratio_to_bare_encode"] > 0 and result["target_ratio"] == 0.8
    assert "peak RSS growth 1x -> 10x" in stdout and "ratio to bertlab's preparation" in stdout


def test_loader_throughput_tiny(tiny_results):
    stdout, result = finished(tiny_results, "loader_throughput")
    arms = result["arms"]
    assert set(arms) == {"per_example_reference", "batch_loader_with_masking", "batch_loader_only"}
    assert all(arm["sequences_per_s"] > 0 and arm["batches"] > 0 for arm in arms.values())
    assert result["seq_len"] == 128 and result["torch_threads"] == 1 and result["target"] == 100_000
    assert "training loader:" in stdout and "per-example masking (reference, before)" in stdout


def test_gpu_check_tiny_times_both_models(tiny_results):
    stdout, result = finished(tiny_results, "gpu_check")
    (row,) = result["rows"]
    assert row["hf"]["tokens_per_s"] > 0 and row["bertlab"]["tokens_per_s"] > 0
    assert row["ratio_vs_hf"] > 0 and row["flops_per_token"] > 0
    assert "| seq" in stdout and "HF BertForMaskedLM (sdpa)" in stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what gpu_check does where CUDA is absent")
def test_quality_tiny_reports_baseline_scratch_and_pretrained(tiny_results):
    stdout, payload = finished(tiny_results, "quality")
    assert list(payload["rows"]) == ["baseline (TF-IDF + LR)", "from scratch", "pretrained"]
    for row in payload["rows"].values():
        assert 0 <= row["accuracy"]["median"] <= 1 and 0 <= row["macro_f1"]["median"] <= 1
    pretraining = payload["pretraining"]  # a 3-second time budget: how many steps depends on the machine
    assert pretraining["stop_reason"] == "time budget" and pretraining["steps"] >= 1
    assert pretraining["val"][0]["step"] == 0 and pretraining["val"][-1]["step"] == pretraining["steps"]
    assert "| pretrained " in stdout and "| baseline (TF-IDF + LR) " in stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what gpu_check does where CUDA is absent")
def test_ablation_tiny_compares_arms_with_the_defaults(tiny_results):
    stdout, payload = finished(tiny_results, "ablation")
    assert list(payload["table"]) == ["defaults", "from scratch", "TF-IDF + LR", "whole-word"]
    assert payload["arms"]["whole-word"] == ["mlm_head.masking.unit=word"]
    whole_word = payload["table"]["whole-word"]["tiny_dataset"]
    assert 0 <= whole_word["accuracy"] <= 1 and whole_word["steps"] >= 1
    assert "| whole-word " in stdout and "steps in" in stdout


def test_pretraining_curve_tiny_trains_the_three_arms_on_the_same_batches(tiny_results):
    stdout, payload = finished(tiny_results, "pretraining_curve")
    curves = payload["curves"]
    assert list(curves) == ["launch.py", "bertlab (in-process)", "HF BertForMaskedLM"]
    assert all(list(curve) == ["0", "4", "8"] for curve in curves.values())
    # The in-process loop is the launch.py run's optimisation: the same curve, up to float noise.
    for step, (loss, _) in curves["launch.py"].items():
        assert curves["bertlab (in-process)"][step][0] == pytest.approx(loss, abs=0.05)
    assert all(curve["8"][0] < curve["0"][0] for curve in curves.values())  # every arm learns
    assert "| HF BertForMaskedLM" in stdout


def test_eval_cost_tiny_evaluates_the_same_tokens_at_both_sizes(tiny_results):
    stdout, payload = finished(tiny_results, "eval_cost")
    small, large = payload["corpora"]["1x"], payload["corpora"]["10x"]
    assert large["tokens"] > 8 * small["tokens"]
    for corpus in (small, large):
        after, before = corpus["arms"]["after"], corpus["arms"]["before"]
        assert after["capped"] and after["eval_tokens"] == 8192 and after["val_tokens_per_evaluation"] == 8192
        assert after["measured_tokens_per_evaluation"] == [8192, 8192]  # step 0 and the last step
        assert after["measured_test_tokens"] == [after["test_tokens_per_evaluation"]] == [8192]
        assert not before["capped"] and before["eval_tokens"] == "all" and before["extrapolated"]
        assert before["val_tokens_per_evaluation"] > 8192 and before["seconds_per_evaluation"] > 0
    assert (
        large["arms"]["before"]["val_tokens_per_evaluation"]
        > 8 * small["arms"]["before"]["val_tokens_per_evaluation"]
    )
    assert payload["ratio_after"] > 0 and payload["target_ratio"] == 1.5
    assert "seconds per evaluation 10x / 1x with the defaults" in stdout


def test_gpu_check_without_cuda_says_so_and_runs_nothing(tmp_path):
    output = tmp_path / "gpu_check.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "needs a CUDA GPU" in completed.stdout and "nothing was run" in completed.stdout
    assert not output.exists()


def test_predict_throughput_tiny_times_bertlab_and_the_pipeline_and_measures_rss(tiny_results):
    stdout, result = finished(tiny_results, "predict_throughput")
    timed = result["throughput"]
    assert timed["texts"] == 1000 and timed["bertlab_texts_per_s"] > 0 and timed["pipeline_texts_per_s"] > 0
    assert timed["ratio"] > 0 and result["target_ratio"] == 1.5
    assert timed["labels_agree"] > 0.99  # the same model on both sides
    assert result["rss"]["small"]["lines"] == 1000 and result["rss"]["large"]["lines"] == 10000
    assert all(r["peak_rss_mb"] > 50 for r in result["rss"].values())
    assert result["target_growth"] == 0.1
    assert "ratio bertlab/pipeline:" in stdout and "peak RSS growth" in stdout


def test_packing_cost_tiny_times_both_packings_per_architecture(tiny_results):
    stdout, payload = finished(tiny_results, "packing_cost")
    assert [r["architecture"] for r in payload["results"]] == ["bert_tiny", "bert_mini", "modern_tiny"]
    assert payload["data"]["mean_documents_per_block"] > 1  # blocks do hold several documents
    for result in payload["results"]:
        assert set(result["ms_per_step"]) == {"plain", "documents"}
        assert result["precision"] == "32" and result["compute_dtype"] == "float32"
        assert all(len(rounds) == 2 for rounds in result["rounds_ms"].values())
        assert result["ratio_median_of_rounds"] > 0
    assert "| documents / plain" in stdout


def test_packing_cost_times_bf16_autocast_whatever_the_cpu(tiny_results):
    stdout, payload = finished(tiny_results, "packing_cost_bf16")
    assert [r["architecture"] for r in payload["results"]] == ["bert_tiny", "modern_tiny"]
    for result in payload["results"]:
        assert result["precision"] == "bf16-mixed" and result["compute_dtype"] == "bfloat16"
        assert result["ratio_median_of_rounds"] > 0
    assert "precision bf16-mixed" in stdout


def test_long_texts_tiny_finetunes_each_length_beside_the_baseline(tiny_results):
    stdout, payload = finished(tiny_results, "long_texts")
    assert list(payload["arms"]) == ["32", "32+16"]
    recorded = [(arm["max_length"], arm["tail_tokens"]) for arm in payload["arms"].values()]
    assert recorded == [(32, 0), (32, 16)]
    for arm in payload["arms"].values():
        assert 0 <= arm["results"]["test/macro_f1"] <= 1 and arm["seconds"] > 0
    assert payload["token_lengths"]["median"] > 32  # the texts are longer than the short arms read
    assert "| max_length 32, tail_tokens 16 " in stdout and "| TF-IDF + logistic regression" in stdout
