#!/usr/bin/env python3
"""Validate the invented relevance corpus (stdlib only).

Usage: python3 validate.py [--papers-only]
Exits non-zero if any check fails; always prints a summary table.
"""

import json
import os
import re
import sys
from collections import Counter, defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
DAYS = ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05", "2026-11-06", "2026-11-07"]
SEED_DAYS = DAYS[:2]
EVAL_DAYS = DAYS[2:]  # 2026-11-04 .. 2026-11-07
AREAS = {
    "Large language models": ["llm-reasoning", "llm-alignment", "llm-efficiency"],
    "Computer vision": ["image-generation", "segmentation-detection", "3d-vision"],
    "Robotics": ["robot-manipulation", "locomotion", "autonomous-driving"],
    "Reinforcement learning": ["offline-rl", "multi-agent-rl", "rl-theory"],
    "AI safety": ["interpretability", "concept-erasure-unlearning", "adversarial-robustness"],
    "Speech and audio": ["speech-recognition", "text-to-speech", "music-generation"],
    "AI for science": ["protein-design", "weather-climate", "materials-chemistry"],
    "ML systems": ["distributed-training", "retrieval-rag", "code-generation"],
}
SUBTOPICS = [s for subs in AREAS.values() for s in subs]
AREA_OF = {s: a for a, subs in AREAS.items() for s in subs}
CAT_RE = re.compile(
    r"^(cs\.[A-Z]{2}|stat\.ML|eess\.(AS|IV|SP|SY)|q-bio\.[A-Z]{2}|physics\.[a-z-]+|cond-mat\.[a-z-]+|math\.[A-Z]{2}|q-fin\.[A-Z]{2})$"
)

errors = []


def err(msg):
    errors.append(msg)


def load_papers():
    papers = []
    with open(os.path.join(HERE, "papers.jsonl"), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                papers.append(json.loads(line))
            except json.JSONDecodeError as e:
                err(f"papers.jsonl line {n}: bad JSON ({e})")
    return papers


def check_papers(papers):
    keys = {
        "arxiv_id",
        "day",
        "title",
        "abstract",
        "keywords",
        "categories",
        "upvotes",
        "subtopics",
    }
    ids = Counter(p.get("arxiv_id") for p in papers)
    for i, c in ids.items():
        if c > 1:
            err(f"duplicate arxiv_id {i}")
    titles = Counter(p.get("title", "").lower() for p in papers)
    for t, c in titles.items():
        if c > 1:
            err(f"duplicate title {t!r}")
    for p in papers:
        pid = p.get("arxiv_id", "?")
        if set(p) != keys:
            err(f"{pid}: keys {sorted(set(p) ^ keys)} wrong")
            continue
        if not re.fullmatch(r"2611\.0\d{4}", pid):
            err(f"{pid}: bad arxiv_id format")
        if p["day"] not in DAYS:
            err(f"{pid}: bad day {p['day']}")
        n_words = len(p["abstract"].split())
        if not 80 <= n_words <= 160:
            err(f"{pid}: abstract has {n_words} words")
        if not p["title"].strip():
            err(f"{pid}: empty title")
        if not (isinstance(p["keywords"], list) and 3 <= len(p["keywords"]) <= 6):
            err(f"{pid}: needs 3-6 keywords")
        if not p["categories"] or any(not CAT_RE.match(c) for c in p["categories"]):
            err(f"{pid}: bad categories {p['categories']}")
        if not isinstance(p["upvotes"], int) or p["upvotes"] < 0:
            err(f"{pid}: bad upvotes")
        st = p["subtopics"]
        if (
            not (1 <= len(st) <= 2)
            or len(set(st)) != len(st)
            or any(s not in SUBTOPICS for s in st)
        ):
            err(f"{pid}: bad subtopics {st}")


def check_readers(readers, papers):
    by_id = {p["arxiv_id"]: p for p in papers}
    rids = Counter(r.get("id") for r in readers)
    for i, c in rids.items():
        if c > 1:
            err(f"duplicate reader id {i}")
    keys = {"id", "description", "topics", "interests", "liked_seed", "relevant"}
    for r in readers:
        rid = r.get("id", "?")
        if set(r) != keys:
            err(f"{rid}: keys {sorted(set(r) ^ keys)} wrong")
            continue
        if len(r["topics"]) > 2 or any(t not in AREAS for t in r["topics"]):
            err(f"{rid}: bad topics {r['topics']}")
        if len(r["interests"]) > 500:
            err(f"{rid}: interests longer than 500 chars")
        if not r["topics"] and not r["interests"].strip():
            err(f"{rid}: neither topics nor interests")
        if not 2 <= len(r["liked_seed"]) <= 4 or len(set(r["liked_seed"])) != len(r["liked_seed"]):
            err(f"{rid}: liked_seed must be 2-4 distinct ids")
        rel = r["relevant"]
        if not rel or any(s not in SUBTOPICS or v not in (1, 2) for s, v in rel.items()):
            err(f"{rid}: bad relevant {rel}")
        for sid in r["liked_seed"]:
            p = by_id.get(sid)
            if p is None:
                err(f"{rid}: liked_seed {sid} not in papers")
            elif p["day"] not in SEED_DAYS:
                err(f"{rid}: liked_seed {sid} is from {p['day']}")
            elif relevance(r, p) == 0:
                err(f"{rid}: liked_seed {sid} is not relevant to the reader")
        n_eval = sum(1 for p in papers if p["day"] in EVAL_DAYS and relevance(r, p) >= 1)
        if n_eval < 4:
            err(f"{rid}: only {n_eval} relevant papers on {EVAL_DAYS[0]}..{EVAL_DAYS[-1]}")


def relevance(reader, paper):
    return max(reader["relevant"].get(s, 0) for s in paper["subtopics"])


def check_topics(topics):
    names = [t.get("name") for t in topics]
    if sorted(names) != sorted(AREAS):
        err(f"topics.json names {names} != the 8 areas")
    for t in topics:
        if not t.get("description"):
            err(f"topic {t.get('name')}: no description")
        if not 10 <= len(t.get("keywords", [])) <= 20:
            err(f"topic {t.get('name')}: needs 10-20 keywords")
        if not t.get("categories") or any(not CAT_RE.match(c) for c in t["categories"]):
            err(f"topic {t.get('name')}: bad categories")


def main():
    papers_only = "--papers-only" in sys.argv
    papers = load_papers()
    check_papers(papers)
    per_day = Counter(p["day"] for p in papers)
    per_sub = defaultdict(Counter)
    for p in papers:
        for s in p["subtopics"]:
            per_sub[s][p["day"]] += 1
    if not papers_only:
        for d in DAYS:
            if per_day[d] != 40:
                err(f"day {d} has {per_day[d]} papers, want 40")
        for s in SUBTOPICS:
            tot = sum(per_sub[s].values())
            if not 8 <= tot <= 12:
                err(f"subtopic {s} has {tot} papers, want 8-12")

    # summary table: subtopic x day
    print(f"{'subtopic':28s}" + "".join(f"{d[5:]:>7s}" for d in DAYS) + "  total")
    for s in SUBTOPICS:
        row = per_sub[s]
        print(f"{s:28s}" + "".join(f"{row[d]:7d}" for d in DAYS) + f"{sum(row.values()):7d}")
    print(f"{'papers':28s}" + "".join(f"{per_day[d]:7d}" for d in DAYS) + f"{len(papers):7d}")
    n_two = sum(1 for p in papers if len(p["subtopics"]) == 2)
    print(f"\npapers with two subtopics: {n_two} ({100 * n_two / max(1, len(papers)):.0f}%)")
    # popularity per area (should not differ systematically)
    ups = defaultdict(list)
    for p in papers:
        for a in {AREA_OF[s] for s in p["subtopics"]}:
            ups[a].append(p["upvotes"])
    allu = sorted(p["upvotes"] for p in papers)
    if allu:
        print(
            f"upvotes: median {allu[len(allu) // 2]}, >=100: {sum(u >= 100 for u in allu)}, max {allu[-1]}"
        )
    for a, us in ups.items():
        us = sorted(us)
        print(
            f"  {a:24s} n={len(us):3d} median={us[len(us) // 2]:4d} mean={sum(us) / len(us):6.1f} >=100:{sum(u >= 100 for u in us)}"
        )

    if not papers_only:
        with open(os.path.join(HERE, "readers.json"), encoding="utf-8") as f:
            readers = json.load(f)
        with open(os.path.join(HERE, "topics.json"), encoding="utf-8") as f:
            topics = json.load(f)
        if len(readers) != 36:
            err(f"{len(readers)} readers, want 36")
        check_readers(readers, papers)
        check_topics(topics)
        print(
            f"\n{'reader':6s} {'#topics':>7s} {'#chars':>6s} {'#seed':>5s} {'#rel=2':>6s} {'#rel=1':>6s}  relevant papers per day"
        )
        for r in readers:
            if not isinstance(r.get("relevant"), dict):
                continue
            counts = [
                sum(1 for p in papers if p["day"] == d and relevance(r, p) >= 1) for d in DAYS
            ]
            n2 = sum(1 for p in papers if relevance(r, p) == 2)
            n1 = sum(1 for p in papers if relevance(r, p) == 1)
            print(
                f"{r['id']:6s} {len(r['topics']):7d} {len(r['interests']):6d} {len(r['liked_seed']):5d} {n2:6d} {n1:6d}  "
                + " ".join(f"{c:2d}" for c in counts)
            )

    print()
    if errors:
        print(f"FAILED: {len(errors)} problem(s)")
        for e in errors:
            print("  -", e)
        sys.exit(1)
    print("OK: all checks passed")


if __name__ == "__main__":
    main()
