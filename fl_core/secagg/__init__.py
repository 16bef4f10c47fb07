"""Secure aggregation (Bonawitz et al. 2017, CCS) adapted to the S3 exchange.

Pure protocol math and documents: field quantisation (``field``), the mask PRG (``prg``),
Shamir sharing (``shamir``), key agreement and masking (``masking``), the threshold both sides
hold a roster to (``threshold``), reconstructing what unmasks the survivors' sum
(``unmasking``), the evaluation segment summed under the masks (``masked_evaluation``), the
protocol documents (``messages``) and their keys in the exchange (``transport``). The
hospital's side is ``fl_client.secagg_client``; the aggregator runs the protocol as a phase of
its training rounds (``fl_server.secagg_server``).
"""
