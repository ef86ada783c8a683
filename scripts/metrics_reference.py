#!/usr/bin/env python3
"""Generate reference values for meshops' metrics (tests/data/metrics/).

Runs the reference implementations the Rust code must match and writes:

- parity.jsonl: one JSON object per row, with the inputs (response and
  ground_truth, or retrieved/relevant doc ids) and "expected": {metric: value}.
- porter.tsv: "word<TAB>stem" lines from NLTK's PorterStemmer as rouge-score
  constructs it, to pin the stemmer down word by word.

References (pip install sacrebleu rouge-score nltk):
- exact_match / f1: the SQuAD v2.0 official evaluation script's functions,
  copied verbatim below (the script is not on PyPI).
- bleu: sacrebleu.sentence_bleu(hyp, [ref]) defaults, score / 100.
- gleu: nltk sentence_gleu([ref_tokens], hyp_tokens, 1, 4) over the tokens
  sacreBLEU's BLEU sees (13a tokenizer applied to the rstripped text).
- rouge*: rouge_score.rouge_scorer.RougeScorer(..., use_stemmer=False/True)
  .score(target=ground_truth, prediction=response).
- hit_rate / mrr / ndcg: straightforward implementations of the documented
  definitions (binary relevance, duplicates counted once at first position,
  log2 discount, ideal DCG over min(k, |relevant|)); written independently
  of the Rust code as a cross-check.

Usage: python3 scripts/metrics_reference.py [OUT_DIR]   (default tests/data/metrics)
The inputs are deterministic (fixed seed), so reruns give identical files.
"""

import collections
import json
import math
import random
import re
import string
import sys
from pathlib import Path

import nltk
import rouge_score
import sacrebleu
from nltk.stem import porter
from nltk.translate.gleu_score import sentence_gleu
from rouge_score import rouge_scorer
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

# --- SQuAD v2.0 official script (evaluate-v2.0.py), verbatim ---------------


def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(text):
        regex = re.compile(r"\b(a|an|the)\b", re.UNICODE)
        return re.sub(regex, " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def get_tokens(s):
    if not s:
        return []
    return normalize_answer(s).split()


def compute_exact(a_gold, a_pred):
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold, a_pred):
    gold_toks = get_tokens(a_gold)
    pred_toks = get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        # If either is no-answer, then F1 is 1 if they agree, 0 otherwise
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


# --- Text metrics ----------------------------------------------------------

TOK13A = Tokenizer13a()
ROUGE_TYPES = ["rouge1", "rouge2", "rougeL"]
SCORER = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=False)
SCORER_STEM = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=True)


def tokens_13a(text):
    # Exactly what sacrebleu.BLEU does to a segment before counting n-grams.
    return TOK13A(text.rstrip()).split()


def text_metrics(response, truth):
    out = {
        "exact_match": float(compute_exact(truth, response)),
        "f1": float(compute_f1(truth, response)),
        "bleu": sacrebleu.sentence_bleu(response, [truth]).score / 100.0,
        "gleu": float(sentence_gleu([tokens_13a(truth)], tokens_13a(response), min_len=1, max_len=4)),
    }
    for scorer, suffix in ((SCORER, ""), (SCORER_STEM, "_stem")):
        scores = scorer.score(truth, response)
        for rt in ROUGE_TYPES:
            s = scores[rt]
            out[f"{rt}{suffix}"] = float(s.fmeasure)
            out[f"{rt}{suffix}_precision"] = float(s.precision)
            out[f"{rt}{suffix}_recall"] = float(s.recall)
    return out


# --- Retrieval metrics -----------------------------------------------------


def dedup(ids):
    seen, out = set(), []
    for d in ids:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def retrieval_metrics(retrieved, relevant, k):
    rel = set(relevant)
    top = dedup(retrieved)[:k]
    ranks = [i for i, d in enumerate(top) if d in rel]
    hit = 1.0 if ranks else 0.0
    mrr = 1.0 / (ranks[0] + 1) if ranks else 0.0
    dcg = sum(1.0 / math.log2(i + 2) for i in ranks)
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(rel))))
    return {"hit_rate": hit, "mrr": mrr, "ndcg": dcg / idcg if idcg > 0 else 0.0}


# --- Inputs ----------------------------------------------------------------

EDGE_PAIRS = [
    ("", ""),
    ("", "the answer"),
    ("an answer", ""),
    ("   ", "\t\n"),
    ("Paris", "Paris"),
    ("Paris", "paris"),
    ("Paris.", "Paris"),
    ("The Eiffel Tower", "Eiffel Tower"),
    ("a", "the"),
    ("a an the", ""),
    ("...", "!!!"),
    ("?!", "?!"),
    ("—", "–"),
    ("'\"`", "_"),
    ("don't", "do not"),
    ("It's the user's choice, isn't it?", "It is the users choice"),
    ("can't won't shouldn't", "cannot will not should not"),
    ("42", "42"),
    ("3.14", "3.14159"),
    ("1,000,000 people", "one million people"),
    ("version 2-3", "version 2 - 3"),
    ("pre-trained model-based", "pretrained model based"),
    ("e.g. U.S.A.", "eg USA"),
    ("Café crème brûlée", "cafe creme brulee"),
    ("naïve façade", "naïve façade"),
    ("Ångström Øresund", "angstrom oresund"),
    ("東京は日本の首都です", "東京は日本の首都です"),
    ("東京 は 日本 の 首都", "東京 は 首都"),
    ("北京 上海", "上海 北京"),
    ("😀 great job 👍", "great job"),
    ("👍", "👍"),
    ("Straße ǅemal ΣΊΣΥΦΟΣ", "strasse džemal σίσυφος"),
    ("K Kelvin", "k kelvin"),
    ("İstanbul", "istanbul"),
    ("the the the the", "the"),
    ("cat cat cat cat cat", "cat"),
    ("the cat the cat the cat", "the cat sat on the mat"),
    ("a€b the€ €an", "b €"),
    ("x_y snake_case", "x y snake case"),
    # Articles touching marks CPython's \\w rejects but Rust calls alphabetic.
    ("a\u093f b the\u0301 x", "b x"),
    ("\u24b6 the\u24b6 an\u24d0 x", "\u24d0 x"),
    ("running runner runs ran", "run runs running"),
    ("generously generalizations", "generous generalization"),
    ("happy happiness happily", "happi happiness"),
    ("The skies were flying", "sky flies"),
    ("AT&amp;T &lt;tag&gt; &quot;q&quot;", 'AT&T <tag> "q"'),
    ("line one\nline two", "line one line two"),
    ("hyphen-\nated word", "hyphenated word"),
    ("<skipped> token", "token"),
    ("tabs\tand\u00a0nbsp\u3000ideographic", "tabs and nbsp ideographic"),
    ("sep\u001cchars\u001fhere", "sep chars here"),
    ("trailing space   ", "trailing space"),
    ("$5.00 (approx.) [ref] {x} @user #tag 50%", "$5.00 approx ref x user tag 50%"),
    ("end with comma,", "end with comma"),
    ("numbers 10.5, 11,2 and 3-4-5", "numbers 10.5 11,2 and 3 4 5"),
    ("A.B.C.", "a b c"),
    ("Mr. Smith went to Washington.", "Mr Smith went to Washington"),
    ("yes", "no"),
    ("no", "No."),
    (
        "The mitochondria is the powerhouse of the cell and produces most of the chemical energy "
        "needed to power the cell's biochemical reactions, which is stored in adenosine triphosphate.",
        "Mitochondria generate most of the chemical energy needed to power the biochemical reactions "
        "of the cell; chemical energy produced by the mitochondria is stored in a small molecule "
        "called adenosine triphosphate (ATP).",
    ),
    (
        "In 1969, Neil Armstrong and Buzz Aldrin landed on the Moon aboard the Apollo 11 lunar module, "
        "while Michael Collins orbited above in the command module Columbia.",
        "Apollo 11 landed on the Moon on July 20, 1969; Armstrong and Aldrin walked on the surface "
        "while Collins remained in lunar orbit.",
    ),
]

VOCAB = (
    "the a an of to in is was were be been and or but not no yes cat cats dog dogs mat sat sits "
    "sitting run runs running ran runner quick quickly brown fox foxes jump jumps jumped jumping "
    "over lazy connect connected connecting connection connections relational conditional rational "
    "hesitancy digitizer radically differently analogously vietnamization predication operator "
    "feudalism decisiveness hopefulness callousness formality sensitivity sensibility triplicate "
    "formative formalize electricity electrical hopeful goodness revival allowance inference "
    "airliner gyroscopic adjustable defensible irritant replacement adjustment dependent adoption "
    "communism activate angularity homologous effective bowdlerize probate rate cease controlling "
    "roll skies dying lying tying news innings outings cannings howe proceed exceed succeed spied "
    "cried flies ties agreed feed bled sing motoring hopping tanned falling hissing fizzed failing "
    "filing conflated troubled sized happy sky fully logically apology archaeology generously "
    "caresses ponies possesses universities studies studying studied agents agent retrieval "
    "retrieved retrieving documents document mesh meshes gateway gateways latency latencies "
    "answer answers answered question questions model models trained training evaluation "
    "evaluate evaluated metrics metric score scores scoring 0 1 2 3 10 42 100 2024 3.5 1,000 "
    "don't isn't it's can't we're they've I'd . , ! ? ; : - -- ( ) \" ' & % $ # @ / café naïve "
    "résumé 東京 日本 😀 🚀 Ωmega über straße"
).split()


def sentence(rng, lo, hi):
    n = rng.randint(lo, hi)
    words = [rng.choice(VOCAB) for _ in range(n)]
    if rng.random() < 0.3 and words:
        words[0] = words[0].capitalize()
    text = " ".join(words)
    if rng.random() < 0.2:
        text = text.upper()
    if rng.random() < 0.4:
        text += rng.choice([".", "!", "?", "...", " .", ""])
    return text


def perturb(rng, text):
    words = text.split()
    ops = rng.randint(0, 4)
    for _ in range(ops):
        op = rng.random()
        if op < 0.3 and words:
            words.pop(rng.randrange(len(words)))
        elif op < 0.6:
            words.insert(rng.randint(0, len(words)), rng.choice(VOCAB))
        elif op < 0.8 and len(words) > 1:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        elif words:
            i = rng.randrange(len(words))
            words[i] = words[i].lower() if rng.random() < 0.5 else words[i].capitalize()
    return " ".join(words)


def text_pairs(rng):
    pairs = list(EDGE_PAIRS)
    for _ in range(260):
        truth = sentence(rng, 0 if rng.random() < 0.05 else 1, rng.choice([3, 8, 20, 45]))
        kind = rng.random()
        if kind < 0.15:
            response = truth
        elif kind < 0.75:
            response = perturb(rng, truth)
        else:
            response = sentence(rng, 0, 25)
        pairs.append((response, truth))
    return pairs


def retrieval_cases(rng):
    docs = [f"doc{i}" for i in range(12)]
    cases = [
        ([], ["doc1"]),
        (["doc1"], ["doc1"]),
        (["doc2", "doc1"], ["doc1"]),
        (["doc1", "doc1", "doc1", "doc2"], ["doc1", "doc2"]),
        (["x", "y", "z"], ["doc1"]),
        (["doc1", "doc2", "doc3"], ["doc3", "doc3"]),
    ]
    for _ in range(60):
        retrieved = [rng.choice(docs) for _ in range(rng.randint(0, 15))]
        relevant = rng.sample(docs, rng.randint(1, 6))
        cases.append((retrieved, relevant))
    return cases


# --- Porter word list --------------------------------------------------------

ROOTS = (
    "connect relat hope run fly happ generaliz cry agree sky control analog electr formal sensit "
    "adopt troubl siz hop fil fail tann fall hiss fizz conflat motor plaster bled sing feed caress "
    "poni ti cat spi tri die lie news inning outing proceed exceed succeed rational valen hesit "
    "digit conform radic differ vile analog vietnam predic oper feud decis call triplic form "
    "revi allow infer airlin gyroscop adjust defens irrit replac depend commun activ angular "
    "homolog effect bowdler prob rat ceas roll yell toy say syzygy y yy by ivy oat tree trouble "
    "archaeolog apolog log bi at bl iz eed ied ing ed s ss sses ies abl ibl ful ness ment"
).split()
SUFFIXES = (
    " s es ed ing ies ied ly ness ful fulness ation ational ization izer ement ment ent ion ive ous "
    "ously ability ibility alli logi fulli eed y e ll al ance ence er ic able ible ant ism ate iti "
    "ize icate ative alize iciti ical tional enci anci abli bli entli eli ousli ator alism iveness "
    "ousness aliti iviti biliti ings ingly edly"
).split(" ")


def porter_words(rng):
    words = set(VOCAB) | set(ROOTS)
    for root in ROOTS:
        for suffix in SUFFIXES:
            words.add(root + suffix)
    letters = "abcdefghijklmnopqrstuvwxyz" + "aeiouy" * 3
    for _ in range(1500):
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(1, 12))))
    # rouge-score only stems [a-z0-9]+ tokens; keep to those.
    return sorted(w for w in words if re.fullmatch(r"[a-z0-9]+", w))


def main():
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/metrics")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20261128)
    versions = {
        "sacrebleu": sacrebleu.__version__,
        "nltk": nltk.__version__,
        "rouge_score": getattr(rouge_score, "__version__", "0.1.2"),
    }
    rows = []
    for i, (response, truth) in enumerate(text_pairs(rng)):
        rows.append(
            {"id": f"t{i:03d}", "response": response, "ground_truth": truth,
             "expected": text_metrics(response, truth)}
        )
    for i, (retrieved, relevant) in enumerate(retrieval_cases(rng)):
        expected = {}
        for k in (1, 3, 5, 10):
            for name, value in retrieval_metrics(retrieved, relevant, k).items():
                expected[f"{name}@{k}"] = value
                if k == 10:
                    expected[name] = value
        rows.append(
            {"id": f"r{i:03d}", "retrieved_doc_ids": retrieved, "relevant_doc_ids": relevant,
             "expected": expected}
        )
    with open(out_dir / "parity.jsonl", "w", encoding="utf-8") as f:
        f.write(json.dumps({"id": "_versions", "versions": versions}, ensure_ascii=False) + "\n")
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    stemmer = porter.PorterStemmer()  # exactly how rouge_score.tokenizers builds it
    with open(out_dir / "porter.tsv", "w", encoding="utf-8") as f:
        for w in porter_words(rng):
            f.write(f"{w}\t{stemmer.stem(w)}\n")
    print(f"wrote {len(rows)} rows to {out_dir / 'parity.jsonl'}")


if __name__ == "__main__":
    main()
