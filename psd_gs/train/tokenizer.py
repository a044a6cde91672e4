"""A CLIP BPE tokenizer (vocab.json, merges.txt, tokenizer_config.json: the files ``CLIPTokenizer`` reads in
an SD checkpoint's tokenizer/ folder) whose vocabulary is the byte-level alphabet plus whole-word tokens.

CLIP's vocabulary starts with the 256 byte characters, then the same with the end-of-word mark "</w>",
then merged pairs, then <|startoftext|> and <|endoftext|>. Here the merges are byte-pair encoding learned on the
given words, so each known word is one token (digits stay apart, as CLIP's pre-tokeniser splits them:
"3d" is "3", "d") and any other text still tokenises, to characters. With no words this is the byte-level tokenizer of the tiny
test checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, List, Tuple


def bytes_to_unicode() -> List[str]:
    """GPT-2/CLIP byte-level alphabet: the printable character standing for each of the 256 bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def word_merges(words: Iterable[str]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """(merges, new tokens) that turn each lower-case word into one token "<word></w>": byte-pair encoding
    learned on the words by the ``tokenizers`` library's trainer (merges learned by hand per word collide:
    "red"'s "r e" splits "spheres")."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    words = list(dict.fromkeys(words))
    if not words:
        return [], []
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=10_000, min_frequency=1, show_progress=False,
                                  end_of_word_suffix="</w>", initial_alphabet=[], special_tokens=[])
    bpe.train_from_iterator([" ".join(words)], trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return merges, [a + b for a, b in merges]


def write_tokenizer(folder: str | Path, words: Iterable[str] = (), max_length: int = 77) -> int:
    """Write the tokenizer files into ``folder``; returns the vocabulary size (the text encoder's vocab_size;
    bos = size - 2, eos = pad = size - 1)."""
    folder = Path(folder)
    chars = bytes_to_unicode()
    merges, merged = word_merges(words)
    tokens = chars + [c + "</w>" for c in chars]
    tokens += [t for t in merged if t not in tokens] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(tokens)
