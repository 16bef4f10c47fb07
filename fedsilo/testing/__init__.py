"""Support code for offline runs against moto: tests, ``chaos`` and ``examples/demo_aws.py``.

Nothing here is imported by the product. ``moto_s3`` starts moto (in-process or as its own
process), builds the environment that keeps a process away from any real AWS account, and
makes clients and buckets; ``moto_iam`` makes users, roles and credentials and switches
moto's IAM enforcement; ``cli`` runs ``fedsilo`` as a subprocess; ``manifests`` builds the
update manifests that answer a round; ``s3_faults`` injects S3's error replies into a
store's own client.
"""
