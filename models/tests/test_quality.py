import json
import os
import random
import shutil

import pytest
import torch

from dllm import card, data, export, graph, quality, recipes, train
from dllm.model import LLaDA, ModelConfig, load_checkpoint
from dllm.reference import Params, ReferenceSampler, result

MODELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(MODELS, "tiny-llada", "tokenizer.json")


# --- metrics on crafted text ------------------------------------------------------------------------------------

def test_dictionary_share_counts_alphabetic_words_case_insensitively_without_possessives():
    dictionary = quality.dictionary_set(["The", "cat", "hat", "runs", "don't"])
    share = quality.dictionary_share(["The cat's HAT, 42 xyzzy", "3rd runs. Don't"], dictionary)
    # alphabetic words: The, cat's (-> cat), HAT, xyzzy, runs, Don't; "42" and "3rd" are not alphabetic
    assert (share["in_dictionary"], share["words"]) == (5, 6)
    assert share["share"] == pytest.approx(5 / 6)
    assert share["not_found"] == [{"word": "xyzzy", "count": 1}]
    assert quality.dictionary_share(["... ,,, 123"], dictionary)["share"] is None  # no words: undefined, not 0 or 1


def test_distinct_bigrams_pool_answers_without_crossing_them():
    assert quality.distinct_bigrams(["it it it it"]) == {"distinct": 1, "total": 3, "ratio": pytest.approx(1 / 3)}
    # (a, b) twice, (b, c), (b, d): 3 distinct of 4; case and punctuation do not count
    assert quality.distinct_bigrams(["A b, c.", "a B d"])["ratio"] == pytest.approx(3 / 4)
    assert quality.distinct_bigrams(["a b", "c d"])["total"] == 2  # no (b, c) bigram across two answers
    assert quality.distinct_bigrams(["one", ""])["ratio"] is None


def test_generation_metrics_on_crafted_answers():
    answers = [{"text": " The cat sat.", "token_ids": [1, 2, 3, 4], "finish_reason": "stop"},
               {"text": "<|startoftext|> ", "token_ids": [6, 9], "finish_reason": "stop"},
               {"text": "", "token_ids": [], "finish_reason": "stop"},
               {"text": " dog dog", "token_ids": [5, 5, 5, 5, 5, 5], "finish_reason": "length"}]
    m = quality.generation_metrics(answers, quality.dictionary_set(["the", "cat", "dog"]))
    assert m["non_empty"] == 2  # a special token alone is not an answer
    assert m["mean_tokens"] == 3.0
    assert m["special_tokens"] == 1
    assert m["finish_reasons"] == {"stop": 3, "length": 1}
    assert (m["dictionary"]["in_dictionary"], m["dictionary"]["words"]) == (4, 5)  # "sat" is not in this dictionary
    assert (m["distinct_bigrams"]["distinct"], m["distinct_bigrams"]["total"]) == (3, 3)
    assert m["longest_runs"] == [1, 1, 0, 6] and m["no_token_runs"] == 0.75  # the last answer loops


def test_longest_run():
    assert [quality.longest_run(ids) for ids in ([], [7], [7, 7, 8, 7], [1, 2, 2, 2, 3], [4, 4, 4, 4])] == [0, 1, 2, 3, 4]


def test_confidence_profile():
    profile = quality.confidence_profile([[0.1, 0.95, 0.5], [0.2]])
    assert profile == {"steps": 4, "median": 0.5, "at_least_0.5": 0.5, "at_least_0.9": 0.25}
    assert quality.confidence_profile([])["median"] is None


def test_commit_rate():
    assert quality.commit_rate([[1, 2, 3], [8]]) == {"committed": 14, "steps": 4, "per_step": 3.5}
    assert quality.commit_rate([])["per_step"] is None


@pytest.fixture(scope="module")
def random_sampler():
    torch.manual_seed(0)
    model = LLaDA(ModelConfig(d_model=32, n_heads=2, n_layers=1, mlp_hidden_size=64, max_sequence_length=64))
    return ReferenceSampler(model, graph.dllm_json(model.config, 8, "random", False))


@pytest.mark.parametrize("params, per_step", [
    (Params(max_tokens=16, steps=16, block_length=8, threshold=0.0), 8.0),  # every masked position of the block
    (Params(max_tokens=16, steps=16, block_length=8, threshold=1.01), 1.0),  # only the forced best one
    (Params(max_tokens=16, steps=8, block_length=8), 2.0),  # fixed schedule: 8 positions in 4 steps per block
])
def test_commits_are_counted_at_every_step(random_sampler, params, per_step):
    prompts = [[10, 11, 12], [20, 21, 22, 23, 24]]
    seqs = [random_sampler.new_sequence(p, params) for p in prompts]
    recorded = [quality.record_commits(s) for s in seqs]
    random_sampler.generate(seqs)
    counts = [[len(step) for step in steps] for steps in recorded]
    assert quality.commit_rate(counts)["per_step"] == per_step
    assert all(0 < v <= 1 for steps in recorded for step in steps for v in step)
    for seq, c in zip(seqs, counts):  # the counts agree with what the sequence records
        r = result(seq)
        assert len(c) == r["steps"] and sum(c) == sum(t is not None for t in r["canvas"])
    plain = [random_sampler.new_sequence(p, params) for p in prompts]  # the wrapper changes nothing
    random_sampler.generate(plain)
    assert [result(s)["token_ids"] for s in plain] == [result(s)["token_ids"] for s in seqs]


# --- the card from a tiny synthetic run -------------------------------------------------------------------------

WORDS = ("the a small old dog cat man woman house river town day night walked saw found said went came "
         "and but then with to of in on at by").split()


def synthetic_corpus(out: str) -> None:
    rng = random.Random(0)

    def doc() -> str:
        return " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."
                        for _ in range(rng.randint(1, 4)))

    split = {"train": [doc() for _ in range(300)], "valid": [doc() for _ in range(60)], "tokenizer": [doc()]}
    packages = {f"npm:{n}": {"version": v, "licence": lic, "sha256": "0" * 64} for n, (v, lic) in data.NPM_SOURCES.items()}
    packages |= {f"debian:{n}": {"version": v, "licence": lic, "sha256": "0" * 64}
                 for n, (v, lic) in data.DEBIAN_SOURCES.items()}
    sources = {name: {"items": {"train": 30 + i, "valid": i}, "items_per_document": 1 + i % 4, "characters": 1000 * (i + 1)}
               for i, name in enumerate(card.SOURCES)}
    data.write(split, out, {"packages": packages, "sources": sources})


def tiny_run(corpus: str, out: str, d_model: int, steps: int) -> None:
    train.main(["--corpus", corpus, "--tokenizer", TOKENIZER, "--out", out, "--d-model", str(d_model), "--n-heads", "2",
                "--n-layers", "1", "--mlp-hidden", str(2 * d_model), "--seq-len", "128", "--batch-size", "2",
                "--warmup", "2", "--max-steps", str(steps), "--eval-every", "5", "--ckpt-every", "5",
                "--valid-windows", "4", "--valid-seq-len", "64", "--threads", "1"])


def test_card_renders_from_a_tiny_run(tmp_path):
    pytest.importorskip("matplotlib", reason="python3-matplotlib draws the card's plots")
    corpus, run, run2, folder = (str(tmp_path / n) for n in ("corpus", "run", "run-d16", "model"))
    synthetic_corpus(corpus)
    tiny_run(corpus, run, 32, 10)
    tiny_run(corpus, run2, 16, 5)
    model, ckpt = load_checkpoint(os.path.join(run, "ckpt.pt"))
    export.write_model_folder(model, folder, TOKENIZER, 8, "test-tiny")

    words = quality.dictionary_set(WORDS + ["Dog"])
    report = quality.evaluate(folder, corpus, old_model=folder, dictionary=(words, {"package": "debian:test",
                              "version": "0", "sha256": "0" * 64, "file": "words", "entries": len(words)}),
                              valid_windows=4, valid_seq_len=64, log=lambda *_: None)
    # the same estimator as the trainer's validation (same windows, masks and weights): the same numbers
    last_valid = [json.loads(line) for line in open(os.path.join(run, "log.jsonl")) if '"valid"' in line][-1]
    assert report["validation"]["new"]["mean"] == pytest.approx(last_valid["valid"]["mean"], abs=1e-4)
    assert report["validation"]["same_windows"] and report["validation"]["improvement"] == 0.0
    assert report["greedy"]["metrics"]["answers"] == len(quality.PROMPTS)
    assert report["threshold"]["commits"]["per_step"] >= 1.0
    assert report["threshold"]["confidence"]["steps"] == report["threshold"]["commits"]["steps"]
    q_path = tmp_path / "quality.json"
    q_path.write_text(json.dumps(report))

    card.main(["--run", run, "--model", folder, "--corpus", corpus, "--quality", str(q_path),
               "--sweep", run2, run, "--bench", str(tmp_path / "absent.json"), "--threads", "1"])
    text = open(os.path.join(folder, "MODEL_CARD.md")).read()
    state = ckpt["train"]
    assert f"- Steps: {state['step']:,} of batch 2 x 128 tokens" in text
    assert f"- Tokens seen: {state['tokens']:,}" in text
    assert f"{model.num_parameters():,}" in text
    for name in card.SOURCES:
        assert f"| {name} |" in text
    assert "| run-d16 | 16 / 1 / 2 / 32 |" in text
    assert f"| previous model ({model.num_parameters():,} parameters" in text
    assert "| difference (previous - this) | 0.000 |" in text
    for prompt in quality.PROMPTS:
        assert f"- **{prompt}**" in text
    for c in report["criteria"]:
        assert f"| {c['what']} |" in text
    for png in ("loss_curve.png", "sweep.png"):
        assert os.path.getsize(os.path.join(folder, png)) > 1000

    report["model"]["digest"] = "f" * 64  # a report of other model files is refused
    q_path.write_text(json.dumps(report))
    with pytest.raises(ValueError, match="other model files"):
        card.main(["--run", run, "--model", folder, "--corpus", corpus, "--quality", str(q_path)])


def test_card_of_an_adapted_model_and_the_recipes_table(tmp_path):
    """An autoregressive run, its adaptation (shifted logits), the dream folder's card with both phases, and the
    recipes table beside a from-scratch folder."""
    pytest.importorskip("matplotlib", reason="python3-matplotlib draws the card's plots")
    corpus, ar, dream, folder = (str(tmp_path / n) for n in ("corpus", "ar", "dream", "tiny-dream"))
    synthetic_corpus(corpus)
    common = ["--corpus", corpus, "--tokenizer", TOKENIZER, "--d-model", "32", "--n-heads", "2", "--n-layers", "1",
              "--mlp-hidden", "64", "--seq-len", "128", "--batch-size", "2", "--warmup", "2", "--eval-every", "5",
              "--ckpt-every", "5", "--valid-windows", "4", "--valid-seq-len", "64", "--threads", "1"]
    train.main(common + ["--out", ar, "--objective", "ar", "--max-steps", "5"])
    adapt = common + ["--out", dream, "--init-from", os.path.join(ar, "ckpt.pt"), "--shift-logits", "--anneal-steps", "4"]
    train.main(adapt + ["--max-steps", "10"])
    train.main(adapt + ["--max-steps", "30"])  # resumed with a longer schedule: the card says so
    model, _ = load_checkpoint(os.path.join(dream, "ckpt.pt"))
    meta = export.write_model_folder(model, folder, TOKENIZER, 8, "tiny-dream")
    assert meta["architecture"] == "dream" and meta["generation_defaults"]["alg"] == "entropy"
    words = quality.dictionary_set(WORDS)
    dictionary = (words, {"package": "debian:test", "version": "0", "sha256": "0" * 64, "file": "words", "entries": 1})
    report = quality.evaluate(folder, corpus, dictionary=dictionary, valid_windows=4, valid_seq_len=64, log=lambda *_: None)
    assert report["greedy"]["params"]["alg"] == "entropy" and report["greedy"]["params"]["block_length"] == 64
    assert report["threshold"]["params"]["alg"] is None  # threshold decoding is LLaDA's sampler
    last_valid = [json.loads(line) for line in open(os.path.join(dream, "log.jsonl")) if '"valid"' in line][-1]
    assert report["validation"]["new"]["mean"] == pytest.approx(last_valid["valid"]["mean"], abs=1e-4)  # shifted
    q_path = tmp_path / "quality.json"
    q_path.write_text(json.dumps(report))
    card.main(["--run", dream, "--pretrain", ar, "--model", folder, "--corpus", corpus, "--quality", str(q_path),
               "--bench", str(tmp_path / "absent.json"), "--threads", "1"])
    text = open(os.path.join(folder, "MODEL_CARD.md")).read()
    assert "1. **Autoregressive**" in text and "5 steps of batch 2 x 128" in text
    assert "--anneal-steps 4" in text and "Dream's sampler with alg entropy" in text and "train_dream.sh" in text
    assert "- The schedule was lengthened at step 10 (resumed with a later end)" in text

    compute = recipes.run_compute([ar, dream])
    # both runs' steps; tokens a little under steps x batch x length (a share of batches is cut short)
    assert compute["steps"] == 35 and 0.9 * 35 * 2 * 128 < compute["tokens"] <= 35 * 2 * 128
    measured = {"valid_mean": 5.0, "distinct_bigrams": 0.5, "dictionary_share": 0.9, "no_token_runs": 1.0,
                "best_median": 0.2, "best_at_least_0.9": 0.1, "commits_0.9": 1.1, "commits_0.7": 1.4,
                "greedy_params": report["greedy"]["params"], "samples": [("Once", " upon")]}
    table = recipes.markdown([{"recipe": "adapted", "folder": "tiny-dream", "compute": compute,
                               "metrics": measured}], "today")
    assert f"| adapted | `tiny-dream` | 35 | {compute['tokens']:,} |" in table and "| 5.000 | 0.500 | 0.900 | 1.00 | 0.200 | 10.0% | 1.10 | 1.40 |" in table
    assert "Dream's sampler, alg entropy" in table and "- 'Once' → ' upon'" in table

    # The run gone, the folder's generation defaults changed (penalties): --refresh renders what depends on the folder
    # again and keeps what the run wrote.
    shutil.rmtree(dream)
    shutil.rmtree(ar)
    spec = json.load(open(os.path.join(folder, "dllm.json")))
    spec["generation_defaults"] |= {"frequency_penalty": 0.5, "presence_penalty": 1.5}
    json.dump(spec, open(os.path.join(folder, "dllm.json"), "w"), indent=2)
    with pytest.raises(ValueError, match="other model files"):  # the old report is of the old dllm.json
        card.main(["--refresh", "--model", folder, "--corpus", corpus, "--quality", str(q_path)])
    refreshed = quality.evaluate(folder, corpus, dictionary=dictionary, valid_windows=4, valid_seq_len=64,
                                 log=lambda *_: None)
    assert refreshed["greedy"]["params"]["presence_penalty"] == 1.5
    q_path.write_text(json.dumps(refreshed))
    card.main(["--refresh", "--model", folder, "--corpus", corpus, "--quality", str(q_path)])
    again = open(os.path.join(folder, "MODEL_CARD.md")).read()
    assert '"frequency_penalty": 0.5, "presence_penalty": 1.5}' in again
    assert "Dream's sampler with alg entropy, frequency penalty 0.5, presence penalty 1.5, temperature 0" in again
    assert "embedded default of `npm start`" in again  # the folder is named as card.DEFAULT_MODEL
    for kept in ("1. **Autoregressive**", "- The schedule was lengthened at step 10", "## Data", "## Reproduce"):
        assert kept in again and again.count(kept) == text.count(kept)
    assert card.TRAINED_TOKENS.search(again).group(1) == card.TRAINED_TOKENS.search(text).group(1)
    for a in refreshed["greedy"]["answers"]:
        assert f"- **{a['prompt']}**" in again


def test_the_card_names_the_default_model_that_npm_start_serves():
    config = open(os.path.join(os.path.dirname(MODELS), "src", "config.ts")).read()
    assert f"def: 'models/{card.DEFAULT_MODEL}'" in config
