"""The exchange's bucket and key policies, read from the synthesised templates, under a real
IAM evaluator.

moto does not evaluate bucket policies for principals of other accounts, KMS key policies, or
policy variables (``${aws:PrincipalTag/...}``), so the cross-account rule is evaluated here by
``@cloud-copilot/iam-simulate`` (identity, resource and key policies across accounts, policy
variables, every condition operator), on requests for keys built by
``fl_core.exchange.layout.ExchangeLayout``. The whole table is built first and evaluated in one
``node`` process.

Each hostile request is asked twice, so that each half of the rule is shown to stop it alone:
* against the real bucket (or key) policy, from a role whose administrator widened its own
  identity policy to ``*``;
* against the hospital's real identity policy, with a resource policy that allows everything
  (encryption and write-once rules live only in the bucket policy and are asked once).

What the evaluator cannot express, and what IAM cannot either:
* iam-simulate takes the request's context as given: that S3 sends ``s3:if-none-match`` and
  the encryption headers, and calls KMS with ``kms:ViaService`` and the object's ARN as
  ``aws:s3:arn`` encryption context (S3 Bucket Keys off), are AWS's documented behaviour that
  the requests here reproduce; a bucket's ``BlockedEncryptionTypes`` setting is not modelled
  (the bucket policy's own SSE-C deny is evaluated instead).
* IAM has no character classes: the round segment ``??????`` accepts any six characters but
  ``/`` (a look-alike or a letter round is a key the aggregator never reads), and the preflight
  stamp any characters but ``/``. ``KNOWN_LIMITS`` asserts exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from iamsim import (
    ALLOW_EVERYTHING,
    Caller,
    Encryption,
    ExchangePolicies,
    exchange_policies,
    kms_simulation,
    s3_simulation,
    simulate,
)
from stackhelpers import Federation

from fl_core.exchange.layout import ExchangeLayout

ROUND = 7
STAMP = "20261206t120000z3f9a"
ALLOWED = "Allowed"
GET, PUT = "s3:GetObject", "s3:PutObject"
CYRILLIC_TWINS = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "s": "\u0455", "c": "\u0441"}
FULLWIDTH_ZERO = "\uff10"


def look_alike(site: str) -> str:
    """``site`` with its first letter that has a Cyrillic twin replaced by that twin."""
    index = next(i for i, char in enumerate(site) if char in CYRILLIC_TWINS)
    return site[:index] + CYRILLIC_TWINS[site[index]] + site[index + 1 :]


@dataclass(frozen=True)
class Case:
    """One row of the table: a request, what the test expects, and why it exists."""

    name: str
    simulation: dict[str, Any]
    allowed: bool


def allow_all_to(caller: Caller) -> dict[str, Any]:
    """A resource policy that lets ``caller`` do anything: isolates the identity policy."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": caller.arn}, "Action": "*", "Resource": "*"}
        ],
    }


def canonical_writes(layout: ExchangeLayout, site: str) -> list[str]:
    return [
        layout.update_weights_key(ROUND, site),
        layout.update_manifest_key(ROUND, site),
        layout.secagg_update_key(ROUND, site, "advert"),
        layout.secagg_update_key(ROUND, site, "answer"),
        layout.update_weights_key(1, site),
        layout.moments_key(site),
        layout.preflight_key(site, STAMP),
        layout.preflight_key(site, "a"),
        layout.preflight_key(site, "z" * 40),
    ]


def canonical_reads(layout: ExchangeLayout, site: str) -> list[str]:
    return [
        layout.global_weights_key(ROUND),
        layout.global_manifest_key(ROUND),
        layout.secagg_global_key(ROUND, "roster"),
        layout.secagg_global_key(ROUND, "setup"),
        layout.secagg_global_key(ROUND, "unmask"),
        layout.result_key(ROUND),
        layout.ledger_key(ROUND),
        layout.ledger_key(999_999),
        layout.registry_key(site),
        layout.published_weights_key(),
        layout.published_manifest_key(),
    ]


def hostile_writes(layout: ExchangeLayout, site: str, other: str) -> list[str]:
    root, updates = layout.root, layout.updates_prefix(ROUND)
    own = layout.update_manifest_key(ROUND, site)
    long_name = f"{updates}{site}" + "-x" * ((1024 - len(updates) - len(site) - 5) // 2) + ".json"
    return [
        # extra path levels, anywhere
        f"{own}/x",
        f"{updates}{site}.x/{other}.json",
        f"{updates}{site}.json/x/rounds/000001/updates/{other}.x",
        f"{updates}{other}.json/x/rounds/1/updates/{site}.x",
        f"{updates}x/{site}.json",
        f"{root}rounds/{ROUND:06d}/x/updates/{site}.json",
        f"{root}rounds/00/001/updates/{site}.json",
        f"{root}rounds/{ROUND:06d}//updates/{site}.json",
        f"{layout.preflight_prefix()}{site}.preflight-a/b.json",
        f"{layout.preflight_prefix()}{site}.preflight-{other}/{site}.json",
        f"{own}/",
        # another site's keys
        layout.update_weights_key(ROUND, other),
        layout.update_manifest_key(ROUND, other),
        layout.secagg_update_key(ROUND, other, "advert"),
        layout.moments_key(other),
        layout.preflight_key(other, STAMP),
        f"{updates}{site}-{other}.json",
        f"{updates}{other}.{site}.json",
        # look-alikes and case
        f"{updates}{look_alike(site)}.json",
        f"{updates}{site.upper()}.json",
        f"{updates}{site}.JSON",
        f"{updates}{site}.Safetensors",
        f"{root}rounds/{FULLWIDTH_ZERO * 6}/updates/{site}.moments.json",
        f"{updates}{site}.secagg-ADVERT.json",
        f"{updates}{site}.secagg-other.json",
        f"{updates}{site}.moments.json",  # moments belong to round 0 only
        # global names, and other folders
        f"{updates}global.json",
        f"{updates}global.safetensors",
        f"{updates}{site}.global.json",
        layout.global_weights_key(ROUND),
        layout.global_manifest_key(ROUND),
        layout.secagg_global_key(ROUND, "unmask"),
        layout.result_key(ROUND),
        layout.ledger_key(ROUND),
        layout.registry_key(site),
        layout.state_key(),
        layout.published_weights_key(),
        layout.published_manifest_key(),
        f"{layout.published_prefix()}{site}.json",
        f"federations/other-federation/rounds/{ROUND:06d}/updates/{site}.json",
        # very long keys
        long_name,
        f"{own}/" + "a" * (1024 - len(own) - 1),
    ]


def hostile_reads(layout: ExchangeLayout, site: str, other: str) -> list[str]:
    root = layout.root
    return [
        layout.update_weights_key(ROUND, other),
        layout.update_manifest_key(ROUND, other),
        layout.secagg_update_key(ROUND, other, "answer"),
        layout.preflight_key(other, STAMP),
        layout.moments_key(other),
        layout.update_weights_key(ROUND, site),  # write-only, even its own
        layout.registry_key(other),
        layout.state_key(),
        f"{layout.global_manifest_key(ROUND)}/x",
        f"{root}rounds/00/007/global.json",
        f"{layout.ledger_key(ROUND)}/x",
        f"{root}ledger/00/007.json",
        f"{layout.registry_key(site)}/x",
        f"{root}registry/{site}.json/../{other}.json",
        f"{layout.updates_prefix(ROUND)}global.json",
        f"{root}rounds/{ROUND:06d}/GLOBAL.json",
        f"{root}rounds/{ROUND:06d}/global.pickle",
        f"{root}registry/{look_alike(site)}.json",
        f"federations/other-federation/rounds/{ROUND:06d}/global.safetensors",
        f"{layout.published_weights_key()}/x",
        f"{layout.published_prefix()}x/model.json",
        f"{layout.published_prefix()}model.pickle",
    ]


KNOWN_LIMITS = [
    ("round segment: any six characters but '/'", PUT, "rounds/ABCDEF/updates/{site}.json"),
    ("round segment: full-width digits", GET, f"rounds/{FULLWIDTH_ZERO * 6}/global.json"),
    ("preflight stamp: any characters but '/'", PUT,
     "rounds/000000/updates/{site}.preflight-X.Y.json"),
]  # fmt: skip


@pytest.fixture(scope="module")
def policies(federation: Federation) -> ExchangePolicies:
    return exchange_policies(federation)


@pytest.fixture(scope="module")
def layout(federation: Federation) -> ExchangeLayout:
    return ExchangeLayout(federation.context.federation_id)


@pytest.fixture(scope="module")
def callers(federation: Federation) -> dict[str, Caller]:
    """The first two hospitals' task roles, by site id."""
    ctx = federation.context
    return {
        site.site_id: Caller.hospital(ctx.federation_id, site.site_id, site.account_id)
        for site in ctx.hospitals[:2]
    }


def build_table(
    federation: Federation,
    policies: ExchangePolicies,
    layout: ExchangeLayout,
    callers: dict[str, Caller],
) -> list[Case]:
    ctx = federation.context
    centre = ctx.coordinating_account
    cases: list[Case] = []

    def s3(
        name: str, caller: Caller, action: str, key: str | None, allowed: bool, **kw: Any
    ) -> None:
        identity = kw.pop("identity", None) or policies.identity.get(
            caller.site_tag or "", ALLOW_EVERYTHING
        )
        simulation = s3_simulation(
            policies, caller, action, key, identity=identity, resource_account=centre, **kw
        )
        cases.append(Case(name, simulation, allowed))

    def kms(name: str, caller: Caller, action: str, key: str, allowed: bool, **kw: Any) -> None:
        identity = kw.pop("identity", None) or policies.identity[caller.site_tag or ""]
        simulation = kms_simulation(
            policies,
            caller,
            action,
            key,
            identity=identity,
            resource_account=centre,
            layout=layout,
            region=ctx.region,
            **kw,
        )
        cases.append(Case(name, simulation, allowed))

    sites = list(callers)
    for site, other in ((sites[0], sites[1]), (sites[1], sites[0])):
        me = callers[site]
        public = canonical_reads(layout, site)
        for key in canonical_writes(layout, site):
            s3(f"{site} writes {key}", me, PUT, key, True)
            s3(f"{site} writes {key} naming the exchange key", me, PUT, key, True,
               encryption=Encryption("aws:kms", policies.key_arn))  # fmt: skip
            kms(f"{site} encrypts {key}", me, "kms:GenerateDataKey", key, True)
        for key in canonical_reads(layout, site):
            s3(f"{site} reads {key}", me, GET, key, True)
            kms(f"{site} decrypts {key}", me, "kms:Decrypt", key, True)
        for key in hostile_writes(layout, site, other):
            s3(f"bucket policy stops {site} writing {key}", me, PUT, key, False,
               identity=ALLOW_EVERYTHING)  # fmt: skip
            s3(f"identity policy stops {site} writing {key}", me, PUT, key, False,
               bucket_policy=allow_all_to(me))  # fmt: skip
            if key not in public:  # KMS grants each key for reads and writes alike
                kms(f"key policy stops {site} encrypting {key}", me, "kms:GenerateDataKey", key,
                    False, identity=ALLOW_EVERYTHING)  # fmt: skip
        for key in hostile_reads(layout, site, other):
            s3(f"bucket policy stops {site} reading {key}", me, GET, key, False,
               identity=ALLOW_EVERYTHING)  # fmt: skip
            s3(f"identity policy stops {site} reading {key}", me, GET, key, False,
               bucket_policy=allow_all_to(me))  # fmt: skip
        own = layout.update_weights_key(ROUND, site)
        for name, encryption in [
            ("SSE-C", Encryption(customer_algorithm="AES256")),
            ("SSE-S3", Encryption("AES256")),
            ("DSSE-KMS", Encryption("aws:kms:dsse", policies.key_arn)),
            ("another KMS key", Encryption("aws:kms", f"{policies.key_arn}-of-{site}")),
            ("another key, no algorithm", Encryption(key_id="arn:aws:kms:eu-west-1:1:key/x")),
            ("SSE-KMS naming no key (the aws/s3 key)", Encryption("aws:kms")),
        ]:
            s3(f"{site} writes its update under {name}", me, PUT, own, False,
               identity=ALLOW_EVERYTHING, encryption=encryption)  # fmt: skip
        s3(f"{site} overwrites (no If-None-Match)", me, PUT, own, False,
           identity=ALLOW_EVERYTHING, if_none_match=False)  # fmt: skip
        s3(f"{site} over plain HTTP", me, GET, layout.global_weights_key(ROUND), False,
           secure=False)  # fmt: skip
        for action, key in [("s3:ListBucket", None), ("s3:DeleteObject", own),
                            ("s3:PutObjectAcl", own), ("s3:GetObjectVersion", own)]:  # fmt: skip
            s3(f"{site} {action}", me, action, key, False, identity=ALLOW_EVERYTHING)
        kms(f"{site} decrypts outside S3", me, "kms:Decrypt", layout.global_weights_key(ROUND),
            False, via_s3=False)  # fmt: skip
        for description, action, pattern in KNOWN_LIMITS:
            key = layout.root + pattern.format(site=site)
            s3(f"known limit, {description}: {key}", me, action, key, True)

    a, b = sites[0], sites[1]
    arn_a = callers[a].arn
    key_b = layout.update_weights_key(ROUND, b)
    forged = Caller(arn_a, b)  # hospital A tags its own role (or session) as site B
    s3("A's role tagged as B writes B's update", forged, PUT, key_b, False,
       identity=ALLOW_EVERYTHING)  # fmt: skip
    kms("A's role tagged as B encrypts B's update", forged, "kms:GenerateDataKey", key_b, False,
        identity=ALLOW_EVERYTHING)  # fmt: skip
    look_alike = Caller(arn_a.replace(f"-{a}", f"-{b}"), b)  # a role named after B in A's account
    s3("a role named after B in A's account", look_alike, PUT, key_b, False,
       identity=ALLOW_EVERYTHING)  # fmt: skip
    stranger = Caller(arn_a.replace(callers[a].account, "999999999999"), a)
    s3("an unlisted account with a perfect name and tag", stranger, GET,
       layout.global_weights_key(ROUND), False, identity=ALLOW_EVERYTHING)  # fmt: skip
    aggregator = Caller(f"arn:aws:iam::{centre}:role/aggregator", None)
    for action, key in [(PUT, layout.state_key()), (GET, key_b),
                        (PUT, layout.ledger_key(ROUND)), ("s3:ListBucket", None),
                        (PUT, layout.published_weights_key()),
                        (GET, layout.published_manifest_key())]:  # fmt: skip
        s3(f"the coordinating account is not caught by the hospital denies: {action} {key}",
           aggregator, action, key, True, identity=ALLOW_EVERYTHING)  # fmt: skip
    s3("nobody writes under SSE-C, the coordinating account neither", aggregator, PUT,
       layout.state_key(), False, identity=ALLOW_EVERYTHING,
       encryption=Encryption(customer_algorithm="AES256"))  # fmt: skip
    return cases


@pytest.fixture(scope="module")
def verdicts(
    federation: Federation,
    policies: ExchangePolicies,
    layout: ExchangeLayout,
    callers: dict[str, Caller],
) -> list[tuple[Case, str]]:
    cases = build_table(federation, policies, layout, callers)
    return list(zip(cases, simulate([case.simulation for case in cases]), strict=True))


def wrong(verdicts: list[tuple[Case, str]], selected: str) -> list[str]:
    return [
        f"{case.name}: {verdict}"
        for case, verdict in verdicts
        if selected in case.name and (verdict == ALLOWED) != case.allowed
    ]


def test_the_table_is_large_and_has_both_answers(verdicts: list[tuple[Case, str]]) -> None:
    answers = {verdict for _, verdict in verdicts}
    assert len(verdicts) > 400
    assert {ALLOWED, "ExplicitlyDenied", "ImplicitlyDenied"} <= answers


def test_each_hospital_writes_exactly_its_canonical_keys(verdicts: list[tuple[Case, str]]) -> None:
    assert wrong(verdicts, " writes ") == []
    assert wrong(verdicts, " encrypts ") == []


def test_each_hospital_reads_what_is_public_and_its_own_registry(
    verdicts: list[tuple[Case, str]],
) -> None:
    assert wrong(verdicts, " reads ") == []
    assert wrong(verdicts, " decrypts ") == []


def test_the_bucket_policy_alone_stops_every_hostile_key(
    verdicts: list[tuple[Case, str]],
) -> None:
    assert wrong(verdicts, "bucket policy stops") == []


def test_the_identity_policy_alone_stops_every_hostile_key(
    verdicts: list[tuple[Case, str]],
) -> None:
    assert wrong(verdicts, "identity policy stops") == []


def test_the_key_policy_alone_stops_every_hostile_key(verdicts: list[tuple[Case, str]]) -> None:
    assert wrong(verdicts, "key policy stops") == []


def test_only_the_exchange_key_encrypts_and_only_write_once(
    verdicts: list[tuple[Case, str]],
) -> None:
    assert wrong(verdicts, "its update under") == []
    assert wrong(verdicts, "overwrites") == []
    assert wrong(verdicts, "SSE-C") == []


def test_forged_tags_look_alike_roles_strangers_and_plain_http_get_nothing(
    verdicts: list[tuple[Case, str]],
) -> None:
    for selected in ("tagged as B", "named after B", "unlisted account", "plain HTTP", " s3:"):
        assert wrong(verdicts, selected) == []


def test_the_coordinating_account_is_not_caught_by_the_hospital_denies(
    verdicts: list[tuple[Case, str]],
) -> None:
    assert wrong(verdicts, "coordinating account") == []


def test_the_known_limits_are_exactly_as_documented(verdicts: list[tuple[Case, str]]) -> None:
    assert wrong(verdicts, "known limit") == []
