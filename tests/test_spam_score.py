"""A spam filter's opinion: Debian's SpamAssassin scores every kind of message the product sends.

`spamassassin -t -L` runs the installed rules with no network test, with an
empty user configuration of its own (no state from the machine's user). A
message passes with at most 0.5 points and no rule scoring above 0: the rules
left are informational (0 or below). Each test prints the rules that fired.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.support.message_kinds import RECIPIENTS, SentKinds
from tests.support.outside_tools import installed_program, missing_tool

# SpamAssassin takes seconds per message; the first test also sends every kind once.
pytestmark = pytest.mark.timeout(300)

MAX_SCORE = 0.5
SCORE_LINE = re.compile(r"^Content analysis details:\s+\((-?\d+(?:\.\d+)?) points", re.MULTILINE)
RULE_LINE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class SpamVerdict:
    """SpamAssassin's total score and each rule that fired with its points."""

    score: float
    rules: dict[str, float]

    def describe(self) -> str:
        """The score and the rules, one a line, as the report lists them."""
        lines = [f"{points:5.1f} {name}" for name, points in self.rules.items()]
        return f"score {self.score:.1f}\n" + "\n".join(lines)


def _spamassassin() -> str:
    """The spamassassin executable; without it the test skips, except in CI, where it fails."""
    found = installed_program("spamassassin", "/usr/bin/spamassassin")
    if found is None:
        reason = "needs SpamAssassin: apt-get install spamassassin (.ci/run installs it)"
        missing_tool("spam filter", reason)
    return found


def spam_verdict(raw: bytes, home: Path) -> SpamVerdict:
    """Score one message with the local rules only, as a fresh user with no preferences."""
    prefs = home / "user_prefs"
    prefs.write_text("")
    result = subprocess.run(
        [_spamassassin(), "-t", "-L", "-p", str(prefs)],
        input=raw,
        capture_output=True,
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"},
        timeout=120,
        check=False,
    )
    # Exit status 0 (ham) or 1 (spam) both come with the report; anything else is a failure.
    assert result.returncode in (0, 1), result.stderr.decode(errors="replace")
    report = result.stdout.decode(errors="replace")
    score = SCORE_LINE.search(report)
    assert score is not None, report[-2000:]
    table = report[score.end() :]
    rules = {match.group(2): float(match.group(1)) for match in RULE_LINE.finditer(table)}
    return SpamVerdict(score=float(score.group(1)), rules=rules)


@pytest.mark.parametrize("kind", list(RECIPIENTS))
def test_every_message_kind_scores_at_most_half_a_point(
    every_message_kind: SentKinds, kind: str, tmp_path: Path
) -> None:
    verdict = spam_verdict(every_message_kind.messages[kind].raw, tmp_path)
    print(f"SpamAssassin on {kind}: {verdict.describe()}")
    assert verdict.score <= MAX_SCORE, verdict.describe()
    assert {name: points for name, points in verdict.rules.items() if points > 0} == {}
    assert "HTML_MESSAGE" in verdict.rules  # the HTML part was read, not skipped


def test_a_preheader_hidden_as_white_text_is_what_the_filter_punishes(tmp_path: Path) -> None:
    # What MRML's <mj-preview> writes: white text on our grey page. The check must see it.
    message = EmailMessage()
    message["From"] = "Daily ML Papers <digest@news.example.org>"
    message["To"] = "reader@example.org"
    message["Subject"] = "Papers of the day"
    message["Date"] = "Thu, 05 Nov 2026 07:00:00 +0000"
    message["Message-ID"] = "<20261105.1.digest@news.example.org>"
    message.set_content("Papers of the day\n\nFirst paper\n")
    message.add_alternative(
        '<html lang="en"><body style="background-color:#f3f4f6;">'
        '<div style="display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0px;'
        'max-width:0px;opacity:0;overflow:hidden;">First paper · Second paper</div>'
        "<p>Papers of the day</p><p>First paper</p></body></html>",
        subtype="html",
    )
    verdict = spam_verdict(message.as_bytes(), tmp_path)
    print(f"SpamAssassin on a white preheader: {verdict.describe()}")
    assert verdict.rules.get("HTML_FONT_LOW_CONTRAST", 0) > 0
    assert verdict.score > 0
