"""Inference attacks of an honest-but-curious server on the updates it reads.

See ``docs/gradient-inversion.md``.
"""

from fedfort.attacks.inference.gradient_inversion import DLG as DLG
from fedfort.attacks.inference.gradient_inversion import IDLG as IDLG
from fedfort.attacks.inference.gradient_inversion import GradientInversion as GradientInversion
from fedfort.attacks.inference.gradient_inversion import InversionResult as InversionResult
from fedfort.attacks.inference.gradient_inversion import InvertingGradients as InvertingGradients
from fedfort.attacks.inference.inversion_defences import InversionExperiment as InversionExperiment
from fedfort.attacks.inference.inversion_defences import (
    evaluate_inversion_defences as evaluate_inversion_defences,
)
from fedfort.attacks.inference.inversion_results import DefenceRow as DefenceRow
from fedfort.attacks.inference.inversion_results import InversionReport as InversionReport
from fedfort.attacks.inference.inversion_results import TrialOutcome as TrialOutcome
from fedfort.attacks.inference.observed_update import InversionTarget as InversionTarget
from fedfort.attacks.inference.observed_update import recover_labels as recover_labels
from fedfort.attacks.inference.observed_update import target_from_update as target_from_update

__all__ = [
    "DLG",
    "IDLG",
    "DefenceRow",
    "GradientInversion",
    "InversionExperiment",
    "InversionReport",
    "InversionResult",
    "InversionTarget",
    "InvertingGradients",
    "TrialOutcome",
    "evaluate_inversion_defences",
    "recover_labels",
    "target_from_update",
]
