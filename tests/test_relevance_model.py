"""Personal ranking as a pure function: profiles in, picks with reasons out."""

from __future__ import annotations

import pytest

from newsletter.relevance import (
    PaperText,
    Pick,
    ReaderProfile,
    RelevanceModel,
    TermStatistics,
    Topic,
)

PAPERS = [
    PaperText(
        "2611.00001",
        "Erasing Concepts from Text-to-Image Diffusion Models",
        "We remove unwanted concepts such as artistic styles from diffusion models "
        "by editing cross-attention weights, without retraining the model.",
        ("concept erasure", "diffusion models"),
    ),
    PaperText(
        "2611.00002",
        "Quadruped Locomotion with Sim-to-Real Reinforcement Learning",
        "A legged robot learns to walk over rough terrain in simulation and the policy "
        "transfers to hardware without fine-tuning.",
        ("legged locomotion", "sim-to-real"),
    ),
    PaperText(
        "2611.00003",
        "Compressing the KV Cache of Long-Context Language Models",
        "Serving long-context language models is dominated by the key-value cache; we "
        "quantise it to two bits with little loss.",
        ("kv cache", "quantisation"),
    ),
    PaperText(
        "2611.00004",
        "Machine Unlearning for Large Language Models",
        "We make language models forget hazardous knowledge with gradient ascent on a "
        "forget set while preserving general ability.",
        ("machine unlearning", "language models"),
    ),
    PaperText(
        "2611.00005",
        "Diffusion Policies for Dexterous Robot Manipulation",
        "A diffusion policy predicts action chunks for a dexterous robot hand from camera "
        "images and tactile signals.",
        ("diffusion policy", "robot manipulation"),
    ),
]
LIBRARY = {
    "2610.09998": PaperText(
        "2610.09998",
        "Learning Quadruped Gaits on Rough Terrain",
        "A legged robot learns robust walking gaits in simulation with domain randomisation.",
        ("legged locomotion",),
    ),
    "2610.09999": PaperText(
        "2610.09999",
        "Ablating Concepts in Text-to-Image Diffusion",
        "Concept ablation removes copyrighted styles and objects from pretrained "
        "text-to-image diffusion models.",
        ("concept ablation",),
    ),
}
# Recent papers other than today's: what "for you" must stand out from.
BACKGROUND = [
    PaperText(f"2610.0{n:04d}", title, abstract)
    for n, (title, abstract) in enumerate(
        [
            ("Scaling Laws for Language Models", "Loss falls as a power law in model size."),
            ("Video Generation with Latent Models", "We generate long videos with latent models."),
            ("Graph Neural Networks for Molecules", "Message passing predicts molecular energies."),
            ("Speech Recognition for Low-Resource Languages", "Self-supervised speech models."),
            (
                "Weather Forecasting with Transformers",
                "Medium-range forecasts from reanalysis data.",
            ),
            ("Evaluating Code Models on Repositories", "Models fix real bugs in large code bases."),
            ("Sparse Autoencoders Find Features", "Dictionary learning on model activations."),
            ("Retrieval-Augmented Generation at Scale", "Retrieval improves factuality of models."),
            (
                "Federated Learning with Private Updates",
                "Clients train models without sharing data.",
            ),
            ("Benchmarks for Multimodal Models", "A benchmark of image and text reasoning."),
        ]
    )
]
ROBOTICS = Topic(
    "Robotics",
    "Robots that perceive and act: manipulation, locomotion and learning from demonstration.",
    ("robot manipulation", "legged locomotion", "imitation learning", "sim-to-real"),
    ("cs.RO",),
)


@pytest.fixture(scope="module")
def model() -> RelevanceModel:
    corpus = [*PAPERS, *LIBRARY.values(), *BACKGROUND]
    statistics = TermStatistics.from_texts(p.text() for p in corpus)
    return RelevanceModel(
        statistics, PAPERS, topics=[ROBOTICS], library=LIBRARY, background=BACKGROUND
    )


def ids(picks: list[object]) -> list[str]:
    return [pick.arxiv_id for pick in picks]  # type: ignore[attr-defined]


def test_free_text_interests_pick_the_matching_papers_and_say_why(model: RelevanceModel) -> None:
    [picks] = model.rank([ReaderProfile(interests="concept erasure in diffusion models")])

    assert ids(picks)[0] == "2611.00001"
    assert picks[0].why.startswith("matches your interest in ")
    assert "concept" in picks[0].why or "erasure" in picks[0].why
    assert "2611.00003" not in ids(picks)  # KV caches have nothing to do with it


def test_a_topic_only_reader_gets_that_topic_and_is_told_so(model: RelevanceModel) -> None:
    [picks] = model.rank([ReaderProfile(topics=("robotics",))])  # any case

    assert set(ids(picks)[:2]) == {"2611.00002", "2611.00005"}
    assert all(pick.why == "in your topic Robotics" for pick in picks[:2])


def test_a_liked_paper_brings_its_neighbours_and_names_itself(model: RelevanceModel) -> None:
    [picks] = model.rank([ReaderProfile(liked=("2610.09999",))])

    assert ids(picks)[0] == "2611.00001"
    assert picks[0].why == "like “Ablating Concepts in Text-to-Image Diffusion”, which you liked"


def test_two_unrelated_interests_each_get_their_best_paper(model: RelevanceModel) -> None:
    profile = ReaderProfile(interests="KV cache quantisation. Also legged locomotion.")
    [picks] = model.rank([profile], count=2)

    assert set(ids(picks)) == {"2611.00002", "2611.00003"}


def test_a_disliked_paper_pushes_its_look_alikes_down(model: RelevanceModel) -> None:
    liking = ReaderProfile(topics=("Robotics",))
    disliking = ReaderProfile(topics=("Robotics",), disliked=("2611.00005",))
    before, after = model.rank([liking, disliking])

    assert "2611.00005" in ids(before)
    assert "2611.00005" not in ids(after)  # judged already: never offered again
    assert ids(after)[0] == "2611.00002"


def test_nothing_above_the_floor_means_an_honest_empty_section(model: RelevanceModel) -> None:
    [picks] = model.rank([ReaderProfile(interests="medieval tapestry conservation")])

    assert picks == []


@pytest.mark.parametrize(
    "profile",
    [
        ReaderProfile(),
        ReaderProfile(interests="   "),
        ReaderProfile(interests="the and of with"),  # only stop words
        ReaderProfile(topics=("No Such Topic",)),
        ReaderProfile(liked=("9999.99999", "not an id")),
        ReaderProfile(interests="<script>alert(1)</script> {{ 7*7 }} \x00 \u202e p < 0.05"),
    ],
)
def test_profiles_without_usable_signal_get_no_personal_picks(
    model: RelevanceModel, profile: ReaderProfile
) -> None:
    [picks] = model.rank([profile])

    assert picks == []


def test_many_readers_are_ranked_in_one_call_in_order(model: RelevanceModel) -> None:
    profiles = [
        ReaderProfile(topics=("Robotics",)),
        ReaderProfile(),
        ReaderProfile(interests="unlearning hazardous knowledge"),
    ] * 1500

    ranked = model.rank(profiles)

    assert len(ranked) == 4500
    assert ids(ranked[0])[0] in {"2611.00002", "2611.00005"}
    assert ranked[1] == []
    assert ids(ranked[2])[0] == "2611.00004"
    assert ranked[3] == ranked[0] and ranked[4498] == ranked[1]


def test_a_reader_who_judged_enough_papers_gets_their_own_model(model: RelevanceModel) -> None:
    judged = ReaderProfile(
        liked=("2610.09999", "2611.00004"),
        disliked=("2611.00003",),
    )
    assert model.uses_learned_model(judged)
    assert not model.uses_learned_model(ReaderProfile(liked=("2610.09999",)))

    [picks] = model.rank([judged])

    assert ids(picks)[0] == "2611.00001"  # like the concept-ablation paper they liked
    assert picks[0].why == "like “Ablating Concepts in Text-to-Image Diffusion”, which you liked"
    assert "2611.00003" not in ids(picks) and "2611.00004" not in ids(picks)  # judged already


def test_the_readme_states_the_constants_the_code_uses() -> None:
    from pathlib import Path

    from newsletter.editions.personal import BACKGROUND_PAPERS
    from newsletter.relevance import model as constants

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## How papers are ranked for each reader", 1)[1].split("\n## ", 1)[0]
    section = " ".join(section.split())  # line breaks as spaces
    weights = constants.KIND_WEIGHTS
    assert f"| `W_interests` | {weights[constants.Source.INTERESTS]:.1f} |" in section
    assert f"| `W_topic` | {weights[constants.Source.TOPIC]:.1f} |" in section
    assert f"| `W_liked` | {weights[constants.Source.LIKED]:.1f} |" in section
    assert f"| disliked | {constants.DISLIKED_WEIGHT:g} |" in section
    assert f"| skipped | {constants.SKIPPED_WEIGHT:g} |" in section
    assert f"{constants.DISLIKED_WEIGHT:g} · max_{{d ∈ disliked}}" in section
    assert f"{constants.SKIPPED_WEIGHT:g} · mean_" in section
    assert f"From {constants.LEARNED_MIN_JUDGEMENTS} judged papers on" in section
    learned = constants.LEARNED_WEIGHTS
    assert f"disliked {learned['disliked']:.1f}, skipped {learned['skipped']:g}" in section
    assert f"({learned['background']:g} each)" in section
    assert f"the {BACKGROUND_PAPERS} most recent stored papers" in section
    assert f"above {constants.FLOOR_QUANTILE:.0%} of those recent" in section


def test_the_why_of_a_readers_own_model_names_the_liked_paper_each_pick_resembles(
    model: RelevanceModel,
) -> None:
    judged = ReaderProfile(liked=("2610.09999", "2610.09998"), disliked=("2611.00003",))
    assert model.uses_learned_model(judged)

    [picks] = model.rank([judged])
    why = {pick.arxiv_id: pick.why for pick in picks}

    assert (
        why["2611.00001"] == "like “Ablating Concepts in Text-to-Image Diffusion”, which you liked"
    )
    assert why["2611.00002"] == "like “Learning Quadruped Gaits on Rough Terrain”, which you liked"


def test_the_why_quotes_the_phrase_of_the_readers_own_words_it_matches(
    model: RelevanceModel,
) -> None:
    profile = ReaderProfile(interests="KV cache quantisation. Also legged locomotion.")
    [picks] = model.rank([profile], count=2)
    why = {pick.arxiv_id: pick.why for pick in picks}

    assert why["2611.00002"] == "matches your interest in “legged locomotion”"
    assert why["2611.00003"] == "matches your interest in “KV cache quantisation”"


def test_the_why_line_names_the_words_the_score_used_even_when_a_reader_stored_the_paper() -> None:
    # Another reader pasted the KV-cache paper: their stored copy has no keywords.
    # A reader interested in "quantisation" (a keyword only) is picked that paper
    # for its keywords, and the why line must say so, not fall back to a vague line.
    corpus = [*PAPERS, *BACKGROUND]
    statistics = TermStatistics.from_texts(p.text() for p in corpus)
    kv_cache = PAPERS[2]
    bare = PaperText(kv_cache.arxiv_id, "Compressing the KV Cache", "We serve long contexts.")
    model = RelevanceModel(statistics, PAPERS, background=BACKGROUND)
    model.add_library({bare.arxiv_id: bare})

    judged, reader = model.rank(
        [
            ReaderProfile(disliked=(bare.arxiv_id,), interests="robots"),
            ReaderProfile(interests="quantisation"),
        ]
    )

    assert kv_cache.arxiv_id not in ids(judged)
    assert ids(reader)[0] == kv_cache.arxiv_id
    assert reader[0].why == "matches your interest in “quantisation”"


def test_readers_ranked_together_get_what_each_gets_alone(model: RelevanceModel) -> None:
    # Learned-model readers are solved in stacks of the same size and formula
    # readers in one pass: nobody's picks may depend on who else is ranked.
    profiles = [
        ReaderProfile(liked=("2610.09999", "2610.09998"), disliked=("2611.00003",)),
        ReaderProfile(interests="kv cache", liked=("2610.09998",), disliked=("2611.00004",)),
        ReaderProfile(
            topics=("Robotics",), liked=("2610.09999", "2610.09998"), disliked=("2611.00003",)
        ),
        ReaderProfile(interests="concept erasure in diffusion models"),
        ReaderProfile(),
        ReaderProfile(liked=("2610.09998",), disliked=("2611.00001", "2611.00004")),
    ]
    assert any(model.uses_learned_model(p) for p in profiles)

    together = model.rank(profiles, count=[3, 2, 4, 5, 5, 1])
    alone = [model.rank([p], count=c)[0] for p, c in zip(profiles, [3, 2, 4, 5, 5, 1], strict=True)]

    def shown(ranked: list[list[Pick]]) -> list[list[tuple[str, str, float]]]:
        # Stacked solves may differ from one reader's in the last bits of a score.
        return [[(p.arxiv_id, p.why, round(p.score, 9)) for p in picks] for picks in ranked]

    assert shown(together) == shown(alone)
    assert all(len(picks) <= c for picks, c in zip(together, [3, 2, 4, 5, 5, 1], strict=True))
    assert together[4] == []
