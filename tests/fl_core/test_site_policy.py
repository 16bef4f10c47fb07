"""The site policy document: strict, frozen, and refused with one line per problem."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from fl_core.errors import ConfigError
from fl_core.site_policy import (
    POLICY_JSON_ENV,
    POLICY_PATH_ENV,
    SitePolicy,
    load_site_policy,
    parse_site_policy,
    policy_summary,
)

HASH = "a" * 64
ARCH = "b" * 64
GOOD = f"""
site_id: site-001
epsilon_budget: 6
disclosure_floor: {{min_stays: 10, min_events: 5}}
max_update_bytes: 1000000
studies:
  - federation_id: sepsis
    config_hashes: ["{HASH}"]
    architecture_digests: ["{ARCH}"]
    max_rounds: 20
    dp_sgd_max_epsilon: 3
    require_secure_aggregation: true
"""


def test_a_policy_reads_and_summarises():
    policy = parse_site_policy(GOOD, "test")
    study = policy.study("sepsis")
    assert study is not None and study.config_hashes == (HASH,)
    assert policy.study("other") is None
    text = "\n".join(policy_summary(policy))
    assert "sepsis" in text and "DP-SGD epsilon <= 3" in text and "secure aggregation" in text
    assert "epsilon budget over all studies: 6" in text and "10 stays, 5 events" in text
    with pytest.raises(ValidationError):
        policy.site_id = "site-002"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (GOOD + "approve_everything: true\n", "approve_everything: unknown key"),
        (GOOD.replace("max_rounds: 20", "max_rounds: 20\n    any_hash: true"), "unknown key"),
        (GOOD.replace(f'["{HASH}"]', "[]"), "config_hashes"),
        (GOOD.replace(f'["{HASH}"]', '["*"]'), "config_hashes.0"),
        (GOOD.replace(f'["{ARCH}"]', f'["{ARCH.upper()}"]'), "architecture_digests.0"),
        (GOOD.replace("epsilon_budget: 6", "epsilon_budget: .inf"), "epsilon_budget"),
        (GOOD.replace("epsilon_budget: 6", "epsilon_budget: -1"), "epsilon_budget"),
        (GOOD.replace("dp_sgd_max_epsilon: 3", "dp_sgd_max_epsilon: .nan"), "dp_sgd_max"),
        (GOOD.replace("min_stays: 10", "min_stays: 0"), "disclosure_floor.min_stays"),
        (GOOD.replace("federation_id: sepsis", "federation_id: ../x"), "federation_id"),
        (GOOD.replace("site_id: site-001", "site_id: '*'"), "site_id"),
        (GOOD + GOOD[GOOD.index("  - federation_id") :], "listed more than once"),
        ("- site_id: site-001\n", "must be a mapping"),
        ("site_id: [unclosed\n", "does not parse"),
        ("", "must be a mapping"),
    ],
)
def test_odd_or_hostile_policies_are_refused_with_one_line(text, needle):
    with pytest.raises(ConfigError) as refused:
        parse_site_policy(text, "test.yaml")
    message = str(refused.value)
    assert needle in message
    assert "\n" not in message


def test_a_huge_document_is_refused_before_parsing():
    with pytest.raises(ConfigError, match="over"):
        parse_site_policy("#" * 300_000, "big")


def test_the_policy_comes_from_a_flag_a_path_or_the_document(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    document = json.dumps(parse_site_policy(GOOD, "x").model_dump(mode="json"))
    assert load_site_policy(None, {}) is None
    assert load_site_policy(path, {}) == load_site_policy(None, {POLICY_PATH_ENV: str(path)})
    from_json = load_site_policy(None, {POLICY_JSON_ENV: document})
    assert isinstance(from_json, SitePolicy) and from_json == load_site_policy(path, {})
    with pytest.raises(ConfigError, match="not found"):
        load_site_policy(tmp_path / "absent.yaml", {})
    with pytest.raises(ConfigError, match=f"from {POLICY_JSON_ENV}"):
        load_site_policy(None, {POLICY_JSON_ENV: '{"site_id": "site-001", "x": 1}'})
