"""The deploy policy: ``tophan run`` and ``app start`` refuse an image with findings at or above a
level (``--scan-policy SEV``, else ``scan.fail_on`` in ``<root>/config.toml``), unless the app
allows them (``scan_allow = ["ID", …]`` in its spec; an alias of a finding counts).

The findings are the image's last scan (``scan --all`` keeps them current against the latest
database), or, if it was never scanned, a fresh match against the store's database, stored.
Callers import this module only when a policy may apply (a ``--scan-policy`` flag, or a
``config.toml`` in the store: one ``stat``), so that a start without one pays nothing for it.
"""

from __future__ import annotations

from tophan.errors import TophanError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from tophan._internal.root import StoreRoot
    from tophan.scan import targets
    from tophan.scan.match import Finding

CONFIG = "config.toml"
_SCAN_KEYS = ("fail_on",)


class PolicyError(TophanError):
    """An image refused by the deploy scan policy."""


def config_path(store: StoreRoot) -> str:
    return store.path(CONFIG)


def fail_on(store: StoreRoot) -> str | None:
    """``scan.fail_on`` of the store's config, checked; None when not set."""
    import tomllib

    from tophan.scan.match import check_severity

    path = config_path(store)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from e
    scan = doc.get("scan", {})
    if not isinstance(scan, dict):
        raise UsageError(f"{path}: scan: must be a table", "write [scan] and fail_on below it")
    for key in scan:
        if key not in _SCAN_KEYS:
            raise UsageError(f"{path}: scan.{key}: unknown key", "known: scan.fail_on")
    value = scan.get("fail_on")
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError(f"{path}: scan.fail_on: expected a string", 'e.g. fail_on = "HIGH"')
    return check_severity(value)


def enforce(
    store: StoreRoot,
    image: str | None,
    layers: Sequence[str],
    flag: str | None,
    allow: Iterable[str] = (),
) -> list[Finding]:
    """Refuse (``PolicyError``) what the policy forbids; returns the findings it let through."""
    from tophan.scan import report, targets
    from tophan.scan.match import check_severity

    level = check_severity(flag) if flag is not None else fail_on(store)
    if level is None:
        return []
    target = targets.image(store, image) if image else targets.layers(store, list(layers))
    findings = _findings(store, target)
    over = report.at_or_above(findings, level)
    bad = [f for f in over if not report.ignored(f, set(allow))]
    if bad:
        ids = ", ".join(sorted({f.id for f in bad}))
        raise PolicyError(
            f"{target.name}: vulnerabilities at or above {level}: {ids}",
            'update the image, or accept them in the app\'s spec: scan_allow = ["ID", ...]',
        )
    return over


def _findings(store: StoreRoot, target: targets.Target) -> list[Finding]:
    from tophan.scan import report
    from tophan.scan.inventory import Inventories

    doc = report.last(store, target.key)
    if doc is not None:
        return report.stored_findings(doc)
    db = report.open_db(store)
    result = report.scan(Inventories(store), target, db)
    if target.digest:
        report.save(store, result, db)
    return result.findings
