"""Secure aggregation (Bonawitz et al. 2017, CCS) adapted to the S3 exchange.

Pure protocol math and documents: field quantisation (``field``), the mask PRG (``prg``),
Shamir sharing (``shamir``), key agreement and masking (``masking``), the protocol documents
(``messages``) and their keys in the exchange (``transport``). The hospital and aggregator
sides live in ``fl_client.secagg_client`` and ``fl_server.secagg_server``.
"""
