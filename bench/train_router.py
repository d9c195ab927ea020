"""Rebuild ``agent/route_model.npz``: the route classifier and its combination with the LLM.

    .venv/bin/python bench/train_router.py [--seed 0] [--val-llm 60] [--out agent/route_model.npz] [--json]

1. **Requests** are built from the raw sources in ``../shared/data/raw`` (see :func:`build_rows`):
   *search*: PopQA long-tail questions, SQuAD v1.1 dev questions, and questions of our own wording about
   PopQA subjects (people, works, places: "how tall is X", "what did X win", "who made X");
   *answer*: Alpaca seed instructions plus requests of our own (:data:`ANSWER_TEMPLATES`: arithmetic,
   advice, writing, jokes, explanations of common ideas, code, chit-chat);
   *draw*: PartiPrompts, DrawBench and GenEval prompts wrapped in request forms of our own
   (:data:`DRAW_WRAPPERS`). Each request also appears in its spoken form (lower case, no final
   punctuation). Every row is **disjoint from every evaluation set**: ``routing/dev.jsonl``,
   ``eval_routing.heldout_rows()``, the PopQA and SQuAD questions ``eval_answers.py`` samples (seed 13,
   200 each), the SQuAD questions ``eval_retrieval.py`` samples (seed 0, 500) and every HotpotQA
   question (``eval_retrieval.py`` uses all 500, so HotpotQA gives none).
2. The requests are split (by source item, so a request and its spoken form stay together) into
   train (80 %) and validation (20 %), embedded with MiniLM, and a multinomial logistic regression is
   fitted on train (numpy; L2 strength chosen on validation).
3. The LLM (starter SmolLM2-135M, calibrated as the router does) scores ``--val-llm`` validation
   items per route and the labelled dev set (``routing/dev.jsonl``), each in clean and spoken forms;
   the combination weights ``w_llm, w_clf, b`` are fitted on both together by log-loss (grid over the
   two weights, gradient steps on the biases). The held-out set of
   ``bench/eval_routing.py`` is never read for fitting.

Prints the validation numbers (classifier alone, LLM alone, combined) and writes the weights file.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from agent.route_classifier import FORMAT, MODEL_PATH, Combination, cheapest, combine, softmax  # noqa: E402
from agent.state import ROUTES  # noqa: E402

DATA = REPO.parent / "shared" / "data"
RAW = DATA / "raw"


def norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def spoken_form(text: str) -> str:
    """As eval_routing.spoken_form: lower case, no final punctuation."""
    return " ".join(text.split()).rstrip("?!.").lower()


# -- our own wordings --------------------------------------------------------------------------

# Questions about a named subject, by the kind of thing PopQA says it is.
SEARCH_TEMPLATES = {
    "person": (
        "Tell me about {s}.", "who is {s}", "What is {s} known for?", "When was {s} born?", "How old is {s}?",
        "What did {s} win?", "What awards did {s} receive?", "Where does {s} come from?", "Is {s} still alive?",
        "How tall is {s}?", "what was {s}'s job", "Where did {s} grow up?", "What team did {s} play for?",
        "Who was {s} married to?", "what is {s} famous for", "When did {s} die?", "Where was {s} educated?",
        "how many children did {s} have", "What nationality is {s}?", "give me some facts about {s}",
    ),
    "work": (
        "Who wrote {s}?", "When did {s} come out?", "What is {s} about?", "How long is {s}?", "Who starred in {s}?",
        "who made {s}", "Did {s} win any awards?", "What year was {s} released?", "who sang {s}",
        "How many pages does {s} have?", "Who published {s}?", "what kind of work is {s}",
        "Where was {s} filmed?", "who created {s}", "Tell me about {s}.", "how well did {s} sell",
    ),
    "place": (
        "How big is {s}?", "How many people live in {s}?", "Where is {s}?", "What is the population of {s}?",
        "What language do they speak in {s}?", "which country is {s} in", "How far is {s} from the coast?",
        "What is {s} known for?", "When was {s} founded?", "what is the area of {s}", "Tell me about {s}.",
        "What river runs through {s}?", "how high above sea level is {s}", "who is the mayor of {s}",
    ),
}
SUBJECT_KIND = {
    "occupation": "person", "place of birth": "person", "religion": "person", "father": "person",
    "mother": "person", "sport": "person", "author": "work", "genre": "work", "director": "work",
    "composer": "work", "screenwriter": "work", "producer": "work", "country": "place", "capital": "place",
    "capital of": "place",
}

# Requests that need no outside facts: frames and fillers written for askdraw.
_TOPICS = ("rain", "the ocean", "autumn leaves", "my cat", "coffee", "friendship", "a rainy Monday", "the moon",
           "learning to cook", "a lost sock", "winter mornings", "city traffic", "a summer holiday", "homework",
           "growing older", "a broken umbrella", "the first day of school", "spring flowers", "a long train ride",
           "my grandmother's kitchen", "waking up early", "a dog who loves the beach", "robots", "pizza")
_FORMS = ("poem", "haiku", "limerick", "short story", "song", "toast", "birthday message", "thank-you note",
          "speech", "slogan", "riddle", "bedtime story", "love letter", "diary entry", "product description")
_GOALS = ("sleep better", "stop procrastinating", "save money", "learn a new language", "get fit at home",
          "make friends in a new city", "stay calm before an exam", "keep my plants alive", "eat healthier",
          "prepare for a job interview", "be more productive", "deal with stress at work",
          "keep a conversation going", "study for a math test", "motivate myself to run", "organise my desk",
          "cook rice properly", "get better at chess", "write a good cover letter", "save time in the morning")
_CONCEPTS = ("photosynthesis", "gravity", "inflation", "a rainbow", "compound interest", "the water cycle",
             "recursion", "a black hole", "evaporation", "supply and demand", "a vaccine", "electricity",
             "a computer virus", "the greenhouse effect", "an echo", "a fever", "a budget", "democracy",
             "machine learning", "a leap year", "friction", "a mortgage", "sound", "magnetism")
_PHENOMENA = ("the sky is blue", "leaves change colour in autumn", "we dream", "ice floats", "we get hiccups",
              "bread rises", "the sea is salty", "cats purr", "we yawn", "onions make you cry",
              "the moon changes shape", "metal feels cold", "people snore", "popcorn pops")
_PAIRS = (("weather", "climate"), ("a virus", "bacteria"), ("affect", "effect"), ("a simile", "a metaphor"),
          ("speed", "velocity"), ("a crocodile", "an alligator"), ("baking soda", "baking powder"),
          ("a loan", "a grant"), ("RAM", "storage"), ("a hurricane", "a tornado"), ("mass", "weight"))
_THINGS = ("a birthday party", "a rainy weekend", "a team name", "a science fair project", "a date night",
           "a picnic", "a small garden", "a podcast", "dinner tonight", "a road trip", "a school play",
           "a gift for my dad", "a board game night", "a blog post")
_CODE = ("reverses a string", "checks if a number is prime", "sorts a list of names", "counts the words in a file",
         "finds the largest number in a list", "converts Celsius to Fahrenheit", "removes duplicates from a list",
         "adds two matrices", "checks whether a word is a palindrome", "prints the first ten squares")
_CHAT = ("Hi there!", "hello, how are you today?", "Good morning!", "Thanks, that was helpful.", "I'm bored.",
         "What's up?", "Can you cheer me up?", "I had a terrible day.", "Do you like music?", "Good night!",
         "Are you a robot?", "What can you do?", "I feel lonely tonight.", "Let's chat for a bit.",
         "What should we talk about?", "That's funny, tell me more.", "Sorry, I was away.", "nice to meet you")
_OPINIONS = ("is it better to rent or buy a house", "should I learn piano or guitar", "are cats better than dogs",
             "is it worth getting up early", "should kids have phones", "is breakfast the most important meal",
             "is it rude to be late", "should I study at night or in the morning", "do you prefer tea or coffee")
_TEXTS = ("The meeting has been moved to Thursday because the room was booked.",
          "I can not come to the party, sorry, my car broke down again.",
          "our new app helps you track your water intake and reminds you to drink",
          "The results were good but we need more time to check the numbers.",
          "She walked into the room and everyone went quiet.")

ANSWER_TEMPLATES: tuple[tuple[str, tuple], ...] = (
    ("Write a {f} about {t}.", (_FORMS, _TOPICS)), ("can you write me a {f} about {t}", (_FORMS, _TOPICS)),
    ("Compose a short {f} on {t}.", (_FORMS, _TOPICS)), ("I need a {f} about {t}, please.", (_FORMS, _TOPICS)),
    ("Tell me a joke about {t}.", (_TOPICS,)), ("Do you know any puns about {t}?", (_TOPICS,)),
    ("Make up a funny story about {t}.", (_TOPICS,)),
    ("How can I {g}?", (_GOALS,)), ("Any tips to {g}?", (_GOALS,)), ("What should I do to {g}?", (_GOALS,)),
    ("I want to {g}. Where do I start?", (_GOALS,)), ("give me advice on how to {g}", (_GOALS,)),
    ("Explain {c} in simple words.", (_CONCEPTS,)), ("How does {c} work?", (_CONCEPTS,)),
    ("Can you explain {c} to a ten-year-old?", (_CONCEPTS,)), ("what is {c} in plain english", (_CONCEPTS,)),
    ("Why do {p}?", (("we dream", "we yawn", "cats purr", "onions make us cry", "people snore"),)),
    ("Why is it that {p}?", (_PHENOMENA,)), ("Explain why {p}.", (_PHENOMENA,)),
    ("What is the difference between {a} and {b}?", (_PAIRS,)),
    ("Give me {n} ideas for {x}.", (("three", "five", "some", "a few", "ten"), _THINGS)),
    ("Help me plan {x}.", (_THINGS,)), ("Brainstorm names for {x}.", (_THINGS,)),
    ("Write a Python function that {k}.", (_CODE,)), ("how do i write code that {k}", (_CODE,)),
    ("{q}", (_CHAT,)), ("What do you think: {o}?", (_OPINIONS,)), ("{o}?", (_OPINIONS,)),
    ("Summarise this: {s}", (_TEXTS,)), ("Fix the grammar: {s}", (_TEXTS,)), ("Translate into French: {s}", (_TEXTS,)),
    ("Make this sound more polite: {s}", (_TEXTS,)),
)
_ARITH = ("What is {a} times {b}?", "what's {a} plus {b}", "How much is {a} minus {b}?", "Calculate {a} divided by {b}.",
          "what is {a} percent of {b}", "If I have {a} apples and eat {b}, how many are left?", "Add {a} and {b}.",
          "How many minutes are in {a} hours?", "What is the square root of {c}?", "Solve x + {a} = {b}.",
          "Split a bill of {b} dollars among {d} friends: how much each?", "convert {a} kilometres to metres")

# Request forms for pictures, written for askdraw: unlike eval_routing's _DRAW_WRAPPERS and dev.jsonl's.
DRAW_WRAPPERS = (
    "Draw me {p}.", "can you draw {p} for me", "Sketch me {p}.", "I'd love a drawing of {p}.",
    "Make an image of {p}.", "show me a picture of {p}", "Please paint me {p}.", "I want to see {p}.",
    "Give me a picture showing {p}.", "Illustrate {p} for me.", "Create a picture of {p}.", "Can I see {p}?",
    "Could you make a drawing of {p}?", "Produce an image showing {p}.", "I'd like a painting of {p}.",
    "Draw a picture of {p}, please.", "show me what {p} looks like", "Can you do a sketch of {p}?",
    "Make a picture: {p}.", "visualise {p} for me", "A drawing of {p}, please.", "Design an image of {p}.",
)


def _lower_first(text: str) -> str:
    text = text.strip().rstrip(".")
    return text if len(text) > 1 and text[1].isupper() else text[:1].lower() + text[1:]


# -- building the rows ---------------------------------------------------------------------------

def eval_texts() -> tuple[set[str], dict]:
    """Normalised texts of every evaluation request, and the ids the answer/retrieval evals sample."""
    import eval_answers
    import eval_retrieval
    import eval_routing

    dev = [json.loads(line)["text"] for line in (DATA / "routing" / "dev.jsonl").read_text().splitlines() if line.strip()]
    held = [r["text"] for r in eval_routing.heldout_rows()]
    popqa_ids = {q["id"] for q in eval_answers.popqa_questions(200, 13)}
    squad_ids = {q["id"] for q in eval_answers.squad_questions(200, 13)}
    _, squad_q = eval_retrieval.load_squad(eval_answers.SQUAD)
    squad_ids |= {q["id"] for q in eval_retrieval.sample_questions(squad_q, 500, 0)}
    texts = {norm(t) for t in dev + held}
    return texts, {"popqa": popqa_ids, "squad": squad_ids, "dev": dev, "heldout": held}


def build_rows(seed: int = 0, n_squad: int = 1100, n_draw: int = 1300) -> tuple[list[dict], dict]:
    """Labelled requests ``{text, route, group, source}`` (clean and spoken forms) and build stats."""
    rng = random.Random(seed)
    taken, ids = eval_texts()
    eval_blob = " \n ".join(taken)

    def unseen(text: str) -> bool:
        n = norm(text)
        return bool(n) and n not in taken and (len(n) < 12 or n not in eval_blob)

    items: list[tuple[str, str, str]] = []  # (text, route, source)
    # search: PopQA rows no eval uses (either wording), SQuAD questions no eval samples, our questions
    with (RAW / "popqa" / "DisambPopQA_longtail1399.csv").open(encoding="utf-8") as f:
        popqa = list(csv.DictReader(f))
    sources = (RAW / "popqa" / "crag_popqa_longtail" / "sources.txt").read_text(encoding="utf-8").splitlines()
    subjects: list[tuple[str, str]] = []
    for i, row in enumerate(popqa):
        forms = [row["question"]] + ([sources[i]] if i < len(sources) and sources[i].strip() else [])
        if f"popqa-{i}" in ids["popqa"] or not all(unseen(q) for q in forms):
            continue
        items.append((rng.choice(forms), "search", "popqa"))
        kind = SUBJECT_KIND.get(row["prop"])
        if kind and row["subj"].strip():
            subjects.append((row["subj"].strip(), kind))
    for subj, kind in rng.sample(subjects, min(450, len(subjects))):
        items.append((rng.choice(SEARCH_TEMPLATES[kind]).format(s=subj), "search", "own-search"))
    squad = json.loads((RAW / "squad_v1.1_dev" / "dev-v1.1.json").read_text(encoding="utf-8"))["data"]
    squad_qs = [qa["question"].strip() for art in squad for para in art["paragraphs"] for qa in para["qas"]
                if qa["id"] not in ids["squad"] and unseen(qa["question"])]
    items += [(q, "search", "squad") for q in rng.sample(sorted(set(squad_qs)), min(n_squad, len(squad_qs)))]
    # answer: Alpaca seeds no eval uses, and our own requests
    for line in (RAW / "alpaca_seed" / "seed_tasks.jsonl").read_text(encoding="utf-8").splitlines():
        task = json.loads(line)
        inst, extra = task["instruction"].strip(), (task["instances"][0].get("input") or "").strip()
        text = f"{inst}\n{extra}" if extra and rng.random() < 0.5 else inst
        if unseen(inst) and unseen(text) and len(text) < 600:
            items.append((text, "answer", "alpaca"))
    own: set[str] = set()
    for template, fillers in ANSWER_TEMPLATES:
        combos = [()]
        for pool in fillers:
            combos = [c + (x,) for c in combos for x in pool]
        for combo in rng.sample(combos, min(len(combos), 28)):
            flat = [y for x in combo for y in (x if isinstance(x, tuple) else (x,))]
            keys = re.findall(r"{(\w)}", template)
            own.add(template.format(**dict(zip(keys, flat))))
    for _ in range(140):
        a, b = rng.randint(2, 999), rng.randint(2, 99)
        own.add(rng.choice(_ARITH).format(a=a, b=b, c=rng.choice([16, 49, 81, 144, 2, 10, 225]), d=rng.randint(2, 9)))
    items += [(t, "answer", "own-answer") for t in sorted(own) if unseen(t)]
    # draw: prompts no eval uses, in our request forms
    prompts = [row["Prompt"] for row in csv.DictReader((RAW / "image_prompts" / "PartiPrompts.tsv").open(encoding="utf-8"),
                                                       delimiter="\t") if len(row["Prompt"].split()) >= 2]
    prompts += [row["Prompt"] for row in csv.DictReader((RAW / "image_prompts" / "drawbench.csv").open(encoding="utf-8"))]
    prompts += (RAW / "image_prompts" / "geneval_generation_prompts.txt").read_text(encoding="utf-8").splitlines()
    prompts = [p.strip() for p in dict.fromkeys(prompts) if p.strip() and len(p) < 200 and unseen(_lower_first(p))]
    for i, p in enumerate(rng.sample(prompts, min(n_draw, len(prompts)))):
        items.append((rng.choice(DRAW_WRAPPERS).format(p=_lower_first(p)), "draw", "draw-prompts"))

    rows = []
    for g, (text, route, source) in enumerate(items):
        rows.append({"text": text, "route": route, "group": g, "source": source})
        spoken = spoken_form(text)
        if spoken != text:
            rows.append({"text": spoken, "route": route, "group": g, "source": source, "spoken": True})
    leaks = [r["text"] for r in rows if norm(r["text"]) in taken]
    assert not leaks, f"training rows overlap an evaluation set: {leaks[:3]}"
    stats = {"items": len(items), "rows": len(rows),
             "by_source": {s: sum(1 for it in items if it[2] == s) for s in dict.fromkeys(it[2] for it in items)},
             "by_route": {r: sum(1 for it in items if it[1] == r) for r in ROUTES}}
    return rows, stats


# -- fitting ---------------------------------------------------------------------------------------

def fit_logreg(X: np.ndarray, y: np.ndarray, l2: float, class_weight: np.ndarray, iters: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch gradient descent with Nesterov momentum."""
    n, d = X.shape
    k = len(ROUTES)
    W, b = np.zeros((k, d)), np.zeros(k)
    vW, vb = np.zeros_like(W), np.zeros_like(b)
    Y = np.eye(k)[y]
    sw = class_weight[y][:, None] / class_weight[y].mean()
    lr, mom = 2.0, 0.9
    for _ in range(iters):
        Wl, bl = W + mom * vW, b + mom * vb
        P = softmax(X @ Wl.T + bl)
        G = (P - Y) * sw / n
        gW = G.T @ X + l2 * Wl
        gb = G.sum(0)
        vW, vb = mom * vW - lr * gW, mom * vb - lr * gb
        W, b = W + vW, b + vb
    return W, b


def metrics(gold: list[str], pred: list[str]) -> dict:
    conf = {f"{g}->{p}": sum(1 for a, b in zip(gold, pred) if a == g and b == p) for g in ROUTES for p in ROUTES}
    recall = {r: round(conf[f"{r}->{r}"] / max(1, sum(conf[f"{r}->{p}"] for p in ROUTES)), 3) for r in ROUTES}
    acc = sum(a == b for a, b in zip(gold, pred)) / max(1, len(gold))
    return {"n": len(gold), "accuracy": round(acc, 3), "recall": recall, "confusion": conf}


def fit_combination(llm: np.ndarray, clf: np.ndarray, y: np.ndarray, class_weight: np.ndarray) -> Combination:
    """w_llm, w_clf by grid, biases by gradient steps: the least class-weighted log-loss."""
    from agent.route_classifier import FLOOR

    L, C = np.log(np.maximum(llm, FLOOR)), np.log(np.maximum(clf, FLOOR))
    sw = class_weight[y] / class_weight[y].mean()
    best = None
    for a in np.arange(0.0, 3.01, 0.15):
        for c in np.arange(0.15, 3.01, 0.15):
            bias = np.zeros(len(ROUTES))
            for _ in range(200):
                P = softmax(a * L + c * C + bias)
                grad = ((P - np.eye(len(ROUTES))[y]) * sw[:, None]).mean(0)
                bias -= 1.0 * grad
            P = softmax(a * L + c * C + bias)
            loss = float(-(sw * np.log(P[np.arange(len(y)), y] + 1e-12)).mean())
            if best is None or loss < best[0]:
                best = (loss, a, c, bias - bias.mean())
    _, a, c, bias = best
    return Combination(w_llm=round(float(a), 2), w_clf=round(float(c), 2), bias=tuple(round(float(x), 4) for x in bias))


def llm_scores(texts: list[str], llm_spec: str | None, log) -> np.ndarray:
    """The router's calibrated LLM probabilities of ``texts``; cached per text under
    ``$ASKDRAW_HOME/route_train`` for this model and these route prompts (saved as it goes)."""
    from agent.router import Router
    from tools.common import PROMPTS_DIR, cache_dir, quiet_transformers
    from tools.llm import STARTER_LLM, LocalLLM

    quiet_transformers()
    router = Router(LocalLLM(llm_spec or STARTER_LLM))
    prompts = "".join((PROMPTS_DIR / f).read_text() for f in ("route_system.txt", "route_examples.txt",
                                                                "route_calibration.txt"))
    key = hashlib.sha1((router.llm.name + "\0" + prompts).encode()).hexdigest()[:16]
    path = cache_dir() / "route_train" / f"llm-{key}.json"
    cache: dict[str, list[float]] = json.loads(path.read_text()) if path.is_file() else {}
    todo = [t for t in dict.fromkeys(texts) if t not in cache]
    log(f"LLM scores: {len(texts) - len(todo)} of {len(texts)} from the cache {path}")
    t0 = time.perf_counter()
    for i, text in enumerate(todo):
        probs = router.llm_probabilities(text)
        cache[text] = [probs[r] for r in ROUTES]
        if (i + 1) % 50 == 0 or i + 1 == len(todo):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cache))
            log(f"  LLM scored {i + 1}/{len(todo)} ({time.perf_counter() - t0:.0f} s)")
    return np.array([cache[t] for t in texts])


def embed(texts: list[str], embedder, log) -> np.ndarray:
    """Embeddings of ``texts``, cached under ``$ASKDRAW_HOME/route_train`` by the texts' hash (the
    same texts and model give the same vectors; a rebuild after a change of weights only recomputes)."""
    from tools.common import cache_dir

    key = hashlib.sha1(("\n".join(texts) + "\0" + embedder.name).encode()).hexdigest()[:16]
    path = cache_dir() / "route_train" / f"embeddings-{key}.npy"
    if path.is_file():
        log(f"embeddings of {len(texts)} requests from the cache {path}")
        return np.load(path).astype(np.float64)
    t1 = time.perf_counter()
    X = embedder.encode(texts, batch_size=64)
    log(f"embedded {len(texts)} requests in {time.perf_counter() - t1:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, X)
    return X.astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-llm", type=int, default=60, help="validation items per route scored by the LLM")
    parser.add_argument("--llm", default=None, help="LLM spec for the combination fit (default: the starter LLM)")
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    parser.add_argument("--json", action="store_true", help="print only the validation numbers as JSON")
    args = parser.parse_args()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    if not (DATA / "raw").is_dir():
        sys.exit(f"train_router: no training data at {DATA} (the shipped {MODEL_PATH.name} still works)")

    t0 = time.perf_counter()
    rows, stats = build_rows(args.seed)
    log(f"{stats['items']} requests ({stats['rows']} with spoken forms): {stats['by_route']}, {stats['by_source']}")
    groups = sorted({r["group"] for r in rows})
    rng = np.random.default_rng(args.seed)
    val_groups = set(rng.choice(groups, size=len(groups) // 5, replace=False).tolist())
    train = [r for r in rows if r["group"] not in val_groups]
    val = [r for r in rows if r["group"] in val_groups]

    from tools.common import quiet_transformers
    from tools.embeddings import DEFAULT_MODEL, Embedder

    quiet_transformers()
    X = embed([r["text"] for r in rows], Embedder(DEFAULT_MODEL), log)
    index = {id(r): i for i, r in enumerate(rows)}
    Xtr, Xva = X[[index[id(r)] for r in train]], X[[index[id(r)] for r in val]]
    ytr = np.array([ROUTES.index(r["route"]) for r in train])
    yva = np.array([ROUTES.index(r["route"]) for r in val])
    class_weight = len(ytr) / (len(ROUTES) * np.bincount(ytr, minlength=len(ROUTES)))

    best = None
    for l2 in (1e-4, 3e-4, 1e-3, 3e-3):
        W, b = fit_logreg(Xtr, ytr, l2, class_weight)
        P = softmax(Xva @ W.T + b)
        loss = float(-np.log(P[np.arange(len(yva)), yva] + 1e-12).mean())
        log(f"  l2={l2:g}: validation log-loss {loss:.4f}, accuracy {(P.argmax(1) == yva).mean():.3f}")
        if best is None or loss < best[0]:
            best = (loss, l2, W, b)
    _, l2, W, b = best
    Pva = softmax(Xva @ W.T + b)
    clf_val = metrics([ROUTES[i] for i in yva], [ROUTES[i] for i in Pva.argmax(1)])
    log(f"classifier alone on validation ({len(yva)} rows): accuracy {clf_val['accuracy']}, recall {clf_val['recall']}")

    # The combination: LLM scores on a class-balanced sample of validation items (both forms).
    vrng = random.Random(args.seed)
    picked: list[int] = []
    for r_i, route in enumerate(ROUTES):
        gs = sorted({r["group"] for r in val if r["route"] == route})
        chosen = set(vrng.sample(gs, min(args.val_llm, len(gs))))
        picked += [i for i, r in enumerate(val) if r["group"] in chosen]
    texts = [val[i]["text"] for i in picked]
    log(f"LLM scoring {len(texts)} validation requests for the combination ...")
    L = llm_scores(texts, args.llm, log)
    C = Pva[picked]
    y = yva[picked]
    # The combination is fitted on the validation sample together with the labelled dev set
    # (routing/dev.jsonl, clean and spoken forms). Either alone misleads: on its own validation split
    # the classifier is nearly perfect (fitted there alone, the LLM's weight came out 0), and the dev
    # set holds only PopQA-style searches, where the LLM is good (fitted there alone, the LLM weighed
    # as much as the classifier and search recall on the SQuAD-style validation questions fell to 0.89).
    dev = [json.loads(line) for line in (DATA / "routing" / "dev.jsonl").read_text().splitlines() if line.strip()]
    dev_rows = dev + [{**r, "text": spoken_form(r["text"])} for r in dev]
    dev_texts = [r["text"] for r in dev_rows]
    Cdev = softmax(embed(dev_texts, Embedder(DEFAULT_MODEL), log) @ W.T + b)
    log(f"LLM scoring {len(dev_texts)} dev requests (clean and spoken) for the combination ...")
    Ldev = llm_scores(dev_texts, args.llm, log)
    ydev = np.array([ROUTES.index(r["route"]) for r in dev_rows])
    combo = fit_combination(np.vstack([L, Ldev]), np.vstack([C, Cdev]), np.concatenate([y, ydev]), np.ones(len(ROUTES)))

    def evaluate(L: np.ndarray, C: np.ndarray, y: np.ndarray) -> dict:
        gold = [ROUTES[i] for i in y]
        both = [combine(dict(zip(ROUTES, l)), dict(zip(ROUTES, c)), combo) for l, c in zip(L, C)]
        return {"llm_alone": metrics(gold, [ROUTES[i] for i in L.argmax(1)]),
                "classifier_alone": metrics(gold, [ROUTES[i] for i in C.argmax(1)]),
                "combined_argmax": metrics(gold, [max(ROUTES, key=p.get) for p in both]),
                "combined_with_costs": metrics(gold, [cheapest(p) for p in both])}

    report = {
        "seed": args.seed, "l2": l2, "data": stats, "train_rows": len(train), "validation_rows": len(val),
        "validation": {"classifier": clf_val, "llm_subset": evaluate(L, C, y)},
        "dev_fit": evaluate(Ldev, Cdev, ydev),
        "combination": combo.as_dict(), "seconds": round(time.perf_counter() - t0, 1),
    }
    meta = {"format": FORMAT, "classes": list(ROUTES), "embedder": DEFAULT_MODEL, "dim": int(W.shape[1]),
            "trained_by": "bench/train_router.py", "seed": args.seed, "l2": l2,
            "data": stats, "data_sha1": hashlib.sha1("\n".join(r["text"] for r in rows).encode()).hexdigest()[:12],
            "validation": {k: {"accuracy": v["accuracy"], "recall": v["recall"]}
                           for k, v in report["validation"]["llm_subset"].items()},
            "combination_fitted_on": "the validation LLM sample + routing/dev.jsonl, clean and spoken forms",
            "dev_fit": {k: {"accuracy": v["accuracy"], "recall": v["recall"]} for k, v in report["dev_fit"].items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("wb") as fh:
        np.savez_compressed(fh, W=W.astype(np.float32), b=b.astype(np.float32), w_llm=np.float64(combo.w_llm),
                            w_clf=np.float64(combo.w_clf), combo_bias=np.array(combo.bias, dtype=np.float64),
                            meta=np.array(json.dumps(meta, sort_keys=True)))
    report["out"] = str(args.out)
    report["bytes"] = args.out.stat().st_size
    if args.json:
        print(json.dumps(report))
        return
    for split, results in (("validation", report["validation"]["llm_subset"]), ("dev", report["dev_fit"])):
        print(f"{split}:")
        for name, m in results.items():
            print(f"  {name:<22} accuracy {m['accuracy']:.3f}  recall "
                  + ", ".join(f"{r} {m['recall'][r]:.3f}" for r in ROUTES))
    print(f"combination {combo.as_dict()}; l2 {l2:g}; wrote {args.out} ({report['bytes']} bytes) in {report['seconds']} s")


if __name__ == "__main__":
    main()
