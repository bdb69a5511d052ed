"""``PRESETS``: named attack settings (``PRESETS["pgd20"]``); the 8/255 budget is the spec default.

Built after every attack is registered (an :class:`AttackSpec` checks its ``kind`` against
the registry).
"""

from __future__ import annotations

from arnas_ray._registry import Registry
from arnas_ray.attacks import _autoattack, _fgsm, _pgd  # noqa: F401  (register every kind first)
from arnas_ray.attacks.spec import AttackSpec

__all__ = ["PRESETS"]


#: Named attack settings.
PRESETS: Registry[AttackSpec] = Registry("attack preset")
PRESETS.add("fgsm", AttackSpec(kind="fgsm", steps=1, random_start=False))
PRESETS.add("pgd7", AttackSpec(kind="pgd", steps=7))  # ARNAS search and PGD-AT
PRESETS.add("pgd10", AttackSpec(kind="pgd", steps=10))
PRESETS.add("pgd20", AttackSpec(kind="pgd", steps=20))
PRESETS.add("pgd100", AttackSpec(kind="pgd", steps=100))
PRESETS.add("aa", AttackSpec(kind="autoattack", version="standard"))
