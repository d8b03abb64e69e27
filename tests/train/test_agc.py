import copy

import pytest
import torch
from timm.utils.agc import adaptive_clip_grad as timm_agc

from kit.train.agc import adaptive_clip_grad_
from kit.train.model import classifier_prefix, create_model, split_head_params


def reference_agc(weight, grad, clip, eps=1e-3):
    """The paper's formula, written out unit by unit (rows; a vector counts as one unit)."""
    w = weight.reshape(weight.shape[0], -1) if weight.ndim > 1 else weight.reshape(1, -1)
    g = grad.reshape(grad.shape[0], -1).clone() if grad.ndim > 1 else grad.reshape(1, -1).clone()
    for i in range(w.shape[0]):
        max_norm = clip * max(w[i].norm().item(), eps)
        gn = g[i].norm().item()
        if gn > max_norm:
            g[i] *= max_norm / gn
    return g.reshape(grad.shape)


@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (10, 6), (7,), (), (5, 1, 1, 1)])
def test_matches_formula_unit_by_unit(shape):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(shape, dtype=torch.float64))
    p.grad = torch.randn(shape, dtype=torch.float64) * torch.rand(shape, dtype=torch.float64) * 0.5
    if len(shape) >= 2:
        p.data[1] = 0.0                        # a zero unit: the eps floor applies
    expected = reference_agc(p.detach(), p.grad, clip=0.1)
    adaptive_clip_grad_([p], 0.1)
    assert torch.allclose(p.grad, expected, atol=1e-12, rtol=1e-9)
    assert not torch.equal(expected, p.grad + 1) and p.grad.shape == torch.Size(shape)


def test_some_units_clipped_some_not():
    p = torch.nn.Parameter(torch.ones(2, 4))
    p.grad = torch.tensor([[1.0, 0, 0, 0], [0.01, 0, 0, 0]])
    adaptive_clip_grad_([p], 0.1)             # max norm per row: 0.1 * ||(1,1,1,1)|| = 0.2
    assert torch.allclose(p.grad[0], torch.tensor([0.2, 0, 0, 0]))
    assert torch.equal(p.grad[1], torch.tensor([0.01, 0, 0, 0]))


def test_matches_timm_on_a_real_nfnet():
    torch.manual_seed(0)
    model = create_model("test_nfnet", 5)
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).sum().backward()
    body, _ = split_head_params(model)
    grads = [p.grad.clone() for p in body]
    timm_agc(body, 0.01)
    expected = [p.grad.clone() for p in body]
    for p, g in zip(body, grads):
        p.grad.copy_(g)
    adaptive_clip_grad_(body, 0.01)
    assert sum(not torch.equal(g, e) for g, e in zip(grads, expected)) > 10   # clipping did bite
    for p, e in zip(body, expected):
        torch.testing.assert_close(p.grad, e, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["test_nfnet", "nf_resnet26", "eca_nfnet_l0"])
def test_head_found_by_name_and_left_unclipped(name):
    torch.manual_seed(0)
    model = create_model(name, 3)
    prefix = classifier_prefix(model)
    assert model.get_submodule(prefix) is model.get_classifier()
    body, head = split_head_params(model)
    assert {id(p) for p in head} == {id(p) for p in model.get_classifier().parameters()}
    assert len(body) + len(head) == len(list(model.parameters()))
    model(torch.randn(2, 3, 32, 32)).pow(2).sum().mul(1e3).backward()
    head_before = [p.grad.clone() for p in head]
    adaptive_clip_grad_(body, 1e-4)
    assert all(torch.equal(p.grad, g) for p, g in zip(head, head_before))
    # the same call over all parameters would have changed the head: the exclusion is what protects it
    everything = copy.deepcopy(head_before)
    tmp = [torch.nn.Parameter(torch.ones_like(g) * 1e-3) for g in everything]
    for t, g in zip(tmp, everything):
        t.grad = g.clone()
    adaptive_clip_grad_(tmp, 1e-4)
    assert any(not torch.equal(t.grad, g) for t, g in zip(tmp, everything))


def test_zero_clip_is_a_no_op():
    p = torch.nn.Parameter(torch.ones(3, 3))
    p.grad = torch.full((3, 3), 100.0)
    adaptive_clip_grad_([p], 0.0)
    assert torch.equal(p.grad, torch.full((3, 3), 100.0))


def test_the_auto_clip_factor_follows_the_batch_and_the_optimizer():
    """auto: 0.01 x sqrt(4096 / batch) for SGD (the paper's 0.01 at 4096, 0.113 at 32 as measured), capped at 0.16;
    0.01 for AdamW at any batch; a number is used as given."""
    from kit.train.agc import clip_factor
    assert clip_factor("auto", 4096, "sgd") == 0.01
    assert clip_factor("auto", 32, "sgd") == 0.1131
    assert clip_factor("auto", 256, "sgd") == 0.04 and clip_factor("auto", 1000, "sgd") == 0.0202
    assert clip_factor("auto", 8, "sgd") == 0.16 == clip_factor("auto", 1, "sgd")        # the cap
    assert clip_factor("auto", 32, "adamw") == 0.01 == clip_factor("auto", 4096, "adamw")
    assert clip_factor("0.05", 32, "sgd") == 0.05 and clip_factor("0", 32, "adamw") == 0.0
    assert clip_factor("auto", 100, "sgd") == 0.064                     # rounded to 4 places
    assert clip_factor("".join(["au", "to"]), 32, "sgd") == 0.1131      # compared by value: a YAML string is not interned


def test_auto_turns_agc_off_for_a_net_with_normalization_layers_and_a_given_factor_stays():
    """AGC is for normalizer-free nets: clipped, a BatchNorm resnet18 did not learn at all (bench/RESULTS.md)."""
    from kit.train.agc import clip_factor, norm_layer
    assert norm_layer(create_model("test_resnet", 3)) == "BatchNorm2d"
    assert norm_layer(create_model("resnet18", 3)) == "BatchNorm2d"
    assert norm_layer(create_model("test_nfnet", 3)) is None and norm_layer(create_model("nf_resnet18", 3)) is None
    assert norm_layer(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))) == "LayerNorm"
    assert clip_factor("auto", 32, "sgd", "BatchNorm2d") == 0.0 == clip_factor("auto", 32, "adamw", "LayerNorm")
    assert clip_factor("auto", 32, "sgd", None) == 0.1131
    assert clip_factor("0.05", 32, "sgd", "BatchNorm2d") == 0.05                  # the user's number is kept


def test_without_agc_a_batchnorm_nets_zero_initialized_gains_can_move():
    """The reason in numbers: a zero-initialized BatchNorm gain (timm's zero_init_last) clipped by AGC moves at most
    eps x lambda a step; with auto (off) its SGD step is the raw gradient's."""
    from kit.train.agc import clip_factor, norm_layer
    model = create_model("resnet18", 3)
    gain = model.layer1[0].bn2.weight
    assert torch.count_nonzero(gain) == 0                                         # zero_init_last
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).sum().backward()
    raw = gain.grad.clone()
    adaptive_clip_grad_([gain], clip_factor("auto", 32, "sgd", None))
    assert gain.grad.norm() <= 0.1131 * 1e-3 * 1.0001 < raw.norm()                 # clipped to eps x lambda
    gain.grad = raw.clone()
    adaptive_clip_grad_([gain], clip_factor("auto", 32, "sgd", norm_layer(model)))
    assert torch.equal(gain.grad, raw)
