"""``FederationState`` changes only through typed transitions that validate what they make."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fl_core.exchange.manifests import Decision, FederationState


def _state() -> FederationState:
    return FederationState(
        federation_id="f",
        round_index=3,
        phase="collecting",
        started_unix=100.0,
        deadline_unix=160.0,
        owner_id="a",
        lease_expires_unix=130.0,
        config_hash="c" * 64,
        strategy_state={"step": 2},
    )


def _accepted(site: str) -> Decision:
    return Decision(site_id=site, status="accepted", sha256="0" * 64, decided_unix=1.0)


def test_next_round_clears_the_round_and_keeps_the_federation() -> None:
    state = _state().with_decisions({"s": _accepted("s")}).extended(30.0)
    following = state.next_round(200.0, 260.0, {"step": 3})
    assert (following.round_index, following.decisions, following.extensions) == (4, {}, 0)
    assert (following.started_unix, following.deadline_unix) == (200.0, 260.0)
    assert following.strategy_state == {"step": 3}
    assert (following.federation_id, following.config_hash) == ("f", "c" * 64)
    assert state.round_index == 3  # the old state is untouched (frozen)


def test_extension_moves_the_deadline_and_counts() -> None:
    extended = _state().extended(15.0).extended(15.0)
    assert (extended.deadline_unix, extended.extensions) == (190.0, 2)
    with pytest.raises(ValueError, match="cannot extend"):
        _state().extended(0.0)


def test_done_and_failed_are_final() -> None:
    done = _state().with_decisions({"s": _accepted("s")}).done()
    assert (done.phase, done.decisions) == ("done", {})
    failed = _state().failed("round 3 closed below quorum")
    assert (failed.phase, failed.message) == ("failed", "round 3 closed below quorum")
    for closed in (done, failed):
        with pytest.raises(ValueError, match="opens no round"):
            closed.next_round(1.0, 2.0, {})
        with pytest.raises(ValueError, match="decisions recorded"):
            closed.with_decisions({})
    with pytest.raises(ValueError, match="needs a message"):
        _state().failed("")


def test_a_wrong_field_or_value_fails_at_the_transition() -> None:
    with pytest.raises(TypeError, match="no field"):
        _state()._changed(round_idx=4)
    with pytest.raises(ValidationError):
        _state().with_decisions({"s": "accepted"})  # type: ignore[dict-item]
    with pytest.raises(ValidationError):
        _state().leased("b", "soon")  # type: ignore[arg-type]


def test_overruled_decision_is_a_rejection_with_its_reason() -> None:
    late = _accepted("s").overruled("secagg_late", "arrived after the unmask request")
    assert (late.status, late.reason, late.sha256) == ("rejected", "secagg_late", "0" * 64)


def test_an_answer_changes_through_validated_transitions() -> None:
    from fl_core.exchange.manifests import SitePrivacy, UpdateManifest

    answer = UpdateManifest(
        federation_id="f",
        site_id="s",
        round_index=2,
        task="evaluate",
        global_sha256="1" * 64,
        num_examples=40,
        nonce="a" * 32,
    )
    trained = answer.trained(38, float("nan"))
    assert (trained.task, trained.num_examples, trained.train_loss) == ("train", 38, None)
    declined = answer.declined_as("no_training_rows", "no rows")
    assert (declined.task, declined.declined) == ("train", "no_training_rows")
    spent = SitePrivacy(epsilon=1.2, delta=1e-5, target_epsilon=3.0, noise_multiplier=1.1, steps=40)
    assert answer.with_privacy(spent).privacy == spent
    with pytest.raises(ValidationError):
        answer.trained(-1, 0.5)
