"""A hostile hospital plants keys that end like another hospital's answer, for every round,
before any round opens; real ``server run`` and ``client run`` processes over moto_server.

The keys are site-a's own (``updates/site-a.*``: its grant, with IAM's ``*`` spanning
``/``); an aggregator that read a site out of a key's last segment decided site-b at its
first poll of each round, before site-b had trained, and rejected it as missing.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_keys_planted_for_every_round_never_decide_the_hospital_they_imitate(make_federation):
    federation = make_federation()
    hostile, imitated = federation.hospitals[0], federation.hospitals[1]
    rounds = federation.settings["rounds"]
    layout = federation.exchange.layout
    store = federation.store_for(hostile)  # written with the hostile hospital's own key
    planted = {
        round_index: [
            f"{layout.updates_prefix(round_index)}{hostile}.x/{imitated}.json",
            f"{layout.updates_prefix(round_index)}{hostile}.x/{imitated}.safetensors",
        ]
        for round_index in range(1, rounds + 2)
    }
    for keys in planted.values():
        for key in keys:
            store.put_new(key, b'{"site_id": "' + imitated.encode() + b'"}')
    server = federation.start_server()
    clients = federation.start_clients()
    federation.run_to_end(server, clients)
    for round_index, keys in planted.items():
        result = federation.result(round_index)
        assert result is not None, federation.logs()
        assert sorted(d.site_id for d in result.accepted) == federation.hospitals, result
        assert result.rejected == [] and result.missing == []
        assert result.foreign_keys == 2
        assert sorted(result.foreign_key_samples) == sorted(keys)
    assert "foreign_keys" in server.stdout() + server.stderr()
