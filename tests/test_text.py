"""Text normalisation and the byte-fallback BPE tokenizer."""

import os
import pickle

import pytest

from speech_jax.text import BpeTokenizer, TextError, normalize_text

CORPUS = [
    "Hello world, this is a small test.",
    "The quick brown fox jumps over the lazy dog.",
    "你好世界，这是一个测试。",
    "今天天气很好，我们去公园散步吧。",
    "こんにちは世界、これはテストです。",
    "東京は日本の首都です。カタカナもあります。",
    "안녕하세요 세계, 이것은 테스트입니다.",
    "오늘 날씨가 정말 좋네요.",
] * 4

ROUND_TRIP = [
    "Hello world, this is a test.",
    "这是一个测试。",
    "これはテストです。",
    "이것은 테스트입니다.",
    "ქართული ენა",  # Georgian: not in the corpus, bytes only.
    "Party 🎉👨‍👩‍👧 time",  # Emoji with ZWJ sequences.
    "Zahlen 12345 und Ünïcödé ß",
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  prefix = str(tmp_path_factory.mktemp("bpe") / "tok")
  return BpeTokenizer.train(CORPUS, prefix, vocab_size=500)


def test_normalize_text():
  assert normalize_text("  “Hi”\u00a0 ‘there’ — ok\t\n ") == "\"Hi\" 'there' - ok"
  assert normalize_text("ＡＢＣ１２３　ｶﾀｶﾅ") == "ABC123 カタカナ"  # NFKC width folding.
  assert normalize_text("Keep Case 中文") == "Keep Case 中文"
  assert normalize_text("a\u200bb\x07c") == "abc"
  for bad in ("", "  \n\t", "\u200b", None):
    with pytest.raises(TextError):
      normalize_text(bad)


def test_special_ids(tok):
  assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
  assert 260 < tok.vocab_size <= 500


def test_round_trip(tok):
  for text in ROUND_TRIP:
    ids = tok.encode(text)
    assert ids and tok.pad_id not in ids
    assert tok.decode(ids) == normalize_text(text)
  ids = tok.encode("ok", add_bos=True, add_eos=True)
  assert (ids[0], ids[-1]) == (tok.bos_id, tok.eos_id) and ids[1:-1] == tok.encode("ok")


def test_empty_text_raises(tok):
  for bad in ("", "   "):
    with pytest.raises(TextError):
      tok.encode(bad)
  with pytest.raises(TextError):
    tok.decode([tok.vocab_size])


def test_load_pickle_and_determinism(tok, tmp_path):
  again = BpeTokenizer.train(CORPUS, str(tmp_path / "again"), vocab_size=500)
  assert sorted(os.listdir(tmp_path)) == ["again.model"]  # No .vocab or temp files.
  assert again.to_bytes() == tok.to_bytes()
  loaded = BpeTokenizer.load(tmp_path / "again.model")
  clone = pickle.loads(pickle.dumps(loaded))
  for text in ROUND_TRIP:
    assert loaded.encode(text) == clone.encode(text) == tok.encode(text)


def test_vocab_size_limits(tmp_path):
  with pytest.raises(ValueError, match="at least 261"):
    BpeTokenizer.train(CORPUS, str(tmp_path / "tiny"), vocab_size=100)
  with pytest.raises(ValueError, match="too small for this corpus"):
    BpeTokenizer.train(CORPUS, str(tmp_path / "small"), vocab_size=280)
  # Asking for more than a tiny corpus supports yields a smaller vocabulary, not an error.
  big = BpeTokenizer.train(CORPUS, str(tmp_path / "big"), vocab_size=8000)
  assert big.vocab_size < 8000
  with pytest.raises(TextError):
    BpeTokenizer.train(["", "  "], str(tmp_path / "none"), vocab_size=500)


def test_many_rare_characters_fall_back_to_bytes(tmp_path):
  # Thousands of distinct CJK characters cannot all be pieces in 600; the rarest become bytes.
  common = [chr(0x4E00 + i) for i in range(40)]
  rare = [chr(0x5000 + i) for i in range(1500)]
  corpus = ["".join(common[(i * 7 + j) % 40] for j in range(40)) + rare[i] for i in range(1500)]
  tok = BpeTokenizer.train(corpus, str(tmp_path / "rare"), vocab_size=600)
  assert tok.vocab_size <= 600
  for text in corpus[:20]:
    assert tok.decode(tok.encode(text)) == text


def test_load_rejects_non_model(tmp_path):
  path = tmp_path / "junk.model"
  path.write_bytes(b"not a model")
  with pytest.raises(ValueError, match="junk.model"):
    BpeTokenizer.load(path)
