"""Training-step throughput of bertlab's MLM model against transformers' BertForMaskedLM at the same size.

One step = forward, MLM loss, backward, AdamW step. bertlab: the backbone and head that launch.py builds
(composed from conf/ with architecture=bert_mini and the size overrides), head tied to the word embeddings,
loss from MaskedLanguageModel._loss (only the masked positions are projected onto the vocabulary).
transformers: BertForMaskedLM (attn_implementation="sdpa"), loss from labels that are -100 at unmasked
positions, as HF users train it. Both see the same full-length blocks (no padding), the same masked
positions (a fixed count per sequence), dropout 0.1 and AdamW with the run's hyperparameters.

Arms are timed in one process, in interleaved rounds (A B A B ...) after warm-up; the figure per arm is
the median of its rounds' tokens/s (input tokens, no padding exists). Compare ratios, not absolute numbers.

    python benchmarks/mlm_throughput.py                      # fp32 and bf16 autocast, bertlab vs HF
    python benchmarks/mlm_throughput.py --variants           # also bertlab with other settings (VARIANTS)
    python benchmarks/mlm_throughput.py --profile            # torch.profiler breakdown of bertlab's step
    python benchmarks/mlm_throughput.py --tiny               # seconds: tiny sizes, 2 rounds (for tests)

The variants (--variants) build bertlab with config overrides (VARIANTS), to measure what a setting gains.
The cheap dropout masks and fused AdamW once prototyped here are now the library's defaults
(bertlab.model.dropout, training.optimizer.fused).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads)
import torch
from common import RESULTS, ROOT, machine, median, print_table, write_json
from torch import nn

DEFAULT_OUTPUT = RESULTS / "mlm_throughput.json"
TARGETS = {"fp32": 1.5, "bf16": 2.0}  # bertlab / HF, from the issue
NO_NATIVE_BF16 = (
    "this CPU has no AVX512-BF16/AMX: bf16 matmuls fall back to slow kernels (a step takes about a "
    "minute at the default size) and bertlab's precision=auto picks 32-true here; force it with "
    "--precisions fp32,bf16"
)
SPECIAL_IDS = 5  # [PAD] [UNK] [CLS] [SEP] [MASK] are ids 0-4 in every bertlab tokenizer
CLS_ID, SEP_ID, MASK_ID = 2, 3, 4


@dataclass(frozen=True)
class Size:
    vocab_size: int = 8192
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    seq_len: int = 128
    batch_size: int = 32
    mask_probability: float = 0.15
    dropout: float = 0.1


DEFAULT_SIZE = Size()
TINY_SIZE = Size(
    vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, seq_len=32, batch_size=4
)


# -- inputs ------------------------------------------------------------------------------------------------
def num_masked(size: Size) -> int:
    """Masked positions per sequence, as bertlab's data pipeline picks them ([CLS]/[SEP] excluded)."""
    from bertlab.data.masking import MaskingPolicy

    return MaskingPolicy(size.mask_probability).num_predictions(size.seq_len - 2)


def make_batches(size: Size, count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Full-length [CLS] ... [SEP] blocks with k masked positions each, in bertlab's and HF's forms."""
    from bertlab.data.masking import IGNORE_INDEX

    generator = torch.Generator().manual_seed(seed)
    k = num_masked(size)
    batches = []
    for _ in range(count):
        original = torch.randint(
            SPECIAL_IDS, size.vocab_size, (size.batch_size, size.seq_len), generator=generator
        )
        original[:, 0], original[:, -1] = CLS_ID, SEP_ID
        scores = torch.rand(size.batch_size, size.seq_len - 2, generator=generator)
        positions = scores.topk(k, dim=1).indices.sort(dim=1).values + 1
        labels = original.gather(1, positions)
        input_ids = original.clone()
        replace_ = torch.rand(size.batch_size, k, generator=generator) < 0.8
        input_ids.scatter_(1, positions, torch.where(replace_, MASK_ID, labels))
        hf_labels = torch.full_like(original, IGNORE_INDEX).scatter_(1, positions, labels)
        batches.append(
            {
                "input_ids": input_ids,
                "masked_positions": positions,
                "masked_labels": labels,
                "labels": hf_labels,
            }
        )
    return batches


# -- the two models ------------------------------------------------------------------------------------------
def compose_bertlab_config(size: Size, overrides: tuple[str, ...] = ()):
    """The run config launch.py would compose for this size (architecture=bert_mini plus overrides)."""
    from hydra import compose, initialize_config_dir

    from bertlab.launcher.registration import register as register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            config_name="config", overrides=["+experiment=pretrain", *size_overrides(size), *overrides]
        )


def size_overrides(size: Size) -> list[str]:
    """launch.py overrides that give a run this size (the vocabulary is a limit: the corpus decides)."""
    return [
        "architecture=bert_mini",
        f"architecture.hidden_size={size.hidden_size}",
        f"architecture.num_layers={size.num_layers}",
        f"architecture.num_heads={size.num_heads}",
        f"architecture.intermediate_size={size.intermediate_size}",
        f"architecture.dropout={size.dropout}",
        f"architecture.attention_dropout={size.dropout}",
        f"tokenizer.vocab_size={size.vocab_size}",
        f"tokenizer.max_length={size.seq_len}",
        f"training.batch_size={size.batch_size}",
        f"mlm_head.masking.probability={size.mask_probability}",
    ]


def optimizer_settings(cfg) -> dict[str, Any]:
    """AdamW's hyperparameters from the composed config (training.optimizer)."""
    from omegaconf import OmegaConf

    from bertlab.training.pretraining_lr import pretraining_lr

    settings = OmegaConf.to_container(cfg.training.optimizer, resolve=True)
    settings = {k: v for k, v in settings.items() if not k.startswith("_")}
    settings["lr"] = pretraining_lr(settings.get("lr"), continues_released_model=False)  # auto: from scratch
    if "betas" in settings:
        settings["betas"] = tuple(settings["betas"])
    return settings


def grouped_parameters(model: nn.Module) -> list[dict[str, Any]]:
    """bertlab's rule (no weight decay on biases and norms), applied to the HF model."""
    from bertlab.training.parameter_groups import no_weight_decay

    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if no_weight_decay(name, parameter) else decay).append(parameter)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class Arm:
    """One model + optimizer + loss, stepped the way a training loop does."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    note: str = ""

    def step(self, batch: dict[str, torch.Tensor], bf16: bool) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = self.loss(batch)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def build_bertlab(
    size: Size,
    name: str = "bertlab",
    overrides: tuple[str, ...] = (),
    seed: int = 0,
) -> Arm:
    """bertlab's backbone + head as a run builds them, stepped through MaskedLanguageModel._loss."""
    from hydra.utils import instantiate

    from bertlab.tasks.mlm import MaskedLanguageModel

    cfg = compose_bertlab_config(size, overrides)
    torch.manual_seed(seed)
    backbone = instantiate(cfg.architecture, vocab_size=size.vocab_size, pad_token_id=0)
    head = instantiate(cfg.mlm_head.module, hidden_size=backbone.hidden_size, vocab_size=size.vocab_size)
    settings = optimizer_settings(cfg)
    task = MaskedLanguageModel(
        backbone, head, functools.partial(torch.optim.AdamW, **settings), lr=settings["lr"]
    )
    task.train()
    optimizer = task.configure_optimizers()
    return Arm(name, task, optimizer, lambda batch: task._loss(batch)[0])


def build_hf(size: Size, attn_implementation: str = "sdpa", seed: int = 0) -> Arm:
    """transformers' BertForMaskedLM at the same size, trained with labels=-100 at unmasked positions."""
    from transformers import BertConfig, BertForMaskedLM
    from transformers.utils import logging as hf_logging

    from bertlab.model.hf_format import BERT

    hf_logging.set_verbosity_error()
    cfg = compose_bertlab_config(size)
    config = BertConfig(**BERT.config_kwargs(cfg.architecture, size.vocab_size, pad_token_id=0))
    torch.manual_seed(seed)
    model = BertForMaskedLM._from_config(config, attn_implementation=attn_implementation)
    model.train()
    optimizer = torch.optim.AdamW(grouped_parameters(model), **optimizer_settings(cfg))

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], labels=batch["labels"]).loss

    return Arm(f"hf-{attn_implementation}", model, optimizer, loss)


# -- "same model mathematically": copy bertlab's weights into HF and compare loss and gradients --------------
def copy_bertlab_into_hf(bertlab: nn.Module, hf: nn.Module, num_layers: int) -> None:
    """HF's weights := bertlab's, through the exporter's name table (bertlab.model.hf_format)."""
    from bertlab.model.hf_format import BERT, to_hf

    state = to_hf(bertlab.state_dict(), BERT, num_layers, fused=True, pad_token_id=0)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or any(not key.endswith("position_ids") for key in missing):
        raise RuntimeError(f"name table mismatch: missing {missing}, unexpected {unexpected}")


def check_equivalence(size: Size, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """fp32, dropout off: loss and gradients of bertlab and of HF holding bertlab's weights."""
    try:
        ours, theirs = build_bertlab(size), build_hf(size)
        copy_bertlab_into_hf(ours.model, theirs.model, size.num_layers)
        ours.model.eval()
        theirs.model.eval()
        loss_ours, loss_theirs = ours.loss(batch), theirs.loss(batch)
        loss_ours.backward()
        loss_theirs.backward()
        ours_grad = ours.model.backbone.layers[0].feed_forward.up.weight.grad
        theirs_grad = theirs.model.bert.encoder.layer[0].intermediate.dense.weight.grad
        return {
            "loss_bertlab": loss_ours.item(),
            "loss_hf": loss_theirs.item(),
            "loss_abs_diff": abs(loss_ours.item() - loss_theirs.item()),
            "grad_max_abs_diff": (ours_grad - theirs_grad).abs().max().item(),
            "grad_max_abs": ours_grad.abs().max().item(),
        }
    except (KeyError, AttributeError, RuntimeError) as error:  # the model's layout changed: say so
        return {"skipped": f"{type(error).__name__}: {error}"}


# -- prototypes of model changes (instances only; src/bertlab/model is untouched) ---------------------------
# name -> (builder keyword arguments, what it prototypes)
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "bertlab-eager": ({"overrides": ("architecture.attention=eager",)}, "architecture.attention=eager"),
}


def build_arms(size: Size, variants: bool, seed: int) -> list[Arm]:
    arms = [build_hf(size, seed=seed), build_bertlab(size, seed=seed)]
    if variants:
        for name, (kwargs, note) in VARIANTS.items():
            arm = build_bertlab(size, name=name, seed=seed, **kwargs)
            arm.note = note
            arms.append(arm)
    return arms


# -- timing ---------------------------------------------------------------------------------------------------
def interleaved_rounds(
    arms: list[Arm],
    batches: list[dict[str, torch.Tensor]],
    bf16: bool,
    warmup: int,
    rounds: int,
    steps_per_round: int,
) -> dict[str, list[float]]:
    """tokens/s of each arm per round; rounds alternate the arms (A B A B ...) after `warmup` rounds."""
    tokens_per_step = batches[0]["input_ids"].numel()
    rates: dict[str, list[float]] = {arm.name: [] for arm in arms}
    cursor = 0
    for round_index in range(warmup + rounds):
        for arm in arms:
            start = time.perf_counter()
            for step in range(steps_per_round):
                loss = arm.step(batches[(cursor + step) % len(batches)], bf16)
            elapsed = time.perf_counter() - start
            if not torch.isfinite(loss):
                raise RuntimeError(f"{arm.name}: loss is {loss.item()}")
            if round_index >= warmup:
                rates[arm.name].append(tokens_per_step * steps_per_round / elapsed)
        cursor += steps_per_round
    return rates


# -- profiling ------------------------------------------------------------------------------------------------
CATEGORIES = [  # first match wins; op names are aten::...
    ("dropout RNG + masking", ("bernoulli", "dropout", "random_", "uniform", "rand", "_keepscale", "where")),
    ("matmul (linear, bmm)", ("addmm", "::mm", "bmm", "matmul", "linear", "baddbmm")),
    ("attention kernel (sdpa)", ("scaled_dot_product", "flash_attention")),
    ("softmax", ("softmax",)),
    ("layer norm", ("layer_norm",)),
    ("gelu", ("gelu",)),
    ("loss (log_softmax, nll)", ("log_softmax", "nll_loss", "cross_entropy")),
    ("optimizer (adamw)", ("adam", "_foreach", "lerp", "addcdiv", "addcmul", "sqrt", "mul_", "add_", "div_")),
    ("embedding / gather", ("embedding", "gather", "index", "scatter")),
    ("casts / copies", ("copy_", "_to_copy", "clone", "contiguous", "to", "cat")),
]


def categorize(name: str) -> str:
    lowered = name.lower()
    for category, needles in CATEGORIES:
        if any(needle in lowered for needle in needles):
            return category
    return "other"


def profile_arm(arm: Arm, batches: list[dict[str, torch.Tensor]], bf16: bool, steps: int) -> dict[str, Any]:
    """Self CPU time per op (top 15), per category, and per phase (forward+loss / backward / optimizer)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    for batch in batches[:2]:
        arm.step(batch, bf16)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            batch = batches[i % len(batches)]
            arm.optimizer.zero_grad(set_to_none=True)
            with (
                record_function("phase: forward+loss"),
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
            ):
                loss = arm.loss(batch)
            with record_function("phase: backward"):
                loss.backward()
            with record_function("phase: optimizer"):
                arm.optimizer.step()
    events = prof.key_averages()
    phases = {
        e.key.removeprefix("phase: "): e.cpu_time_total / 1e3 / steps
        for e in events
        if e.key.startswith("phase:")
    }
    ops = [e for e in events if not e.key.startswith("phase:") and e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in ops)
    by_category: dict[str, float] = {}
    for e in ops:
        category = categorize(e.key)
        by_category[category] = by_category.get(category, 0.0) + e.self_cpu_time_total
    top = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    return {
        "arm": arm.name,
        "steps": steps,
        "ms_per_step_profiled": total / 1e3 / steps,
        "phases_ms_per_step": {k: round(v, 2) for k, v in phases.items()},
        "categories_share": {
            k: round(v / total, 4) for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])
        },
        "top_ops": [
            {
                "op": e.key,
                "ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 3),
                "share": round(e.self_cpu_time_total / total, 4),
                "calls_per_step": e.count / steps,
            }
            for e in top
        ],
    }


def print_profile(result: dict[str, Any], precision: str) -> None:
    print(
        f"\nprofile of {result['arm']} ({precision}), {result['ms_per_step_profiled']:.1f} ms/step self CPU:"
    )
    print("phases (ms/step): " + ", ".join(f"{k} {v:.1f}" for k, v in result["phases_ms_per_step"].items()))
    print_table(["category", "share"], [[k, f"{v:.1%}"] for k, v in result["categories_share"].items()])
    print_table(
        ["op", "ms/step", "share", "calls/step"],
        [
            [o["op"], f"{o['ms_per_step']:.2f}", f"{o['share']:.1%}", f"{o['calls_per_step']:.0f}"]
            for o in result["top_ops"]
        ],
    )


# -- main ---------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes and 2 rounds: seconds, for tests")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write")
    parser.add_argument(
        "--precisions",
        default=None,
        help="comma-separated fp32, bf16 (default: both; bf16 only on CPUs with native bf16, or --tiny)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per arm (default 10; tiny 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 3; tiny 1)")
    parser.add_argument("--steps-per-round", type=int, default=1)
    parser.add_argument("--variants", action="store_true", help="also time the prototype model changes")
    parser.add_argument("--profile", action="store_true", help="profile bertlab's step with torch.profiler")
    parser.add_argument("--profile-steps", type=int, default=None, help="profiled steps (default 5; tiny 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    for field in Size.__dataclass_fields__:
        parser.add_argument(
            f"--{field.replace('_', '-')}", type=type(getattr(DEFAULT_SIZE, field)), default=None
        )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    size = TINY_SIZE if args.tiny else DEFAULT_SIZE
    size = replace(
        size, **{f: getattr(args, f) for f in Size.__dataclass_fields__ if getattr(args, f) is not None}
    )
    rounds = args.rounds if args.rounds is not None else (2 if args.tiny else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    profile_steps = args.profile_steps if args.profile_steps is not None else (2 if args.tiny else 5)
    skipped: dict[str, str] = {}
    if args.precisions is None:
        precisions = list(TARGETS)
        if not (args.tiny or machine()["native_bf16"]):
            precisions.remove("bf16")
            skipped["bf16"] = NO_NATIVE_BF16
    else:
        precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = set(precisions) - set(TARGETS)
    if unknown:
        raise SystemExit(f"unknown precision(s) {sorted(unknown)}; choose from {sorted(TARGETS)}")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    batches = make_batches(size, count=4, seed=args.seed)
    tokens_per_step = size.batch_size * size.seq_len
    result: dict[str, Any] = {
        "benchmark": "mlm_throughput",
        "machine": machine(),
        "size": asdict(size),
        "masked_per_sequence": num_masked(size),
        "tokens_per_step": tokens_per_step,
        "rounds": rounds,
        "warmup_rounds": warmup,
        "steps_per_round": args.steps_per_round,
        "targets": TARGETS,
        "equivalence_fp32": check_equivalence(size, batches[0]),
        "precisions": {},
        "skipped": skipped,
    }
    try:
        import transformers

        result["machine"]["transformers"] = transformers.__version__
    except ImportError:
        raise SystemExit("transformers is needed: pip install -e '.[hf]'") from None

    total_start = time.perf_counter()
    for precision in precisions:
        bf16 = precision == "bf16"
        arms = build_arms(size, args.variants, args.seed)
        rates = interleaved_rounds(arms, batches, bf16, warmup, rounds, args.steps_per_round)
        hf_rate = median(rates[arms[0].name])
        entry: dict[str, Any] = {"arms": {}}
        for arm in arms:
            rate = median(rates[arm.name])
            entry["arms"][arm.name] = {
                "median_tokens_per_s": round(rate, 1),
                "median_ms_per_step": round(1e3 * tokens_per_step / rate, 1),
                "ratio_vs_hf": round(rate / hf_rate, 3),
                "parameters": arm.parameters(),
                "note": arm.note,
                "rounds_tokens_per_s": [round(r, 1) for r in rates[arm.name]],
            }
        ratio = entry["arms"]["bertlab"]["ratio_vs_hf"]
        entry["ratio"] = ratio
        # Each round's bertlab rate over the HF rate of the same round: less sensitive to load swings.
        paired = [ours / theirs for ours, theirs in zip(rates["bertlab"], rates[arms[0].name], strict=True)]
        entry["median_paired_round_ratio"] = round(median(paired), 3)
        entry["target"] = TARGETS[precision]
        entry["target_met"] = ratio >= TARGETS[precision]
        if args.profile:
            bertlab_arm = next(a for a in arms if a.name == "bertlab")
            entry["profile"] = profile_arm(bertlab_arm, batches, bf16, profile_steps)
        result["precisions"][precision] = entry
        del arms
    result["seconds"] = round(time.perf_counter() - total_start, 1)

    m = result["machine"]
    print(
        f"\nmlm_throughput on {m['cpu']} ({m['cores']} cores, native bf16: {m['native_bf16']}), {m['date']}"
    )
    print(
        f"size {asdict(size)}; {result['masked_per_sequence']} masked tokens per sequence; "
        f"median of {rounds} interleaved rounds x {args.steps_per_round} step(s) after {warmup} warm-up rounds"
    )
    eq = result["equivalence_fp32"]
    if "skipped" in eq:
        print(f"equivalence check skipped: {eq['skipped']}")
    else:
        print(
            f"same model: fp32 loss bertlab {eq['loss_bertlab']:.6f} vs HF {eq['loss_hf']:.6f} with copied "
            f"weights (|diff| {eq['loss_abs_diff']:.1e}, max grad diff {eq['grad_max_abs_diff']:.1e})"
        )
    rows = []
    for precision, entry in result["precisions"].items():
        for name, arm in entry["arms"].items():
            rows.append(
                [
                    precision,
                    name,
                    f"{arm['median_tokens_per_s']:,.0f}",
                    f"{arm['median_ms_per_step']:.0f}",
                    f"{arm['ratio_vs_hf']:.2f}",
                    arm["note"],
                ]
            )
    print()
    print_table(["precision", "arm", "tokens/s", "ms/step", "vs HF", "prototype"], rows)
    print()
    for precision, entry in result["precisions"].items():
        verdict = "met" if entry["target_met"] else "MISSED"
        print(
            f"ratio bertlab/HF {precision}: {entry['ratio']:.2f} (target >= {entry['target']}: {verdict}; "
            f"median of per-round ratios {entry['median_paired_round_ratio']:.2f})"
        )
    for precision, reason in skipped.items():
        print(f"{precision} skipped: {reason}")
    for precision, entry in result["precisions"].items():
        if "profile" in entry:
            print_profile(entry["profile"], precision)
    path = write_json(args.output, result)
    print(f"\nwrote {path} ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
