"""Every precision with every optimizer setting: bf16/fp16 autocast (fp16 with its grad scaler), bf16 weights,
fp32; fused or unfused AdamW; with and without clipping and accumulation. Forced whatever the CPU picks."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from bertlab.run import run
from bertlab.training.precision import AutocastPrecision, precision_plugin, resolve_precision
from tests.conftest import FAST, compose_config, read_csv

CLIP = 1e-3  # below every gradient norm of the tiny model, so clipping always acts


class TinyRegression(L.LightningModule):
    """A model small enough to compare optimizer settings to the bit within a second."""

    def __init__(self, fused: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
        self.fused = fused
        self.clipped_norms: list[float] = []  # gradient norms as the optimizer sees them (real, unscaled)

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        return (
            torch.nn.functional.mse_loss(self.net(inputs).float(), targets) * 0.01
        )  # fp16-safe at scale 2**16

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        grads = [p.grad.float() for p in self.parameters()]
        self.clipped_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.05, fused=self.fused)


def tiny_data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 16, generator=generator), torch.randn(8, 4, generator=generator)) for _ in range(6)
    ]


def train_tiny(
    precision: str, fused: bool, clip: float | None, accumulate: int = 1
) -> tuple[dict[str, torch.Tensor], list[float]]:
    plugin = precision_plugin(precision, "cpu", "auto")
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=6 // accumulate,
        precision=None if plugin else precision,
        plugins=[plugin] if plugin else None,
        gradient_clip_val=clip,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = TinyRegression(fused)
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(tiny_data(), batch_size=None))
    if precision == "16-mixed":
        assert isinstance(trainer.precision_plugin, AutocastPrecision)
        assert trainer.precision_plugin.scaler is not None  # real fp16 with a grad scaler, even on CPU
    weights = {name: value.detach().float().clone() for name, value in model.state_dict().items()}
    return weights, model.clipped_norms


def test_mixed_precision_plugin_only_where_lightning_needs_it():
    assert isinstance(precision_plugin("bf16-mixed", "cpu", "auto"), AutocastPrecision)
    assert precision_plugin("16-mixed", "cpu", "ddp").scaler is not None
    assert precision_plugin("bf16-mixed", "cpu", "auto").scaler is None
    for precision in ("32-true", "bf16-true"):
        assert precision_plugin(precision, "cpu", "auto") is None
    assert precision_plugin("bf16-mixed", "gpu", "fsdp") is None
    assert precision_plugin("bf16-mixed", "gpu", "auto").device == "cuda"  # FSDP brings its own
    assert resolve_precision("16-mixed", "cpu") == "16-mixed"  # what runs is what run.json records


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "bf16-true", "32-true"])
@pytest.mark.parametrize("accumulate", [1, 2])
def test_fused_adamw_clips_like_unfused_in_every_precision(precision, accumulate):
    fused, fused_norms = train_tiny(precision, fused=True, clip=CLIP, accumulate=accumulate)
    unfused, unfused_norms = train_tiny(precision, fused=False, clip=CLIP, accumulate=accumulate)
    _, unclipped_norms = train_tiny(precision, fused=True, clip=None, accumulate=accumulate)
    tolerance = 1e-5 if precision != "bf16-true" else 2e-2
    for name in fused:
        assert torch.isfinite(fused[name]).all(), name
        torch.testing.assert_close(fused[name], unfused[name], atol=tolerance, rtol=tolerance)
    initial = TinyRegression(fused=True).state_dict()
    assert all(not torch.allclose(fused[n], initial[n].float()) for n in fused), "no step was taken"
    assert len(fused_norms) == len(unfused_norms) == 6 // accumulate
    # clipped on real gradients: exactly at the threshold (on scaled ones it would be 2**16 times smaller)
    assert fused_norms == pytest.approx([CLIP] * len(fused_norms), rel=1e-2)
    assert unfused_norms == pytest.approx(fused_norms, rel=1e-2)
    assert min(unclipped_norms) > 2 * CLIP


def test_fp16_scaler_unscales_before_clipping_and_matches_a_hand_written_loop():
    """The clipped update equals torch's documented AMP recipe: scale, backward, unscale_, clip, step."""
    lightning_weights, _ = train_tiny("16-mixed", fused=True, clip=CLIP)
    model = TinyRegression(fused=False)
    optimizer = model.configure_optimizers()
    scaler = torch.amp.GradScaler("cpu")
    generator = torch.Generator().manual_seed(1)
    data = [
        (torch.randn(8, 16, generator=generator), torch.randn(8, 4, generator=generator)) for _ in range(6)
    ]
    for inputs, targets in data:
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model.training_step((inputs, targets), 0)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(lightning_weights[name], value, atol=1e-5, rtol=1e-5)


def pretrain(tmp_path, *overrides: str) -> tuple[dict, list[float]]:
    """A fast pretraining run through run(); its run.json and its validation losses."""
    run_dir = tmp_path / "pretraining" / "precision"
    run(
        compose_config(["+experiment=pretrain", "experiment.name=precision", *FAST, *overrides], tmp_path),
        run_dir,
    )
    evaluation = read_csv(run_dir / "metrics/eval/metrics.csv")
    val = [float(row["loss"]) for row in evaluation if row["stage"] == "val"]
    losses = [float(row["loss"]) for row in read_csv(run_dir / "metrics/train/metrics.csv")]
    assert all(loss == loss and loss < 20 for loss in losses), losses  # finite
    return json.loads((run_dir / "run.json").read_text()), val


@pytest.mark.parametrize(
    ("precision", "extra"),
    [
        ("bf16-mixed", []),
        ("16-mixed", ["training.accumulate_grad_batches=2"]),
        ("bf16-true", []),
        ("32-true", ["training.optimizer.fused=false", "training.gradient_clip_val=null"]),
    ],
)
def test_pretraining_runs_and_learns_in_each_precision(tmp_path, precision, extra):
    info, val = pretrain(
        tmp_path,
        "training.max_steps=8",
        "training.val_check_interval=4",
        f"training.precision={precision}",
        *extra,
    )
    assert info["precision"] == precision
    assert val[-1] < val[0], val


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_pretraining_on_cuda_with_fused_adamw_and_clipping(tmp_path, precision):
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    info, val = pretrain(tmp_path, "training.accelerator=gpu", f"training.precision={precision}")
    assert (info["accelerator"], info["precision"]) == ("gpu", precision)
    assert val[-1] < val[0] - 0.5, val
