"""The same command gives the same run: tokenizers trained in two processes (the `tokenizers` trainers'
hash maps are seeded per process) are byte-identical, and so are the shards prepared with them."""

from __future__ import annotations

import subprocess
import sys

from bertlab.data.embedded_corpus import generate_documents
from tests.conftest import ROOT, snapshot

TRAIN_AND_PREPARE = """
import sys
from pathlib import Path
from bertlab.data.corpus import TextCorpus
from bertlab.data.mlm_datamodule import MLMDataModule
from bertlab.tokenizer import BPETokenizer, UnigramTokenizer, WordPieceTokenizer

out, corpus = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir()
for kind in (WordPieceTokenizer, BPETokenizer, UnigramTokenizer):
    tokenizer = kind(vocab_size=300, max_length=32)
    data = MLMDataModule(TextCorpus(train=str(corpus)), cache_dir=str(out / kind.__name__), num_proc=1)
    tokenizer.fit(data.tokenizer_sample)
    tokenizer.save(out / f"{kind.__name__}.json")
    data.prepare(tokenizer)
"""


def test_two_processes_train_identical_tokenizers_and_shards(tmp_path):
    corpus = tmp_path / "corpus.txt"  # one file: its path and time stamp key the prepared folder
    corpus.write_text("\n".join(generate_documents(300, seed=5)) + "\n")
    for name in ("a", "b"):
        subprocess.run(
            [sys.executable, "-c", TRAIN_AND_PREPARE, str(tmp_path / name), str(corpus)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    a, b = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert sorted(a) == sorted(b)
    for kind in ("WordPieceTokenizer", "BPETokenizer", "UnigramTokenizer"):
        assert a[f"{kind}.json"] == b[f"{kind}.json"], kind
        shards = [k for k in a if k.startswith(kind + "/") and k.endswith((".bin", ".idx"))]
        assert len(shards) == 6 and all(a[k] == b[k] for k in shards), kind
    assert a == b
