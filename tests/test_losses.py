"""Math properties of the distillation losses, and the fast path against plain references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tasks.losses import entropy, forward_kl, soft_cross_entropy, token_cross_entropy

V = 50


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(3, 7, V, generator=g) * 2
    teacher = torch.randn(3, 7, V, generator=g) * 2
    mask = (torch.rand(3, 7, generator=g) > 0.4).float()
    mask[0, 0] = 1
    return student, teacher, mask


def kl_reference(student, teacher, temperature, mask):
    """Plain masked T^2 * KL(p_T || q_T) with F.kl_div, one position at a time."""
    total, n = 0.0, 0
    for b in range(student.shape[0]):
        for t in range(student.shape[1]):
            if mask[b, t]:
                q = F.log_softmax(student[b, t] / temperature, -1)
                p = F.softmax(teacher[b, t] / temperature, -1)
                total += F.kl_div(q, p, reduction="sum")
                n += 1
    return temperature**2 * total / n


def test_identical_logits_give_zero_kl(logits):
    _, teacher, mask = logits
    for temperature in (0.5, 1.0, 2.0, 4.0):
        assert forward_kl(teacher, teacher, temperature, mask).item() == pytest.approx(0.0, abs=1e-5)


def test_soft_cross_entropy_is_at_least_teacher_entropy(logits):
    student, teacher, mask = logits
    for temperature in (1.0, 2.0):
        sce = soft_cross_entropy(student, teacher, temperature, mask)
        h = temperature**2 * entropy(teacher, temperature, mask)
        assert sce.item() >= h.item() - 1e-6
        assert forward_kl(student, teacher, temperature, mask).item() > 0
        assert (sce - h).item() == pytest.approx(forward_kl(student, teacher, temperature, mask).item(), rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 3.5])
def test_forward_kl_matches_kl_div_reference(logits, temperature):
    student, teacher, mask = logits
    expected = kl_reference(student, teacher, temperature, mask)
    assert forward_kl(student, teacher, temperature, mask).item() == pytest.approx(expected.item(), rel=1e-4)


def test_gradient_matches_kl_div_reference(logits):
    """Soft CE and KL differ by a constant in the student: same gradient as the reference."""
    student, teacher, mask = logits
    a = student.clone().requires_grad_()
    soft_cross_entropy(a, teacher, 2.0, mask).backward()
    b = student.clone().requires_grad_()
    kl_reference(b, teacher, 2.0, mask).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    c = teacher.clone().requires_grad_()
    soft_cross_entropy(student, c, 2.0, mask)
    assert c.grad is None  # the teacher is a constant


def test_masked_positions_are_ignored(logits):
    student, teacher, mask = logits
    before = soft_cross_entropy(student, teacher, 2.0, mask)
    noisy = student.clone()
    noisy[mask == 0] = torch.randn_like(noisy[mask == 0]) * 100
    assert soft_cross_entropy(noisy, teacher, 2.0, mask).item() == pytest.approx(before.item(), rel=1e-6)
    # Masked mean over the selected positions == unmasked mean over just those positions.
    keep = mask.bool()
    flat = soft_cross_entropy(student[keep], teacher[keep], 2.0)
    assert flat.item() == pytest.approx(before.item(), rel=1e-6)


def test_empty_mask_gives_zero_not_nan(logits):
    student, teacher, _ = logits
    zero = torch.zeros(student.shape[:-1])
    assert soft_cross_entropy(student, teacher, 2.0, zero).item() == 0.0


def test_temperature_scaling(logits):
    """A higher T flattens the teacher (more entropy); T^2 scaling and T -> large limit."""
    student, teacher, mask = logits
    assert entropy(teacher, 4.0, mask) > entropy(teacher, 1.0, mask)
    # Scaling both logit sets by c at temperature c*T is the same loss up to c^2 (the T^2 factor).
    c = 3.0
    a = forward_kl(student, teacher, 2.0, mask)
    b = forward_kl(c * student, c * teacher, c * 2.0, mask)
    assert b.item() == pytest.approx(c**2 * a.item(), rel=1e-4)
    # For large T the T^2-scaled KL tends to the logit-matching limit (Hinton et al. §2.1):
    # KL ~ 1/(2 T^2 V) * sum ((z_s - mean z_s) - (z_t - mean z_t))^2.
    temperature = 200.0
    zs = student - student.mean(-1, keepdim=True)
    zt = teacher - teacher.mean(-1, keepdim=True)
    per_token = ((zs - zt) ** 2).sum(-1) / (2 * V) - ((zs - zt).sum(-1) / V) ** 2 / 2
    limit = (per_token * mask).sum() / mask.sum()
    assert forward_kl(student, teacher, temperature, mask).item() == pytest.approx(limit.item(), rel=2e-2)


def test_bf16_inputs_are_computed_in_float32(logits):
    student, teacher, mask = logits
    loss = soft_cross_entropy(student.bfloat16(), teacher.bfloat16(), 2.0, mask)
    assert loss.dtype == torch.float32
    ref = soft_cross_entropy(student.bfloat16().float(), teacher.bfloat16().float(), 2.0, mask)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


def test_token_cross_entropy_matches_f_cross_entropy(logits):
    student, _, mask = logits
    targets = torch.randint(0, V, mask.shape, generator=torch.Generator().manual_seed(1))
    keep = mask.bool()
    expected = F.cross_entropy(student[keep], targets[keep])
    assert token_cross_entropy(student, targets, mask).item() == pytest.approx(expected.item(), rel=1e-5)
