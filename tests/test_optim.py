"""bench.train.optim.Adam: the update worked out by hand, bit-for-bit agreement with torch.optim.Adam
(steps and state_dicts both ways), and a training process that never loads torch's compiler."""

import copy
import math

import pytest
import torch
from support import run_python

from bench.train.optim import Adam, deterministic_algorithms

LR, BETAS = 1e-3, (0.9, 0.999)


@pytest.mark.fast
def test_two_updates_by_hand():
    p = torch.tensor([0.5, -2.0], dtype=torch.float64, requires_grad=True)
    opt = Adam([p], lr=LR, betas=BETAS)
    grads = [torch.tensor([0.3, -4.0], dtype=torch.float64), torch.tensor([-0.1, 1.0], dtype=torch.float64)]
    expected = [0.5, -2.0]
    m, v = [0.0, 0.0], [0.0, 0.0]
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        for i in range(2):
            m[i] = BETAS[0] * m[i] + (1 - BETAS[0]) * g[i].item()
            v[i] = BETAS[1] * v[i] + (1 - BETAS[1]) * g[i].item() ** 2
            m_hat, v_hat = m[i] / (1 - BETAS[0] ** t), v[i] / (1 - BETAS[1] ** t)
            expected[i] -= LR * m_hat / (math.sqrt(v_hat) + 1e-8)
    assert p.detach().tolist() == pytest.approx(expected, rel=1e-12)


@pytest.mark.fast
def test_first_update_is_lr_against_the_gradient_sign():
    p = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor([3.0, -0.02, 1e3], dtype=torch.float64)
    Adam([p], lr=0.01, betas=BETAS).step()
    # m_hat = g and v_hat = g^2, so the step is lr * g / (|g| + eps).
    expected = [1 - 0.01 * 3 / (3 + 1e-8), 1 + 0.01 * 0.02 / (0.02 + 1e-8), 1 - 0.01 * 1e3 / (1e3 + 1e-8)]
    assert p.detach().tolist() == pytest.approx(expected, rel=1e-15)


def _pair(dtype, device="cpu"):
    torch.manual_seed(0)
    # Large enough for the vectorised loops and their tails, and one in the convolutions' channels-last layout.
    shapes = [(4, 3), (3,), (2, 2, 3), (33, 65), (8, 3, 4, 4)]
    ours = [torch.randn(s, dtype=dtype).to(device).requires_grad_() for s in shapes]
    ours[-1] = ours[-1].detach().to(memory_format=torch.channels_last).requires_grad_()
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    return ours, theirs


def _steps(ours, theirs, opt, ref, n, seed, skip=None):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            grad = None if i == skip else torch.randn(a.shape, dtype=a.dtype, generator=g).to(a.device)
            a.grad, b.grad = grad, None if grad is None else grad.clone()
        opt.step()
        ref.step()


ON_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.fast
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=ON_GPU)])
def test_same_bits_as_torch_optim_adam(dtype, device):
    # On a GPU both are capturable, as the trainers build them there (bench.train.trainer.adam).
    capturable = device == "cuda"
    ours, theirs = _pair(dtype, device)
    opt = Adam(ours, LR, BETAS, capturable=capturable)
    ref = torch.optim.Adam(theirs, lr=LR, betas=BETAS, capturable=capturable)
    _steps(ours, theirs, opt, ref, 7, seed=1, skip=1)  # a parameter without a gradient is left alone
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    assert torch.equal(ours[1], _pair(dtype, device)[0][1]) and 1 not in opt.state_dict()["state"]
    for i, state in opt.state_dict()["state"].items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state[key], ref.state_dict()["state"][i][key])


@pytest.mark.fast
@pytest.mark.parametrize("direction", ["torch-to-ours", "ours-to-torch"])
def test_state_dicts_load_into_each_other(direction):
    ours, theirs = _pair(torch.float32)
    opt, ref = Adam(ours, LR, BETAS), torch.optim.Adam(theirs, lr=LR, betas=BETAS)
    _steps(ours, theirs, opt, ref, 3, seed=2)
    # Continue each side from the other side's saved state, on fresh optimisers.
    if direction == "torch-to-ours":
        opt = Adam(ours, LR, BETAS)
        opt.load_state_dict(ref.state_dict())
    else:
        ref = torch.optim.Adam(theirs, lr=LR, betas=BETAS)
        # torch.optim keeps the loaded tensors themselves; a checkpoint's are fresh from torch.load.
        ref.load_state_dict(copy.deepcopy(opt.state_dict()))
    _steps(ours, theirs, opt, ref, 3, seed=3)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


@pytest.mark.fast
def test_loaded_state_is_a_copy():
    (p,) = _pair(torch.float32)[0][:1]
    saved = torch.optim.Adam([p.detach().clone().requires_grad_()], lr=LR)
    saved.param_groups[0]["params"][0].grad = torch.ones_like(p)
    saved.step()
    state = saved.state_dict()
    opt = Adam([p], LR, BETAS)
    opt.load_state_dict(state)
    p.grad = torch.ones_like(p)
    opt.step()
    assert state["state"][0]["step"].item() == 1 and opt.state_dict()["state"][0]["step"].item() == 2


@pytest.mark.fast
def test_load_rejects_a_state_for_other_parameters():
    ours, _ = _pair(torch.float32)
    with pytest.raises(ValueError, match="for 5 parameters, this optimiser has 2"):
        Adam(ours[:2], LR, BETAS).load_state_dict(Adam(ours, LR, BETAS).state_dict())


@pytest.mark.fast
def test_determinism_switch_sets_both_flags():
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        deterministic_algorithms(True, warn_only=True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        deterministic_algorithms(False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        deterministic_algorithms(*before)


def test_training_never_imports_the_compiler():
    code = (
        "import sys, torch\n"
        "from bench.config import resolve\n"
        "from bench.train.trainer import Trainer\n"
        "from bench.train.optim import deterministic_algorithms\n"
        "deterministic_algorithms(True, warn_only=True)\n"
        "images = torch.randint(0, 256, (48, 1, 32, 32), dtype=torch.uint8)\n"
        "config = resolve('cfactorvae', 'mnist', 0, 'smoke', {'epochs': 1, 'batch_size': 16})\n"
        "Trainer(config, images[:32], images[32:]).run_epoch()\n"
        "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))\n"
    )
    out = run_python("-c", code, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.fast
def test_loaded_state_takes_the_parameters_layout():
    flat = torch.randn(8, 3, 4, 4).requires_grad_()
    saved = Adam([flat], LR, BETAS)
    flat.grad = torch.randn_like(flat)
    saved.step()
    p = flat.detach().to(memory_format=torch.channels_last).requires_grad_()
    opt = Adam([p], LR, BETAS)
    opt.load_state_dict(saved.state_dict())
    for key in ("exp_avg", "exp_avg_sq"):
        loaded, original = opt.state_dict()["state"][0][key], saved.state_dict()["state"][0][key]
        assert loaded.is_contiguous(memory_format=torch.channels_last) and torch.equal(loaded, original)
