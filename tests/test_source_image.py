"""The search route's article picture (tools.source_image): the top source's own lead image, from
the shared Kiwix ZIM files and from a MediaWiki API on loopback (tests/test_robust_wikipedia.py's
server, which also serves the ``pageimages``/``imageinfo`` answers and a real PNG), saved in the
run folder, named in ``Result.source_image``, and shown by ``askdraw ask``, the chat and the web
page as Wikipedia's picture, never as a generated one. Nothing here contacts the internet; the
LLM is scripted (the ZIM run with the starter models is in the README's measured run).
"""

from __future__ import annotations

import io
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from rich.console import Console

from agent.agent import load_result
from agent.trace import read_trace
from agent.ui.render import answer_lines, facts, plain_lines, step_news
from agent.ui.web import restored, run_turn
from tools.source_image import (MIN_SIDE, LivePictures, NoPicture, SourceImage, ZimPictures, lead_image_src,
                                picture_source, save_picture)
from tools.wikipedia import OfflineWikipedia

try:
    from tests.test_graph import MONA_LISA, FakeWiki
    from tests.test_robust_wikipedia import (MONA_LISA_TEXT, QUESTION, FakeMediaWiki, live, make_agent,  # noqa: F401
                                             mediawiki, search_llm)
except ImportError:  # tests/ is on sys.path itself
    from test_graph import MONA_LISA, FakeWiki
    from test_robust_wikipedia import (MONA_LISA_TEXT, QUESTION, FakeMediaWiki, live, make_agent,  # noqa: F401
                                       mediawiki, search_llm)

pytestmark = pytest.mark.filterwarnings("ignore:No parser was explicitly specified")
ZIM_DIR = Path(__file__).resolve().parents[2] / "shared/data/raw/zim"
RAY_ZIM = ZIM_DIR / "wikipedia_en_ray_charles_2015-06.zim"  # mwoffliner 2015: articles with their pictures
RAY_MINI = ZIM_DIR / "wikipedia_en_ray_charles_mini_2020-03.zim"  # "_pictures:no": no article has one
needs_ray_zim = pytest.mark.skipif(not RAY_ZIM.is_file(), reason=f"{RAY_ZIM} not present (shared data)")


def png_bytes(size: tuple[int, int] = (320, 240)) -> bytes:
    """A small real PNG: a red disc on blue."""
    image = Image.new("RGB", size, (20, 40, 160))
    ImageDraw.Draw(image).ellipse((60, 40, 260, 200), fill=(220, 30, 30))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png_bytes()
MONA_IMAGE = {"name": "Mona_Lisa.png", "data": PNG, "licence": "Public domain",
              "artist": '<a href="https://en.wikipedia.org/wiki/Leonardo_da_Vinci">Leonardo da Vinci</a>'}


def zim_item_bytes(zim: Path, path: str) -> bytes:
    from libzim.reader import Archive

    return bytes(Archive(str(zim)).get_entry_by_path(path).get_item().content)


# -- the first content image of an article's HTML ---------------------------------------------------
@pytest.mark.parametrize("markup, src", [
    ('<p>Text</p><img src="a.jpg" width="220" height="200"><img src="b.jpg" width="220" height="200">', "a.jpg"),
    # icons (rating stars, 16 px symbols) are not the article's picture, whatever comes first
    ('<img src="star.png" width="11" height="11"><div class="thumb"><img src="cover.jpg" width="220" height="220"></div>',
     "cover.jpg"),
    # navigation and message boxes are skipped with what they hold, however big
    ('<table class="navbox"><tr><td><img src="nav.png" width="300" height="300"></td></tr></table>'
     '<img src="lead.jpg" width="250" height="250">', "lead.jpg"),
    ('<table class="mbox-small"><tr><td class="mbox-image"><img src="box.png" width="120" height="120"></td></tr>'
     '</table><p>Body</p>', None),
    # an audio file's icon is not a picture
    ('<img src="fileicon-ogg.png" data-file-type="audio" width="220" height="230"><img src="x.jpg" width="170" '
     'height="203">', "x.jpg"),
    # pictures after the references are the page's furniture, not the article's
    ('<p>Body</p><h2>References</h2><img src="late.jpg" width="220" height="220">', None),
    # no shown size: the file's own size decides
    (f'<img src="big.jpg" data-file-width="{MIN_SIDE}" data-file-height="{MIN_SIDE * 2}">', "big.jpg"),
    (f'<img src="small.jpg" data-file-width="{MIN_SIDE - 1}" data-file-height="300">', None),
    ("<p>No picture at all.</p>", None),
])
def test_lead_image_src_is_the_first_content_picture(markup, src):
    assert lead_image_src(f"<html><body>{markup}</body></html>") == src


@pytest.mark.parametrize("data, why", [
    (b"<html>404</html>", "not a readable picture"),
    (PNG[: len(PNG) // 2], "not a readable picture"),  # cut off: fails when decoded, not in a viewer
    (b'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="300"></svg>', "not a readable picture"),
    (b"", "not a readable picture"),
])
def test_bad_picture_bytes_are_no_picture_and_nothing_is_saved(tmp_path, data, why):
    with pytest.raises(NoPicture, match=why):
        save_picture(data, tmp_path, "the picture")
    assert not list(tmp_path.iterdir())


def test_a_picture_is_saved_as_it_came(tmp_path):
    path, width, height = save_picture(PNG, tmp_path / "run", "the picture")
    assert path == tmp_path / "run" / "source_image.png" and path.read_bytes() == PNG and (width, height) == (320, 240)


# -- ZIM files --------------------------------------------------------------------------------------
@needs_ray_zim
def test_zim_lead_image_is_the_articles_own_picture(tmp_path):
    picture = ZimPictures(RAY_ZIM).lead_image("Ray Charles", tmp_path)
    assert picture.origin == "zim" and picture.title == "Ray Charles"
    assert picture.file == "Ray_Charles_(cropped).jpg"
    saved = Path(picture.path)
    assert saved == tmp_path / "source_image.jpg"
    assert saved.read_bytes() == zim_item_bytes(RAY_ZIM, "I/m/Ray_Charles_(cropped).jpg")
    with Image.open(saved) as image:
        assert image.format == "JPEG" and image.size == (picture.width, picture.height) == (250, 250)
    assert picture.url == "https://en.wikipedia.org/wiki/Ray_Charles"
    assert 'article "Ray Charles"' in picture.credit and RAY_ZIM.name in picture.credit
    assert "no author or licence" in picture.credit and picture.author is None and picture.licence is None


@needs_ray_zim
def test_zim_skips_icons_and_navigation_boxes(tmp_path):
    # an album article: the cover, not the rating stars or the navbox symbols after it
    assert ZimPictures(RAY_ZIM).lead_image("A Man and His Soul", tmp_path).file == "RayCharles_AManAndHisSoul.jpg"
    # a percent-encoded file name (America%2C_the_Beautiful) is found in the archive
    assert ZimPictures(RAY_ZIM).lead_image("America the Beautiful", tmp_path).file == "5_America,_the_Beautiful.png"
    # only navbox icons (16 px): no picture
    with pytest.raises(NoPicture, match='"Hank Crawford" in .* has no picture'):
        ZimPictures(RAY_ZIM).lead_image("Hank Crawford", tmp_path / "none")
    assert not (tmp_path / "none").exists()


@needs_ray_zim
def test_zim_unknown_article_is_no_picture(tmp_path):
    with pytest.raises(NoPicture, match='has no article "No Such Article"'):
        ZimPictures(RAY_ZIM).lead_image("No Such Article", tmp_path)


@pytest.mark.skipif(not RAY_MINI.is_file(), reason=f"{RAY_MINI} not present (shared data)")
def test_zim_without_pictures_says_so(tmp_path):
    with pytest.raises(NoPicture, match='"Ray Charles" .* has no picture'):
        ZimPictures(RAY_MINI).lead_image("Ray Charles", tmp_path)


def test_corpora_without_pictures_have_no_picture_source(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"title": "Mona Lisa", "text": "A portrait painting by Leonardo."}\n')
    assert picture_source(OfflineWikipedia(corpus, rerank=False, cache=tmp_path)) is None
    assert picture_source(FakeWiki()) is None


@needs_ray_zim
def test_a_zim_search_turn_gets_the_articles_picture_and_the_card(tmp_path):
    """Through the agent: the search step goes on to the picture; the generated image (here the
    labelled card: no image model) stays the ``image``."""
    backend = OfflineWikipedia(RAY_ZIM, rerank=False, cache=tmp_path / "index")
    assert isinstance(picture_source(backend), ZimPictures)
    r = make_agent(tmp_path, search_llm("Ray Charles was an American singer."), backend).ask(
        text="Who was Ray Charles?")
    assert r.error is None and r.route == "search" and r.sources[0]["title"] == "Ray Charles"
    pic = r.source_image
    assert pic is not None and pic.file == "Ray_Charles_(cropped).jpg" and pic.origin == "zim"
    run_dir = Path(r.trace_path).parent
    assert Path(pic.path) == run_dir / "source_image.jpg" and Path(pic.path).is_file()
    assert r.image_path == str(run_dir / "image.png") and not r.image_generated  # both: the card stays the image
    assert load_result(run_dir).source_image == pic  # result.json names it too
    steps = [e.step for e in read_trace(run_dir)]
    assert steps[:3] == ["decide", "search_wikipedia", "source_image"] and "answer" in steps
    event = next(e for e in read_trace(run_dir) if e.step == "source_image")
    assert event.input == "Ray Charles" and "source_image.jpg" in event.output and RAY_ZIM.name in event.reason
    assert step_news(event) == ("found", "found the article's picture: Ray_Charles_(cropped).jpg")

    text_only = make_agent(tmp_path, search_llm("Ray Charles was an American singer."), backend).ask(
        text="Who was Ray Charles?", image=False)
    assert text_only.source_image is None and "source_image" not in text_only.timings_ms


# -- live Wikipedia (the loopback MediaWiki) ---------------------------------------------------------
def test_live_lead_image_with_author_and_licence(tmp_path, mediawiki):
    server = mediawiki(pages={"Mona Lisa": MONA_LISA_TEXT}, results=["Mona Lisa"], images={"Mona Lisa": MONA_IMAGE})
    picture = LivePictures(api_url=server.api_url, timeout=2).lead_image("Mona Lisa", tmp_path)
    assert Path(picture.path).read_bytes() == PNG and Path(picture.path).name == "source_image.png"
    assert (picture.width, picture.height) == (320, 240)
    assert picture.author == "Leonardo da Vinci" and picture.licence == "Public domain"  # HTML stripped
    assert picture.file == "File:Mona_Lisa.png" and picture.url == "https://commons.wikimedia.org/wiki/File:Mona_Lisa.png"
    assert picture.credit == ('Wikipedia\'s picture from the article "Mona Lisa" (File:Mona_Lisa.png; '
                              'Leonardo da Vinci, Public domain)')
    asked = [r for r in server.requests if "prop" in r]
    assert [r["prop"] for r in asked] == ["pageimages", "imageinfo"]
    assert asked[1]["titles"] == "File:Mona_Lisa.png" and "extmetadata" in asked[1]["iiprop"]
    assert {"image": "/images/Mona_Lisa.png"} in server.requests


@pytest.mark.parametrize("case, kwargs, why", [
    ("no lead image", {}, 'article "Mona Lisa" has no lead picture'),
    ("image server down", {"images": {"Mona Lisa": MONA_IMAGE}, "image_mode": "http500"}, "HTTP 500"),
    ("image too slow", {"images": {"Mona Lisa": MONA_IMAGE}, "image_mode": "slow"}, "no picture within 1 s"),
    ("not an image", {"images": {"Mona Lisa": {**MONA_IMAGE, "data": b"<html>captcha</html>"}}},
     "not a readable picture"),
    ("API error", {"mode": "error-json"}, "returned an error about the picture"),
    ("API down", {"mode": "http500"}, "HTTP 500"),
])
def test_live_failures_are_no_picture(tmp_path, mediawiki, case, kwargs, why):
    server = mediawiki(pages={"Mona Lisa": MONA_LISA_TEXT}, results=["Mona Lisa"], delay=3.0, **kwargs)
    with pytest.raises(NoPicture, match=why):
        LivePictures(api_url=server.api_url, timeout=1).lead_image("Mona Lisa", tmp_path)
    assert not list(tmp_path.iterdir()), "nothing is saved"


def test_unreachable_wikipedia_is_no_picture(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NoPicture, match="unreachable"):
        LivePictures(api_url=f"http://127.0.0.1:{port}/w/api.php", timeout=1).lead_image("Mona Lisa", tmp_path)


def live_result(tmp_path: Path, server: FakeMediaWiki, **ask: Any):
    agent = make_agent(tmp_path, search_llm("Leonardo da Vinci painted it."), live(server))
    return agent, agent.ask(text=QUESTION, **ask)


def test_a_live_search_turn_gets_the_picture_and_the_views_show_it(tmp_path, mediawiki, monkeypatch):
    server = mediawiki(pages={"Mona Lisa": MONA_LISA_TEXT}, results=["Mona Lisa"], images={"Mona Lisa": MONA_IMAGE})
    agent, r = live_result(tmp_path, server)
    assert r.error is None and r.answer.startswith("Leonardo da Vinci")
    pic = r.source_image
    assert isinstance(pic, SourceImage) and pic.origin == "live" and Path(pic.path).read_bytes() == PNG
    assert Path(pic.path).parent == Path(r.trace_path).parent and r.image_path != pic.path

    # askdraw ask: a Picture line (labelled Wikipedia's, not generated) and its credit
    import agent.cli as cli

    buffer = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(file=buffer, width=300, highlight=False, soft_wrap=True))
    cli._print_result(r)
    printed = buffer.getvalue().splitlines()
    assert f"Picture:    {pic.path} (Wikipedia's picture of the top source, not generated)" in printed
    assert f"Credit:     {pic.credit} - https://commons.wikimedia.org/wiki/File:Mona_Lisa.png" in printed
    assert any(line.startswith("Image:") and "NOT generated" in line for line in printed)  # the card, apart

    # the chat's panel (plain lines when piped)
    lines = answer_lines(facts(r), 1.0)
    assert f"Picture     Wikipedia's picture of the top source, not generated {pic.path}" in lines
    assert any(line.startswith("Credit      Wikipedia's picture from the article \"Mona Lisa\"") for line in lines)

    # the web page: the picture and its caption (the image slot keeps the card)
    *_, thread, picture, caption = list(run_turn(agent, QUESTION, None, [], None))[-1]
    assert picture and Path(picture).read_bytes() == PNG and Path(picture).name == "source_image.png"
    assert caption.startswith("**Wikipedia's picture**, not a generated image: Wikipedia's picture from the article")
    assert "Leonardo da Vinci, Public domain" in caption
    assert "See [the file's page (author, licence)](https://commons.wikimedia.org/wiki/File:Mona_Lisa.png)." in caption
    # a reload of the page brings the picture back with the conversation
    *_, restored_thread, again, again_caption = restored(agent, thread)
    assert restored_thread == thread and again == picture and again_caption == caption


def test_a_failed_picture_never_fails_the_turn(tmp_path, mediawiki):
    server = mediawiki(pages={"Mona Lisa": MONA_LISA_TEXT}, results=["Mona Lisa"],
                       images={"Mona Lisa": MONA_IMAGE}, image_mode="http500")
    _, r = live_result(tmp_path, server)
    assert r.error is None and r.answer.startswith("Leonardo da Vinci") and r.source_image is None
    assert not [n for n in r.notices if "picture" in n.lower() and "No image was generated" not in n]
    event = next(e for e in read_trace(Path(r.trace_path).parent) if e.step == "source_image")
    assert event.output == "no picture" and "HTTP 500" in event.reason and event.error is None
    kind, news = step_news(event)  # what the chat's progress line and the page's status say
    assert kind == "found" and news.startswith("no picture from the article: ") and "HTTP 500" in news
    assert not (Path(r.trace_path).parent / "source_image.png").exists()
    f = facts(r)
    assert not [line for line in plain_lines(f) if line.startswith(("Picture:", "Credit:"))]
    assert not [line for line in answer_lines(f, 1.0) if line.startswith(("Picture", "Credit"))]


def test_the_starter_like_corpus_shows_nothing_and_pretends_nothing(tmp_path):
    r = make_agent(tmp_path, search_llm("Leonardo da Vinci painted it."), FakeWiki([MONA_LISA])).ask(text=QUESTION)
    assert r.source_image is None and "source_image" not in r.timings_ms
    assert "source_image" not in [e.step for e in read_trace(Path(r.trace_path).parent)]
    assert not any(re.match(r"(Picture|Credit)", line) for line in plain_lines(facts(r)))


# -- the web page in a real browser ------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"


@pytest.mark.slow
def test_the_page_shows_wikipedias_picture_apart_from_the_image(tmp_path, mediawiki):
    """``askdraw serve``'s page (Gradio, in this process) in a headless Chromium: the article's
    picture appears under its own label and caption only once a turn has one."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    from agent.ui.server import serve

    server = mediawiki(pages={"Mona Lisa": MONA_LISA_TEXT}, results=["Mona Lisa"], images={"Mona Lisa": MONA_IMAGE})
    agent = make_agent(tmp_path, search_llm("Leonardo da Vinci painted it."), live(server))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    urls: list[str] = []
    demo = serve(port=port, agent=agent, preload=False, block=False, on_ready=urls.append)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-background-networking",
                                              "--disable-dev-shm-usage"])
            try:
                tab = browser.new_page(viewport={"width": 1280, "height": 1400})
                tab.goto(urls[0], wait_until="domcontentloaded")
                tab.locator("#question textarea").wait_for(timeout=30_000)
                expect(tab.locator("#source-image")).to_be_hidden()  # no turn, no picture
                tab.locator("#question textarea").fill(QUESTION)
                tab.locator("#ask").click()
                expect(tab.locator("#status")).to_contain_text("Done", timeout=60_000)
                picture = tab.locator("#source-image img")
                expect(picture).to_be_visible(timeout=10_000)
                expect(tab.locator("#source-image")).to_contain_text("Wikipedia's picture")
                expect(tab.locator("#source-image-credit")).to_contain_text("not a generated image")
                expect(tab.locator("#source-image-credit")).to_contain_text("Leonardo da Vinci, Public domain")
                served = tab.request.get(tab.evaluate("(el) => el.src", picture.element_handle())).body()
                assert served == PNG, "the page shows the picture the run saved"
                card = tab.locator("#image img")  # the generated image's slot still holds the card
                expect(card).to_be_visible()
                assert tab.request.get(tab.evaluate("(el) => el.src", card.element_handle())).body() != PNG
                tab.screenshot(path=str(tmp_path / "source_image.png"), full_page=True)
            finally:
                browser.close()
    finally:
        demo.close()
