"""Running containers: the Runtime contract, containerd, OCI specs."""
