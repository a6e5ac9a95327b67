import json
import os
import subprocess

from conftest import REPO, TINY
from dllm.data import read_documents
from dllm.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe

TEXTS = ["Hello <|mdm_mask|> world<|endoftext|>", "naïve café — 東京 🙂  spaces   \n\n\ttabs", "", "  leading", "it's 1,234.5%!"]


def test_round_trip_on_validation_text(corpus_dir):
    tok = Tokenizer.load(os.path.join(TINY, "tokenizer.json"))
    assert tok.vocab_size == 4096
    for doc in read_documents(os.path.join(corpus_dir, "valid.txt")) + TEXTS:
        assert tok.decode(tok.encode(doc)) == doc


def test_special_tokens_have_fixed_ids():
    tok = Tokenizer.load(os.path.join(TINY, "tokenizer.json"))
    assert [tok.encode(t) for t in SPECIAL_TOKENS] == [[i] for i in range(len(SPECIAL_TOKENS))]


def test_same_ids_as_huggingface_tokenizers_in_node(corpus_dir):
    """The server tokenizes with npm @huggingface/tokenizers; training used this module: they must agree."""
    docs = read_documents(os.path.join(corpus_dir, "valid.txt"))[:200] + TEXTS
    script = (
        "import { Tokenizer } from '@huggingface/tokenizers'; import fs from 'node:fs';"
        "const t = new Tokenizer(JSON.parse(fs.readFileSync(process.argv[1], 'utf8')), {});"
        "const docs = JSON.parse(fs.readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify(docs.map((d) => t.encode(d, { add_special_tokens: false }).ids)));"
    )
    out = subprocess.run(["node", "--input-type=module", "-e", script, os.path.join(TINY, "tokenizer.json")], cwd=REPO,
                         input=json.dumps(docs), capture_output=True, text=True, check=True).stdout
    tok = Tokenizer.load(os.path.join(TINY, "tokenizer.json"))
    assert json.loads(out) == [tok.encode(d) for d in docs]


def test_trainer_learns_frequent_pairs_and_reaches_the_size():
    vocab, merges = train_bpe(["the cat sat on the mat"] * 50 + ["then the theory"], len(SPECIAL_TOKENS) + 256 + 10)
    assert len(vocab) == len(SPECIAL_TOKENS) + 256 + 10
    assert ("Ġ", "t") in merges[:3] or ("t", "h") in merges[:3]
    tok = Tokenizer(vocab, merges)
    assert tok.decode(tok.encode("the mat")) == "the mat"
    assert len(tok.encode(" the")) < len(" the")
