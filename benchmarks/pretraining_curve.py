"""Is a pretraining plateau a defect or the recipe? bertlab against Hugging Face's BertForMaskedLM.

Runs a real pretraining with launch.py (any overrides), then trains two more models in this process on the
very same batches: the first run's token blocks, in its order, masked the same way (bertlab's masking is
seeded by (seed, epoch, batch)), with the same optimizer, parameter groups, schedule, clipping and
precision, read from the run's composed config:

- `bertlab (in-process)`: bertlab's Encoder + MLMHead, built from that config;
- `HF BertForMaskedLM`: transformers' BERT of the same size (post-norm is all it has).

Validation MLM loss and masked accuracy on the run's validation blocks are printed side by side at each
validation step. If the launch.py curve and the in-process bertlab curve agree, the training loop is not
the cause; if the HF curve agrees with them, the model is not either, and what is left is the recipe.

    python benchmarks/pretraining_curve.py devsets/healthtweets/corpus.txt --steps 600
    python benchmarks/pretraining_curve.py corpus.txt --steps 600 -- architecture.norm_position=pre
    python benchmarks/pretraining_curve.py --tiny     # seconds: generated text, a few steps

Arguments after `--` are launch.py overrides (the recipe to compare); the HF arm needs a post-norm, learned
position, GELU, LayerNorm architecture with biases (what BertForMaskedLM is) and is left out otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads)
from common import RESULTS, launch, machine, print_table, write_json

DEFAULT_OUTPUT = RESULTS / "pretraining_curve.json"
Batch = dict[str, Any]


def launch_run(corpus: Path, steps: int, interval: int, overrides: list[str], workdir: Path) -> Path:
    args = [
        "+experiment=pretrain",
        "experiment.name=curve",
        "data=text",
        f"data.source.train={corpus}",
        f"training.max_steps={steps}",
        f"training.val_check_interval={interval}",
        f"training.checkpoint.every_n_steps={steps}",
        "logging.progress_bar=false",
        *overrides,
    ]
    launch(args, workdir)
    return workdir / "pretraining" / "curve"


def launched_curve(run_dir: Path) -> dict[int, tuple[float, float]]:
    with (run_dir / "metrics/eval/metrics.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["stage"] == "val"]
    return {int(row["step"]): (float(row["loss"]), float(row["accuracy"])) for row in rows}


def run_data(cfg: Any, run_dir: Path) -> tuple[Any, Any]:
    """The run's tokenizer and a datamodule over its prepared blocks, serving its batches in its order."""
    from hydra.utils import instantiate

    from bertlab.data.mlm_datamodule import MLMDataModule
    from bertlab.tokenizer import TextTokenizer

    info = json.loads((run_dir / "run.json").read_text())
    tokenizer = TextTokenizer.from_file(run_dir / "tokenizer.json", max_length=cfg.tokenizer.max_length)
    datamodule = MLMDataModule(
        source=None,
        prepared=info["prepared_data"],
        seed=cfg.data.seed,
        masking=instantiate(cfg.mlm_head.masking),
        batch_size=cfg.training.batch_size,
        num_workers=0,
        packing=cfg.data.get("packing"),
    )
    datamodule.prepare(tokenizer)
    datamodule.setup("fit")
    return tokenizer, datamodule


def bertlab_model(cfg: Any, tokenizer: Any) -> tuple[Any, Callable[[Batch], Any], list[dict]]:
    from hydra.utils import instantiate
    from torch import nn

    from bertlab.training.parameter_groups import parameter_groups
    from bertlab.training.pretraining_lr import pretraining_lr

    backbone = instantiate(cfg.architecture, vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id)
    head = instantiate(cfg.mlm_head.module, hidden_size=backbone.hidden_size, vocab_size=tokenizer.vocab_size)
    head.tie_to(backbone.word_embeddings)
    model = nn.ModuleDict({"backbone": backbone, "head": head})

    def logits(batch: Batch) -> Any:
        return head(backbone(batch["input_ids"], None, batch.get("document_ids")), batch["masked_positions"])

    return model, logits, parameter_groups(backbone, head, pretraining_lr(cfg.training.optimizer.lr, False))


def hf_supports(architecture: Any) -> str | None:
    """Why BertForMaskedLM cannot be this architecture, or None when it can."""
    wanted = {
        "norm_position": "post",
        "position_encoding": "learned",
        "activation": "gelu",
        "norm": "layernorm",
        "bias": True,
        "attention": "sdpa",
    }
    for key, value in wanted.items():
        if architecture.get(key) != value:
            return f"architecture.{key}={architecture.get(key)} (BertForMaskedLM has {value})"
    return None


def hf_model(cfg: Any, tokenizer: Any) -> tuple[Any, Callable[[Batch], Any], list[dict]]:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from bertlab.model.attention import same_document
    from bertlab.model.hf_format import BERT
    from bertlab.model.positions import document_positions
    from bertlab.training.pretraining_lr import pretraining_lr

    kwargs = BERT.config_kwargs(
        cfg.architecture, tokenizer.vocab_size, tokenizer.pad_id, cfg.mlm_head.module.tie_word_embeddings
    )
    config = BertConfig(**kwargs, attn_implementation="sdpa")
    model = BertForMaskedLM(config)

    def logits(batch: Batch) -> Any:
        documents = batch.get("document_ids")
        if documents is None:
            hidden = model.bert(input_ids=batch["input_ids"]).last_hidden_state
        else:  # document packing: the same block-diagonal mask (4D, used as is) and restarting positions
            hidden = model.bert(
                input_ids=batch["input_ids"],
                attention_mask=same_document(documents),
                position_ids=document_positions(documents),
            ).last_hidden_state
        positions = batch["masked_positions"]
        hidden = torch.gather(hidden, 1, positions.unsqueeze(-1).expand(-1, -1, hidden.size(-1)))
        return model.cls(hidden)

    lr = pretraining_lr(cfg.training.optimizer.lr, False)
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name else decay).append(parameter)
    return model, logits, [{"params": decay, "lr": lr}, {"params": no_decay, "lr": lr, "weight_decay": 0.0}]


def train_in_process(
    cfg: Any,
    datamodule: Any,
    build: Callable[[], tuple[Any, Callable[[Batch], Any], list[dict]]],
    bf16: bool,
) -> tuple[dict[int, tuple[float, float]], float]:
    """The launch.py run's optimisation, step for step, on its batches; the validation curve and seconds."""
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    from bertlab.data.masking import IGNORE_INDEX
    from bertlab.training.pretraining_lr import pretraining_lr

    torch.manual_seed(cfg.experiment.seed)
    model, logits_of, groups = build()
    training = cfg.training
    optimizer = instantiate(training.optimizer, lr=pretraining_lr(training.optimizer.lr, False))(groups)
    scheduler = instantiate(training.scheduler)(optimizer, total_steps=training.max_steps)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def loss_of(batch: Batch) -> tuple[Any, Any]:
        with autocast:
            logits = logits_of(batch)
        labels = batch["masked_labels"]
        return F.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX
        ), logits

    val_batches = [datamodule.on_after_batch_transfer(b, 0) for b in datamodule.val_dataloader()]
    limit = training.limit_val_batches
    val_batches = (
        val_batches[: int(limit)]
        if isinstance(limit, int)
        else val_batches[: max(1, round(limit * len(val_batches)))]
    )

    def validate() -> tuple[float, float]:
        model.eval()
        total_loss = total_correct = total_count = 0.0
        with torch.no_grad():
            for batch in val_batches:
                loss, logits = loss_of(batch)
                counted = batch["masked_labels"] != IGNORE_INDEX
                total_loss += float(loss) * int(counted.sum())
                total_correct += int((logits.argmax(-1) == batch["masked_labels"])[counted].sum())
                total_count += int(counted.sum())
        model.train()
        return total_loss / total_count, total_correct / total_count

    curve = {0: validate()}
    step, epoch = 0, 0
    started = time.perf_counter()
    while step < training.max_steps:
        loader = datamodule.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for raw in loader:
            batch = datamodule.on_after_batch_transfer(raw, 0)
            loss, _ = loss_of(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if training.gradient_clip_val:
                torch.nn.utils.clip_grad_norm_(model.parameters(), training.gradient_clip_val)
            optimizer.step()
            scheduler.step()
            step += 1
            if step % training.val_check_interval == 0 or step == training.max_steps:
                curve[step] = validate()
            if step == training.max_steps:
                break
        epoch += 1
    return curve, time.perf_counter() - started


def write_tiny_corpus(folder: Path) -> Path:
    from bertlab.data.embedded_corpus import generate_documents

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(generate_documents(400, seed=6)) + "\n")
    return corpus


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpus", nargs="?", type=Path, help="a text file, one document per line")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps (default 600)")
    parser.add_argument("--every", type=int, default=100, help="steps between validations (default 100)")
    parser.add_argument("--architecture", default="bert_mini", help="architecture preset (default bert_mini)")
    parser.add_argument("--arms", default="launch,bertlab,hf", help="which of launch,bertlab,hf to run")
    parser.add_argument(
        "--runs", type=Path, default=None, help="where the run goes (default: a temporary folder)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    parser.add_argument("--tiny", action="store_true", help="seconds: generated text, a few steps")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    options = parser.parse_args(argv[:split])
    options.overrides = argv[split + 1 :]  # launch.py overrides, e.g. mlm_head.masking.probability=0.3
    overrides = [f"architecture={options.architecture}", *options.overrides]
    workdir = Path(options.runs or tempfile.mkdtemp(prefix="bertlab-curve-"))
    if options.tiny:
        options.corpus = write_tiny_corpus(workdir / "tiny")
        options.steps, options.every = 8, 4
        overrides = [
            "architecture=bert_tiny",
            "tokenizer.vocab_size=400",
            "tokenizer.max_length=32",
            "training.batch_size=8",
            *options.overrides,
        ]
    if options.corpus is None or not options.corpus.is_file():
        parser.error(f"{options.corpus} is not a file; give a text corpus (one document per line) or --tiny")
    arms = [arm.strip() for arm in options.arms.split(",") if arm.strip()]

    from omegaconf import OmegaConf

    started = time.perf_counter()
    run_dir = launch_run(options.corpus, options.steps, options.every, overrides, workdir)
    curves: dict[str, dict[int, tuple[float, float]]] = {"launch.py": launched_curve(run_dir)}
    seconds = {"launch.py": time.perf_counter() - started}
    cfg = OmegaConf.load(run_dir / ".hydra/config.yaml")
    bf16 = json.loads((run_dir / "run.json").read_text())["precision"] == "bf16-mixed"
    tokenizer, datamodule = run_data(cfg, run_dir)
    if "bertlab" in arms:
        curves["bertlab (in-process)"], seconds["bertlab (in-process)"] = train_in_process(
            cfg, datamodule, lambda: bertlab_model(cfg, tokenizer), bf16
        )
    skipped = hf_supports(cfg.architecture)
    if "hf" in arms and skipped:
        print(f"HF arm left out: {skipped}")
    elif "hf" in arms:
        curves["HF BertForMaskedLM"], seconds["HF BertForMaskedLM"] = train_in_process(
            cfg, datamodule, lambda: hf_model(cfg, tokenizer), bf16
        )
    if "launch" not in arms:
        curves.pop("launch.py")

    steps = sorted(set().union(*(curve.keys() for curve in curves.values())))
    print(
        f"\n{options.corpus}: {cfg.architecture.get('num_layers')} layers x {cfg.architecture.get('hidden_size')}, "
        f"{options.steps} steps, batch {cfg.training.batch_size} x {cfg.tokenizer.max_length} tokens, "
        f"{'bf16' if bf16 else 'fp32'}; validation MLM loss / masked accuracy"
    )

    def cell(curve: dict[int, tuple[float, float]], step: int) -> str:
        return f"{curve[step][0]:.3f} / {curve[step][1]:.3f}" if step in curve else "-"

    print_table(["step", *curves], [[step, *(cell(c, step) for c in curves.values())] for step in steps])
    print("seconds: " + ", ".join(f"{name} {value:.0f}" for name, value in seconds.items()))
    write_json(
        options.output,
        {
            "benchmark": "pretraining_curve",
            "machine": machine(),
            "corpus": str(options.corpus),
            "overrides": overrides,
            "steps": options.steps,
            "precision": "bf16-mixed" if bf16 else "32-true",
            "curves": {name: {str(s): list(v) for s, v in curve.items()} for name, curve in curves.items()},
            "seconds": seconds,
            "run_folder": str(run_dir),
        },
    )


if __name__ == "__main__":
    main()
