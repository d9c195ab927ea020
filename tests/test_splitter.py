"""The project's one sentence splitter (tools.text.split_sentences, pysbd) and the passage cutter
that uses it: abbreviations end no sentence, real boundaries still do, text is kept exactly."""

from __future__ import annotations

import threading

import pytest

from tools.text import sentence_spans, split_sentences
from tools.wikipedia.passages import split_passages


@pytest.mark.parametrize("text, first", [
    ("Chuck Berry was born in St. Louis, Missouri. He died in 2017.",
     "Chuck Berry was born in St. Louis, Missouri."),
    ("Dr. No is the first James Bond film. It was released in 1962.",
     "Dr. No is the first James Bond film."),
    ("Leonardo began the Mona Lisa c. 1503. He worked on it for years.",
     "Leonardo began the Mona Lisa c. 1503."),
    ("She moved to the U.S. in 1990 and studied law. She later became a judge.",
     "She moved to the U.S. in 1990 and studied law."),
    ("The U.S. Army entered the war in 1917. It fought in France.",
     "The U.S. Army entered the war in 1917."),
    ("Martin Luther King Jr. was born in Atlanta. He was a minister.",
     "Martin Luther King Jr. was born in Atlanta."),
    ("The Hobbit was written by J. R. R. Tolkien. It appeared in 1937.",
     "The Hobbit was written by J. R. R. Tolkien."),
    ("Mr. Smith opens the shop at 9 a.m. on weekdays. It closes at noon.",
     "Mr. Smith opens the shop at 9 a.m. on weekdays."),
    ("Johann Sebastian Bach (b. 1685, d. 1750) was a German composer. He wrote the Mass in B minor.",
     "Johann Sebastian Bach (b. 1685, d. 1750) was a German composer."),
])
def test_abbreviations_end_no_sentence(text, first):
    sentences = split_sentences(text)
    assert len(sentences) == 2
    assert sentences[0] == first


def test_ordinary_text_splits_at_every_sentence_end():
    text = ('The Mona Lisa is a portrait. Who painted it? Leonardo da Vinci did! '
            'He said "It is finished." Then he left. In 1911 it was stolen.')
    assert split_sentences(text) == [
        "The Mona Lisa is a portrait.", "Who painted it?", "Leonardo da Vinci did!",
        'He said "It is finished."', "Then he left.", "In 1911 it was stolen."]


def test_a_sentence_ending_in_an_abbreviation_before_a_new_sentence_still_ends():
    assert split_sentences("He lived in the U.S. He left in 1990.") == ["He lived in the U.S.", "He left in 1990."]


def test_whitespace_is_collapsed_and_empty_text_has_no_sentences():
    assert split_sentences("  One   sentence\nover two lines.  Two. ") == ["One sentence over two lines.", "Two."]
    assert split_sentences("") == []
    assert split_sentences(" \n ") == []
    assert split_sentences("no stop at all") == ["no stop at all"]


def test_sentences_are_the_text_itself():
    text = "Fox paid for Deadpool.[citation needed] Disney paid for Zootopia.:12 The end ∯ here. Done."
    sentences = split_sentences(text)
    assert "".join(sentences).replace(" ", "") == text.replace(" ", "")
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == sentences
    assert all(a < b for a, b in spans) and all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))


def test_sentence_spans_keep_the_original_spacing():
    text = "First one.\n\n  Second   one. Third."
    assert [text[a:b] for a, b in sentence_spans(text)] == ["First one.", "Second   one.", "Third."]


def test_split_sentences_is_thread_safe():
    texts = [f"Sentence {i} is in St. Louis. Sentence {i} ends here." for i in range(40)]
    errors: list[str] = []

    def work(chunk: list[str]) -> None:
        for _ in range(5):
            for t in chunk:
                got = split_sentences(t)
                if len(got) != 2 or not got[0].endswith("St. Louis."):
                    errors.append(t)

    threads = [threading.Thread(target=work, args=(texts[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_long_paragraphs_are_cut_at_real_sentence_ends_only():
    sentence = ("Dr. Smith of St. Louis visited the U.S. Army base c. 1903 with J. R. R. Tolkien "
                "and saw many interesting things there today.")  # 22 words, 5 abbreviations
    para = " ".join([sentence] * 20)  # 440 words: cut into pieces of at most 150
    parts = split_passages(para, max_words=150)
    assert len(parts) >= 3
    for part in parts:
        assert len(part.split()) <= 150
        assert part.startswith("Dr. Smith") and part.endswith("there today.")
        assert part in para  # slices of the paragraph


def test_passage_cut_keeps_text_glued_to_a_sentence_end():
    para = ("Word " * 140) + "end.[citation needed] " + ("more " * 30) + "done."
    parts = split_passages(para, max_words=150)
    assert len(parts) == 2
    assert all(part in " ".join(para.split()) for part in parts)


def test_an_enormous_sentence_is_cut_between_words_and_the_rest_continues():
    para = " ".join(f"w{i}" for i in range(320)) + ". Short tail sentence here."
    parts = split_passages(para, max_words=150, min_words=1)
    assert [len(p.split()) for p in parts] == [150, 150, 24]
    assert parts[-1].endswith("w319. Short tail sentence here.")


def test_eval_splitter_counts_wrong_splits_and_missed_boundaries():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import eval_splitter as es

    contexts = ["He was born in St. Louis in 1904 and moved away. Then he came back.",
                "Dr. No was filmed in 1962. It was a hit."]
    stops = es.gold_stops(contexts)
    assert [(s["kind"], s["abbr"], s["boundary"]) for s in stops] == [
        ("abbreviation", "St", False), ("ordinary", None, True),
        ("abbreviation", "Dr", False), ("ordinary", None, True)]
    naive = es.score(contexts, stops, es._regex_ends(es.OLD_SPLIT_SENTENCES))
    assert naive["wrong_splits_after_abbreviation"] == 2 and naive["missed_boundaries"] == 0
    never = es.score(contexts, stops, lambda text: set())
    assert never["wrong_splits_after_abbreviation"] == 0 and never["missed_ordinary_boundaries"] == 2
    project = es.score(contexts, stops, es.splitters()["project"])
    assert project["wrong_splits_after_abbreviation"] == 0 and project["missed_boundaries"] == 0
    assert es.splits_at('He said "Stop." Then', 13, {15})  # the closing quote goes with the stop


def test_image_prompt_reply_is_cut_by_the_same_splitter():
    from tools.image_prompt import PromptRewriter, _clean_reply

    assert _clean_reply("A poster of Dr. No, retro style. Another sentence.") == "A poster of Dr. No, retro style"
    assert _clean_reply("Prompt: Sunset over St. Louis.") == "Sunset over St. Louis"
    assert _clean_reply("A map of the U.S. at night") == "A map of the U.S. at night"
    rewriter = PromptRewriter(llm=None)  # settled() never calls the model
    source = "draw a poster of dr no"
    assert not rewriter.settled("A poster of Dr. No", source)  # "Dr." ends no sentence
    assert rewriter.settled("A poster of Dr. No, retro. The", source)  # a second sentence has begun
