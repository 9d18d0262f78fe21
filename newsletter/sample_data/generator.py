"""A deterministic generator of invented Daily Papers days, in the exact Hugging Face shape.

Every title, author, organisation and abstract is made up from the phrase
pools below; a seed fixes the whole day. The same generator wrote the bundled
`sample_day.json` and makes large days for tests and benchmarks.
"""

from __future__ import annotations

import math
import random
import textwrap
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any


@dataclass(frozen=True)
class _Topic:
    """Phrase pools for one research area; abstracts are assembled from them."""

    cores: tuple[str, ...]  # title bodies: "Distilling X into Y"
    goals: tuple[str, ...]  # title endings: "for Z"
    problems: tuple[str, ...]
    methods: tuple[str, ...]  # "{name}" is the method's name
    findings: tuple[str, ...]  # "{gain}" is a number
    summaries: tuple[str, ...]  # ai_summary endings after the method name
    keywords: tuple[str, ...]
    name_suffixes: tuple[str, ...]


_TOPICS: dict[str, _Topic] = {
    "llm": _Topic(
        cores=(
            "Distilling Chain-of-Thought into Small Language Models",
            "Scaling Test-Time Compute with Verifier-Guided Search",
            "Compressing the KV Cache of Long-Context Transformers",
            "Teaching Language Models to Abstain",
            "Aligning Language Models with Sparse Human Feedback",
            "Speculative Decoding with Self-Drafting Heads",
            "Measuring Contamination in Reasoning Benchmarks",
            "Routing Tokens Across Mixture-of-Experts Layers",
        ),
        goals=(
            "for On-Device Reasoning",
            "at Million-Token Scale",
            "Without Reward Models",
            "in Multilingual Settings",
            "under a Fixed Compute Budget",
            "for Agentic Tool Use",
        ),
        problems=(
            "Large language models reason well when they are allowed to think at length, "
            "but the cost of long generations grows quickly with model size.",
            "Instruction-tuned language models often answer confidently even when the "
            "question lies outside what they know.",
            "Serving long-context language models is dominated by the memory traffic of "
            "the key-value cache rather than by arithmetic.",
            "Preference optimisation methods assume dense, consistent feedback, which is "
            "rarely available outside curated datasets.",
            "Benchmark scores for reasoning models are hard to interpret when test items "
            "may have leaked into pre-training corpora.",
        ),
        methods=(
            "We introduce {name}, which trains a small student to imitate only the steps of "
            "a teacher's reasoning that change its final answer.",
            "We propose {name}, a decoding scheme in which a lightweight verifier scores "
            "partial solutions and prunes unpromising branches early.",
            "We present {name}, a learned eviction policy that keeps the cache entries "
            "future queries are most likely to attend to.",
            "We describe {name}, a training recipe that rewards the model for declining to "
            "answer when its calibrated confidence is low.",
            "We develop {name}, a router that balances expert load without auxiliary losses "
            "by treating assignment as an online matching problem.",
        ),
        findings=(
            "On GSM-Hard and MATH-500, {name} matches the teacher within {gain} points "
            "while generating three times fewer tokens.",
            "Across six long-context benchmarks, {name} cuts memory use by {gain}% with "
            "no measurable loss in accuracy.",
            "{name} lowers the rate of confidently wrong answers by {gain}% on held-out "
            "domains while keeping helpfulness unchanged.",
            "At equal compute, {name} improves pass@1 by {gain} points over best-of-n "
            "sampling on competition programming problems.",
        ),
        summaries=(
            "makes small language models reason almost as well as large ones at a fraction "
            "of the generation cost.",
            "reduces the memory footprint of long-context inference without retraining.",
            "teaches language models to say when they do not know.",
            "improves reasoning accuracy at a fixed compute budget by pruning bad branches.",
        ),
        keywords=(
            "large language models",
            "chain-of-thought",
            "knowledge distillation",
            "KV cache",
            "test-time compute",
            "preference optimization",
            "mixture-of-experts",
            "speculative decoding",
            "calibration",
            "LLMs",
        ),
        name_suffixes=("", "-7B", "-R1", "-Lite", "LM"),
    ),
    "diffusion": _Topic(
        cores=(
            "Few-Step Sampling for Latent Diffusion Models",
            "Consistency Distillation of Video Diffusion Models",
            "Training-Free Guidance for Text-to-Image Diffusion",
            "Rectified Flows with Learned Couplings",
            "Editing Images by Inverting Diffusion Trajectories",
            "Preference Alignment of Diffusion Models",
        ),
        goals=(
            "at High Resolution",
            "with Temporal Consistency",
            "Without Retraining",
            "for Compositional Prompts",
            "in Four Steps",
        ),
        problems=(
            "Diffusion models produce high-quality images but need dozens of network "
            "evaluations per sample.",
            "Text-to-image models still struggle with prompts that combine several objects, "
            "counts and spatial relations.",
            "Video diffusion models flicker when the number of sampling steps is reduced.",
            "Fine-tuning diffusion models on human preferences tends to collapse diversity.",
        ),
        methods=(
            "We propose {name}, a distillation objective that aligns the student's one-step "
            "predictions with the teacher's probability-flow trajectory.",
            "We introduce {name}, a guidance term computed from cross-attention maps that "
            "needs no additional training.",
            "We present {name}, which learns the coupling between noise and data jointly "
            "with the flow, straightening sampling paths.",
            "We describe {name}, a regularised preference objective that keeps the model "
            "close to its pre-trained distribution.",
        ),
        findings=(
            "{name} reaches an FID of {gain} on ImageNet 256x256 with four sampling steps.",
            "On T2I-CompBench, {name} improves attribute binding by {gain}% over the base model.",
            "Human raters prefer {name} in {win}% of pairwise comparisons against strong "
            "baselines.",
        ),
        summaries=(
            "generates high-quality images in a handful of sampling steps.",
            "improves how text-to-image models follow compositional prompts without retraining.",
            "aligns diffusion models with human preferences while preserving diversity.",
        ),
        keywords=(
            "diffusion models",
            "flow matching",
            "consistency distillation",
            "text-to-image generation",
            "classifier-free guidance",
            "video generation",
            "latent diffusion",
            "Diffusion",
        ),
        name_suffixes=("", "-XL", "-Flow", "Diff", "-Turbo"),
    ),
    "vision": _Topic(
        cores=(
            "Open-Vocabulary Segmentation with Frozen Vision-Language Models",
            "Self-Supervised Pre-Training of Vision Transformers on Video",
            "Monocular Depth Estimation from Foundation Features",
            "Grounding Referring Expressions in High-Resolution Images",
            "Efficient 3D Gaussian Splatting",
            "Token Merging for Vision-Language Models",
        ),
        goals=(
            "in the Wild",
            "for Dense Prediction",
            "at Real-Time Frame Rates",
            "Without Labels",
            "Across Domains",
        ),
        problems=(
            "Vision-language models recognise objects well but localise them poorly.",
            "Dense prediction tasks still depend on costly pixel-level annotation.",
            "Multimodal models spend most of their compute on redundant image tokens.",
            "Reconstructing scenes from casual phone captures remains slow and brittle.",
        ),
        methods=(
            "We introduce {name}, which reads segmentation masks directly from the "
            "attention maps of a frozen vision-language model.",
            "We propose {name}, a masked prediction objective over space-time tubes that "
            "learns from unlabelled video.",
            "We present {name}, a token merging scheme that adapts the number of visual "
            "tokens to the content of each image.",
            "We describe {name}, a densification strategy for Gaussian splatting driven by "
            "multi-view photometric error.",
        ),
        findings=(
            "{name} improves mIoU by {gain} points on ADE20K-847 in the open-vocabulary setting.",
            "{name} halves the number of visual tokens while losing under {gain}% accuracy "
            "on standard VQA benchmarks.",
            "Linear probes on {name} features outperform prior self-supervised models by "
            "{gain} points on Kinetics-400.",
        ),
        summaries=(
            "segments any named object using a frozen vision-language model.",
            "makes multimodal models faster by merging redundant image tokens.",
            "learns strong visual features from unlabelled video.",
        ),
        keywords=(
            "vision transformers",
            "vision-language models",
            "open-vocabulary segmentation",
            "self-supervised learning",
            "Gaussian splatting",
            "depth estimation",
            "Computer vision",
        ),
        name_suffixes=("", "-ViT", "-Seg", "-VL", "3D"),
    ),
    "robotics": _Topic(
        cores=(
            "Vision-Language-Action Models",
            "Learning Dexterous Manipulation from Human Videos",
            "Sim-to-Real Transfer of Legged Locomotion Policies",
            "Diffusion Policies with Tactile Feedback",
            "Language-Conditioned Mobile Manipulation",
        ),
        goals=(
            "for Long-Horizon Tasks",
            "from a Single Demonstration",
            "on Low-Cost Hardware",
            "in Cluttered Homes",
        ),
        problems=(
            "Robot policies trained from demonstrations rarely generalise beyond the "
            "objects and scenes they were collected in.",
            "Collecting teleoperated data for dexterous hands is slow and expensive.",
            "Policies trained in simulation often fail on contact-rich tasks in the real world.",
        ),
        methods=(
            "We present {name}, a vision-language-action model that predicts chunks of "
            "future actions conditioned on a language instruction.",
            "We introduce {name}, which retargets hand poses from egocentric human video "
            "to a robot hand and refines them with reinforcement learning.",
            "We propose {name}, a diffusion policy that fuses tactile images with camera "
            "views to handle occluded contacts.",
        ),
        findings=(
            "On a real robot, {name} succeeds in {win}% of trials on unseen objects.",
            "{name} transfers zero-shot to hardware and improves success by {gain} points "
            "over the strongest baseline.",
        ),
        summaries=(
            "lets robots follow language instructions on long, multi-step tasks.",
            "learns dexterous manipulation from ordinary human videos.",
            "uses touch to make robot manipulation reliable under occlusion.",
        ),
        keywords=(
            "robot manipulation",
            "vision-language-action models",
            "imitation learning",
            "sim-to-real transfer",
            "diffusion policy",
            "Robotics",
        ),
        name_suffixes=("", "-VLA", "Bot", "-Act"),
    ),
    "rl": _Topic(
        cores=(
            "Offline Reinforcement Learning with Conservative World Models",
            "Exploration by Predicting Future Representations",
            "Reward Shaping from Language Feedback",
            "Policy Optimisation for Reasoning Models",
            "Multi-Agent Credit Assignment",
        ),
        goals=(
            "with Sparse Rewards",
            "at Scale",
            "Without Value Functions",
            "in Partially Observable Environments",
        ),
        problems=(
            "Offline reinforcement learning overestimates the value of actions that the "
            "dataset never shows.",
            "Exploration remains the main obstacle in environments with sparse rewards.",
            "Group-relative policy optimisation is unstable when most sampled answers "
            "receive the same reward.",
        ),
        methods=(
            "We propose {name}, which penalises model rollouts in proportion to the "
            "disagreement of an ensemble of learned dynamics models.",
            "We introduce {name}, an intrinsic reward based on the error of predicting "
            "future latent states.",
            "We present {name}, a variance-aware advantage estimator that keeps a "
            "learning signal when rewards are nearly constant.",
        ),
        findings=(
            "{name} sets a new state of the art on D4RL, improving the average normalised "
            "score by {gain} points.",
            "On hard-exploration Atari games, {name} improves the median human-normalised "
            "score by {gain}%.",
            "{name} improves reasoning accuracy by {gain} points on AIME problems at equal "
            "training compute.",
        ),
        summaries=(
            "makes offline reinforcement learning safer by distrusting uncertain rollouts.",
            "explores sparse-reward environments by predicting future representations.",
            "stabilises policy optimisation for reasoning language models.",
        ),
        keywords=(
            "reinforcement learning",
            "offline RL",
            "world models",
            "exploration",
            "policy optimization",
            "reward shaping",
            "Reinforcement learning",
        ),
        name_suffixes=("", "-RL", "-PO", "-Zero"),
    ),
    "speech": _Topic(
        cores=(
            "Streaming Speech Recognition with Causal Transformers",
            "Zero-Shot Voice Conversion with Neural Codecs",
            "Full-Duplex Spoken Dialogue Models",
            "Speech Enhancement with Flow Matching",
            "Low-Resource Speech Translation",
        ),
        goals=(
            "for Low-Latency Assistants",
            "Across 100 Languages",
            "in Noisy Environments",
            "with Discrete Audio Tokens",
        ),
        problems=(
            "Spoken dialogue systems still wait for the user to stop speaking before they respond.",
            "Speech recognisers degrade sharply for low-resource languages and accented speech.",
            "Neural audio codecs trade reconstruction quality against the number of tokens "
            "per second.",
        ),
        methods=(
            "We introduce {name}, a model that listens and speaks at the same time by "
            "interleaving input and output audio tokens.",
            "We propose {name}, a causal encoder with chunked attention that emits "
            "transcripts with bounded delay.",
            "We present {name}, a conditional flow-matching model that maps noisy speech "
            "to clean speech in a few steps.",
        ),
        findings=(
            "{name} reduces word error rate by {gain}% relative on FLEURS.",
            "Listeners rate {name} higher in naturalness, with a MOS gain of 0.{gain}.",
            "{name} answers with a median latency of {gain}0 ms in live conversations.",
        ),
        summaries=(
            "holds natural, overlapping spoken conversations with low latency.",
            "transcribes speech as it arrives with bounded delay.",
            "cleans noisy speech in a few sampling steps.",
        ),
        keywords=(
            "speech recognition",
            "spoken dialogue",
            "neural audio codec",
            "text-to-speech",
            "speech enhancement",
            "Speech and audio",
        ),
        name_suffixes=("", "-Voice", "Speech", "-Duplex"),
    ),
    "theory": _Topic(
        cores=(
            "Generalisation Bounds for In-Context Learning",
            "A Theory of Grokking in Modular Arithmetic",
            "Sample Complexity of Learning from Preferences",
            "Implicit Bias of Adaptive Optimisers",
        ),
        goals=(
            "in Overparameterised Networks",
            "Beyond the Lazy Regime",
            "with Heavy-Tailed Noise",
        ),
        problems=(
            "Why transformers can learn new tasks from a few examples in their prompt is "
            "still poorly understood.",
            "Networks trained on algorithmic tasks often generalise long after they have "
            "memorised the training set.",
        ),
        methods=(
            "We develop {name}, an analysis that treats the prompt as a sample from a "
            "task distribution and bounds the excess risk of in-context prediction.",
            "We study a solvable model, {name}, in which delayed generalisation arises "
            "from the competition between two circuits.",
        ),
        findings=(
            "Our bounds predict the measured error of trained models within {gain}% across "
            "four orders of magnitude of prompt length.",
            "The theory explains the {gain}-fold delay in generalisation observed in experiments.",
        ),
        summaries=(
            "explains when and why in-context learning generalises.",
            "gives a solvable model of delayed generalisation.",
        ),
        keywords=(
            "learning theory",
            "in-context learning",
            "generalization bounds",
            "grokking",
            "optimization",
            "Theory",
        ),
        name_suffixes=("",),
    ),
}

# How often each area appears on a typical day.
_TOPIC_WEIGHTS = {
    "llm": 10,
    "diffusion": 5,
    "vision": 6,
    "robotics": 4,
    "rl": 4,
    "speech": 3,
    "theory": 2,
}

# Titles that are valid text but dangerous to any stage that interprets it:
# HTML, Jinja, LaTeX, ampersands and quotes must all reach the reader literally.
_HOSTILE_PAPERS: tuple[tuple[int, str, str, str], ...] = (
    (
        2,
        "theory",
        "Is Your Gain Significant? Re-Testing 300 Leaderboard Claims at p < 0.05",
        "Most papers that report a gain over a baseline never test whether it is larger "
        "than seed-to-seed variance. We re-run 300 published comparisons with five seeds "
        "each and apply a paired test at p < 0.05 & a Holm correction. Only 41% of the "
        "claimed improvements survive; gains below 0.5 points almost never do.",
    ),
    (
        7,
        "llm",
        'Don\'t Trust the "Judge": Position Bias & Self-Preference in LLM-as-a-Judge',
        "Language models are widely used to grade other models' answers. We show that "
        "such judges prefer whichever answer is shown first and rate text they wrote "
        'themselves as "better" far more often than human annotators do. A swap-and-'
        "average protocol removes most of the position bias at twice the cost.",
    ),
    (
        13,
        "llm",
        r"Sorting-Based Sparse Attention in $\mathcal{O}(n \log n)$ Time",
        r"Full self-attention costs $\mathcal{O}(n^2)$ in the sequence length $n$. We "
        "sort queries and keys along a learned projection and let each query attend only "
        r"to a window of its sorted neighbours, giving $\mathcal{O}(n \log n)$ time. On "
        "long-document benchmarks the method matches dense attention up to 128k tokens.",
    ),
    (
        19,
        "llm",
        "Prompt Templates Are Code: Why {{ 7*7 }} Still Evaluates in Agent Frameworks",
        "Agent frameworks build prompts with template engines and often pass untrusted "
        "text through them. We find that inputs such as {{ 7*7 }} or {% if %} blocks are "
        "evaluated in 9 of 14 popular frameworks, enabling prompt and code injection. We "
        "release a scanner and patches.",
    ),
    (
        26,
        "llm",
        "<script>alert(1)</script> in the Wild: Do Code LLMs Write XSS-Safe Web Pages?",
        "We ask code language models to build small web pages from user stories and "
        "probe the results with injected payloads such as <script>alert(1)</script> and "
        "<img src=x onerror=...>. Without explicit instructions, 62% of generated pages "
        "render user input unescaped; a short security preamble halves that rate.",
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


def generate_daily_papers(day: date, count: int, *, seed: int) -> list[dict[str, Any]]:
    """`count` invented papers featured on `day`, as the Daily Papers API would return them."""
    if count < 0:
        raise ValueError("count must not be negative")
    if count > 90_000:
        raise ValueError("count is limited by the five-digit arXiv number space (90,000)")
    rng = random.Random(seed)
    numbers = rng.sample(range(10_000, 100_000), count)
    upvotes = _upvote_counts(rng, count)
    hostile = {position: (topic, title, text) for position, topic, title, text in _HOSTILE_PAPERS}
    topic_names = list(_TOPIC_WEIGHTS)
    weights = list(_TOPIC_WEIGHTS.values())
    # Titles and method names repeat only once a pool is exhausted, as on a real day.
    names = _Deck(rng, _NAME_STEMS)
    cores = {name: _Deck(rng, topic.cores) for name, topic in _TOPICS.items()}
    goals = {name: _Deck(rng, topic.goals) for name, topic in _TOPICS.items()}
    papers = []
    for index in range(count):
        if index in hostile:
            topic_name, title, abstract = hostile[index]
        else:
            topic_name = rng.choices(topic_names, weights)[0]
            title = abstract = ""
        name = names.draw() + rng.choice(_TOPICS[topic_name].name_suffixes)
        if not title:
            core, goal = cores[topic_name].draw(), goals[topic_name].draw()
            title = f"{name}: {core} {goal}" if rng.random() < 0.6 else f"{core} {goal}"
        papers.append(
            _make_paper(
                rng,
                day=day,
                name=name,
                number=numbers[index],
                topic=_TOPICS[topic_name],
                upvotes=upvotes[index],
                title=title,
                abstract=abstract,
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
    topic: _Topic,
    upvotes: int,
    title: str,
    abstract: str,
) -> dict[str, Any]:
    published = datetime.combine(day, time(), tzinfo=UTC) - timedelta(
        days=rng.randint(1, 4), seconds=rng.randint(0, 86_399), milliseconds=rng.randint(0, 999)
    )
    submitted = datetime.combine(day, time(), tzinfo=UTC) + timedelta(
        seconds=rng.randint(1_800, 72_000), milliseconds=rng.randint(0, 999)
    )
    arxiv_id = f"{published:%y%m}.{number:05d}"
    if not abstract:
        abstract = " ".join(
            (
                rng.choice(topic.problems),
                rng.choice(topic.methods).format(name=name),
                rng.choice(topic.findings).format(
                    name=name, gain=rng.randint(2, 19), win=rng.randint(55, 82)
                ),
                rng.choice(
                    (
                        "Code and models are publicly available.",
                        "We release our code, data and trained checkpoints.",
                        "Ablations show that each component contributes to the gains.",
                        "We discuss limitations and directions for future work.",
                    )
                ),
            )
        )
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
        paper["ai_summary"] = f"{name} {rng.choice(topic.summaries)}"
        paper["ai_keywords"] = rng.sample(topic.keywords, k=min(len(topic.keywords), 5))
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
