"""Deploying a cluster beyond ``shardex up``: Kubernetes manifests generated from the process
descriptions (``shardex.deploy.k8s``, ``shardex deploy k8s``) and the key store they mount
(``shardex.deploy.keys``, ``shardex deploy keys``). docs/deploy.md walks through it."""
