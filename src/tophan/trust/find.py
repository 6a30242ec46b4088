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
