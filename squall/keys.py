"""`squall keys`: the cluster's CurveZMQ key pair written in the shapes deployments consume (an
env file, shell exports, compose environment entries, a Kubernetes Secret)."""

from __future__ import annotations

import base64

from squall.common import security


def format_keys(fmt: str, namespace: str = "squall", name: str = "squall-keys", keys: tuple[str, str] | None = None) -> str:
    """A new key pair (or `keys`) as: "env" (an env file: KEY=value, for docker-compose's env_file
    and Kubernetes; new keys never contain "$", which compose would expand), "shell" (export lines
    to source; z85 has no quote, so single quotes are safe), "compose" (YAML environment entries)
    or "k8s-secret" (a Secret manifest)."""
    public, secret = keys or security.new_keypair()
    if fmt == "env":
        return f"SQUALL_CURVE_PUBLIC_KEY={public}\nSQUALL_CURVE_SECRET_KEY={secret}\n"
    if fmt == "shell":
        return f"export SQUALL_CURVE_PUBLIC_KEY='{public}'\nexport SQUALL_CURVE_SECRET_KEY='{secret}'\n"
    if fmt == "compose":
        public, secret = public.replace("$", "$$"), secret.replace("$", "$$")
        return f"      SQUALL_CURVE_PUBLIC_KEY: '{public}'\n      SQUALL_CURVE_SECRET_KEY: '{secret}'\n"
    if fmt == "k8s-secret":
        def b64(text: str) -> str:
            return base64.b64encode(text.encode("ascii")).decode("ascii")

        return (
            "apiVersion: v1\nkind: Secret\nmetadata:\n"
            f"  name: {name}\n  namespace: {namespace}\ntype: Opaque\ndata:\n"
            f"  SQUALL_CURVE_PUBLIC_KEY: {b64(public)}\n  SQUALL_CURVE_SECRET_KEY: {b64(secret)}\n"
        )
    raise ValueError(f"unknown key format {fmt!r}")
