"""Image prompts are scenes: a drawing request without its framing, and a search or direct answer
as its subject and what the answer says about it (issue 18, points 2 and 3)."""

from __future__ import annotations

import pytest

from tests.fakes import ScriptedLLM
from tools.image_prompt import PromptRewriter, has_boilerplate, question_topic, request_subject, source_for_answer

# -- draw route: request forms reduce to the scene -------------------------------------------------


@pytest.mark.parametrize(
    ("request_text", "scene"),
    [
        # forms like those a blind helper wrote: phrasal verbs, gratitude, context before and after
        ("Could you throw together a picture of a lighthouse real quick?", "a lighthouse"),
        ("I'd really appreciate it if you could depict a sailing ship.", "a sailing ship"),
        ("It would be great if you could draw two owls", "two owls"),
        ("would you be able to paint a red barn?", "a red barn"),
        ("Assistant, draw a snowman pleeease", "a snowman"),
        ("okay next one: a green teapot", "a green teapot"),
        ("a paper boat - draw it", "a paper boat"),
        ("Turn a bowl of fruit into a watercolor image.", "a bowl of fruit, watercolor"),
        ("For my son's party invitation, could you make three balloons? He'd love it.", "three balloons"),
        ("Can you show me an image of a volcano? I'm teaching it to my class.", "a volcano"),
        ("Could you make a picture of a tiger for my presentation, thanks a lot", "a tiger"),
        ("Create a drawing where a fox sleeps under a tree.", "a fox sleeps under a tree"),
        ("so what i'm thinking is a castle on a cloud, can you draw that", "a castle on a cloud"),
        # spoken fillers and false starts, talk around the request, a scene in its own sentence
        ("um can you, wait, yeah can you draw a kite", "a kite"),
        ("We're opening on Monday - can you design a sign with a red arrow? Clean look, thanks.",
         "a sign with a red arrow? Clean look"),
        ("Please make an image. The image should show a lighthouse. Thank you very much.", "a lighthouse"),
        ("Imagine two swans on a lake. Now draw it.", "two swans on a lake"),
        ("my son says draw a robot!! he's 6 and loves robots", "a robot"),
        ("I need an image: a yellow submarine", "a yellow submarine"),
        ("a windmill would be cool to see", "a windmill"),
        ("draw me a lighthouse at dusk its for my nephew", "a lighthouse at dusk"),
        ("draw a cake, it's for my mom's birthday", "a cake"),
        # a scene of several sentences keeps them all
        ("I'd like to see an illustration of a storm at sea. The ship is tiny, the waves are huge.",
         "a storm at sea. The ship is tiny, the waves are huge"),
        # look-like frames
        ("what a house made of ice would look like", "a house made of ice"),
        ("What would a dog in a spacesuit look like", "a dog in a spacesuit"),
        ("Can you show me what a red car would look like?", "a red car"),
        ("What does a purple bear look like?", "a purple bear"),
        ("how would a city look in winter?", "a city in winter"),
        ("What would the Mona Lisa look like as a cat", "the Mona Lisa as a cat"),
        ("Draw what a futuristic city looks like", "a futuristic city"),
        # wishes and picture nouns
        ("I'd like a picture of a turtle reading a map", "a turtle reading a map"),
        ("I want a picture of two red apples.", "two red apples"),
        ("Id like a drawing of three blue cups", "three blue cups"),
        ("Can I have an image of a cat left of a dog", "a cat left of a dog"),
        ("give me an image showing a bird on a branch", "a bird on a branch"),
        ("Could you create a picture with a dog in it?", "a dog"),
        # request verbs, politeness and tails
        ("Could you draw me a fox?", "a fox"),
        ("Picture this: four green bottles", "four green bottles"),
        ("Make a green cup for me", "a green cup"),
        ("Generate an image of two dogs", "two dogs"),
        ("Paint me a lighthouse at dusk please", "a lighthouse at dusk"),
        ("hey could you maybe draw me a red fox", "a red fox"),
        ("Would you mind drawing two cats?", "two cats"),
        ("Imagine a blue cow and draw it.", "a blue cow"),
        ("I'm curious what a cat would look like, can you draw it?", "a cat"),
        ("draw a dog please and thank you", "a dog"),
        ("can you make an image of a boat for my kid", "a boat"),
        ("What would London look like underwater?", "London underwater"),
        ("Show me what a medieval marketplace might have looked like.", "a medieval marketplace"),
        ("Picture of a hot air balloon over green hills, please!", "a hot air balloon over green hills"),
        # a request verb one typo (or mishearing) away, before a determiner
        ("Skecth a vintage car parked outside a diner.", "a vintage car parked outside a diner"),
        ("drwa me a cat", "a cat"),
        ("Grew a beard", "Grew a beard"),
        # the scene's own words stay, style media included
        ("Show me a photo of a bench", "a photo of a bench"),
        ("Make a painting of a river", "a painting of a river"),
        ("Show me a picture frame", "a picture frame"),
        ("Draw a picture of an illustration of a small green elephant",
         "an illustration of a small green elephant"),
        ("Draw one of the cats", "one of the cats"),
        ("A sign that says 'Text to Image'.", "A sign that says 'Text to Image'"),
        ("Painting of the orange cat Otto", "Painting of the orange cat Otto"),
        ("Would you mind drawing Painting of a fox?", "Painting of a fox"),
        # nothing but framing: what is left is the least framing
        ("Draw me a picture", "a picture"),
    ],
)
def test_request_subject_keeps_the_scene_and_drops_the_framing(request_text, scene):
    assert request_subject(request_text) == scene


def test_plain_prompt_adds_a_style_only_when_the_scene_has_none():
    rewriter = PromptRewriter(ScriptedLLM(replies=[]))
    assert rewriter.plain("a cat eating fish", "").prompt == "a cat eating fish, detailed illustration"
    assert rewriter.plain("a photo of a bench", "").prompt == "a photo of a bench"


def test_rewrite_with_citation_words_or_quotes_is_not_used():
    llm = ScriptedLLM(replies=['Wikipedia\'s article "Mona Lisa", a portrait by Leonardo da Vinci'])
    result = PromptRewriter(llm).rewrite("the Mona Lisa, a portrait by Leonardo da Vinci", min_share=0.5)
    assert not result.rewritten and "citation words" in result.note
    assert result.prompt.startswith("the Mona Lisa, a portrait by Leonardo da Vinci")


# -- search and answer routes: the subject and what the answer says about it ---------------------

MONA = {"title": "Mona Lisa", "text": "The Mona Lisa (/ˌmoʊnə ˈliːsə/; Italian: Gioconda) is a half-length portrait "
        "painting by the Italian artist Leonardo da Vinci.[1] It has been described as \"the best known work of "
        "art in the world\"."}
EIFFEL = {"title": "Eiffel Tower", "text": "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in "
          "Paris, France. It is named after the engineer Gustave Eiffel, whose company designed and built the tower."}
EINSTEIN = {"title": "Albert Einstein", "text": "Albert Einstein (14 March 1879 – 18 April 1955) was a German-born "
            "theoretical physicist. He developed the theory of relativity."}


@pytest.mark.parametrize(
    ("question", "answer", "title", "passages", "scene"),
    [
        ("Who painted the Mona Lisa?", "Leonardo da Vinci.", "Mona Lisa", [MONA],
         "the Mona Lisa, a half-length portrait painting by the Italian artist Leonardo da Vinci"),
        ("Who designed the Eiffel Tower?", "Gustave Eiffel.", "Eiffel Tower", [EIFFEL],
         "the Eiffel Tower, a wrought-iron lattice tower on the Champ de Mars in Paris, France, named after the "
         "engineer Gustave Eiffel, whose company designed and built the tower"),
        ("Who was Albert Einstein?", "A German-born theoretical physicist.", "Albert Einstein", [EINSTEIN],
         "Albert Einstein, a German-born theoretical physicist"),
        ("Where is the Mona Lisa?", "Paris.", "Mona Lisa", [MONA],
         "the Mona Lisa, a half-length portrait painting by the Italian artist Leonardo da Vinci, Paris"),
        # answer route: the topic, and the reply only where it describes
        ("What is 23 times 4", "To solve this problem, you need to multiply 23 by 4, which gives 92.", None, [],
         "23 times 4"),
        ("What is 23 times 4", "23 × 4 = 92.", None, [], "23 times 4"),
        ("What does a platypus look like?", "A platypus is a small mammal with a duck-like bill. I hope this helps!",
         None, [], "a platypus, a small mammal with a duck-like bill"),
        ("Write a short poem about autumn.", "Leaves drift down, gold and red.", None, [],
         "autumn, Leaves drift down, gold and red"),
        ("Hello there!", "Hello! How can I help you today?", None, [], "Hello there"),
        ("How do I bake bread?", "You mix flour, water and yeast, then bake it.", None, [], "bake bread"),
    ],
)
def test_source_for_answer_is_a_scene(question, answer, title, passages, scene):
    got = source_for_answer(question, answer, title, passages)
    assert got == scene
    assert has_boilerplate(got, question) == []


@pytest.mark.parametrize(
    ("prompt", "question", "found"),
    [
        ('Mona Lisa. Wikipedia\'s article "Mona Lisa" says: "The Mona Lisa is"', "Who painted the Mona Lisa?",
         ["citation words", "quote marks"]),
        ("What is 23 times 4. To solve this problem, you need to multiply", "What is 23 times 4?", ["the question"]),
        ("Leonardo da Vinci [1], portrait", "", ["reference numbers"]),
        ("the Mona Lisa, a portrait by Leonardo da Vinci's workshop", "Who painted the Mona Lisa?", []),
    ],
)
def test_has_boilerplate_names_what_is_not_a_scene(prompt, question, found):
    assert has_boilerplate(prompt, question) == found


def test_question_topic_drops_the_question_words():
    assert question_topic("What is 23 times 4?") == "23 times 4"
    assert question_topic("Tell me a joke about penguins") == "penguins"
    assert question_topic("Who was Albert Einstein?") == "Albert Einstein"
