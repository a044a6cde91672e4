"""The world's CLIP tokenizer: every word the world knows is one token, and any other text still tokenises."""

from transformers import CLIPTokenizer

from psd_gs.priors.shapes_world import ShapesWorld
from psd_gs.train.data import caption, vocabulary
from psd_gs.train.tokenizer import write_tokenizer


def test_every_world_word_is_one_token_and_other_text_falls_back_to_characters(tmp_path):
    words = vocabulary(ShapesWorld())
    size = write_tokenizer(tmp_path, words)
    tok = CLIPTokenizer.from_pretrained(tmp_path)
    assert len(tok.get_vocab()) == size and tok.bos_token_id == size - 2 and tok.eos_token_id == size - 1
    for word in words:
        pieces = tok.convert_ids_to_tokens(tok(word).input_ids)[1:-1]
        # CLIP's pre-tokeniser splits digits from letters, so "3d" is two tokens as in real CLIP
        assert pieces == ([word + "</w>"] if word.isalpha() else ["3</w>", "d</w>"]), (word, pieces)
    ids = tok("a red cube spheres").input_ids
    assert tok.convert_ids_to_tokens(ids) == ["<|startoftext|>", "a</w>", "red</w>", "cube</w>", "spheres</w>",
                                              "<|endoftext|>"]
    assert tok.convert_ids_to_tokens(tok("zebra").input_ids)[1:-1] == ["z", "e", "b", "r", "a</w>"]


def test_captions_are_prompts_the_world_accepts_for_their_object():
    import random

    world, rng = ShapesWorld(), random.Random(0)
    for k in range(len(world)):
        for _ in range(20):
            text = caption(world, k, rng)
            assert k in world.select(text), (k, text)
