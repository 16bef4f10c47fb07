"""The hospital key grammar is exact: every key the layout builds matches it, nothing else does.

``iam_matches`` is IAM's resource matching (``*`` any run of characters, ``?`` any one, ``/``
included). A key is granted when a pattern matches it and no nested pattern does, as the
exchange policies combine them. ``CANONICAL_WRITES`` / ``CANONICAL_READS`` state the rule as
regular expressions, with the two freedoms IAM cannot remove (a round is any six characters
but ``/``, a preflight stamp any characters but ``/``); thousands of mutations of real keys
must be granted exactly when those say so.
"""

from __future__ import annotations

import re

import pytest

from fl_core.exchange.key_grammar import HospitalKeyPatterns, hospital_key_patterns
from fl_core.exchange.layout import SECAGG_GLOBAL_DOCUMENTS, SECAGG_SITE_DOCUMENTS, ExchangeLayout

LAYOUT = ExchangeLayout("eicu-mortality")
SITE, OTHER = "site-a", "site-ab"  # one id a prefix of the other


def iam_matches(pattern: str, value: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def granted(patterns: tuple[str, ...], nested: tuple[str, ...], key: str) -> bool:
    return any(iam_matches(p, key) for p in patterns) and not any(
        iam_matches(n, key) for n in nested
    )


def canonical_writes(site: str) -> re.Pattern[str]:
    root, name = re.escape(LAYOUT.root), re.escape(site)
    return re.compile(
        rf"{root}rounds/[^/]{{6}}/updates/{name}\.(safetensors|json|secagg-(advert|answer)\.json)"
        rf"|{root}rounds/000000/updates/{name}\.(moments\.json|preflight-[^/]*\.json)",
        re.DOTALL,
    )


def canonical_reads(site: str) -> re.Pattern[str]:
    root, name = re.escape(LAYOUT.root), re.escape(site)
    return re.compile(
        rf"{root}rounds/[^/]{{6}}/(global\.(safetensors|json|secagg-(roster|setup|unmask)\.json)"
        rf"|result\.json)|{root}ledger/[^/]{{6}}\.json|{root}registry/{name}\.json"
        rf"|{root}published/model\.(safetensors|json)",
        re.DOTALL,
    )


@pytest.fixture(scope="module")
def patterns() -> HospitalKeyPatterns:
    return hospital_key_patterns(LAYOUT, SITE)


def built_writes(site: str) -> list[str]:
    keys = [LAYOUT.moments_key(site)]
    for round_index in (1, 7, 123_456, 999_999):
        keys += [
            LAYOUT.update_weights_key(round_index, site),
            LAYOUT.update_manifest_key(round_index, site),
            *(LAYOUT.secagg_update_key(round_index, site, d) for d in SECAGG_SITE_DOCUMENTS),
        ]
    keys += [LAYOUT.preflight_key(site, stamp) for stamp in ("a", "0", "z" * 40, "20261206t1")]
    return keys


def built_reads(site: str) -> list[str]:
    keys = [LAYOUT.registry_key(site), LAYOUT.published_weights_key()]
    keys.append(LAYOUT.published_manifest_key())
    for round_index in (1, 7, 999_999):
        keys += [
            LAYOUT.global_weights_key(round_index),
            LAYOUT.global_manifest_key(round_index),
            *(LAYOUT.secagg_global_key(round_index, d) for d in SECAGG_GLOBAL_DOCUMENTS),
            LAYOUT.result_key(round_index),
            LAYOUT.ledger_key(round_index),
        ]
    return keys


def mutations(key: str) -> list[str]:
    """Keys a hostile hospital might try, derived from a real one."""
    out = [key + "/x", key + "/", key + "x", "x" + key, key.upper(), key.replace(SITE, OTHER)]
    out += [key.replace(".json", ".JSON"), key.replace("a", "\u0430", 1)]
    out += [key.replace("updates/", "updates/global."), key.replace("/updates/", "/")]
    for index in range(len(LAYOUT.root), len(key) + 1, 3):
        out += [key[:index] + "/" + key[index:], key[:index] + key[index + 1 :]]
        out += [key[:index] + "/" + key[index + 1 :]]
        out += [key[:index] + f"/{OTHER}." + key[index:]]
    return out


def test_every_key_the_layout_builds_for_the_site_is_granted(
    patterns: HospitalKeyPatterns,
) -> None:
    for key in built_writes(SITE):
        assert granted(patterns.writes, patterns.nested_writes, key), key
        assert not any(iam_matches(n, key) for n in patterns.nested), key
    for key in built_reads(SITE):
        assert granted(patterns.reads, patterns.nested_reads, key), key
        assert not any(iam_matches(n, key) for n in patterns.nested), key


def test_no_key_of_another_site_is_granted(patterns: HospitalKeyPatterns) -> None:
    for key in built_writes(OTHER):
        assert not granted(patterns.writes, patterns.nested_writes, key), key
    assert not granted(patterns.reads, patterns.nested_reads, LAYOUT.registry_key(OTHER))


def test_the_grammar_grants_exactly_the_canonical_names(patterns: HospitalKeyPatterns) -> None:
    writes, reads = canonical_writes(SITE), canonical_reads(SITE)
    candidates = {m for key in built_writes(SITE) + built_reads(SITE) for m in mutations(key)}
    assert len(candidates) > 2000
    for key in sorted(candidates):
        may_write = granted(patterns.writes, patterns.nested_writes, key)
        may_read = granted(patterns.reads, patterns.nested_reads, key)
        assert may_write == bool(writes.fullmatch(key)), key
        assert may_read == bool(reads.fullmatch(key)), key


def test_a_site_pattern_can_be_a_policy_variable() -> None:
    variable = "${aws:PrincipalTag/fedsilo-site-id}"
    found = hospital_key_patterns(LAYOUT, variable)
    assert all(variable in p for p in found.writes)
    assert [p for p in found.reads if variable in p] == [f"{LAYOUT.root}registry/{variable}.json"]
    assert found.nested == (
        f"{LAYOUT.root}rounds/*/*/*/*",
        f"{LAYOUT.root}ledger/*/*",
        f"{LAYOUT.root}registry/*/*",
        f"{LAYOUT.root}published/*/*",
    )


def test_with_any_round_the_grammar_still_keeps_each_wildcard_in_one_segment() -> None:
    """Round ``*`` (for evaluators without ``?``): any round name, but never a '/' in it."""
    found = hospital_key_patterns(LAYOUT, SITE, "*")
    for key in built_writes(SITE):
        assert granted(found.writes, found.nested_writes, key), key
    for key in built_reads(SITE):
        assert granted(found.reads, found.nested_reads, key), key
    own = LAYOUT.update_manifest_key(7, SITE)
    assert granted(found.writes, found.nested_writes, own.replace("000007", "7"))
    for hostile in (own.replace("000007", "0/7"), own + "/x", own.replace(SITE, OTHER)):
        assert not granted(found.writes, found.nested_writes, hostile), hostile
    ledger = LAYOUT.ledger_key(7)
    assert not granted(found.reads, found.nested_reads, ledger.replace("000007", "0/7"))
