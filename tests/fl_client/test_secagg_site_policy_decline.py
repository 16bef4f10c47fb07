"""Under secure aggregation a hospital whose site policy declines the round never advertises
a key, and the round completes with the others."""

from __future__ import annotations

from pathlib import Path

from bench._secagg_harness import Logistic, run_round, secagg_round_config
from fl_client.site_policy_gate import SiteGate
from fl_core.site_policy import ApprovedStudy, SitePolicy
from fl_core.study import weights_architecture

SITES = [f"site-{c}" for c in "abcd"]
FEATURES = 4


def test_a_policy_decline_does_not_break_a_secure_round(tmp_path: Path) -> None:
    config = secagg_round_config(SITES, **{"privacy.secagg.advert_timeout_s": 5.0})
    architecture = weights_architecture(
        {k: v.detach().numpy() for k, v in Logistic(FEATURES).state_dict().items()}
    )
    refusing = ApprovedStudy(
        federation_id=config.federation_id,
        config_hashes=("0" * 64,),  # not this study's hash
        architecture_digests=(architecture,),
    )
    policy = SitePolicy(site_id="site-d", studies=(refusing,))
    gate = SiteGate.open(policy, ["site-d"], None)
    exchange, _, trained = run_round(
        tmp_path, SITES, config, lambda: Logistic(FEATURES), gates={"site-d": gate}
    )
    result = exchange.read_result(1)
    assert result is not None
    assert {d.site_id for d in result.accepted} == {"site-a", "site-b", "site-c"}
    assert {d.site_id: d.reason for d in result.declined} == {"site-d": "policy study_not_approved"}
    assert "site-d" not in trained  # it never trained
    advert = exchange.layout.secagg_update_key(1, "site-d", "advert")
    assert not exchange.store.exists(advert)
    assert exchange.read_global_manifest(2) is not None  # the round closed on its sum
