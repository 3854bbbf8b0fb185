"""`refuse_resume`: the one "written for different settings/data" message.

A checkpoint, a hierarchical checkpoint manifest and an activation store all
resume only when what they recorded equals what is asked for now. Each used to
word its refusal differently; this module compares the two records and
raises one message in one wording:

    <what> was written for different <kind> (key: <saved_as> A vs now B, ...); <remedy>

Digest keys (content hashes) are shown as "content differs (<saved_as> abc... vs now
def...)" rather than as 64 hex characters each.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

__all__ = ["differences", "refuse_resume"]

# Keys holding SHA-256 digests, and how a difference in each is named.
_DIGEST_KEYS = {"sha256": "content", "chunks_sha256": "content",
                "codes_init": "codes_init content", "chunk_bounds_sha256": "chunking"}


def differences(saved: Mapping[str, Any], now: Mapping[str, Any], *,
                saved_as: str = "checkpoint", ignore: Iterable[str] = ()) -> str | None:
    """What differs between a recorded dict and the current one.

    Args:
      saved: what the file recorded.
      now: what the caller asks for now.
      saved_as: how the recorded side is named ("checkpoint", "stored").
      ignore: keys allowed to differ.

    Returns:
      None when equal on every key either side has (a key only one side has
      is a difference), else "key: <saved_as> A vs now B, ..." sorted by key.
    """
    keys = sorted((set(saved) | set(now)) - set(ignore))
    parts = []
    for k in keys:
        a, b = saved.get(k), now.get(k)
        if a == b:
            continue
        if k in _DIGEST_KEYS:
            parts.append(f"{_DIGEST_KEYS[k]} differs ({saved_as} {str(a)[:12]} vs "
                         f"now {str(b)[:12]})")
        else:
            parts.append(f"{k}: {saved_as} {a!r} vs now {b!r}")
    return ", ".join(parts) or None


def refuse_resume(what: str, saved: Mapping[str, Any], now: Mapping[str, Any], *,
                  kind: str, remedy: str, saved_as: str = "checkpoint",
                  ignore: Iterable[str] = ()) -> None:
    """Raises ValueError naming every difference, or returns when none.

    Args:
      what: the thing refused ("checkpoint /x/ckpt", "the activation store at '/x'").
      saved: what it recorded.
      now: what is asked for now.
      kind: "settings" or "data".
      remedy: what the user can do, ending the message.
      saved_as: how the recorded side is named in the details.
      ignore: keys allowed to differ.

    Raises:
      ValueError: "<what> was written for different <kind> (<details>); <remedy>".
    """
    detail = differences(saved, now, saved_as=saved_as, ignore=ignore)
    if detail:
        raise ValueError(f"{what} was written for different {kind} ({detail}); {remedy}")
