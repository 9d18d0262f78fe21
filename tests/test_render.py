"""The render stage, through the real templates: what a reader sees in both parts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest

from newsletter.core.errors import ConfigurationError, EditionNotFoundError, RenderError
from newsletter.core.resources import templates_path
from newsletter.core.templating import make_template_environment, render_email
from newsletter.render import (
    ENCODED_HTML_MAX_BYTES,
    RANKING_LINE,
    SUMMARY_MAX_CHARS,
    TITLE_MAX_CHARS,
    encoded_html_size,
    render_digest,
)
from newsletter.values import PaperRecord, PersonalField, RankedPaper, RenderedDigest

EDITION_DATE = date(2026, 11, 27)
BASE_URL = "https://news.example.org"
LINK_MARKER = "0123456789abcdef0123456789abcdef"
UNSUBSCRIBE = PersonalField.UNSUBSCRIBE_URL.placeholder(LINK_MARKER)
PREFERENCES = PersonalField.PREFERENCES_URL.placeholder(LINK_MARKER)
VIEW_URL = "https://news.example.org/editions/2026-11-27"
POSTAL_ADDRESS = "Daily ML Papers, 1 Example Street, 00000 Example City"
LIST_NAME = "Daily ML Papers"
HOSTILE = (
    "<script>alert(1)</script> p < 0.05 & \"quotes\" 'single' {{ 7*7 }} {% raw %} "
    "$\\frac{a}{b}$ 🤖 Çalışma naïve 学习"
)
AUTHOR = 'Zoë <b>O\'Brien</b> & "Q" {{ 7*7 }} 学'  # names are cut at 60 characters


class ParsedHtml(HTMLParser):
    """What a mail client would show: elements with attributes, text, and links."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self.links: list[tuple[str | None, str]] = []
        self._link: tuple[str | None, list[str]] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag == "a":
            self._link = (dict(attrs).get("href"), [])

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._link is not None:
            self.links.append((self._link[0], "".join(self._link[1]).strip()))
            self._link = None

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self._link is not None:
            self._link[1].append(data)

    def tags(self, name: str) -> list[dict[str, str | None]]:
        """Attributes of every element with this tag name."""
        return [attrs for tag, attrs in self.elements if tag == name]

    def hrefs_of(self, text: str) -> list[str | None]:
        """The targets of every link whose visible text is `text`."""
        return [href for href, label in self.links if label == text]


@pytest.fixture(scope="module")
def env() -> jinja2.Environment:
    """The environment over the project's real templates."""
    return make_template_environment(templates_path())


def make_paper(arxiv_id: str = "2611.01234", **fields: object) -> PaperRecord:
    """A realistic paper; tests override what they look at."""
    values: dict[str, object] = {
        "title": "Sparse Mixtures Learn Faster",
        "abstract": "We study sparse mixtures.\nThey learn faster than dense models.",
        "authors": ("Ada Example", "Grace Sample"),
        "upvotes": 12,
        "num_comments": 2,
    }
    values.update(fields)
    return PaperRecord(arxiv_id=arxiv_id, **values)  # type: ignore[arg-type]


def ranked_list(papers: Sequence[PaperRecord]) -> list[RankedPaper]:
    """The papers ranked in the given order."""
    return [
        RankedPaper(paper=paper, score=float(len(papers) - index), position=index + 1)
        for index, paper in enumerate(papers)
    ]


def render(env: jinja2.Environment, papers: Sequence[PaperRecord]) -> RenderedDigest:
    """The digest of these papers with the test's fixed settings."""
    return render_digest(
        env,
        ranked_list(papers),
        edition_date=EDITION_DATE,
        base_url=BASE_URL,
        postal_address=POSTAL_ADDRESS,
        list_name=LIST_NAME,
        link_marker=LINK_MARKER,
    )


def test_hostile_feed_text_shows_literally_in_both_parts(env: jinja2.Environment) -> None:
    paper = make_paper(
        title=f"Title {HOSTILE}",
        ai_summary=f"Summary {HOSTILE}",
        authors=(AUTHOR, "Second Author"),
    )
    digest = render(env, [paper])
    html = ParsedHtml(digest.html)
    visible = "\n".join(html.texts)

    assert html.hrefs_of(f"Title {HOSTILE}") == [paper.paper_url]
    assert f"Summary {HOSTILE}" in visible
    assert f"{AUTHOR}, Second Author (2 authors)" in visible
    assert f"Title {HOSTILE}\n" in digest.text
    assert f"    Summary {HOSTILE}\n" in digest.text
    assert f"    {AUTHOR}, Second Author (2 authors)\n" in digest.text
    # Nothing ran as a template or as markup.
    assert "49" not in visible + digest.text
    assert html.tags("script") == []
    assert "<script" not in digest.html.lower()


def test_characters_mjml_refuses_are_dropped_instead_of_breaking_the_render(
    env: jinja2.Environment,
) -> None:
    paper = make_paper(
        title="Null\x00 vertical\x0b tab and \ufffe non-character\ud800", abstract="a\x01b"
    )
    digest = render(env, [paper])
    assert ParsedHtml(digest.html).hrefs_of("Null vertical tab and non-character") == [
        paper.paper_url
    ]
    assert " 1. Null vertical tab and non-character\n" in digest.text


@pytest.mark.parametrize(
    "title",
    [
        # The fixed placeholder of renderings made before link markers existed,
        "Click NLPERSONALxUNSUBSCRIBExURL now",
        # the same split by a bidi control (stripped while cleaning the text),
        "Click NLPERSONALx\u202aUNSUBSCRIBExURL now",
        # and this rendering's own placeholder, were a feed ever to learn it.
        f"Click {UNSUBSCRIBE} now",
    ],
)
def test_feed_text_never_becomes_a_personal_link_slot(env: jinja2.Environment, title: str) -> None:
    digest = render_digest(
        env,
        ranked_list([make_paper(title=title)]),
        edition_date=EDITION_DATE,
        base_url=BASE_URL,
        postal_address=POSTAL_ADDRESS,
        list_name=LIST_NAME,
        link_marker="a1b2c3d4e5f60718293a4b5c6d7e8f90",
    )
    # A fresh marker: only the template's own links carry this rendering's placeholder.
    fresh = PersonalField.UNSUBSCRIBE_URL.placeholder("a1b2c3d4e5f60718293a4b5c6d7e8f90")
    assert digest.html.count(fresh) == 1
    assert digest.text.count(fresh) == 1
    assert ParsedHtml(digest.html).hrefs_of("Unsubscribe") == [fresh]
    html, text = digest.personalised(
        unsubscribe_url="https://news.example.org/u/SECRET", preferences_url="https://p/SECRET"
    )
    assert html.count("SECRET") == 2 and text.count("SECRET") == 2


def test_subject_is_the_top_title_first_on_one_line_under_60_characters(
    env: jinja2.Environment,
) -> None:
    short = render(env, [make_paper(title="Sparse Mixtures\nLearn Faster")])
    assert short.subject == "Sparse Mixtures Learn Faster"
    others = [make_paper(f"2611.{n:05d}", title=f"Other {n}", upvotes=1) for n in range(2, 11)]
    ten = render(env, [make_paper(title="Sparse Mixtures Learn Faster", upvotes=50), *others])
    assert ten.subject == "Sparse Mixtures Learn Faster + 9 more"

    injected = "A title\r\nBcc: victim@example.org\u2028and\x85more\u202eevil " + "word " * 40
    long = render(env, [make_paper(title=injected, upvotes=50), *others])
    assert long.subject.startswith("A title Bcc: victim@example.org and more")
    assert long.subject.endswith("… + 9 more")
    assert len(long.subject) <= 60
    assert "Daily ML Papers" not in long.subject + ten.subject
    for forbidden in ("\r", "\n", "\u2028", "\x85", "\u202e"):
        assert forbidden not in long.subject
    assert ParsedHtml(long.html).tags("title") != []


def test_twenty_papers_with_maximal_fields_stay_under_gmail_clipping(
    env: jinja2.Environment,
) -> None:
    filler = 'Équivariant attention & <diffusion> for 3D scenes: a study of "scale" — '
    papers = [
        make_paper(
            f"2611.{number:05d}",
            title=(filler * 10)[: TITLE_MAX_CHARS - 1] + str(number),
            abstract=filler * 60,
            ai_summary=None,
            authors=tuple(f"Researcher Number {i} Of A Very Large Consortium" for i in range(200)),
            upvotes=150,
            num_comments=40,
            github_stars=25_000,
            github_repo=f"https://github.com/some-organisation/project-{number}-official-code",
            thumbnail=f"https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2611.{number:05d}.png",
        )
        for number in range(1, 21)
    ]
    digest = render(env, papers)

    assert len(digest.html.encode("utf-8")) < 102_000
    assert encoded_html_size(digest.html) <= ENCODED_HTML_MAX_BYTES
    assert len(digest.papers) == 20
    html = ParsedHtml(digest.html)
    assert len(html.hrefs_of("PDF")) == 20
    assert html.hrefs_of("Unsubscribe") == [UNSUBSCRIBE]


def test_an_edition_too_big_for_gmail_drops_its_lowest_ranked_papers(
    env: jinja2.Environment,
) -> None:
    papers = [
        make_paper(f"2611.{n:05d}", title="Long " * 60, abstract="Words " * 80, ai_summary=None)
        for n in range(1, 101)
    ]
    digest = render(env, papers)

    assert encoded_html_size(digest.html) <= ENCODED_HTML_MAX_BYTES
    shown = len(digest.papers)
    assert 20 < shown < 100
    assert [item.position for item in digest.papers] == list(range(1, shown + 1))
    html = ParsedHtml(digest.html)
    assert len(html.hrefs_of("PDF")) == shown
    assert f"Today's {shown} most popular" in digest.text
    assert digest.subject.endswith(f" + {shown - 1} more")
    assert html.hrefs_of("Unsubscribe") == [UNSUBSCRIBE]


def test_structure_of_the_html_part(env: jinja2.Environment) -> None:
    papers = [
        make_paper("2611.00001", title="First", thumbnail="https://cdn.example.org/1.png"),
        make_paper("2611.00002", title="Second", thumbnail="https://cdn.example.org/2.png"),
    ]
    digest = render(env, papers)
    html = ParsedHtml(digest.html)

    assert html.tags("html")[0]["lang"] == "en"
    images = html.tags("img")
    assert [image["src"] for image in images] == [
        "https://cdn.example.org/1.png",
        "https://cdn.example.org/2.png",
    ]
    # Decorative: the title beside each says it all, and blocked images show no text.
    assert [image.get("alt") for image in images] == ["", ""]
    metas = {attrs.get("name"): attrs.get("content") for attrs in html.tags("meta")}
    assert metas["color-scheme"] == "light dark"
    assert metas["supported-color-schemes"] == "light dark"
    assert "prefers-color-scheme: dark" in digest.html
    assert "max-width:600px" in digest.html
    # One column per card: no empty image column beside the text when images are blocked.
    assert "mj-column-per-32" not in digest.html
    assert "@media only screen and (min-width:480px)" in digest.html

    assert html.hrefs_of("Unsubscribe") == [UNSUBSCRIBE]
    assert html.hrefs_of("Manage preferences") == [PREFERENCES]
    assert html.hrefs_of("View in your browser") == [VIEW_URL]
    assert html.hrefs_of("View in browser") == [VIEW_URL]
    visible = " ".join(html.texts)
    assert POSTAL_ADDRESS in visible
    assert "You are receiving this because you subscribed to Daily ML Papers." in visible
    assert "27 Nov 2026" in visible
    assert "Today's 2 most popular new machine-learning papers on Hugging Face." in visible
    assert RANKING_LINE in visible
    assert html.hrefs_of("Discussion on Hugging Face") == [
        "https://huggingface.co/papers/2611.00001",
        "https://huggingface.co/papers/2611.00002",
    ]
    assert "27 Nov 2026: First · Second" in html.texts  # the preheader


def test_structure_of_the_text_part(env: jinja2.Environment) -> None:
    digest = render(env, [make_paper(github_repo="https://github.com/example/sparse")])
    text = digest.text
    assert text.startswith("Daily ML Papers — 27 Nov 2026\n")
    assert f"View in your browser: {VIEW_URL}\n" in text
    assert " 1. Sparse Mixtures Learn Faster\n" in text
    assert "\n    12 upvotes · 2 comments\n" in text
    # Each link says where it goes: no bare "Paper:" beside "arXiv:" and "PDF:".
    assert "    arXiv abstract:          https://arxiv.org/abs/2611.01234\n" in text
    assert "    arXiv PDF:               https://arxiv.org/pdf/2611.01234\n" in text
    assert "    Code:                    https://github.com/example/sparse\n" in text
    assert "    Hugging Face discussion: https://huggingface.co/papers/2611.01234\n" in text
    assert "Paper:" not in text
    assert "You are receiving this because you subscribed to Daily ML Papers.\n" in text
    assert f"Unsubscribe: {UNSUBSCRIBE}\n" in text
    assert f"Manage preferences: {PREFERENCES}\n" in text
    assert f"View in browser: {VIEW_URL}\n" in text
    assert text.rstrip().endswith(POSTAL_ADDRESS)
    assert "<" not in text


def test_personalised_digest_carries_the_readers_own_links(env: jinja2.Environment) -> None:
    digest = render(env, [make_paper()])
    html, text = digest.personalised(
        unsubscribe_url="https://news.example.org/unsubscribe/tok?a=1&b=2",
        preferences_url="https://news.example.org/preferences/tok",
    )
    parsed = ParsedHtml(html)
    assert parsed.hrefs_of("Unsubscribe") == ["https://news.example.org/unsubscribe/tok?a=1&b=2"]
    assert parsed.hrefs_of("Manage preferences") == ["https://news.example.org/preferences/tok"]
    assert "Unsubscribe: https://news.example.org/unsubscribe/tok?a=1&b=2\n" in text


def test_paper_links_point_at_hugging_face_and_arxiv(env: jinja2.Environment) -> None:
    digest = render(env, [make_paper("2611.04321")])
    html = ParsedHtml(digest.html)
    assert html.hrefs_of("Sparse Mixtures Learn Faster") == [
        "https://huggingface.co/papers/2611.04321"
    ]
    assert html.hrefs_of("arXiv") == ["https://arxiv.org/abs/2611.04321"]
    assert html.hrefs_of("PDF") == ["https://arxiv.org/pdf/2611.04321"]
    assert "12 upvotes · 2 comments" in " ".join(html.texts)


def test_code_link_only_for_papers_with_a_web_repository(env: jinja2.Environment) -> None:
    papers = [
        make_paper("2611.00001", github_repo="https://github.com/example/one", github_stars=1),
        make_paper("2611.00002"),
        make_paper("2611.00003", github_repo="javascript:alert(1)"),
    ]
    digest = render(env, papers)
    html = ParsedHtml(digest.html)
    assert html.hrefs_of("Code") == ["https://github.com/example/one"]
    assert digest.text.count("Code:") == 1
    assert "javascript" not in digest.html + digest.text
    assert "12 upvotes · 2 comments · 1 GitHub star" in " ".join(html.texts)


@pytest.mark.parametrize(
    ("authors", "shown"),
    [
        (("Ada", "Grace", "Alan", "Edsger"), "Ada, Grace, Alan et al. (4 authors)"),
        (("Ada", "Grace", "Alan"), "Ada, Grace, Alan (3 authors)"),
        (("Ada",), "Ada"),
    ],
)
def test_first_three_authors_then_et_al(
    env: jinja2.Environment, authors: tuple[str, ...], shown: str
) -> None:
    digest = render(env, [make_paper(authors=authors)])
    assert shown in ParsedHtml(digest.html).texts
    assert f"\n    {shown}\n" in digest.text


def test_summary_prefers_the_ai_summary(env: jinja2.Environment) -> None:
    digest = render(env, [make_paper(ai_summary="One sentence about it.")])
    assert "One sentence about it." in ParsedHtml(digest.html).texts
    assert "We study sparse mixtures" not in digest.html + digest.text


def test_summary_falls_back_to_the_abstract_cut_at_a_word_boundary(
    env: jinja2.Environment,
) -> None:
    abstract = " ".join(f"word{n}" for n in range(200)).replace("word7 ", "word7\n")
    digest = render(env, [make_paper(abstract=abstract, ai_summary=None)])
    one_line = " ".join(abstract.split())

    [summary] = [text for text in ParsedHtml(digest.html).texts if text.startswith("word0 ")]
    assert summary.endswith("…")
    assert len(summary) <= SUMMARY_MAX_CHARS
    kept = summary.removesuffix("…")
    assert one_line.startswith(kept)
    assert one_line[len(kept)] == " "  # the cut fell between words
    assert len(kept) > SUMMARY_MAX_CHARS - 12
    assert f"   {summary}\n" in digest.text


def test_short_abstract_is_shown_whole_on_one_line(env: jinja2.Environment) -> None:
    digest = render(env, [make_paper(ai_summary=None)])
    expected = "We study sparse mixtures. They learn faster than dense models."
    assert expected in ParsedHtml(digest.html).texts
    assert f"   {expected}\n" in digest.text


def test_papers_are_shown_in_position_order(env: jinja2.Environment) -> None:
    first, second = (
        make_paper("2611.00001", title="First"),
        make_paper("2611.00002", title="Second"),
    )
    ranked = list(reversed(ranked_list([first, second])))
    digest = render_digest(
        env,
        ranked,
        edition_date=EDITION_DATE,
        base_url=BASE_URL + "/",
        postal_address=POSTAL_ADDRESS,
        list_name=LIST_NAME,
        link_marker=LINK_MARKER,
    )
    assert digest.text.index("1. First") < digest.text.index("2. Second")
    assert [item.paper.title for item in digest.papers] == ["First", "Second"]
    assert digest.subject == "First + 1 more"
    assert ParsedHtml(digest.html).hrefs_of("View in browser") == [VIEW_URL]


def test_an_empty_edition_is_an_error_that_says_what_to_do(env: jinja2.Environment) -> None:
    with pytest.raises(EditionNotFoundError, match="no papers to render for 2026-11-27"):
        render(env, [])


def test_autoescape_is_on_for_markup_and_off_for_text(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "note.mjml.j2").write_text(
        '<mjml lang="en"><mj-body><mj-section><mj-column>'
        "<mj-text>{{ value }}</mj-text></mj-column></mj-section></mj-body></mjml>"
    )
    (tmp_path / "email" / "note.txt.j2").write_text("{{ value }}\n")
    (tmp_path / "page.html.j2").write_text("<p>{{ value }}</p>")
    env = make_template_environment(tmp_path)

    html, text = render_email(env, "note", {"value": HOSTILE})
    assert HOSTILE in ParsedHtml(html).texts
    assert text == f"{HOSTILE}\n"
    assert env.get_template("page.html.j2").render(value="<b>") == "<p>&lt;b&gt;</p>"


def test_any_email_template_survives_characters_mjml_refuses(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "note.mjml.j2").write_text(
        '<mjml lang="en"><mj-body><mj-section><mj-column>'
        "<mj-text>{{ value }}</mj-text></mj-column></mj-section></mj-body></mjml>"
    )
    (tmp_path / "email" / "note.txt.j2").write_text("{{ value }}\n")
    env = make_template_environment(tmp_path)

    html, text = render_email(env, "note", {"value": "Dear\x0b reader\x00\ufffe & co"})
    assert "Dear reader & co" in ParsedHtml(html).texts
    assert text == "Dear reader & co\n"


def test_render_errors_name_the_template_and_the_problem(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "broken.mjml.j2").write_text(
        '<mjml lang="en"><mj-body><mj-text>a < b</mj-text></mj-body></mjml>'
    )
    (tmp_path / "email" / "broken.txt.j2").write_text("text\n")
    (tmp_path / "email" / "needy.mjml.j2").write_text("{{ missing }}")
    (tmp_path / "email" / "needy.txt.j2").write_text("")
    env = make_template_environment(tmp_path)

    with pytest.raises(RenderError, match=r"MJML could not compile email/broken\.mjml\.j2"):
        render_email(env, "broken", {})
    with pytest.raises(RenderError, match=r"email/absent\.mjml\.j2 not found"):
        render_email(env, "absent", {})
    with pytest.raises(RenderError, match=r"needy\.mjml\.j2 needs a value.*missing"):
        render_email(env, "needy", {})


def test_a_missing_templates_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="NEWSLETTER_TEMPLATES_DIR"):
        make_template_environment(tmp_path / "nowhere")
