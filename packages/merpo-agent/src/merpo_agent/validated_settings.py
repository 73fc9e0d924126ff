"""Tuned settings as ``--settings``: a ``merpo-agent tune --out`` folder, or ``validated``.

``merpo-agent tune`` writes each method's chosen settings to ``<out>/<algo>/best.yaml`` (a
``--config`` file). ``--settings DIR`` of ``train``, ``reproduce`` and the quickstart reads
that layout: a run of ``--algo A`` takes ``DIR/A/best.yaml``, and MerPO's ablations and
single-task RAC (COMBO, With beha only, ...; Fig. 4, Fig. 5) take MerPO's, so that an
ablation differs from MerPO in the one thing it ablates.

``--settings validated`` is the folder shipped with merpo-agent, ``merpo_agent/validated/
<env slug>/``: the settings merpo's own studies chose on validation tasks carved from the
training split, with their study records in the repository's ``docs/results/tuning/``.
An env whose tasks are all training tasks (Half-Cheetah-Fwd-Back, Ant-Fwd-Back: nothing
can be held out to tune on) and an env not studied yet ships the *readings* chosen on
Point-Robot-Wind (:data:`READING_KEYS`: which of the paper's ambiguous readings, §4.2-§4.3
and App. A.2.2) and keeps its own Table 2 learning rates: a learning rate tuned on a 2-D
point says nothing about a 17-dimensional robot, a reading of the paper is not
env-specific. ``tests/agent/test_validated_settings.py`` keeps those files equal to
:func:`readings_of` Point-Robot-Wind's.

Torch-free: ``--help`` and ``reproduce``'s settings checks import no torch.
"""

from __future__ import annotations

from pathlib import Path

from merpo_agent.config import ALGOS, ConfigError

VALIDATED = "validated"
SHIPPED_DIR = Path(__file__).resolve().parent / "validated"
BEST_FILE = "best.yaml"  # what ``tune`` writes per method; what ``--settings`` reads

# MerPO's ablations and single-task RAC read MerPO's settings; MerPO-Adp has its own study.
MERPO_FAMILY = tuple(algo for algo in ALGOS if algo != "merpo-adp")


def _reading_keys() -> frozenset[str]:
    from merpo_agent.search_spaces import SEARCH_SPACES

    keys = set()
    for space in SEARCH_SPACES.values():
        for choice in space:
            if choice.reading:
                for option in choice.options.values():
                    keys.update(item.split("=", 1)[0] for item in option)
    return frozenset(keys)


# The config keys of the paper's open readings (search_spaces marks them), not rates.
READING_KEYS = _reading_keys()


def settings_source(algo: str) -> str:
    """Whose settings a run of ``algo`` reads (MerPO's for its ablations)."""
    return "merpo" if algo in MERPO_FAMILY else algo


def settings_dir(settings: str | Path, env_id: str) -> Path:
    """The folder ``--settings`` names: ``validated`` (shipped, per env) or a ``tune --out``."""
    if str(settings) == VALIDATED:
        from merpo_envs import get_meta_info

        path = SHIPPED_DIR / get_meta_info(env_id).slug
        if not path.is_dir():
            raise ConfigError(
                f"--settings validated: merpo ships no validated settings for {env_id}; run "
                f"`merpo-agent tune --env {env_id}` and pass its --out folder instead"
            )
        return path
    path = Path(settings)
    if not path.is_dir():
        raise ConfigError(
            f"--settings {settings}: no such folder; pass `validated` or the --out folder "
            "of `merpo-agent tune`"
        )
    return path


def settings_file(settings: str | Path, env_id: str, algo: str) -> Path | None:
    """``<settings>/<algo's source>/best.yaml``, or None when that method has none there."""
    path = settings_dir(settings, env_id) / settings_source(algo) / BEST_FILE
    return path if path.is_file() else None


def required_settings_file(settings: str | Path, env_id: str, algo: str) -> Path:
    """:func:`settings_file` for one run (``train --settings``): missing is a one-line error."""
    path = settings_file(settings, env_id, algo)
    if path is None:
        raise ConfigError(
            f"--settings {settings}: no settings for {algo} on {env_id} (no "
            f"{settings_source(algo)}/{BEST_FILE}); run `merpo-agent tune --algo "
            f"{settings_source(algo)} --env {env_id}` first, or drop --settings"
        )
    return path


def readings_of(settings: dict) -> dict:
    """The reading keys of a nested settings mapping (``{"meta": {...}, "rac": {...}}``)."""
    out: dict = {}
    for section, values in settings.items():
        if not isinstance(values, dict):
            continue
        kept = {k: v for k, v in values.items() if f"{section}.{k}" in READING_KEYS}
        if kept:
            out[section] = kept
    return out


__all__ = [
    "BEST_FILE", "MERPO_FAMILY", "READING_KEYS", "SHIPPED_DIR", "VALIDATED",
    "readings_of", "required_settings_file", "settings_dir", "settings_file", "settings_source",
]
