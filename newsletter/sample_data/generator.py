"""A deterministic generator of invented Daily Papers days, in the exact Hugging Face shape.

Every paper tells one invented study (`studies.py`) under a made-up method
name, with made-up authors and organisations; a seed fixes the whole day. The
same generator wrote the bundled `sample_day.json` and makes large days for
tests and benchmarks.
"""

from __future__ import annotations

import math
import random
import textwrap
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from newsletter.sample_data.studies import AREAS, Area, Study

# How often each area appears on a typical day: as often as it has studies, so that
# no title repeats within a stretch of that many papers.
_AREA_DECK = tuple(name for name, area in AREAS.items() for _ in area.studies)


@dataclass(frozen=True, slots=True)
class _SpecialPaper:
    """A paper written whole, at a fixed position of the day, whose text tests every stage."""

    position: int
    area: str
    study: Study
    hostile: bool = False  # markup or template syntax: for tests, never for the demo


# Titles that are valid text but tricky for any stage that interprets it: HTML,
# Jinja, LaTeX, ampersands and quotes must all reach the reader literally.
_SPECIAL_PAPERS: tuple[_SpecialPaper, ...] = (
    _SpecialPaper(
        2,
        "theory",
        Study(
            "Is Your Gain Significant? Re-Testing 300 Leaderboard Claims at p < 0.05",
            "Most papers that report a gain over a baseline never test whether it is larger "
            "than seed-to-seed variance.",
            "We re-run 300 published comparisons with five seeds each and apply a paired "
            "test at p < 0.05 & a Holm correction.",
            "Only 41% of the claimed improvements survive; gains below 0.5 points almost never do.",
            "shows that most small leaderboard gains are within seed-to-seed noise.",
            ("evaluation", "statistical significance", "benchmarks"),
        ),
    ),
    _SpecialPaper(
        7,
        "llm",
        Study(
            'Don\'t Trust the "Judge": Position Bias & Self-Preference in LLM-as-a-Judge',
            "Language models are widely used to grade other models' answers.",
            "We show that such judges prefer whichever answer is shown first and rate text "
            'they wrote themselves as "better" far more often than human annotators do.',
            "A swap-and-average protocol removes most of the position bias at twice the cost.",
            "measures how LLM judges favour the first answer and their own writing.",
            ("LLM-as-a-judge", "evaluation", "bias"),
        ),
    ),
    _SpecialPaper(
        13,
        "llm",
        Study(
            r"Sorting-Based Sparse Attention in $\mathcal{O}(n \log n)$ Time",
            r"Full self-attention costs $\mathcal{O}(n^2)$ in the sequence length $n$.",
            "We sort queries and keys along a learned projection and let each query attend "
            r"only to a window of its sorted neighbours, giving $\mathcal{O}(n \log n)$ time.",
            "On long-document benchmarks the method matches dense attention up to 128k tokens.",
            "makes attention sub-quadratic by sorting queries and keys.",
            ("sparse attention", "long context", "efficient transformers"),
        ),
    ),
    _SpecialPaper(
        19,
        "llm",
        Study(
            "Prompt Templates Are Code: Why {{ 7*7 }} Still Evaluates in Agent Frameworks",
            "Agent frameworks build prompts with template engines and often pass untrusted "
            "text through them.",
            "We find that inputs such as {{ 7*7 }} or {% if %} blocks are evaluated in 9 of "
            "14 popular frameworks, enabling prompt and code injection.",
            "We release a scanner and patches.",
            "finds template injection in popular agent frameworks.",
            ("prompt injection", "security", "LLM agents"),
        ),
        hostile=True,
    ),
    _SpecialPaper(
        26,
        "llm",
        Study(
            "<script>alert(1)</script> in the Wild: Do Code LLMs Write XSS-Safe Web Pages?",
            "We ask code language models to build small web pages from user stories.",
            "We probe the results with injected payloads such as <script>alert(1)</script> "
            "and <img src=x onerror=...>.",
            "Without explicit instructions, 62% of generated pages render user input "
            "unescaped; a short security preamble halves that rate.",
            "finds that code LLMs often write pages open to cross-site scripting.",
            ("code generation", "security", "XSS"),
        ),
        hostile=True,
    ),
)

_NAME_STEMS = (
    "Kestrel", "Heron", "Osprey", "Marlin", "Lynx", "Ibis", "Quokka", "Tern", "Puffin",
    "Okapi", "Narwhal", "Wren", "Merlin", "Caracal", "Gecko", "Finch", "Orca", "Pika",
    "Saola", "Jacana", "Axolotl", "Bittern", "Condor", "Dunlin", "Egret", "Fossa",
    "Gannet", "Hoopoe", "Kinkajou", "Lemur", "Magpie", "Numbat", "Oriole", "Plover",
)  # fmt: skip

_FIRST_NAMES = (
    "Ada", "Wei", "Priya", "Tomasz", "Amara", "Kenji", "Sofia", "Mateo", "Ngozi",
    "Lars", "Yuki", "Fatima", "Diego", "Mei", "Oluwaseun", "Hannah", "Arjun", "Elena",
    "Jonas", "Aiko", "Rafael", "Zainab", "Mikhail", "Chloé", "Samuel", "Leila",
    "Hyun-woo", "Ingrid", "Kwame", "Valentina", "Thanh", "Ravi", "Marta", "Emeka",
    "Sakura", "Noah", "Ayesha", "Björn", "Lucía", "Dmitri", "Xinyi", "Omar",
)  # fmt: skip

_LAST_NAMES = (
    "Zhou", "Raghunathan", "Wróbel", "Okafor", "Tanaka", "Albrecht", "Mendes",
    "Diallo", "Becker", "Quintero", "Sato", "Osei", "Lindqvist", "Haddad", "Kowalski",
    "Nakamura", "Fernández", "Chen", "Iyer", "Novak", "Adeyemi", "Petrov", "Moreau",
    "Kim", "Nguyen", "Schmidt", "Rossi", "Gupta", "Hansen", "Liu", "Abara", "Costa",
    "Yilmaz", "Park", "Jensen", "Wang", "Mensah", "Silva", "Ito", "Kaur", "Zhang",
)  # fmt: skip

_AVATAR_CDN = "https://cdn-avatars.huggingface.co/v1/production/uploads"

_ORGANISATIONS = (
    ("northlake-ai", "Northlake AI Lab"),
    ("vireo-research", "Vireo Research"),
    ("meridian-nlp", "Meridian University NLP Group"),
    ("fjordlabs", "Fjord Labs"),
    ("tessellate", "Tessellate Robotics"),
    ("quillmind", "Quillmind"),
    ("atlas-vision", "Atlas Vision Institute"),
    ("sablewave", "Sablewave Audio"),
)


class _Deck:
    """Draws without repeats until every item has been used, then reshuffles."""

    def __init__(self, rng: random.Random, items: tuple[str, ...]) -> None:
        self._rng = rng
        self._items = items
        self._left: list[str] = []

    def draw(self) -> str:
        """The next item."""
        if not self._left:
            self._left = list(self._items)
            self._rng.shuffle(self._left)
        return self._left.pop()


def generate_daily_papers(
    day: date, count: int, *, seed: int, hostile: bool = True
) -> list[dict[str, Any]]:
    """`count` invented papers featured on `day`, as the Daily Papers API would return them.

    `hostile` keeps the two papers whose titles carry markup and template syntax
    (tests want them; the demo's sample day does not).
    """
    if count < 0:
        raise ValueError("count must not be negative")
    if count > 90_000:
        raise ValueError("count is limited by the five-digit arXiv number space (90,000)")
    rng = random.Random(seed)
    numbers = rng.sample(range(10_000, 100_000), count)
    upvotes = _upvote_counts(rng, count)
    special = {paper.position: paper for paper in _SPECIAL_PAPERS if hostile or not paper.hostile}
    # Areas and their studies repeat only once a deck is exhausted, as on a real day.
    areas = _Deck(rng, _AREA_DECK)
    names = _Deck(rng, _NAME_STEMS)
    studies = {
        area_name: _Deck(rng, tuple(study.title for study in area.studies))
        for area_name, area in AREAS.items()
    }
    study_of = {study.title: study for area in AREAS.values() for study in area.studies}
    papers = []
    for index in range(count):
        if index in special:
            area_name, study = special[index].area, special[index].study
        else:
            area_name = areas.draw()
            study = study_of[studies[area_name].draw()]
        area = AREAS[area_name]
        name = names.draw() + rng.choice(area.name_suffixes)
        written_whole = index in special
        title = study.title if written_whole or rng.random() < 0.4 else f"{name}: {study.title}"
        papers.append(
            _make_paper(
                rng,
                day=day,
                name=name,
                number=numbers[index],
                area=area,
                study=study,
                upvotes=upvotes[index],
                title=title,
                written_whole=written_whole,
            )
        )
    return papers


def _upvote_counts(rng: random.Random, count: int) -> list[int]:
    """Heavy-tailed like the real page: median about 6, one standout near 150."""
    counts = [min(150, round(rng.lognormvariate(math.log(6), 1.0))) for _ in range(count)]
    if count >= 20:
        top = max(range(count), key=counts.__getitem__)
        counts[top] = rng.randint(135, 150)
    return counts


def _make_paper(
    rng: random.Random,
    *,
    day: date,
    name: str,
    number: int,
    area: Area,
    study: Study,
    upvotes: int,
    title: str,
    written_whole: bool,
) -> dict[str, Any]:
    published = datetime.combine(day, time(), tzinfo=UTC) - timedelta(
        days=rng.randint(1, 4), seconds=rng.randint(0, 86_399), milliseconds=rng.randint(0, 999)
    )
    submitted = datetime.combine(day, time(), tzinfo=UTC) + timedelta(
        seconds=rng.randint(1_800, 72_000), milliseconds=rng.randint(0, 999)
    )
    arxiv_id = f"{published:%y%m}.{number:05d}"
    numbers = {"name": name, "gain": rng.randint(2, 19), "win": rng.randint(55, 82)}
    if written_whole:  # a special paper: its text is literal (it may hold "{{ 7*7 }}")
        sentences = [study.problem, study.method, study.finding]
    else:
        sentences = [
            study.problem,
            study.method.format(**numbers),
            study.finding.format(**numbers),
        ]
    closing = rng.choice(
        (
            "Code and models are publicly available.",
            "We release our code, data and trained checkpoints.",
            "Ablations show that each component contributes to the gains.",
            "We discuss limitations and directions for future work.",
        )
    )
    abstract = " ".join([*sentences, closing])
    # The real API returns abstracts with the hard line breaks of the source.
    summary = "\n".join(textwrap.wrap(abstract, width=rng.randint(70, 90)))

    authors = _authors(rng)
    submitter = rng.choice(authors)
    organisation = rng.choice(_ORGANISATIONS) if rng.random() < 0.5 else None
    paper: dict[str, Any] = {
        "id": arxiv_id,
        "authors": authors,
        "mediaUrls": _media_urls(rng),
        "publishedAt": _timestamp(published),
        "submittedOnDailyAt": _timestamp(submitted),
        "title": title,
        "submittedOnDailyBy": _user(rng, submitter["name"], key="user"),
        "summary": summary,
        "upvotes": upvotes,
        "discussionId": _object_id(rng),
    }
    handle = organisation[0] if organisation else submitter["name"].split()[-1].lower()
    slug = name.lower().replace(" ", "-")
    # About half the papers link code; a project page mostly comes with it.
    has_code = rng.random() < 0.5
    if rng.random() < (0.5 if has_code else 0.1):
        paper["projectPage"] = f"https://{handle}.github.io/{slug}/"
    if has_code:
        paper["githubRepo"] = f"https://github.com/{handle}/{slug}"
        paper["githubStars"] = min(4_000, round(rng.paretovariate(1.1) * 20) - 20)
    if rng.random() < 0.85:
        # A special paper names no method to start the summary with.
        subject = "This paper" if written_whole else name
        paper["ai_summary"] = f"{subject} {study.summary}"
        paper["ai_keywords"] = [*study.keywords, area.topic_keyword]
    if organisation:
        paper["organization"] = _organisation(rng, organisation)

    element: dict[str, Any] = {
        "paper": paper,
        "publishedAt": _timestamp(published),
        "title": title,
        "summary": summary,
        "mediaUrls": paper["mediaUrls"],
        "thumbnail": f"https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/{arxiv_id}.png",
        "numComments": min(upvotes // 8, 12) + (1 if rng.random() < 0.3 else 0),
        "submittedBy": _user(rng, submitter["name"], key="name"),
    }
    if organisation:
        element["organization"] = paper["organization"]
    element["isAuthorParticipating"] = rng.random() < 0.4
    return element


def _authors(rng: random.Random) -> list[dict[str, Any]]:
    size = rng.choice((1, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 11))
    hide_some = rng.random() < 0.15
    authors = []
    for _ in range(size):
        authors.append(
            {
                "_id": _object_id(rng),
                "name": f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}",
                # Authors who have not claimed the paper are hidden on the
                # site but still listed by name in the API.
                "hidden": hide_some and rng.random() < 0.5,
            }
        )
    return authors


def _user(rng: random.Random, full_name: str, *, key: str) -> dict[str, Any]:
    handle = full_name.replace(" ", "").replace("-", "")[:16]
    # Avatars come both as absolute CDN URLs and as site-relative paths.
    avatar = (
        f"/avatars/{_hex(rng, 32)}.svg"
        if rng.random() < 0.5
        else f"{_AVATAR_CDN}/{_hex(rng, 24)}/avatar.png"
    )
    return {
        "_id": _object_id(rng),
        "avatarUrl": avatar,
        "fullname": full_name,
        key: handle,
        "type": "user",
    }


def _organisation(rng: random.Random, organisation: tuple[str, str]) -> dict[str, Any]:
    handle, full_name = organisation
    return {
        "_id": _object_id(rng),
        "name": handle,
        "fullname": full_name,
        "avatar": f"{_AVATAR_CDN}/{_hex(rng, 24)}/logo.png",
    }


def _media_urls(rng: random.Random) -> list[str]:
    if rng.random() < 0.4:
        return []
    upload = _hex(rng, 24)
    return [f"https://cdn-uploads.huggingface.co/production/uploads/{upload}/{_hex(rng, 16)}.webp"]


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _object_id(rng: random.Random) -> str:
    return _hex(rng, 24)


def _hex(rng: random.Random, length: int) -> str:
    return f"{rng.getrandbits(length * 4):0{length}x}"
