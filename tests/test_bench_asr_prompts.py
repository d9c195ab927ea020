"""Fast tests of the pure functions in bench/eval_asr.py and bench/eval_prompts.py (no models)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


asr = _load("eval_asr")
prompts = _load("eval_prompts")


# ------------------------------------------------------------------------------ WER


def test_normalise_case_punctuation_and_apostrophes():
    assert asr.normalise("Hello, World! It's \u2018fine\u2019.") == ["hello", "world", "it's", "fine"]
    assert asr.normalise("whole-number 3:2 a/b") == ["whole", "number", "3", "2", "a", "b"]


def test_normalise_numbers_and_abbreviations():
    assert asr.normalise("twenty five or twenty-five, 25, twelve") == ["25", "or", "25", "25", "12"]
    assert asr.normalise("the twentieth and twenty-first century") == ["the", "20th", "and", "21st", "century"]
    assert asr.normalise("eleventh twelfth third") == ["11th", "12th", "3rd"]
    assert asr.normalise("Mr. Quilter and Mrs Smith met Dr. Who") == [
        "mister", "quilter", "and", "missus", "smith", "met", "doctor", "who"]
    assert asr.normalise("twenty") == ["20"]  # tens alone, at the end


def test_edit_ops_counts_each_kind():
    ref = "the cat sat on the mat".split()
    assert asr.edit_ops(ref, ref) == {"edits": 0, "sub": 0, "del": 0, "ins": 0}
    assert asr.edit_ops(ref, "the cat sat on mat".split()) == {"edits": 1, "sub": 0, "del": 1, "ins": 0}
    assert asr.edit_ops(ref, "the cat sat on the red mat".split()) == {"edits": 1, "sub": 0, "del": 0, "ins": 1}
    assert asr.edit_ops(ref, "the dog sat on the mat".split()) == {"edits": 1, "sub": 1, "del": 0, "ins": 0}
    assert asr.edit_ops([], ["a", "b"])["ins"] == 2
    assert asr.edit_ops(["a", "b"], [])["del"] == 2
    assert asr.edit_ops("a b c d".split(), "x y".split())["edits"] == 4


def test_wer_after_normalisation_and_overall_is_pooled():
    assert asr.wer("Twenty-five years.", "25 years") == (0, 2)
    assert asr.wer("MISTER QUILTER", "Mr. Quilter's") == (1, 2)  # possessive is not normalised
    # pooled: 1 edit in 1 word + 0 in 9 words = 10%, not the 50% mean of per-clip rates
    assert asr.overall_wer([(1, 1), (0, 9)]) == pytest.approx(0.1)
    assert asr.overall_wer([]) == 0.0


def test_reference_lookup_uses_the_matching_id_line(tmp_path):
    (tmp_path / "1-2-0000.flac").write_bytes(b"")
    (tmp_path / "1-2-0001.flac").write_bytes(b"")
    (tmp_path / "1-2-0009.flac").write_bytes(b"")
    (tmp_path / "1-2.trans.txt").write_text("1-2-0000 FIRST LINE\n1-2-0001 SECOND LINE\n")
    (tmp_path / "x.ogg").write_bytes(b"")
    (tmp_path / "x.txt").write_text("plain  text\n")
    assert asr.reference_for(tmp_path / "1-2-0001.flac") == ("SECOND LINE", "1-2.trans.txt line '1-2-0001'")
    assert asr.reference_for(tmp_path / "x.ogg")[0] == "plain text"
    assert asr.reference_for(tmp_path / "1-2-0009.flac")[0] is None
    clips, skipped = asr.find_clips(tmp_path)
    assert [c["id"] for c in clips] == ["1-2-0000", "1-2-0001", "x"]
    assert len(skipped) == 1 and "1-2-0009" in skipped[0]


def test_known_mismatch_is_flagged_with_the_corrected_reference(tmp_path):
    (tmp_path / "1272-128104-0000.flac").write_bytes(b"")
    (tmp_path / "1272-128104.trans.txt").write_text("1272-128104-0000 MISTER QUILTER IS THE APOSTLE\n")
    (clip,), _ = asr.find_clips(tmp_path)
    assert clip["reference"] == "MISTER QUILTER IS THE APOSTLE"  # the shipped line is what 'wer' uses
    assert clip["reference_corrected"].startswith("NOR IS MISTER QUILTER'S")
    assert "another utterance" in clip["flag"]


# ------------------------------------------------------------------------------ prompts


def test_noun_forms_plural_singular_and_irregular():
    assert {"clock", "clocks"} <= prompts.noun_forms("clock")
    assert "glasses" in prompts.noun_forms("glass")
    assert "toothbrushes" in prompts.noun_forms("toothbrush") and "toothbrushs" in prompts.noun_forms("toothbrush")
    assert "people" in prompts.noun_forms("person")
    assert "knives" in prompts.noun_forms("knife")
    assert "ski" in prompts.noun_forms("skis")
    assert "mice" in prompts.noun_forms("mouse")


def test_find_object_multiword_and_plural():
    toks = prompts.tokens("Two purple wine glasses next to a Computer-Mouse")
    assert prompts.find_object(toks, "wine glass") == [2]
    assert prompts.find_object(toks, "computer mouse") == [7]
    assert prompts.find_object(toks, "glass") == [3]
    assert prompts.find_object(prompts.tokens("a dining room"), "dining table") == []


def test_counts_as_digit_or_word_near_the_object():
    item = {"class": "clock", "count": 2}
    assert prompts.check_item("two clocks on a wall", item)["count"]
    assert prompts.check_item("2 antique brass clocks", item)["count"]
    assert not prompts.check_item("three clocks", item)["count"]
    assert not prompts.check_item("clocks, two of them", item)["count"]
    assert not prompts.check_item("two cats and a clock", item)["count"]  # the 'two' belongs to cats
    four = {"class": "bench", "count": 4}
    assert prompts.check_item("four benchs", four)["count"]  # GenEval's own spelling
    assert prompts.check_item("4 wooden benches", four)["count"]


def test_count_one_needs_no_article_but_rejects_a_plural_count():
    item = {"class": "bench", "count": 1}
    res = prompts.check_item("a wooden bench in a park", item)
    assert res["object"] and res["count"] and res["article"]
    res = prompts.check_item("bench", item)
    assert res["count"] and not res["article"]
    assert prompts.check_item("one single bench", item)["article"]
    assert not prompts.check_item("two benches in a park", item)["count"]
    assert not prompts.check_item("several old benches", item)["count"]


def test_check_prompt_reports_missing_objects_counts_and_attributes():
    include = [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "color": "brown",
                                                         "position": ["right of", 0]}]
    ok = prompts.check_prompt("a brown dog right of a teddy bear, watercolour", include)
    assert ok == {"objects": True, "counts": True, "kept": True, "attrs": True, "missing": []}
    res = prompts.check_prompt("a dog next to a bear", include)
    assert not res["kept"] and "object teddy bear" in res["missing"]
    res = prompts.check_prompt("a black dog and a teddy bear", include)
    assert res["kept"] and not res["attrs"]
    assert "color brown (dog)" in res["missing"] and "position right of (dog)" in res["missing"]


def test_extra_classes_and_loops():
    classes = ["bird", "cat", "dog", "hot dog", "orange", "tv", "tv remote"]
    include = [{"class": "cat", "count": 1, "color": "orange"}]
    assert prompts.extra_classes("an orange cat eating a hot dog near two birds", include, classes) == ["bird", "hot dog"]
    assert prompts.extra_classes("an orange cat with a tv remote", include, classes) == ["tv remote"]
    assert prompts.extra_classes("an orange cat", include, classes) == []
    assert prompts.repetitive("two frisbees, big fun, fun, fun, fun, fun")
    assert not prompts.repetitive("a cat on a mat, a cat on a sofa")


def test_every_geneval_prompt_passes_its_own_check():
    data = prompts.DEFAULT_DATA
    if not data.is_file():
        pytest.skip(f"no GenEval data at {data}")
    import json

    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    failing = [r["prompt"] for r in rows
               if not (c := prompts.check_prompt(r["prompt"], r["include"]))["kept"] or not c["attrs"]]
    assert failing == []


def test_sampling_is_deterministic_and_stratified():
    rows = [{"tag": t} for t in ["a"] * 10 + ["b"] * 10 + ["c"] * 4 + ["d"] * 2]
    picked = prompts.sample_rows(rows, 12, seed=0)
    assert picked == prompts.sample_rows(rows, 12, seed=0) == sorted(picked)
    assert len(set(picked)) == 12
    counts = {t: sum(rows[i]["tag"] == t for i in picked) for t in "abcd"}
    assert counts == {"a": 4, "b": 3, "c": 3, "d": 2}  # 'd' has only 2: its third goes to the largest tag
    assert prompts.sample_rows(rows, 12, seed=1) != picked
    # a small tag passes its share on; more than there are: everything
    counts = {t: sum(rows[i]["tag"] == t for i in prompts.sample_rows(rows, 20)) for t in "abcd"}
    assert counts == {"a": 7, "b": 7, "c": 4, "d": 2}
    assert prompts.sample_rows(rows, 100) == list(range(len(rows)))
    # the remainder goes to the largest tags first, ties by name
    counts = {t: sum(rows[i]["tag"] == t for i in prompts.sample_rows(rows, 6)) for t in "abcd"}
    assert counts == {"a": 2, "b": 2, "c": 1, "d": 1}


def test_token_counter_falls_back_to_the_estimate(monkeypatch):
    monkeypatch.setattr(prompts, "_installed_bpe", lambda: None)
    count, name, real = prompts.token_counter(None)
    assert not real and name.startswith("ESTIMATE")
    assert count("a photo of two clocks") >= 7


def test_token_counter_reads_a_clip_bpe_merges_file(tmp_path):
    import gzip

    bpe = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    bpe.write_bytes(gzip.compress("#version: 0.2\nc a\nca t</w>\n".encode()))
    count, name, real = prompts.token_counter(bpe)
    assert real and str(bpe) in name
    assert count("cat") == 3  # <start> cat</w> <end>
    assert count("cat cat") == 4
    assert count("dog") == 5  # no merges: d o g</w> one byte symbol each
