"""Export to the Hugging Face format: same logits, same token ids, and a clear refusal for what BERT lacks."""

from __future__ import annotations

import os
import runpy
import shutil
import socket
import stat
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bertlab.errors import BertlabError
from bertlab.export import export_hf, main
from bertlab.saved_run import SavedRun
from tests.conftest import ROOT, compose_config, right_padded

transformers = pytest.importorskip("transformers")

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a short one",
    "Numbers like 1234 and punctuation, too!",
]


def assert_same_logits(run_dir: Path, exported: Path) -> None:
    run = SavedRun.open(run_dir)
    backbone, head = run.rebuild_mlm()
    tokenizer = run.tokenizer()
    hf = transformers.BertForMaskedLM.from_pretrained(exported).eval()
    input_ids, mask = right_padded(tokenizer, TEXTS)
    with torch.no_grad():
        ours = head(backbone(input_ids, mask))
        theirs = hf(input_ids=input_ids, attention_mask=mask).logits
        real = mask.bool()
        torch.testing.assert_close(theirs[real], ours[real], atol=1e-4, rtol=0)
        single = input_ids[:1, : int(mask[0].sum())]  # no padding, no mask
        torch.testing.assert_close(hf(input_ids=single).logits, head(backbone(single)), atol=1e-4, rtol=0)


def test_exported_model_gives_bertlabs_logits_and_tokenizer_ids(pretrained_run, tmp_path):
    out = export_hf(pretrained_run, tmp_path / "hf")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    assert_same_logits(pretrained_run, out)

    tokenizer = SavedRun.open(pretrained_run).tokenizer()
    fast = transformers.PreTrainedTokenizerFast.from_pretrained(out)
    assert fast(TEXTS)["input_ids"] == tokenizer.encode_sequences(TEXTS)
    assert (fast.pad_token_id, fast.cls_token_id, fast.sep_token_id, fast.mask_token_id) == (
        tokenizer.pad_id,
        tokenizer.cls_id,
        tokenizer.sep_id,
        tokenizer.mask_id,
    )
    assert fast.model_max_length == OmegaConf.load(pretrained_run / ".hydra/config.yaml").tokenizer.max_length
    assert transformers.AutoConfig.from_pretrained(out).architectures == ["BertForMaskedLM"]


def fake_run(
    tmp_path: Path,
    source_run: Path,
    overrides: list[str],
    scale: float = 0.0,
    config_in_checkpoint: bool = True,
) -> Path:
    """A run folder with a given architecture: the tokenizer of `source_run`, freshly built weights
    (perturbed by `scale` so that a wrong mapping shows), only checkpoints/model.ckpt, and the config in the
    checkpoint (as bertlab writes it) or only in .hydra/config.yaml (as older checkpoints have it)."""
    from hydra.utils import instantiate

    from bertlab.tokenizer import TextTokenizer

    cfg = compose_config(["+experiment=pretrain", *overrides], tmp_path)
    config = OmegaConf.to_container(cfg, resolve=True)
    tokenizer = TextTokenizer.from_file(source_run / "tokenizer.json")
    torch.manual_seed(0)
    backbone = instantiate(cfg.architecture, vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id)
    head = instantiate(cfg.mlm_head.module, hidden_size=backbone.hidden_size, vocab_size=tokenizer.vocab_size)
    head.tie_to(backbone.word_embeddings)
    with torch.no_grad():
        for parameter in [*backbone.parameters(), *head.parameters()]:
            parameter.add_(torch.randn_like(parameter) * scale)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save(
        {"state_dict": state, "bertlab": {"task": "mlm", "config": config}},
        run_dir / "checkpoints/model.ckpt",
    )
    shutil.copy(source_run / "tokenizer.json", run_dir / "tokenizer.json")
    return run_dir


def test_untied_head_separate_qkv_eager_attention_and_hydra_config_export_exactly(pretrained_run, tmp_path):
    run_dir = fake_run(
        tmp_path,
        pretrained_run,
        [
            "architecture.attention=eager",
            "architecture.fused_qkv=false",
            "architecture.num_heads=4",
            "mlm_head.module.tie_word_embeddings=false",
        ],
        scale=0.3,
        config_in_checkpoint=False,
    )
    out = export_hf(run_dir, tmp_path / "hf")  # falls back to checkpoints/model.ckpt
    assert transformers.AutoConfig.from_pretrained(out).tie_word_embeddings is False
    assert_same_logits(run_dir, out)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("architecture.position_encoding=rope", "architecture.position_encoding"),
        ("architecture.position_encoding=alibi", "architecture.position_encoding"),
        ("architecture.attention=local", "architecture.attention"),
        ("architecture.norm_position=pre", "architecture.norm_position"),
        ("architecture.norm=rmsnorm", "architecture.norm"),
        ("architecture.activation=geglu", "architecture.activation"),
        ("architecture.bias=false", "architecture.bias"),
        ("mlm_head.module.layer_norm_eps=1e-5", "mlm_head.module.layer_norm_eps"),
    ],
)
def test_architectures_bert_cannot_express_are_refused_naming_the_option(
    pretrained_run, tmp_path, capsys, override, key
):
    run_dir = fake_run(tmp_path, pretrained_run, [override])
    out = tmp_path / "hf"
    assert main([str(run_dir), "--to", "hf", str(out)]) == 2
    message = capsys.readouterr().err
    assert f"Error: {key}: " in message
    assert "Hugging Face BERT" in message
    assert not out.exists()


def test_export_refuses_a_folder_that_is_not_a_run_and_a_non_empty_output(pretrained_run, tmp_path):
    with pytest.raises(BertlabError, match="no checkpoint at"):
        export_hf(tmp_path, tmp_path / "hf")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("keep")
    with pytest.raises(BertlabError, match="exists and is not empty") as caught:
        export_hf(pretrained_run, tmp_path / "taken")
    assert caught.value.key == "out_dir"
    assert (tmp_path / "taken" / "file").read_text() == "keep"


def test_missing_transformers_gives_an_install_hint(pretrained_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(BertlabError, match=r"pip install 'bertlab\[hf\]'"):
        export_hf(pretrained_run, tmp_path / "hf")


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
def test_command_line_entry_points(pretrained_run, tmp_path, monkeypatch, capsys):
    """`bertlab-export` is a console script of bertlab.export:main; `python -m bertlab.export` runs the module
    as __main__, which runpy does here in-process (a subprocess would only add seconds of imports)."""
    scripts = {entry.name: entry.value for entry in entry_points(group="console_scripts")}
    assert scripts.get("bertlab-export") == "bertlab.export:main"
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["bertlab-export", str(pretrained_run), "--to", "hf", str(out)])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("bertlab.export", run_name="__main__", alter_sys=True)
    assert exited.value.code == 0
    assert (out / "model.safetensors").is_file()
    assert f"Exported {pretrained_run} to {out}" in capsys.readouterr().out


# -- one writer per export folder, shared modes (issue 28) -----------------------------------------------
HOLD = """
import sys, time
from pathlib import Path
from bertlab.output_lock import hold_output
hold_output(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(600)
"""


def export_process(run_dir: Path, out: Path, at: float) -> subprocess.Popen:
    script = (
        f"import sys, time; from bertlab.export import main; time.sleep(max(0.0, {at} - time.time())); "
        f"sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script, str(run_dir), "--to", "hf", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_exports_to_one_new_folder_one_is_refused_and_the_folder_is_whole(pretrained_run, tmp_path):
    out = tmp_path / "exports" / "hf"
    at = time.time() + 5  # both past their imports: they claim the folder at the same moment
    racers = [export_process(pretrained_run, out, at) for _ in range(2)]
    results = [(racer.wait(timeout=300), *racer.communicate()) for racer in racers]
    assert sorted(code for code, _, _ in results) == [0, 2], results
    refusal = next(stderr for code, _, stderr in results if code == 2).strip()
    assert refusal.startswith(f"Error: out_dir: {str(out)!r} ") and "\n" not in refusal
    assert "is being written by another command" in refusal or "exists and is not empty" in refusal
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert_same_logits(pretrained_run, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["hf"]  # no hidden folder, no lock left


def test_an_export_folder_held_by_another_process_is_refused_at_once(pretrained_run, tmp_path, capsys):
    out = tmp_path / "hf"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main([str(pretrained_run), "--to", "hf", str(out)]) == 2
    finally:
        holder.kill()
        holder.wait()
    assert capsys.readouterr().err.strip() == (
        f"Error: out_dir: {str(out)!r} is being written by another command (process {holder.pid} on "
        f"{socket.gethostname()}); nothing was changed. Wait for it to end, or choose another out_dir"
    )
    assert not out.exists()


def test_exported_files_get_the_folders_normal_mode(pretrained_run, tmp_path):
    umask = os.umask(0o022)
    try:
        out = export_hf(pretrained_run, tmp_path / "hf")
    finally:
        os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == dict.fromkeys(modes, 0o644)  # model.safetensors too, readable by the others
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_a_missing_run_names_the_run_argument(tmp_path, capsys):
    missing = tmp_path / "runs" / "nope"
    assert main([str(missing), "--to", "hf", str(tmp_path / "hf")]) == 2
    assert capsys.readouterr().err.strip() == f"Error: run_dir: run folder {str(missing)!r} does not exist"
    assert list(tmp_path.iterdir()) == []
