"""Inference attacks of an honest-but-curious server on the updates it reads.

Membership inference (loss threshold, LiRA) on models and updates: ``docs/privacy-redteam.md``.

Gradient inversion (DLG, iDLG, Inverting Gradients): ``docs/gradient-inversion.md``. The
evaluation that runs these attacks against each defence is a red-team harness and lives in
:mod:`fedfort.redteam.privacy_inversion`.
"""

from fedfort.attacks.inference.gradient_inversion import DLG as DLG
from fedfort.attacks.inference.gradient_inversion import IDLG as IDLG
from fedfort.attacks.inference.gradient_inversion import GradientInversion as GradientInversion
from fedfort.attacks.inference.gradient_inversion import InversionResult as InversionResult
from fedfort.attacks.inference.gradient_inversion import InvertingGradients as InvertingGradients
from fedfort.attacks.inference.inversion_results import DefenceRow as DefenceRow
from fedfort.attacks.inference.inversion_results import InversionReport as InversionReport
from fedfort.attacks.inference.inversion_results import TrialOutcome as TrialOutcome
from fedfort.attacks.inference.membership import Interval as Interval
from fedfort.attacks.inference.membership import LiraFit as LiraFit
from fedfort.attacks.inference.membership import MembershipMetrics as MembershipMetrics
from fedfort.attacks.inference.membership import fit_lira as fit_lira
from fedfort.attacks.inference.membership import lira_scores as lira_scores
from fedfort.attacks.inference.membership import logit_confidence as logit_confidence
from fedfort.attacks.inference.membership import loss_change_scores as loss_change_scores
from fedfort.attacks.inference.membership import membership_metrics as membership_metrics
from fedfort.attacks.inference.membership import per_example_loss as per_example_loss
from fedfort.attacks.inference.membership import t_interval as t_interval
from fedfort.attacks.inference.observed_update import InversionTarget as InversionTarget
from fedfort.attacks.inference.observed_update import recover_labels as recover_labels
from fedfort.attacks.inference.observed_update import target_from_update as target_from_update
from fedfort.attacks.inference.shadow_models import ShadowStatistics as ShadowStatistics
from fedfort.attacks.inference.shadow_models import train_shadow_models as train_shadow_models

__all__ = [
    "DLG",
    "IDLG",
    "DefenceRow",
    "GradientInversion",
    "Interval",
    "InversionReport",
    "InversionResult",
    "InversionTarget",
    "InvertingGradients",
    "LiraFit",
    "MembershipMetrics",
    "ShadowStatistics",
    "TrialOutcome",
    "fit_lira",
    "lira_scores",
    "logit_confidence",
    "loss_change_scores",
    "membership_metrics",
    "per_example_loss",
    "recover_labels",
    "t_interval",
    "target_from_update",
    "train_shadow_models",
]
