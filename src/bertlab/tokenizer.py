"""Tokenizer wrappers: train a subword vocabulary on the corpus (or load a saved one) with `tokenizers`.

Each algorithm is a subclass chosen by `_target_` in conf/tokenizer/. All of them register the same special
tokens as special (never split, never masked) and add [CLS] ... [SEP] through a post-processor, so the saved
tokenizer file (run_folder.TOKENIZER_FILE) works as is for MLM and with `PreTrainedTokenizerFast`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from bertlab.atomic_write import replacing_path
from bertlab.errors import BertlabError, reading
from bertlab.run_folder import TOKENIZER_FILE

log = logging.getLogger(__name__)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]


@dataclass(frozen=True)
class SpecialTokens:
    """How a vocabulary spells its special tokens, and how it wraps a pair of texts in them.

    bertlab trains BERT's; a vocabulary imported from a Hugging Face model may spell them as RoBERTa does.
    """

    pad: str
    unk: str
    cls: str
    sep: str
    mask: str
    pair: str  # the post-processor's template for two texts

    @property
    def tokens(self) -> list[str]:
        return [self.pad, self.unk, self.cls, self.sep, self.mask]


BERT_TOKENS = SpecialTokens(PAD, UNK, CLS, SEP, MASK, pair=f"{CLS} $A {SEP} $B:1 {SEP}:1")
ROBERTA_TOKENS = SpecialTokens("<pad>", "<unk>", "<s>", "</s>", "<mask>", pair="<s> $A </s> </s> $B </s>")
SPECIAL_TOKEN_SETS = (BERT_TOKENS, ROBERTA_TOKENS)
HF_TOKENIZER_FILES = (TOKENIZER_FILE, "vocab.txt")  # Hugging Face folders use the same name
UNIGRAM_SCORE_DECIMALS = 6  # Unigram scores are rounded to this many decimals (see UnigramTokenizer)

Texts = Iterable[str] | Callable[[], Iterable[str]]  # texts, or a function that reads them (again)


# What fixes a tokenizer file that cannot be read: one a user named, one a run holds.
NAMED_TOKENIZER_FIX = (
    "give a tokenizer.json saved by bertlab or Hugging Face tokenizers, or a Hugging Face model folder"
)
RUN_TOKENIZER_FIX = "the run's file is damaged: restore it from a copy of the run"


def read_saved_tokenizer(
    source: str | Path, key: str = "vocab_source", fix: str = NAMED_TOKENIZER_FIX
) -> Tokenizer:
    """A saved tokenizer file, or the vocabulary of a Hugging Face model folder: its tokenizer file, else
    its BERT vocab.txt (with BERT's normalisation and the folder's do_lower_case, as transformers builds it).

    A file that cannot be parsed (a text or binary file, a damaged tokenizer.json) is one error naming `key`.
    """
    source = Path(source)
    for path in (source, source / TOKENIZER_FILE):
        if path.is_file():
            with reading(path, key, "tokenizer file", fix):
                return Tokenizer.from_file(str(path))
    settings_file = source / "tokenizer_config.json"
    settings = {}
    if settings_file.is_file():
        with reading(settings_file, key, "tokenizer settings", fix):
            settings = json.loads(settings_file.read_text())
            if not isinstance(settings, dict):
                raise ValueError(f"a JSON {type(settings).__name__}, not an object")
    with reading(source / "vocab.txt", key, "vocabulary file", fix):
        tokenizer = Tokenizer(models.WordPiece.from_file(str(source / "vocab.txt"), unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
        strip_accents=settings.get("strip_accents"),
        lowercase=settings.get("do_lower_case", True),
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    return tokenizer


def is_saved_tokenizer(source: str | Path) -> bool:
    """A tokenizer file, or a folder holding one that `read_saved_tokenizer` reads."""
    source = Path(source)
    return source.is_file() or any((source / name).is_file() for name in HF_TOKENIZER_FILES)


class TextTokenizer:
    """A `tokenizers.Tokenizer` plus what bertlab needs of it: special ids, lengths, batch encoding."""

    passes = 1  # reads of the training sample that training takes

    def __init__(
        self,
        vocab_source: str = "corpus",
        vocab_size: int = 4096,
        min_frequency: int = 2,
        lowercase: bool = True,
        max_length: int = 128,
        truncation: bool = True,
        train_sample_bytes: int = 500_000_000,
        tail_tokens: int = 0,
    ) -> None:
        if vocab_size <= len(SPECIAL_TOKENS):
            raise BertlabError(
                f"must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}", "vocab_size"
            )
        if max_length < 8:
            raise BertlabError(f"must be at least 8 tokens, got {max_length}", "max_length")
        if not 0 <= tail_tokens <= max_length - 3:
            raise BertlabError(
                f"must be in [0, {max_length - 3}] (max_length less [CLS], [SEP] and one token of the start), "
                f"got {tail_tokens}",
                "tail_tokens",
            )
        if min_frequency < 1:
            raise BertlabError(f"must be at least 1, got {min_frequency}", "min_frequency")
        if train_sample_bytes < 1:
            raise BertlabError(
                f"must be a positive number of bytes, got {train_sample_bytes}", "train_sample_bytes"
            )
        if vocab_source != "corpus" and not is_saved_tokenizer(vocab_source):
            raise BertlabError(
                f"tokenizer file {vocab_source!r} does not exist; give the path of a saved {TOKENIZER_FILE} "
                f"(for instance runs/pretraining/<name>/{TOKENIZER_FILE}), a Hugging Face model folder with "
                f"{' or '.join(HF_TOKENIZER_FILES)}, or 'corpus' to train one",
                "vocab_source",
            )
        self.vocab_source = vocab_source
        self.vocab_size_limit = vocab_size
        self.min_frequency = min_frequency
        self.lowercase = lowercase
        self.max_length = max_length
        self.truncation = truncation
        self.tail_tokens = tail_tokens
        self.train_sample_bytes = train_sample_bytes
        self.special = BERT_TOKENS
        self._tokenizer: Tokenizer | None = None
        # A saved vocabulary is read (and checked) now, before a run writes anything; fit() adopts it.
        self._saved = None if self.needs_corpus else read_saved_tokenizer(vocab_source)
        if self._saved is not None:
            self.special = self._special_tokens(self._saved)

    # -- building -------------------------------------------------------------------------------------
    @property
    def needs_corpus(self) -> bool:
        return self.vocab_source == "corpus"

    def _pipeline(self) -> tuple[Tokenizer, trainers.Trainer]:
        """The untrained tokenizer (model, normalizer, pre-tokenizer, decoder) and its trainer."""
        raise NotImplementedError

    def _normalizer(self) -> normalizers.Normalizer:
        steps = [normalizers.NFKC()]
        if self.lowercase:
            steps.append(normalizers.Lowercase())
        return normalizers.Sequence(steps)

    def settings_fingerprint(self) -> str:
        """What determines a trained vocabulary besides the text: algorithm and trainer settings."""
        settings = [
            type(self).__name__,
            self.vocab_size_limit,
            self.min_frequency,
            self.lowercase,
            self.train_sample_bytes,
        ]
        return hashlib.sha256(repr(settings).encode()).hexdigest()[:16]

    def fit(self, texts: Texts, cache_file: str | Path | None = None) -> None:
        """Train on `texts` when the vocabulary comes from the corpus; otherwise load the saved file.

        `texts` may be a function that reads them: a trainer that needs two passes calls it twice (a
        one-shot iterator is held in memory instead, up to `train_sample_bytes`). With `cache_file` (keyed
        by corpus and settings), a vocabulary trained once is reused.
        """
        if self.needs_corpus and cache_file is not None and Path(cache_file).is_file():
            tokenizer = Tokenizer.from_file(str(cache_file))
        elif self.needs_corpus:
            tokenizer = self._train(self._replayable(texts))
            if cache_file is not None:
                cache_file = Path(cache_file)
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                with replacing_path(cache_file) as temporary:
                    tokenizer.save(str(temporary))
        else:
            tokenizer = self._saved
        self._adopt(tokenizer)

    def _adopt(self, tokenizer: Tokenizer, key: str = "vocab_source") -> None:
        """Make `tokenizer` this one's backend: its special tokens, [CLS] ... [SEP] added, no padding."""
        self.special = self._special_tokens(tokenizer, key)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{self.special.cls} $A {self.special.sep}",
            pair=self.special.pair,
            special_tokens=[(t, tokenizer.token_to_id(t)) for t in (self.special.cls, self.special.sep)],
        )
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer

    def _replayable(self, texts: Texts) -> Callable[[], Iterable[str]]:
        if callable(texts):
            return texts
        if self.passes > 1 and iter(texts) is texts:  # a one-shot iterator: keep its sample for a second pass
            kept = list(self.sample(texts, report=False))
            return lambda: kept
        return lambda: texts

    def _train(self, texts: Callable[[], Iterable[str]]) -> Tokenizer:
        """A tokenizer trained on the sample of `texts()`."""
        tokenizer, trainer = self._pipeline()
        tokenizer.train_from_iterator(self.sample(texts()), trainer=trainer)
        return tokenizer

    def sample(
        self, texts: Iterable[str], report_every_s: float = 30.0, report: bool = True
    ) -> Iterator[str]:
        """The first `train_sample_bytes` of `texts` (UTF-8): a vocabulary needs a sample, not the whole
        corpus, and the same corpus gives the same sample. Logs its progress (`report`)."""
        taken, start = 0, time.monotonic()
        last = start
        for text in texts:
            if taken >= self.train_sample_bytes:
                break
            taken += len(text.encode("utf-8"))
            yield text
            if report and time.monotonic() - last >= report_every_s:
                last = time.monotonic()
                log.info(
                    "Tokenizer training sample: %.0f MB of at most %.0f MB read",
                    taken / 1e6,
                    self.train_sample_bytes / 1e6,
                )
        if not report:
            return
        log.info(
            "Training the %s vocabulary on %.1f MB of text (%.0f s to read it)",
            type(self).__name__,
            taken / 1e6,
            time.monotonic() - start,
        )

    def _special_tokens(self, tokenizer: Tokenizer, key: str = "vocab_source") -> SpecialTokens:
        """The first known spelling of the special tokens that the vocabulary has in full."""
        for candidate in SPECIAL_TOKEN_SETS:
            if all(tokenizer.token_to_id(token) is not None for token in candidate.tokens):
                return candidate
        raise BertlabError(
            f"tokenizer {self.vocab_source!r} lacks the special tokens bertlab needs: one of "
            f"{[candidate.tokens for candidate in SPECIAL_TOKEN_SETS]}",
            key,
        )

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        max_length: int = 128,
        truncation: bool = True,
        key: str = "vocab_source",
        fix: str = RUN_TOKENIZER_FIX,
        tail_tokens: int = 0,
    ) -> TextTokenizer:
        """A fitted tokenizer from a saved tokenizer file (a run folder's, for instance); `key` is the
        setting or argument that named the file (or its run) and `fix` what mends it, for errors."""
        tokenizer = cls(max_length=max_length, truncation=truncation, tail_tokens=tail_tokens)
        tokenizer.vocab_source = str(path)
        tokenizer._adopt(read_saved_tokenizer(path, key, fix), key)
        return tokenizer

    @property
    def backend(self) -> Tokenizer:
        if self._tokenizer is None:
            raise RuntimeError("the tokenizer is not fitted yet: call fit() first")
        return self._tokenizer

    def save(self, path: str | Path) -> None:
        """Write atomically: other processes of a multi-process run may be waiting to read it."""
        with replacing_path(path) as temporary:
            self.backend.save(str(temporary))

    def fingerprint(self) -> str:
        """Content hash of the trained tokenizer: prepared datasets are cached under it."""
        return hashlib.sha256(self.backend.to_str().encode()).hexdigest()[:16]

    # -- ids ------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def token_id(self, token: str) -> int:
        return self.backend.token_to_id(token)

    @property
    def pad_id(self) -> int:
        return self.token_id(self.special.pad)

    @property
    def cls_id(self) -> int:
        return self.token_id(self.special.cls)

    @property
    def sep_id(self) -> int:
        return self.token_id(self.special.sep)

    @property
    def mask_id(self) -> int:
        return self.token_id(self.special.mask)

    @property
    def special_ids(self) -> list[int]:
        """Never masked: the five roles, and any other token the vocabulary registered as special."""
        registered = (i for i, token in self.backend.get_added_tokens_decoder().items() if token.special)
        return sorted({*(self.token_id(token) for token in self.special.tokens), *registered})

    def word_starts(self) -> list[bool]:
        """Per token id: does the token begin a word? From the vocabulary alone (whole-word masking).

        WordPiece marks continuations ('##'); byte-level BPE ('Ġ') and Metaspace/Unigram ('▁') mark word
        starts. Special tokens count as starts. A token without the start marker (punctuation split off by
        the byte-level pre-tokenizer, for instance) belongs to the word before it.
        """
        vocab = self.backend.get_vocab()
        table = [True] * self.vocab_size
        continuation = getattr(self.backend.model, "continuing_subword_prefix", None)
        if isinstance(self.backend.model, models.WordPiece) and continuation:
            for token, index in vocab.items():
                table[index] = not token.startswith(continuation)
        else:
            marker = max(("\u0120", "\u2581"), key=lambda m: sum(t.startswith(m) for t in vocab))
            if not any(token.startswith(marker) for token in vocab):
                raise BertlabError(
                    "whole-word and span masking need a vocabulary that marks words ('##' continuations, "
                    "or 'Ġ' / '▁' word starts); this one marks neither",
                    "unit",
                )
            for token, index in vocab.items():
                table[index] = token.startswith(marker)
        for index in self.special_ids:
            table[index] = True
        return table

    # -- encoding -------------------------------------------------------------------------------------
    def encode_documents(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text without special tokens or truncation (pretraining concatenates them)."""
        return [encoding.ids for encoding in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def encode_sequences(self, texts: Sequence[str]) -> list[list[int]]:
        """[CLS] text [SEP] ids per text, cut to max_length when truncation is on (classification): a long
        text keeps its start, and with `tail_tokens` its last tokens too (head+tail truncation, Sun et al.
        2019, "How to Fine-Tune BERT for Text Classification?": the end of a long document often says most)."""
        encoded = [encoding.ids for encoding in self.backend.encode_batch(list(texts))]
        too_long = [i for i, ids in enumerate(encoded) if len(ids) > self.max_length]
        if too_long and not self.truncation:
            raise BertlabError(
                f"{len(too_long)} texts exceed max_length={self.max_length} tokens (first: #{too_long[0]}); "
                f"set tokenizer.truncation=true or raise tokenizer.max_length",
                "truncation",
            )
        if too_long:
            head, tail = self.max_length - 1 - self.tail_tokens, self.tail_tokens
            encoded = [  # [CLS] + the start + the end (without the text's own [SEP]) + [SEP]
                ids
                if len(ids) <= self.max_length
                else [*ids[:head], *ids[len(ids) - 1 - tail : len(ids) - 1], self.sep_id]
                for ids in encoded
            ]
        return encoded

    def encode_pairs(self, texts: Sequence[str], pairs: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """Ids of each pair through the pair template (`[CLS] a [SEP] b [SEP]`, RoBERTa's
        `<s> a </s></s> b </s>`), the longer text cut first to fit max_length (as Hugging Face's
        `truncation=True`); and per pair the position where segment 1 starts (its length when the
        template gives every token segment 0, as RoBERTa's does)."""
        backend = self.backend
        if self.truncation:
            backend.enable_truncation(self.max_length, strategy="longest_first")
        try:
            encodings = backend.encode_batch(list(zip(texts, pairs, strict=True)))
        finally:
            backend.no_truncation()
        too_long = [i for i, encoding in enumerate(encodings) if len(encoding.ids) > self.max_length]
        if too_long:
            raise BertlabError(
                f"{len(too_long)} text pairs exceed max_length={self.max_length} tokens (first: "
                f"#{too_long[0]}); set tokenizer.truncation=true or raise tokenizer.max_length",
                "truncation",
            )
        starts = [
            encoding.type_ids.index(1) if 1 in encoding.type_ids else len(encoding.ids)
            for encoding in encodings
        ]
        return [encoding.ids for encoding in encodings], starts


class WordPieceTokenizer(TextTokenizer):
    """BERT's WordPiece: whitespace and punctuation split, '##' continuation pieces.

    The `tokenizers` WordPiece trainer gives each '##' + character piece its id in the order it meets it
    while iterating a hash map, whose order changes from process to process; merges of equal count are
    then chosen by those ids, so the same text trained different vocabularies (huggingface/tokenizers
    #1794). Here those pieces are handed to the trainer first, sorted, so every id and so every tie is
    the same in every process: this costs one more read of the sample, to find its characters.
    """

    passes = 2

    def _pipeline(self, continuation: Sequence[str] = ()) -> tuple[Tokenizer, trainers.Trainer]:
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
        tokenizer.normalizer = self._normalizer()
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=self.vocab_size_limit,
            min_frequency=self.min_frequency,
            special_tokens=[*SPECIAL_TOKENS, *continuation],
            show_progress=False,
        )
        return tokenizer, trainer

    def continuation_pieces(self, texts: Iterable[str]) -> list[str]:
        """'##c' for every character c that may follow another inside a word of `texts`, sorted."""
        normalize = self._normalizer().normalize_str
        characters: set[str] = set()
        ascii_characters: set[str] = set()
        for text in texts:
            if text.isascii():  # NFKC leaves ASCII as it is: skip the (slower) normalizer
                ascii_characters.update(text)
            else:
                characters.update(normalize(text))
        characters.update(c.lower() if self.lowercase else c for c in ascii_characters)
        splitter = pre_tokenizers.BertPreTokenizer()
        inside = (c for c in characters if [w for w, _ in splitter.pre_tokenize_str("a" + c)] == ["a" + c])
        return [f"##{c}" for c in sorted(inside)]

    def _train(self, texts: Callable[[], Iterable[str]]) -> Tokenizer:
        continuation = self.continuation_pieces(self.sample(texts(), report=False))
        trained, trainer = self._pipeline(continuation)
        trained.train_from_iterator(self.sample(texts()), trainer=trainer)
        # The continuation pieces were special only for the trainer: rebuild with the real special tokens.
        tokenizer, _ = self._pipeline()
        tokenizer.model = models.WordPiece(trained.get_vocab(with_added_tokens=False), unk_token=UNK)
        tokenizer.add_special_tokens(SPECIAL_TOKENS)
        return tokenizer


class BPETokenizer(TextTokenizer):
    """Byte-level BPE (GPT-2 / RoBERTa style): no unknown tokens, any text round-trips."""

    def _pipeline(self) -> tuple[Tokenizer, trainers.Trainer]:
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.normalizer = self._normalizer()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=self.vocab_size_limit,
            min_frequency=self.min_frequency,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        return tokenizer, trainer


class UnigramTokenizer(TextTokenizer):
    """SentencePiece-style Unigram language model over Metaspace-split text (the one trainer whose output
    may differ between processes: NOT_DETERMINISTIC, logged as a warning whenever it trains)."""

    NOT_DETERMINISTIC = (
        "Unigram vocabularies may differ between runs of the same command: the Unigram trainer of "
        "`tokenizers` sums its statistics in hash-map order, which changes from process to process; bertlab "
        f"rounds the scores to {UNIGRAM_SCORE_DECIMALS} decimals and orders the pieces by score and text, which "
        "gives the same vocabulary whenever the trainer kept the same pieces, but that is not guaranteed (use "
        "tokenizer=wordpiece or tokenizer=bpe, or reuse a tokenizer.json, for runs that must match)"
    )

    def _pipeline(self) -> tuple[Tokenizer, trainers.Trainer]:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = self._normalizer()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=self.vocab_size_limit,
            special_tokens=SPECIAL_TOKENS,
            unk_token=UNK,
            show_progress=False,
        )
        return tokenizer, trainer

    def _train(self, texts: Callable[[], Iterable[str]]) -> Tokenizer:
        log.warning(self.NOT_DETERMINISTIC)
        tokenizer = super()._train(texts)
        saved = json.loads(tokenizer.to_str())["model"]
        special = [(piece, score) for piece, score in saved["vocab"] if piece in SPECIAL_TOKENS]
        rest = sorted(
            (
                (piece, round(score, UNIGRAM_SCORE_DECIMALS))
                for piece, score in saved["vocab"]
                if piece not in SPECIAL_TOKENS
            ),
            key=lambda item: (-item[1], item[0]),
        )
        tokenizer.model = models.Unigram(
            [*special, *rest], unk_id=SPECIAL_TOKENS.index(UNK), byte_fallback=saved["byte_fallback"]
        )
        return tokenizer
