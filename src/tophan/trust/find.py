"""Where the policy is. Its own module because every container start asks: with no policy file
anywhere the answer must cost a few ``stat`` calls, not the import of the policy parser."""

from __future__ import annotations

import os

SYSTEM_POLICY = "/etc/containers/policy.json"


def policy_path(explicit: str | None, store_root: str | None) -> str | None:
    """``--policy``, else ``$TOPHAN_POLICY``, else the store's ``policy.json``, else the system's;
    None when there is none (then nothing is enforced, as before policies existed)."""
    if explicit:
        return explicit
    if os.environ.get("TOPHAN_POLICY"):
        return os.environ["TOPHAN_POLICY"]
    candidates = [os.path.join(store_root, "policy.json")] if store_root else []
    candidates.append(SYSTEM_POLICY)
    return next((p for p in candidates if os.path.exists(p)), None)


_ANYTHING = {"type": "insecureAcceptAnything"}


def accepts_anything(path: str) -> bool:
    """Whether the policy at ``path`` is exactly one that accepts every image, as the system
    default many distributions install is: then a start needs neither the policy parser (its
    import alone costs a start ~15 ms) nor the image's record. Anything else, including a file
    that is not a valid policy, is False and goes to the strict parser."""
    import json

    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict) or set(doc) - {"default", "transports"}:
        return False
    lists = [doc.get("default")]
    transports = doc.get("transports", {})
    if not isinstance(transports, dict):
        return False
    for scopes in transports.values():
        if not isinstance(scopes, dict):
            return False
        lists += scopes.values()
    return all(
        isinstance(reqs, list) and reqs and all(r == _ANYTHING for r in reqs) for reqs in lists
    )
