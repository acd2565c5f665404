"""Tools around the cluster (not processes of it): replay, tail."""
