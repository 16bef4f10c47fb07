"""AWS deployment of fedsilo (CDK v2): one construct per concern, two stacks.

``AggregatorStack`` runs in the coordinating account, ``HospitalStack`` in each hospital's
account; ``app.py`` builds them from the ``fedsilo`` context of ``cdk.json``
(``stacks.context.FederationContext``).
"""
