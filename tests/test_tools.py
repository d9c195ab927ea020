"""The LLM-backed tools: answer writer, image-prompt rewriter, router, and the LLM wrapper itself.

Unit tests script the model (tests/fakes.py); the ``slow`` ones run the real starter LLM."""

from __future__ import annotations

import pytest

from agent.router import Router
from tests.fakes import ScriptedLLM
from tools.answer import AnswerWriter, mentions_names, supported, with_citation
from tools.image_prompt import (
    CLIP_MAX_TOKENS,
    PromptRewriter,
    approx_clip_tokens,
    keeps_source,
    loops,
    request_subject,
)

MONA = {
    "title": "Mona Lisa",
    "url": "https://en.wikipedia.org/wiki/Mona_Lisa",
    "text": "The Mona Lisa is a half-length portrait painting by the Italian artist Leonardo da Vinci. "
    "It has been described as the best known work of art in the world.",
}


@pytest.mark.parametrize(
    ("request_text", "subject"),
    [
        ("Show me a cat eating fish", "a cat eating fish"),
        ("Please draw two red apples on a table.", "two red apples on a table"),
        ("I'd like to see an illustration of a small green elephant", "a small green elephant"),
        ("Can you paint a picture of a lighthouse at dusk?", "a lighthouse at dusk"),
        ("a dog on a skateboard", "a dog on a skateboard"),
    ],
)
def test_request_subject_removes_only_the_asking(request_text, subject):
    assert request_subject(request_text) == subject


def test_keeps_source_catches_dropped_counts_and_objects():
    assert keeps_source("two red apples on a table", "Two red apples on a wooden table, photo")[0]
    ok, why = keeps_source("two red apples on a table", "Red apples on a table")
    assert not ok and "two" in why
    ok, why = keeps_source("a cat and a dog on a sofa", "A cat on a sofa")
    assert not ok and "dog" in why


def test_rewriter_uses_a_good_rewrite_and_rejects_a_chatty_one():
    good = PromptRewriter(ScriptedLLM(replies=["Two red apples on a table, soft light, still life photo"]))
    result = good.rewrite("two red apples on a table")
    assert result.rewritten and result.prompt.startswith("Two red apples")

    chatty = PromptRewriter(ScriptedLLM(replies=["Sure, I love cats! I will draw a cat eating fish for you"]))
    result = chatty.rewrite("cat eating fish")
    assert not result.rewritten
    assert result.prompt.startswith("cat eating fish") and "chatted" in result.note

    looping = PromptRewriter(ScriptedLLM(replies=["Two frisbees, colorful fun, big fun, big fun, big fun, big fun"]))
    result = looping.rewrite("two frisbees")
    assert not result.rewritten and "repeats itself" in result.note
    assert not loops("a dog and a dog") and loops("big fun, big fun, big fun, big fun")

    rambling = PromptRewriter(ScriptedLLM(replies=["a " + "very " * 200 + "long prompt about a cat eating fish"]))
    assert approx_clip_tokens(rambling.rewrite("cat eating fish").prompt) <= CLIP_MAX_TOKENS


def test_grounded_answer_is_a_short_answer_with_its_numbered_source():
    writer = AnswerWriter(ScriptedLLM(replies=["The Mona Lisa was painted by Leonardo da Vinci."]))
    answer = writer.grounded("Who painted the Mona Lisa?", [MONA])
    assert answer.found and answer.text == "Leonardo da Vinci." and answer.source == 1
    text = with_citation(answer)
    assert text.startswith("Leonardo da Vinci. [1]\n\n")
    assert '[1] Wikipedia, "Mona Lisa"' in text and "half-length portrait" in text


def test_grounded_answer_never_presents_an_invented_answer():
    writer = AnswerWriter(ScriptedLLM(replies=["It was painted by Pablo Picasso in 1932."]))
    answer = writer.grounded("Who painted the Mona Lisa?", [MONA])
    assert "Picasso" not in with_citation(answer) and "1932" not in with_citation(answer)
    assert answer.short and answer.short in answer.quote  # the short answer is cut from the quoted sentence


def test_grounded_answer_says_not_found_when_the_passage_is_about_something_else():
    writer = AnswerWriter(ScriptedLLM(replies=["The father of Richard III of Capua is Edward III."]))
    other = {"title": "Edward III", "url": "u", "text": "Edward III was King of England. His father was Edward II."}
    answer = writer.grounded("Who is the father of Richard III of Capua?", [other])
    assert not answer.found and "did not find" in answer.text and '"Edward III"' in answer.text
    assert "Wikipedia, " not in with_citation(answer).split(";")[0] and "[1]" not in with_citation(answer)


def test_passage_about_the_asked_subject_answers_even_without_a_shared_word():
    village = {"title": "Dabkowice", "url": "", "text": "Dabkowice is a village in the administrative district of Gmina Nowe "
               "Ostrowy, within Kutno County, in central Poland. It lies 5 km north-west of Nowe Ostrowy."}
    writer = AnswerWriter(ScriptedLLM(replies=["It is a small town in the middle of Europe."]))
    answer = writer.grounded("In what country is Dabkowice?", [village])
    # the short answer is a place from the article's sentence (which names the country), not the model's guess
    assert answer.found and answer.quote and "Poland" in answer.quote and "Europe" not in with_citation(answer)
    assert answer.short in answer.quote
    # an article about something else is not used for the answer
    other = writer.grounded("In what country is Zbrosza?", [village])
    assert not other.found and "did not find" in other.text


def test_support_and_name_checks():
    assert supported("Leonardo da Vinci painted it", MONA["text"] + " painted")
    assert not supported("Picasso painted it in Spain", MONA["text"])
    assert mentions_names("Who painted the Mona Lisa?", MONA["title"] + " " + MONA["text"])
    assert not mentions_names("Where was Billy Carlson born?", MONA["text"])


def test_router_calibration_divides_out_label_bias():
    # The model says "draw" 70% of the time for content-free input; a 50% draw vote is then weak.
    bias = {"search": 0.1, "answer": 0.2, "draw": 0.7}
    request = {"search": 0.3, "answer": 0.2, "draw": 0.5}
    llm = ScriptedLLM(labels=[request, bias, bias, bias])
    decision = Router(llm).decide("In what country is Eschbronn?")
    assert decision.route == "search" and not decision.fallback
    assert decision.scores["search"] > decision.scores["draw"]
    assert "search" in decision.reason and "draw" in decision.reason


@pytest.mark.slow
def test_real_llm_scores_labels_and_streams(starter_llm):
    scores = starter_llm.score_labels([{"role": "user", "content": "Reply yes or no: is fire hot?"}], ["yes", "no"])
    assert set(scores) == {"yes", "no"} and abs(sum(scores.values()) - 1) < 1e-6
    pieces: list[str] = []
    reply = starter_llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                             max_new_tokens=16, on_token=pieces.append)
    assert "Paris" in reply and len(pieces) > 1 and "".join(pieces).strip() == reply


@pytest.mark.slow
def test_real_router_routes_clear_requests(starter_llm):
    router = Router(starter_llm)
    assert router.decide("Show me a red bicycle next to a blue door").route == "draw"
    assert router.decide("In what country is the town of Breitenfelde?").route == "search"


@pytest.fixture(scope="module")
def starter_llm():
    from tools.llm import STARTER_LLM, LocalLLM

    llm = LocalLLM(STARTER_LLM)
    llm.load()
    return llm
