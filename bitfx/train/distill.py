"""Knowledge distillation from the float model a pass started from (teacher) into the
rewritten one (student), the usual way to train binary networks (ReActNet's distributional
loss is the `temperature=1` KL term below).

    loss = T² · KL(softmax(t/T) ‖ softmax(s/T))                 (logits)
         + label_weight · cross_entropy(s, labels)             (optional)
         + feature_weight · Σ_f mean((s_f − t_f)²)             (optional, named graph nodes)

The teacher runs in eval mode without gradients; the student in whatever mode it is in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from bitfx.ir.execution import eval_mode
from bitfx.train.skt import with_taps


class Distillation:
    """Distillation loss of `student` against `teacher`; call it with a batch.

    `features` names graph nodes present in both (the `binarize` pass keeps the names of the
    layers it replaces); both models must then be GraphModules (`bitfx.train.with_taps`
    returns those nodes' values)."""

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        *,
        temperature: float = 1.0,
        label_weight: float = 0.0,
        feature_weight: float = 0.0,
        features: Sequence[str] = (),
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if features and not (isinstance(teacher, fx.GraphModule) and isinstance(student, fx.GraphModule)):
            raise ValueError("feature distillation needs GraphModules (capture the models with bitfx.ir.capture)")
        self.teacher = with_taps(teacher, features) if features else teacher
        self.student = with_taps(student, features) if features else student
        self.temperature, self.label_weight, self.feature_weight = temperature, label_weight, feature_weight
        self.features = tuple(features)

    def __call__(self, inputs: Tensor, labels: Tensor | None = None) -> Tensor:
        with eval_mode(self.teacher), torch.no_grad():
            teacher_out = self.teacher(inputs)
        student_out = self.student(inputs)
        (teacher_logits, teacher_features), (student_logits, student_features) = (
            self._split(teacher_out),
            self._split(student_out),
        )
        t = self.temperature
        loss = (
            F.kl_div(
                F.log_softmax(student_logits / t, dim=1),
                F.log_softmax(teacher_logits / t, dim=1),
                log_target=True,
                reduction="batchmean",
            )
            * t
            * t
        )
        if self.label_weight:
            if labels is None:
                raise ValueError("label_weight is set: pass the labels")
            loss = loss + self.label_weight * F.cross_entropy(student_logits, labels)
        if self.feature_weight:
            loss = loss + self.feature_weight * sum(
                F.mse_loss(s, t_) for s, t_ in zip(student_features, teacher_features)
            )
        return loss

    def _split(self, output: object) -> tuple[Tensor, list[Tensor]]:
        if self.features:
            logits, features = output
            return logits, features
        return output, []
