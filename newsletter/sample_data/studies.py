"""The invented studies the sample generator draws from, one per paper, each coherent.

A study's title, abstract (problem, method, finding), machine summary and
keywords describe the same piece of work, so a generated paper reads like a
real one. Each research area matches a topic of `relevance/topics.json`; an
area has as many studies as its weight in a day, so a 34-paper stretch of a
generated day repeats no title.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Study:
    """One invented piece of work: "{name}" is the method's name, "{gain}" and "{win}" numbers."""

    title: str
    problem: str
    method: str
    finding: str
    summary: str  # the machine summary after the method's name
    keywords: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Area:
    """A research area: its studies, the topic keyword every paper of it carries, name styles."""

    studies: tuple[Study, ...]
    topic_keyword: str
    name_suffixes: tuple[str, ...]


AREAS: dict[str, Area] = {
    "llm": Area(
        topic_keyword="LLMs",
        name_suffixes=("", "-7B", "-R1", "-Lite", "LM"),
        studies=(
            Study(
                "Distilling Chain-of-Thought into Small Language Models",
                "Large language models reason well when they are allowed to think at length, "
                "but the cost of long generations grows quickly with model size.",
                "We introduce {name}, which trains a small student to imitate only the steps "
                "of a teacher's reasoning that change its final answer.",
                "On GSM-Hard and MATH-500, {name} matches the teacher within {gain} points "
                "while generating three times fewer tokens.",
                "makes small language models reason almost as well as large ones at a "
                "fraction of the generation cost.",
                ("knowledge distillation", "chain-of-thought", "small language models"),
            ),
            Study(
                "Scaling Test-Time Compute with Verifier-Guided Search",
                "Sampling many answers and keeping the best one improves reasoning, but most "
                "of the samples are wasted on branches that were wrong from the start.",
                "We propose {name}, a decoding scheme in which a lightweight verifier scores "
                "partial solutions and prunes unpromising branches early.",
                "At equal compute, {name} improves pass@1 by {gain} points over best-of-n "
                "sampling on competition programming problems.",
                "improves reasoning accuracy at a fixed compute budget by pruning bad branches.",
                ("test-time compute", "verifiers", "tree search"),
            ),
            Study(
                "Compressing the KV Cache of Long-Context Transformers",
                "Serving long-context language models is dominated by the memory traffic of "
                "the key-value cache rather than by arithmetic.",
                "We present {name}, a learned eviction policy that keeps the cache entries "
                "future queries are most likely to attend to.",
                "Across six long-context benchmarks, {name} cuts memory use by {gain}% with "
                "no measurable loss in accuracy.",
                "reduces the memory footprint of long-context inference without retraining.",
                ("KV cache", "long context", "efficient inference"),
            ),
            Study(
                "Teaching Language Models to Abstain",
                "Instruction-tuned language models often answer confidently even when the "
                "question lies outside what they know.",
                "We describe {name}, a training recipe that rewards the model for declining "
                "to answer when its calibrated confidence is low.",
                "{name} lowers the rate of confidently wrong answers by {gain}% on held-out "
                "domains while keeping helpfulness unchanged.",
                "teaches language models to say when they do not know.",
                ("calibration", "hallucination", "abstention"),
            ),
            Study(
                "Aligning Language Models with Sparse Human Feedback",
                "Preference optimisation methods assume dense, consistent feedback, which is "
                "rarely available outside curated datasets.",
                "We propose {name}, a preference objective that propagates a few human "
                "judgements to similar responses through a learned similarity model.",
                "With a tenth of the usual labels, {name} wins {win}% of head-to-head "
                "comparisons against a model trained on the full preference set.",
                "aligns language models with far fewer human preference labels.",
                ("preference optimization", "RLHF", "alignment"),
            ),
            Study(
                "Speculative Decoding with Self-Drafting Heads",
                "Autoregressive decoding produces one token per forward pass, leaving most of "
                "an accelerator idle during generation.",
                "We introduce {name}, which adds light drafting heads to the model itself so "
                "that it proposes several tokens and verifies them in one pass.",
                "{name} speeds up generation by {gain}0% on chat and code workloads while "
                "producing exactly the same outputs.",
                "generates text several times faster by drafting and verifying its own tokens.",
                ("speculative decoding", "efficient inference", "decoding"),
            ),
            Study(
                "Measuring Contamination in Reasoning Benchmarks",
                "Benchmark scores for reasoning models are hard to interpret when test items "
                "may have leaked into pre-training corpora.",
                "We develop {name}, a test that compares a model's likelihood of each "
                "benchmark item with that of paraphrases written after its training cutoff.",
                "{name} flags {gain}% of the items of two popular maths benchmarks as likely "
                "seen in training, and scores drop sharply on the clean remainder.",
                "detects which benchmark questions a language model has already seen.",
                ("benchmark contamination", "evaluation", "reasoning"),
            ),
            Study(
                "Routing Tokens Across Mixture-of-Experts Layers",
                "Mixture-of-experts models waste capacity when a few experts receive most "
                "tokens while the others sit idle.",
                "We develop {name}, a router that balances expert load without auxiliary "
                "losses by treating assignment as an online matching problem.",
                "{name} trains {gain}% faster than auxiliary-loss routing at equal quality "
                "on a 16-expert language model.",
                "keeps mixture-of-experts layers balanced without extra training losses.",
                ("mixture-of-experts", "routing", "scaling"),
            ),
            Study(
                "Tool-Using Agents that Recover from Their Own Errors",
                "Language-model agents that call tools fail silently when an early call "
                "returns something unexpected, and the error compounds over a long task.",
                "We present {name}, an agent loop that checks each tool result against the "
                "plan and backtracks to the last consistent step when they disagree.",
                "On a benchmark of 300 multi-step web tasks, {name} completes {gain}% more "
                "tasks than the same model without recovery.",
                "helps language-model agents notice and undo their own tool-use mistakes.",
                ("LLM agents", "tool use", "planning"),
            ),
            Study(
                "Multilingual Instruction Tuning from Machine-Translated Data",
                "Instruction-tuned models answer far worse in low-resource languages, for "
                "which hardly any human-written instructions exist.",
                "We introduce {name}, which filters machine-translated instructions by "
                "back-translation agreement before tuning.",
                "Across 40 languages, {name} improves answer quality by {gain} points in "
                "human ratings, most in the least-resourced ones.",
                "makes instruction-tuned language models helpful in many more languages.",
                ("multilingual", "instruction tuning", "machine translation"),
            ),
        ),
    ),
    "diffusion": Area(
        topic_keyword="Diffusion",
        name_suffixes=("", "-XL", "-Flow", "Diff", "-Turbo"),
        studies=(
            Study(
                "Few-Step Sampling for Latent Diffusion Models",
                "Diffusion models produce high-quality images but need dozens of network "
                "evaluations per sample.",
                "We propose {name}, a distillation objective that aligns the student's "
                "one-step predictions with the teacher's probability-flow trajectory.",
                "{name} reaches an FID of {gain} on ImageNet 256x256 with four sampling steps.",
                "generates high-quality images in a handful of sampling steps.",
                ("latent diffusion", "consistency distillation", "fast sampling"),
            ),
            Study(
                "Training-Free Guidance for Compositional Text-to-Image Prompts",
                "Text-to-image models still struggle with prompts that combine several "
                "objects, counts and spatial relations.",
                "We introduce {name}, a guidance term computed from cross-attention maps "
                "that needs no additional training.",
                "On T2I-CompBench, {name} improves attribute binding by {gain}% over the "
                "base model.",
                "improves how text-to-image models follow compositional prompts without "
                "retraining.",
                ("text-to-image generation", "classifier-free guidance", "cross-attention"),
            ),
            Study(
                "Consistency Distillation of Video Diffusion Models",
                "Video diffusion models flicker when the number of sampling steps is reduced.",
                "We present {name}, a consistency objective applied jointly across frames "
                "so that a few-step student keeps the teacher's motion.",
                "{name} generates 4-second clips in eight steps and cuts temporal flicker by "
                "{gain}% compared with frame-wise distillation.",
                "makes fast video generation smooth instead of flickering.",
                ("video generation", "consistency distillation", "temporal consistency"),
            ),
            Study(
                "Rectified Flows with Learned Couplings",
                "Flow-matching models follow curved paths from noise to data, which forces "
                "many integration steps.",
                "We present {name}, which learns the coupling between noise and data jointly "
                "with the flow, straightening sampling paths.",
                "With two integration steps, {name} matches the FID that standard flow "
                "matching reaches with {gain}.",
                "straightens flow-matching paths so that images need very few steps.",
                ("flow matching", "rectified flow", "optimal transport"),
            ),
            Study(
                "Preference Alignment of Diffusion Models",
                "Fine-tuning diffusion models on human preferences tends to collapse diversity.",
                "We describe {name}, a regularised preference objective that keeps the model "
                "close to its pre-trained distribution.",
                "Human raters prefer {name} in {win}% of pairwise comparisons against strong "
                "baselines, with no loss of sample diversity.",
                "aligns diffusion models with human preferences while preserving diversity.",
                ("preference optimization", "diffusion models", "human feedback"),
            ),
        ),
    ),
    "vision": Area(
        topic_keyword="Computer vision",
        name_suffixes=("", "-ViT", "-Seg", "-VL", "3D"),
        studies=(
            Study(
                "Open-Vocabulary Segmentation with Frozen Vision-Language Models",
                "Vision-language models recognise objects well but localise them poorly.",
                "We introduce {name}, which reads segmentation masks directly from the "
                "attention maps of a frozen vision-language model.",
                "{name} improves mIoU by {gain} points on ADE20K-847 in the "
                "open-vocabulary setting.",
                "segments any named object using a frozen vision-language model.",
                ("open-vocabulary segmentation", "vision-language models", "zero-shot"),
            ),
            Study(
                "Self-Supervised Pre-Training of Vision Transformers on Video",
                "Dense prediction tasks still depend on costly pixel-level annotation.",
                "We propose {name}, a masked prediction objective over space-time tubes that "
                "learns from unlabelled video.",
                "Linear probes on {name} features outperform prior self-supervised models by "
                "{gain} points on Kinetics-400.",
                "learns strong visual features from unlabelled video.",
                ("self-supervised learning", "vision transformers", "video"),
            ),
            Study(
                "Token Merging for Vision-Language Models",
                "Multimodal models spend most of their compute on redundant image tokens.",
                "We present {name}, a token merging scheme that adapts the number of visual "
                "tokens to the content of each image.",
                "{name} halves the number of visual tokens while losing under {gain}% "
                "accuracy on standard VQA benchmarks.",
                "makes multimodal models faster by merging redundant image tokens.",
                ("vision-language models", "token merging", "efficiency"),
            ),
            Study(
                "Efficient 3D Gaussian Splatting from Phone Captures",
                "Reconstructing scenes from casual phone captures remains slow and brittle.",
                "We describe {name}, a densification strategy for Gaussian splatting driven "
                "by multi-view photometric error.",
                "{name} reconstructs a room in under {gain} minutes on one GPU and renders "
                "it at 120 frames per second.",
                "turns casual phone videos into real-time 3D scenes in minutes.",
                ("Gaussian splatting", "3D reconstruction", "novel view synthesis"),
            ),
            Study(
                "Monocular Depth Estimation from Foundation Features",
                "Depth estimators trained on one kind of scene break down on another, from "
                "indoor rooms to driving footage.",
                "We introduce {name}, a light decoder on top of a frozen foundation model "
                "trained on a mixture of synthetic scenes.",
                "Zero-shot, {name} lowers the relative depth error by {gain}% across eight "
                "unseen datasets.",
                "estimates depth from a single image across very different scenes.",
                ("depth estimation", "foundation models", "zero-shot transfer"),
            ),
            Study(
                "Grounding Referring Expressions in High-Resolution Images",
                "Multimodal models downsample large images and lose the small objects that "
                "a question refers to.",
                "We propose {name}, which crops and zooms into the regions a first glance "
                "marks as relevant before answering.",
                "{name} improves grounding accuracy by {gain} points on 4K aerial and "
                "document images.",
                "finds small objects in large images by zooming where it matters.",
                ("visual grounding", "high-resolution images", "vision-language models"),
            ),
        ),
    ),
    "robotics": Area(
        topic_keyword="Robotics",
        name_suffixes=("", "-VLA", "Bot", "-Act"),
        studies=(
            Study(
                "Vision-Language-Action Models for Long-Horizon Tasks",
                "Robot policies trained from demonstrations rarely generalise beyond the "
                "objects and scenes they were collected in.",
                "We present {name}, a vision-language-action model that predicts chunks of "
                "future actions conditioned on a language instruction.",
                "On a real robot, {name} succeeds in {win}% of trials on unseen objects and "
                "kitchens.",
                "lets robots follow language instructions on long, multi-step tasks.",
                ("vision-language-action models", "robot manipulation", "generalization"),
            ),
            Study(
                "Learning Dexterous Manipulation from Human Videos",
                "Collecting teleoperated data for dexterous hands is slow and expensive.",
                "We introduce {name}, which retargets hand poses from egocentric human video "
                "to a robot hand and refines them with reinforcement learning.",
                "{name} learns eleven in-hand skills and improves success by {gain} points "
                "over policies trained on teleoperation alone.",
                "learns dexterous manipulation from ordinary human videos.",
                ("dexterous manipulation", "imitation learning", "human videos"),
            ),
            Study(
                "Diffusion Policies with Tactile Feedback",
                "Camera-only policies fail when the gripper hides the contact they need to "
                "see, as in insertion or cable routing.",
                "We propose {name}, a diffusion policy that fuses tactile images with camera "
                "views to handle occluded contacts.",
                "{name} raises success on five contact-rich tasks from 41% to {win}%.",
                "uses touch to make robot manipulation reliable under occlusion.",
                ("diffusion policy", "tactile sensing", "robot manipulation"),
            ),
            Study(
                "Sim-to-Real Transfer of Legged Locomotion Policies",
                "Policies trained in simulation often fail on real terrain whose friction "
                "and compliance the simulator got wrong.",
                "We present {name}, which adapts a latent terrain estimate online from the "
                "robot's own proprioception.",
                "{name} transfers zero-shot to hardware and crosses {gain} of 20 outdoor "
                "courses that the baseline fails.",
                "carries legged locomotion from simulation to rough real terrain.",
                ("sim-to-real transfer", "legged locomotion", "reinforcement learning"),
            ),
        ),
    ),
    "rl": Area(
        topic_keyword="Reinforcement learning",
        name_suffixes=("", "-RL", "-PO", "-Zero"),
        studies=(
            Study(
                "Offline Reinforcement Learning with Conservative World Models",
                "Offline reinforcement learning overestimates the value of actions that the "
                "dataset never shows.",
                "We propose {name}, which penalises model rollouts in proportion to the "
                "disagreement of an ensemble of learned dynamics models.",
                "{name} sets a new state of the art on D4RL, improving the average "
                "normalised score by {gain} points.",
                "makes offline reinforcement learning safer by distrusting uncertain rollouts.",
                ("offline RL", "world models", "model-based RL"),
            ),
            Study(
                "Exploration by Predicting Future Representations",
                "Exploration remains the main obstacle in environments with sparse rewards.",
                "We introduce {name}, an intrinsic reward based on the error of predicting "
                "future latent states.",
                "On hard-exploration Atari games, {name} improves the median "
                "human-normalised score by {gain}%.",
                "explores sparse-reward environments by predicting future representations.",
                ("exploration", "intrinsic motivation", "sparse rewards"),
            ),
            Study(
                "Policy Optimisation for Reasoning Models",
                "Group-relative policy optimisation is unstable when most sampled answers "
                "receive the same reward.",
                "We present {name}, a variance-aware advantage estimator that keeps a "
                "learning signal when rewards are nearly constant.",
                "{name} improves reasoning accuracy by {gain} points on AIME problems at "
                "equal training compute.",
                "stabilises policy optimisation for reasoning language models.",
                ("policy optimization", "GRPO", "reasoning"),
            ),
            Study(
                "Reward Shaping from Language Feedback",
                "Hand-written reward functions are brittle, and agents exploit every gap "
                "between what they reward and what was meant.",
                "We describe {name}, which turns short natural-language critiques of an "
                "agent's episodes into a dense shaped reward.",
                "With ten critiques per task, {name} solves {gain} of 16 manipulation tasks "
                "that sparse rewards leave unsolved.",
                "turns plain-language critiques into rewards an agent can learn from.",
                ("reward shaping", "language feedback", "reward learning"),
            ),
        ),
    ),
    "speech": Area(
        topic_keyword="Speech and audio",
        name_suffixes=("", "-Voice", "Speech", "-Duplex"),
        studies=(
            Study(
                "Full-Duplex Spoken Dialogue Models",
                "Spoken dialogue systems still wait for the user to stop speaking before "
                "they respond.",
                "We introduce {name}, a model that listens and speaks at the same time by "
                "interleaving input and output audio tokens.",
                "{name} answers with a median latency of {gain}0 ms in live conversations.",
                "holds natural, overlapping spoken conversations with low latency.",
                ("spoken dialogue", "full-duplex", "audio tokens"),
            ),
            Study(
                "Streaming Speech Recognition with Causal Transformers",
                "Speech recognisers degrade sharply for low-resource languages and accented "
                "speech, and streaming makes it worse.",
                "We propose {name}, a causal encoder with chunked attention that emits "
                "transcripts with bounded delay.",
                "{name} reduces word error rate by {gain}% relative on FLEURS at a latency "
                "of 320 ms.",
                "transcribes speech as it arrives with bounded delay.",
                ("speech recognition", "streaming", "low-resource languages"),
            ),
            Study(
                "Speech Enhancement with Flow Matching",
                "Speech enhancement models either smear voices or leave noise in, and "
                "diffusion-based ones are too slow for calls.",
                "We present {name}, a conditional flow-matching model that maps noisy speech "
                "to clean speech in a few steps.",
                "Listeners rate {name} higher in naturalness, with a MOS gain of 0.{gain}.",
                "cleans noisy speech in a few sampling steps.",
                ("speech enhancement", "flow matching", "denoising"),
            ),
        ),
    ),
    "theory": Area(
        topic_keyword="Theory",
        name_suffixes=("",),
        studies=(
            Study(
                "Generalisation Bounds for In-Context Learning",
                "Why transformers can learn new tasks from a few examples in their prompt is "
                "still poorly understood.",
                "We develop {name}, an analysis that treats the prompt as a sample from a "
                "task distribution and bounds the excess risk of in-context prediction.",
                "Our bounds predict the measured error of trained models within {gain}% "
                "across four orders of magnitude of prompt length.",
                "explains when and why in-context learning generalises.",
                ("in-context learning", "generalization bounds", "learning theory"),
            ),
            Study(
                "A Theory of Grokking in Modular Arithmetic",
                "Networks trained on algorithmic tasks often generalise long after they have "
                "memorised the training set.",
                "We study a solvable model, {name}, in which delayed generalisation arises "
                "from the competition between two circuits.",
                "The theory explains the {gain}-fold delay in generalisation observed in "
                "experiments.",
                "gives a solvable model of delayed generalisation.",
                ("grokking", "learning dynamics", "learning theory"),
            ),
        ),
    ),
}
