"""``fedsilo study show`` (the centre) and ``fedsilo site status|approve`` (a hospital).

The centre shows the study a config runs and its hash, to send to the hospitals; a hospital
approves what the aggregator actually published (``site approve``), and reads what its own
policy allows and what its privacy ledger holds (``site status``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedsilo.cli.options import ConfigOption, EndpointUrlOption
from fedsilo.cli.output import stdout

study_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="The study a federation runs: what hospitals approve.",
)

StateDirOption = Annotated[
    Path,
    typer.Option("--state-dir", envvar="FEDSILO_STATE_DIR", help="the hospital's own state folder"),
]
SitePolicyOption = Annotated[
    Path | None,
    typer.Option(
        "--site-policy",
        help="the hospital's site policy (default: env FEDSILO_SITE_POLICY or "
        "FEDSILO_SITE_POLICY_JSON)",
    ),
]


def _say(line: str) -> None:
    stdout.print(line, markup=False, highlight=False, soft_wrap=True)


@study_app.command("show")
def study_show(
    config: ConfigOption = None,
    sites: Annotated[
        int | None,
        typer.Option(
            "--sites",
            min=1,
            help="hospitals the aggregator will invite: a strategy that fits its quorum to "
            "them (krum) changes the study",
        ),
    ] = None,
) -> None:
    """Print the study a config runs (what hospitals approve) and its config hash."""
    from fedsilo.engine.app import build_source
    from fedsilo.engine.strategy_fit import fit_strategy
    from fedsilo.ops.study_approval import study_lines
    from fl_core.config import load_config
    from fl_core.study import Study

    federation = load_config(config)
    federation, notes = fit_strategy(federation, sites)
    study = Study.of(federation, build_source(federation).feature_names())
    for line in study_lines(study, study.digest()):
        _say(line)
    for note in notes:
        _say(f"  note: {note}")
    _say("study (canonical JSON, hashed to the config hash):")
    _say(study.canonical_json())


def site_approve(
    exchange: Annotated[
        str, typer.Option("--exchange", envvar="FEDSILO_EXCHANGE", help="s3://bucket/prefix")
    ],
    federation_id: Annotated[
        str, typer.Option("--federation-id", envvar="FEDSILO_FEDERATION_ID", help="federation")
    ],
    endpoint_url: EndpointUrlOption = None,
) -> None:
    """Print the newest published study and a site policy snippet approving it.

    The study is verified against its config hash and the architecture is read from the
    global model file itself. Review the study, paste the snippet under ``studies:`` in the
    site policy (set dp_sgd_max_epsilon if you require DP-SGD) and restart the client.
    """
    from fedsilo.cli.ops import open_exchange
    from fedsilo.ops.study_approval import policy_snippet, published_study, study_lines

    published = published_study(open_exchange(exchange, federation_id, endpoint_url))
    for line in study_lines(published.study, published.manifest.config_hash):
        _say(line)
    _say(f"  architecture digest: {published.architecture}")
    _say(f"  published in round {published.manifest.round_index}")
    _say("")
    _say("# site policy snippet: review the study above, then add under `studies:`")
    _say(policy_snippet(published).rstrip())


def site_status(state_dir: StateDirOption, site_policy: SitePolicyOption = None) -> None:
    """Print the site policy in force and the privacy loss spent per study."""
    from fl_client.privacy_ledger import PrivacyLedger
    from fl_core.site_policy import load_site_policy, policy_summary

    policy = load_site_policy(site_policy)
    if policy is None:
        _say("no site policy: the client serves any study it is configured for")
    else:
        for line in policy_summary(policy):
            _say(line)
    found = PrivacyLedger(state_dir)
    ledger = found.read()
    spent = "per study" if ledger.studies else "no DP-SGD spend recorded"
    _say(f"privacy ledger {found.path}: {spent}")
    for federation_id, spend in sorted(ledger.studies.items()):
        _say(f"  {federation_id}: epsilon {spend.epsilon:.4g} at delta {spend.delta:g}")
    total = ledger.total_epsilon()
    budget = None if policy is None else policy.epsilon_budget
    left = (
        "no budget set" if budget is None else f"{max(budget - total, 0.0):.4g} left of {budget:g}"
    )
    _say(
        f"  all studies: epsilon {total:.4g}, delta {ledger.total_delta():g} "
        f"(basic composition); {left}"
    )
