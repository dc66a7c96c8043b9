"""Math properties of the distillation losses, and the fast path against plain references."""

from __future__ import annotations

import math

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


# ---- every divergence against a plain reference, and its known properties -----------------

from tasks import losses as L  # noqa: E402


def reference(kind, student, teacher, temperature, mask, beta=0.5, alpha=0.1):
    """T^2 * masked mean of the divergence, one position at a time from probabilities (F.kl_div for KL)."""
    total, n = 0.0, 0
    for b in range(student.shape[0]):
        for t in range(student.shape[1]):
            if not mask[b, t]:
                continue
            q = F.softmax(student[b, t] / temperature, -1)
            p = F.softmax(teacher[b, t] / temperature, -1)

            def kl(a, c):  # KL(a || c)
                return F.kl_div(c.log(), a, reduction="sum")

            value = {
                "forward_kl": lambda: kl(p, q),
                "reverse_kl": lambda: kl(q, p),
                "jsd": lambda: beta * kl(p, beta * p + (1 - beta) * q) + (1 - beta) * kl(q, beta * p + (1 - beta) * q),
                "skew_kl": lambda: kl(p, alpha * p + (1 - alpha) * q),
                "skew_reverse_kl": lambda: kl(q, alpha * q + (1 - alpha) * p),
                "tvd": lambda: 0.5 * (p - q).abs().sum(),
            }[kind]()
            total, n = total + value, n + 1
    return temperature**2 * total / n


@pytest.mark.parametrize("kind", L.DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_each_divergence_matches_its_reference_value_and_gradient(logits, kind, temperature):
    student, teacher, mask = logits
    a = student.clone().requires_grad_()
    got = L.divergence(kind, a, teacher, temperature, mask, beta=0.3, alpha=0.2)
    b = student.clone().requires_grad_()
    want = reference(kind, b, teacher, temperature, mask, beta=0.3, alpha=0.2)
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    got.backward(), want.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("kind", L.DIVERGENCES)
def test_identical_distributions_give_zero_and_others_positive(logits, kind):
    student, teacher, mask = logits
    assert L.divergence(kind, teacher, teacher, 2.0, mask).item() == pytest.approx(0.0, abs=1e-5)
    assert L.divergence(kind, student, teacher, 2.0, mask).item() > 1e-3


def test_jsd_limits_and_bounds(logits):
    """TRL's convention: b = 0 is forward KL, b = 1 reverse KL; JSD(b)/b -> forward KL as b -> 0."""
    student, teacher, mask = logits
    fkl, rkl = forward_kl(student, teacher, 1.0, mask), L.reverse_kl(student, teacher, 1.0, mask)
    assert L.generalized_jsd(student, teacher, 0.0, 1.0, mask).item() == pytest.approx(fkl.item(), rel=1e-6)
    assert L.generalized_jsd(student, teacher, 1.0, 1.0, mask).item() == pytest.approx(rkl.item(), rel=1e-6)
    b = 1e-4
    assert (L.generalized_jsd(student, teacher, b, 1.0, mask) / b).item() == pytest.approx(fkl.item(), rel=2e-2)
    assert (L.generalized_jsd(student, teacher, 1 - b, 1.0, mask) / b).item() == pytest.approx(rkl.item(), rel=2e-2)
    half = L.generalized_jsd(student, teacher, 0.5, 1.0, mask)
    assert 0 < half.item() <= math.log(2)  # the classic JSD is bounded by log 2 ...
    assert L.generalized_jsd(teacher, student, 0.5, 1.0, mask).item() == pytest.approx(half.item(), rel=1e-5)  # ... symmetric


def test_skew_kl_limits_and_bound(logits):
    """DistiLLM: alpha = 0 is plain KL; KL(p || a p + (1-a) q) <= log(1/a) however far q is."""
    student, teacher, mask = logits
    fkl = forward_kl(student, teacher, 2.0, mask).item()
    assert L.skew_kl(student, teacher, 0.0, 2.0, mask).item() == pytest.approx(fkl, rel=1e-6)
    assert L.skew_reverse_kl(student, teacher, 0.0, 2.0, mask).item() == pytest.approx(
        L.reverse_kl(student, teacher, 2.0, mask).item(), rel=1e-6)
    far = -50 * teacher  # a student that puts its mass where the teacher has none
    for alpha in (0.1, 0.5):
        assert L.skew_kl(far, teacher, alpha, 1.0, mask).item() <= math.log(1 / alpha) + 1e-5
    assert forward_kl(far, teacher, 1.0, mask).item() > math.log(10)  # unskewed, it is not bounded


def test_tvd_is_a_bounded_metric(logits):
    student, teacher, mask = logits
    d = L.tvd(student, teacher, 1.0, mask).item()
    assert 0 < d <= 1
    assert L.tvd(teacher, student, 1.0, mask).item() == pytest.approx(d, rel=1e-6)


# ---- chunked head == unchunked -------------------------------------------------------------


@pytest.mark.parametrize("chunk", [0, 1, 7, 64])
def test_chunked_head_equals_unchunked_value_and_gradients(chunk):
    g = torch.Generator().manual_seed(3)
    n, h_dim, v = 23, 8, V
    hidden, weight, bias = (torch.randn(n, h_dim, generator=g), torch.randn(v, h_dim, generator=g),
                            torch.randn(v, generator=g))
    teacher = torch.randn(n, v, generator=g)
    targets = torch.randint(0, v, (n,), generator=g)

    def objective(logits, sl):  # KD + CE per position, normalised by the batch's n (not the chunk's)
        s, t = torch.log_softmax(logits / 2, -1), torch.log_softmax(teacher[sl] / 2, -1)
        return (4 * L.token_divergence("jsd", s, t, 0.3) + F.cross_entropy(logits, targets[sl], reduction="none")).sum() / n

    ref = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    want = objective(F.linear(*ref), slice(0, n))
    want.backward()
    got_in = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    got = L.chunked_head_loss(*got_in, objective, chunk)
    (3 * got).backward()  # the stored gradients scale with the upstream gradient
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    for a, b in zip(got_in, ref):
        torch.testing.assert_close(a.grad, 3 * b.grad, rtol=1e-4, atol=1e-6)


def test_chunked_head_with_a_frozen_head_and_no_grad():
    g = torch.Generator().manual_seed(4)
    hidden = torch.randn(9, 4, generator=g, requires_grad=True)
    weight = torch.randn(V, 4, generator=g)  # frozen (LoRA students): no gradient asked, none made
    targets = torch.randint(0, V, (9,), generator=g)
    loss = L.chunked_head_loss(hidden, weight, None, lambda z, sl: F.cross_entropy(z, targets[sl], reduction="sum"), 4)
    loss.backward()
    assert hidden.grad is not None and weight.grad is None
    with torch.no_grad():
        again = L.chunked_head_loss(hidden, weight, None, lambda z, sl: F.cross_entropy(z, targets[sl], reduction="sum"), 2)
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)


# ---- offline top-k + tail --------------------------------------------------------------------


def test_topk_with_the_whole_vocabulary_is_the_dense_divergence(logits):
    student, teacher, mask = logits
    s, t = student[mask.bool()], teacher[mask.bool()]
    t_lp, ids = torch.log_softmax(t, -1).topk(V, -1)
    s_k, t_k = L.topk_log_probs(s, ids, t_lp)
    for kind in L.DIVERGENCES:
        dense = L.divergence(kind, s, t, 1.0, beta=0.3, alpha=0.2).item()
        assert L.token_divergence(kind, s_k, t_k, 0.3, 0.2).mean().item() == pytest.approx(dense, rel=1e-3, abs=1e-5)


def test_topk_tail_bucket_keeps_the_missing_mass(logits):
    student, teacher, mask = logits
    s, t = student[mask.bool()], teacher[mask.bool()]
    t_lp, ids = torch.log_softmax(t, -1).topk(5, -1)
    a = s.clone().requires_grad_()
    s_k, t_k = L.topk_log_probs(a, ids, t_lp.round(decimals=3))  # rounded, as synthesize stores them
    torch.testing.assert_close(s_k.exp().sum(-1), torch.ones(len(s)))  # k + tail is a distribution
    torch.testing.assert_close(t_k.exp().sum(-1), torch.ones(len(s)))
    tail = 1 - torch.softmax(t, -1).gather(-1, ids).sum(-1)
    torch.testing.assert_close(t_k[:, -1].exp(), tail, rtol=2e-2, atol=2e-3)
    L.token_divergence("forward_kl", s_k, t_k).mean().backward()
    outside = torch.ones_like(s, dtype=torch.bool).scatter(1, ids, False)
    assert a.grad[outside].abs().sum() > 0  # the tail reaches every other token's logit
