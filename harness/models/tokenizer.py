"""The builtin models' tokenizer: a small BPE trained on the generated corpus.

It is trained deterministically and shipped as ``harness/data/tokenizer.json`` so that every
machine (and every saved model) uses the very same ids. Every corpus word is one token; other
lowercase ASCII text still encodes (letter by letter at worst), so ``text_file`` training works.
Regenerate with ``python -m harness.models.tokenizer --write``.
"""

from __future__ import annotations

import argparse
import string
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

VOCAB_SIZE = 768
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
TOKENIZER_FILE = Path(__file__).resolve().parent.parent / "data" / "tokenizer.json"
_TRAIN_DOCS = 4000


def train_tokenizer_json() -> str:
    """Train the BPE on the corpus and return its JSON (the same text on every run)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    from harness.models.corpus import train_text, vocabulary

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=list(string.ascii_lowercase + string.digits + string.punctuation + "▁"),
        min_frequency=1,
        show_progress=False,
    )
    # the word list first guarantees every corpus word is seen often enough to become one token
    words = vocabulary()
    tok.train_from_iterator([" ".join(words)] * 8 + train_text(_TRAIN_DOCS), trainer=trainer)
    return tok.to_str(pretty=True)


def write_tokenizer(path: Path = TOKENIZER_FILE) -> Path:
    from harness import atomic

    atomic.write_text(path, train_tokenizer_json() + "\n")
    return path


@lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    if TOKENIZER_FILE.is_file():
        return TOKENIZER_FILE.read_text(encoding="utf-8")
    return train_tokenizer_json()  # a checkout without the shipped file still works


def load_tokenizer() -> PreTrainedTokenizerFast:
    """The builtin tokenizer as a transformers tokenizer (pad/bos/eos set, left padding)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.models.tokenizer", description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"write {TOKENIZER_FILE}")
    args = parser.parse_args(argv)
    if args.write:
        print(write_tokenizer())
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
