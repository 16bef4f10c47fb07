"""The report names the rounds a hospital's site policy declined, with the rule and reason."""

from __future__ import annotations

from fedsilo.ops.policy_view import policy_declines_html
from fedsilo.ops.report import _table
from fl_core.exchange.manifests import Decision
from tests.fedsilo.ops._round_results import closed_round


def declined(site_id: str, reason: str, detail: str) -> Decision:
    return Decision(
        site_id=site_id, status="declined", reason=reason, detail=detail, decided_unix=1.0
    )


def test_policy_declines_are_listed_by_rule_and_others_left_to_their_sections():
    page = policy_declines_html(
        [
            closed_round(
                1, [declined("site-a", "policy study_not_approved", "hash <b>abc</b> unknown")]
            ),
            closed_round(
                2, [declined("site-b", "privacy_budget_exhausted", "would spend 4.2 > 4")]
            ),
        ],
        _table,
    )
    assert page.startswith("<h2>Rounds declined by a hospital's site policy</h2>")
    assert "study_not_approved" in page and "site-a" in page
    assert "&lt;b&gt;abc&lt;/b&gt;" in page  # a hospital's text is never markup
    assert "site-b" not in page


def test_no_policy_decline_no_section():
    assert policy_declines_html([closed_round(1)], _table) == ""
